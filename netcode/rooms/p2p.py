"""The client side of peer-to-peer rooms: one direct link per pair of participants.

Theory of operation
-------------------
In a peer-to-peer room (:mod:`netcode.rooms.mesh` is the server's side) a :class:`Room`
still joins through the room server, which admits it by token and keeps its session, but
data goes straight to the other participants: the room holds a :class:`Mesh` with one
:class:`PeerPair` per other participant, each over its own WebRTC peer connection.

Pairs are made through the server. PEER_INFO names each participant and its rights; of
each pair the participant with the lower pid makes the offer (:func:`offer_link`), sends it
as PEER_OFFER to the server, which stamps it with the sender's pid and forwards it; the
other answers (PEER_ANSWER, stamped the same way). A link made so is bound to the identity
the server admitted: the SDP carries the peer's DTLS fingerprint and aiortc checks it. Every
frame and message that arrives on a pair is the pair's participant's: a sender pid written
inside a message is ignored, except that the room's listen host may write pid 0 to speak as
the game host (what a group room's server does with pid 0).

A pair is the session of that pair's traffic, built from the same pieces as the link to the
server: a :class:`~netcode.transport.connection.DatagramConnection` (an
:class:`~netcode.core.Endpoint`: acks, pings, clock, fragments) on the ``lossy`` channel,
an :class:`~netcode.rooms.events.EventLink` riding it for game events, topic tables per
direction, and the rooms protocol on the ``reliable`` channel: TOPIC, SUBSCRIBE, DATA and
EXTENSION (event fallback, RPC, streams, the game host's channels), in the formats a
server uses towards a client (:data:`~netcode.rooms.protocol.LOSSY_DOWN` for lossy data,
:meth:`EventLink.send_down` for events). Data tracks get one channel per pair with the
track's own ``ordered`` / ``max_packet_life_time`` / ``max_retransmits``, end to end in one
hop; the room server still hands out track ids and announces tracks (TRACK_PUBLISHED), and
a receiver accepts a track channel only from the pair of the participant that published it.

What a group room's server does for everyone, each sender does here for its own traffic:
it sends a packet to each destination that subscribes to its topic (receivers send
SUBSCRIBE on each pair, and drop what they did not subscribe to anyway), relays its RPC
requests only to participants in the room and checks that answers come from the callee,
tells a stream's sender when every receiver has it, and reports RECIPIENT_DISCONNECTED or
a cut stream when a peer leaves. Receivers drop data, events, calls and streams from
participants whose token lacks ``can_publish_data`` (PEER_INFO says so).

Sends made before a pair's link is open wait: reliable messages in the pair's outbox,
frames and events in its endpoint (lossy data expires after 250 ms, as on a backed-up
link), so ``publish_data`` to a participant that just joined reaches it.

A pair whose link dies (closed, or silent for ``dead_after``) is rebuilt through the server
while both participants are in the room: the lower pid offers again. The pair's state
starts afresh with the new link: what was in flight on the dead link is lost (calls to the
peer fail with RECIPIENT_DISCONNECTED, streams to and from it are cut). Resuming a pair
without loss would take what the server link has: counted reliable messages kept until
acknowledged (ReplayLog / ReceiveCounter) and the endpoint and event channel carried over
to the new link (``DatagramConnection.attach``), with the pair's two ends agreeing on the
counts when the new link opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from netcode.core import EndpointConfig, Event, FrameReceived
from netcode.errors import NetcodeError, ProtocolError
from netcode.rooms.client import DataPacketKind, DisconnectedError, LocalDataTrack, Room
from netcode.rooms.events import EventLink, encode_fallback
from netcode.rooms.limits import PeerBudgets, PeerMeter
from netcode.rooms.protocol import (
    LOSSY_DATA_MAX_AGE_S,
    PEER_HOST,
    PEER_PUBLISH,
    PEER_SUBSCRIBE,
    ExtensionChannel,
    Kind,
    decode_lossy_down_untrusted,
    dispatch_message_untrusted,
    encode_lossy_down,
    encode_message,
    subscription_topics,
)
from netcode.rooms.rpc import (
    MAX_CALLS_IN_FLIGHT,
    ROUTER_GRACE_S,
    RpcError,
    RpcErrorCode,
    RpcMessageType,
    decode_rpc_untrusted,
    encode_rpc,
)
from netcode.rooms.rpc import _error as _rpc_error
from netcode.rooms.streams import (
    MAX_RELAY_BACKLOG_BYTES,
    MAX_STREAMS_IN_FLIGHT,
    StreamMessageType,
    decode_stream_untrusted,
    encode_stream,
    forwarded_header,
)
from netcode.rooms.topics import IncomingTopics, OutgoingTopics
from netcode.transport.connection import DatagramConnection
from netcode.transport.direct import accept_answer, answer_link, offer_link
from netcode.transport.peerlink import is_loopback_host
from netcode.transport.webrtc import (
    MAX_RELIABLE_MESSAGE_BYTES,
    ChannelNotOpen,
    ConnectError,
    DataChannel,
    PeerLink,
)
from netcode.wire import MAX_DATAGRAM_BYTES, PROTOCOL_VERSION, FrameType

if TYPE_CHECKING:
    from netcode.rooms.listen import ListenRoom

__all__ = [
    "PAIR_CONNECT_TIMEOUT_S",
    "Mesh",
    "PeerPair",
    "TrackFanout",
    "decode_peer_data_untrusted",
    "encode_peer_data",
]

logger = logging.getLogger(__name__)

#: Longest one attempt to make a pair's link may take (offer to open channels), seconds.
PAIR_CONNECT_TIMEOUT_S = 10.0
#: Reliable bytes a pair holds while its link is not open; more are dropped and counted.
MAX_OUTBOX_BYTES = 4 * 1024 * 1024
#: A pair whose link has more than this queued (the peer stopped reading) is rebuilt.
MAX_PAIR_BACKLOG_BYTES = 8 * 1024 * 1024
#: Track channels a peer may open before their TRACK_PUBLISHED arrives.
MAX_ORPHAN_CHANNELS = 64
#: Malformed messages from one peer after which its pair is dropped until it is rebuilt.
MAX_PAIR_PROTOCOL_ERRORS = 20
#: How often the mesh checks its links, seconds.
_WATCH_INTERVAL_S = 0.25
#: Retry delays of a pair's offerer after a failed attempt (doubling, with jitter), seconds.
_RETRY_MIN_S = 0.1
_RETRY_MAX_S = 2.0
#: Channels whose messages the mesh itself routes (the others go to the game host's side).
_ROUTED_CHANNELS = frozenset(
    {ExtensionChannel.EVENTS, ExtensionChannel.RPC, ExtensionChannel.STREAMS}
)


_DATA_HEAD = struct.Struct("!BHHBB")  # kind, pid, topic_id, text flag, destinations (0)
_DATA_KIND = int(Kind.DATA)


#: First byte of a lossy data packet sent straight on a pair's lossy channel, beside the
#: endpoint's datagrams (whose first byte's high nibble is PROTOCOL_VERSION): a lossy
#: DATA frame's body follows it. Packets that fit one datagram and name a topic the peer
#: is known to hold go this way, one hop with no endpoint on the way; the others (a topic
#: named inline, which wants an acknowledgement; fragments) go through the endpoint.
DIRECT_LOSSY_PREFIX = b"\x00"
assert DIRECT_LOSSY_PREFIX[0] >> 4 != PROTOCOL_VERSION


def encode_peer_data(pid: int, topic_id: int, text: bool, payload: bytes) -> bytes:
    """A reliable DATA message on a pair (no destinations: the pair is the destination)."""
    return encode_message(
        Kind.DATA, pid=pid, topic_id=topic_id, text=text, destinations=(), payload=payload
    )


def decode_peer_data_untrusted(data: bytes | str) -> tuple[int, int, bool, bytes] | None:
    """(pid, topic_id, text, payload) of a DATA message without destinations; None for any
    other message (which then goes through decode_message_untrusted)."""
    if (
        not isinstance(data, bytes)
        or len(data) < _DATA_HEAD.size
        or data[0] != _DATA_KIND
        or data[6] != 0
    ):
        return None
    _, pid, topic_id, text, _ = _DATA_HEAD.unpack_from(data)
    return pid, topic_id, text != 0, data[_DATA_HEAD.size :]


def _newer(attempt: int, than: int) -> bool:
    """``attempt`` comes after ``than`` (16-bit serial numbers)."""
    return 0 < ((attempt - than) & 0xFFFF) < 0x8000


def _is_loopback_url(url: str) -> bool:
    try:
        return is_loopback_host(urlsplit(url).hostname)
    except ValueError:
        return False


class PeerPair:
    """This client's end of its direct link to one other participant.

    The pair outlives its links: a dead link is replaced through the server, and the
    traffic state (:attr:`connection`, :attr:`events`, topic tables, outbox) starts afresh
    with each new link.
    """

    def __init__(self, mesh: Mesh, pid: int, flags: int) -> None:
        self.mesh = mesh
        self.pid = pid
        #: PEER_INFO flags: PEER_PUBLISH, PEER_SUBSCRIBE, PEER_HOST
        self.flags = flags
        #: the open link (None while connecting)
        self.link: PeerLink | None = None
        #: ``connecting``, ``open`` or ``closed`` (the peer left, or the room closed)
        self.state = "connecting"
        #: offerer: the last attempt sent; answerer: the last offer taken
        self.attempt = 0
        #: topics the peer asked for on this pair (None: every topic)
        self.subscriptions: frozenset[str] | None = None
        #: links this pair has had
        self.links_used = 0
        #: when the current link opened (loop time), and how long it took to connect
        self.connect_times: list[float] = []
        self.protocol_errors = 0
        #: reliable messages dropped because the outbox was full
        self.outbox_dropped = 0
        #: lossy packets sent straight on the lossy channel and dropped there (backed up)
        self.lossy_dropped = 0
        #: data, events, calls and streams dropped: the peer may not publish, or sent a
        #: topic this client did not subscribe to
        self.dropped = 0
        #: the peer's inbound budgets, kept across its links
        self.meter = PeerMeter(mesh.budgets)
        #: why this client refuses the peer's traffic for good ("" while it does not)
        self.refused = ""
        self._answer: asyncio.Future[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._orphans: dict[int, DataChannel] = {}
        self._connecting_since = 0.0
        self._new_session()

    # ------------------------------------------------------------------ who

    @property
    def participant(self) -> Any:
        """The RemoteParticipant (None once it left)."""
        return self.mesh.room.participant_by_pid(self.pid)

    @property
    def identity(self) -> str:
        participant = self.participant
        return participant.identity if participant is not None else ""

    @property
    def can_publish(self) -> bool:
        return bool(self.flags & PEER_PUBLISH)

    @property
    def can_subscribe(self) -> bool:
        return bool(self.flags & PEER_SUBSCRIBE)

    @property
    def is_host(self) -> bool:
        """The peer is the room's listen host."""
        return bool(self.flags & PEER_HOST)

    @property
    def offerer(self) -> bool:
        """This client makes the pair's offers (it has the lower pid)."""
        return self.mesh.pid < self.pid

    @property
    def is_open(self) -> bool:
        return self.state == "open" and self.link is not None

    def wants(self, topic: str) -> bool:
        """The peer subscribes to ``topic`` (untopiced data always goes) and is reachable."""
        return (
            self.can_subscribe
            and self.state not in ("closed", "refused")
            and (not topic or self.subscriptions is None or topic in self.subscriptions)
        )

    def __repr__(self) -> str:
        return f"<PeerPair {self.mesh.pid}-{self.pid} {self.state}>"

    # ------------------------------------------------------------------ the pair's state

    def _new_session(self, config: Any = None) -> None:
        room = self.mesh.room
        name = f"p2p:{self.mesh.pid}-{self.pid}"
        if config is None:
            # nobody on a pair reads per-datagram ACK/LOST events (frame callbacks still fire)
            config = attrs.evolve(room.endpoint_config or EndpointConfig(), datagram_events=False)
        self.connection = DatagramConnection(
            None,
            self._on_event,
            config=config,
            name=name,
            on_malformed=lambda: self.protocol_error("malformed datagram"),
        )
        self.connection.admit = self._admit_datagram
        self.connection.on_foreign = self._on_direct_lossy
        self.events = EventLink(
            self.connection.endpoint,
            lambda message_id, message: self.send_extension(
                ExtensionChannel.EVENTS, encode_fallback(message_id, message)
            ),
            name=name,
        )
        self.connection.add_flush_hook(self.events)
        self.topics_out = OutgoingTopics()
        self.topics_in = IncomingTopics()
        self._outbox: deque[bytes] = deque()
        self._outbox_bytes = 0
        self._track_channels: dict[int, DataChannel] = {}  # our tracks' channels (by sid)

    # ------------------------------------------------------------------ connecting

    def start(self) -> None:
        """Begin connecting (the offerer offers; the answerer waits for an offer)."""
        if self.offerer and self.state == "connecting" and self._task is None:
            loop = asyncio.get_running_loop()
            self._connecting_since = loop.time()
            self._task = loop.create_task(self._offer_loop())
            self._task.add_done_callback(_log_task_error)

    async def _offer_loop(self) -> None:
        mesh = self.mesh
        delay = _RETRY_MIN_S
        loop = asyncio.get_running_loop()
        while self.state == "connecting":
            self.attempt = attempt = (self.attempt + 1) & 0xFFFF or 1
            link: PeerLink | None = None
            try:
                link, sdp = await offer_link(
                    name=f"p2p:{mesh.pid}->{self.pid}#{attempt}",
                    ice_servers=mesh.room._ice_servers,
                    include_loopback=mesh.include_loopback,
                    impairment=mesh.room.impairment,
                )
                self._answer = loop.create_future()
                mesh.room._send(Kind.PEER_OFFER, pid=self.pid, attempt=attempt, sdp=sdp)
                async with asyncio.timeout(PAIR_CONNECT_TIMEOUT_S):
                    answer = await self._answer
                    await accept_answer(link, answer)
                    await link.wait_open()
            except (ConnectError, TimeoutError, NetcodeError, OSError) as exc:
                logger.info("%r: attempt %d failed: %s", self, attempt, exc)
                if link is not None:
                    await link.close()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            except BaseException:
                if link is not None:
                    await link.close()
                raise
            finally:
                self._answer = None
            if self.state != "connecting":
                await link.close()
                return
            self._task = None
            self._adopt(link)
            return

    def on_answer(self, attempt: int, sdp: str) -> None:
        """PEER_ANSWER from the server: the peer answered our offer ``attempt``."""
        if not self.offerer:
            raise ProtocolError("PEER_ANSWER from a participant that should offer")
        future = self._answer
        if future is not None and not future.done() and attempt == self.attempt:
            future.set_result(sdp)

    def on_offer(self, attempt: int, sdp: str) -> None:
        """PEER_OFFER from the server: the peer offers a (new) link."""
        if self.offerer:
            raise ProtocolError("PEER_OFFER from a participant that should answer")
        if self.state in ("closed", "refused") or not _newer(attempt, self.attempt):
            return  # stale: an answer to it would be ignored
        self.attempt = attempt
        if self.state == "open":
            self.link_lost("the peer offered a new link")
        if self._task is not None:
            self._task.cancel()
        loop = asyncio.get_running_loop()
        self._connecting_since = loop.time()
        self._task = loop.create_task(self._answer_offer(attempt, sdp))
        self._task.add_done_callback(_log_task_error)

    async def _answer_offer(self, attempt: int, sdp: str) -> None:
        mesh = self.mesh
        link: PeerLink | None = None
        try:
            link, answer = await answer_link(
                sdp,
                name=f"p2p:{mesh.pid}<-{self.pid}#{attempt}",
                ice_servers=mesh.room._ice_servers,
                include_loopback=mesh.include_loopback,
                impairment=mesh.room.impairment,
            )
            mesh.room._send(Kind.PEER_ANSWER, pid=self.pid, attempt=attempt, sdp=answer)
            await link.wait_open(PAIR_CONNECT_TIMEOUT_S)
        except asyncio.CancelledError:
            if link is not None:
                await link.close()
            raise
        except (ConnectError, NetcodeError, OSError) as exc:
            # The offerer sees no link either and offers again.
            logger.info("%r: answering attempt %d failed: %s", self, attempt, exc)
            if link is not None:
                await link.close()
            return
        if self.state != "connecting" or attempt != self.attempt:
            await link.close()
            return
        self._task = None
        self._adopt(link)

    def _adopt(self, link: PeerLink) -> None:
        loop = asyncio.get_running_loop()
        self.link = link
        self.state = "open"
        self.links_used += 1
        self.connect_times.append(loop.time() - self._connecting_since)
        link.on_reliable(self._on_reliable)
        link.on_channel(self._on_channel)
        self.connection.attach(link)
        room = self.mesh.room
        outbox, self._outbox, self._outbox_bytes = self._outbox, deque(), 0
        if room._subscriptions is not None:
            outbox.appendleft(encode_message(Kind.SUBSCRIBE, **room._subscribe_fields()))
        try:
            for message in outbox:
                link.send_reliable(message)
        except ChannelNotOpen:
            self.link_lost("its reliable channel closed as it opened")
            return
        if self.can_subscribe:
            for fanout in list(self.mesh.local_tracks.values()):
                fanout.open_on(self)
        logger.info(
            "%r: direct link open in %.0f ms", self, 1000 * (loop.time() - self._connecting_since)
        )
        self.mesh._pair_opened(self)

    def link_lost(self, why: str) -> None:
        """The link is dead: drop what it carried and make a new one through the server."""
        if self.state != "open":
            return
        logger.info("%r: direct link lost (%s)", self, why)
        self._let_link_go()
        config = self.connection.endpoint.config
        self.connection.close()
        self.state = "connecting"
        self._new_session(config)
        self.mesh._pair_lost(self, why)
        if self.offerer:
            self.start()

    def _let_link_go(self) -> None:
        link, self.link = self.link, None
        for channel in self._orphans.values():
            channel.close()
        self._orphans.clear()
        if link is not None:
            link.on_reliable(None)
            link.on_channel(None)
            # Closing makes the peer notice too (its pings stop), so it rebuilds as well.
            task = asyncio.get_running_loop().create_task(link.close())
            task.add_done_callback(_log_task_error)

    def refuse(self, why: str) -> None:
        """Stop talking to this peer for as long as it is in the room (it flooded us): its
        link closes and is not rebuilt; what was in flight to or from it fails."""
        if self.state in ("closed", "refused"):
            return
        logger.warning("%r: refusing the peer's traffic: %s", self, why)
        self.refused = why
        self.mesh.refusals += 1
        self.close()
        self.state = "refused"
        self.mesh._pair_refused(self, why)

    def close(self) -> None:
        """The peer left (or the room closed): close the link for good."""
        if self.state == "closed":
            return
        self.state = "closed"
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._let_link_go()
        self.connection.close()
        self._outbox.clear()

    # ------------------------------------------------------------------ sending

    def send_message(self, kind: Kind, **fields: Any) -> None:
        """Send a rooms message on the pair's reliable channel (waits while connecting)."""
        self.send_raw(encode_message(kind, **fields))

    def send_raw(self, message: bytes) -> None:
        if self.state in ("closed", "refused"):
            return
        link = self.link
        if link is not None:
            try:
                link.send_reliable(message)
            except ChannelNotOpen:
                self.link_lost("its reliable channel closed")
            else:
                if link.send_backlog() > MAX_PAIR_BACKLOG_BYTES:
                    self.link_lost(f"more than {MAX_PAIR_BACKLOG_BYTES} bytes queued")
                return
        if self._outbox_bytes + len(message) > MAX_OUTBOX_BYTES:
            self.outbox_dropped += 1
            logger.warning("%r: outbox full; a reliable message is dropped", self)
            return
        self._outbox.append(message)
        self._outbox_bytes += len(message)

    def send_extension(self, channel: int, body: bytes, pid: int | None = None) -> None:
        """An EXTENSION message from us (``pid`` 0: from the game host, on a listen host)."""
        self.send_message(
            Kind.EXTENSION, channel=channel, pid=self.mesh.pid if pid is None else pid, body=body
        )

    def send_data(self, sender_pid: int, topic: str, text: bool, data: bytes, lossy: bool) -> None:
        """A data packet to the peer (``sender_pid``: ours, or 0 from a listen host's game)."""
        if lossy:
            topic_id, inline = self.topics_out.lossy_ref(topic)
            body = encode_lossy_down(sender_pid, topic_id, inline, text, data)
            link = self.link
            if inline is None and link is not None and len(body) < MAX_DATAGRAM_BYTES:
                self._send_direct_lossy(link, body)
                return
            on_delivery = None if inline is None else self.topics_out.confirm_when_acked(topic_id)
            connection = self.connection
            connection.send_frame(
                FrameType.DATA,
                body,
                on_delivery=on_delivery,
                expires_at=connection.now() + LOSSY_DATA_MAX_AGE_S,
            )
            return
        topic_id, new = self.topics_out.bind(topic)
        if new:
            self.send_message(Kind.TOPIC, topic_id=topic_id, name=topic)
        self.send_raw(encode_peer_data(sender_pid, topic_id, text, data))

    def _send_direct_lossy(self, link: PeerLink, body: bytes) -> None:
        try:
            sent = link.send_lossy(DIRECT_LOSSY_PREFIX + body)
        except ChannelNotOpen:
            self.link_lost("its lossy channel closed")
            return
        if not sent:  # backed up: a lossy packet may be dropped, and this one is
            self.lossy_dropped += 1

    def send_backlog(self) -> int:
        """Bytes waiting to reach the peer (the link's queue, or the outbox while connecting)."""
        link = self.link
        return link.send_backlog() if link is not None else self._outbox_bytes

    # ------------------------------------------------------------------ receiving

    def protocol_error(self, what: str) -> None:
        self.protocol_errors += 1
        self.mesh.protocol_errors += 1
        logger.info("%r: protocol error %d: %s", self, self.protocol_errors, what)
        if self.protocol_errors == MAX_PAIR_PROTOCOL_ERRORS and self.state == "open":
            logger.warning("%r: too many malformed messages; dropping the link", self)
            self.link_lost("too many malformed messages")

    def _admit_datagram(self, now: float, size: int) -> bool:
        if self.meter.datagram(now, size):
            return True
        if self.meter.flooding(now):
            self.refuse("flooding: too many datagrams a second")
        return False

    def sender_of(self, claimed_pid: int) -> int:
        """Who sent a message that says ``claimed_pid``: the pair's participant, or 0 (the
        game host) when the pair's participant is the room's listen host and says so."""
        return 0 if claimed_pid == 0 and self.is_host else self.pid

    def _on_reliable(self, data: bytes | str) -> None:
        if self.state != "open":
            return
        if not self.meter.message(self.connection.now(), len(data)):
            self.refuse("flooding: too many reliable messages a second")
            return
        try:
            fast = decode_peer_data_untrusted(data)
            if fast is not None:  # the hot path: a DATA message, without construct
                claimed, topic_id, text, payload = fast
                topic = self.topics_in.resolve(topic_id)
                self.mesh._deliver_data(self, claimed, topic, text, payload, False)
                return
            dispatch_message_untrusted(data, _PEER_MESSAGES, self)
        except ProtocolError as exc:
            self.protocol_error(str(exc))

    def _on_topic(self, body: Any) -> None:
        self.topics_in.learn(body.topic_id, body.name)

    def _on_subscribe(self, body: Any) -> None:
        self.subscriptions = subscription_topics(body)

    def _on_direct_lossy(self, data: bytes) -> None:
        # A message on the lossy channel that is not an endpoint datagram (already admitted).
        try:
            if data[0] != DIRECT_LOSSY_PREFIX[0]:
                raise ProtocolError(f"unknown datagram type {data[0]:#04x}")
            claimed, topic_id, inline, text, payload = decode_lossy_down_untrusted(data[1:])
            topic = self.topics_in.resolve(topic_id, inline)
        except ProtocolError as exc:
            self.protocol_error(str(exc))
            return
        self.mesh._deliver_data(self, claimed, topic, text, payload, True)

    def _on_data(self, body: Any) -> None:
        topic = self.topics_in.resolve(body.topic_id)
        self.mesh._deliver_data(self, body.pid, topic, body.text, bytes(body.payload), False)

    def _on_extension(self, body: Any) -> None:
        self.mesh._on_extension(self, body.channel, body.pid, bytes(body.body))

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, FrameReceived):
            return
        try:
            if event.frame_type == FrameType.DATA:
                claimed, topic_id, inline, text, payload = decode_lossy_down_untrusted(
                    event.payload
                )
                topic = self.topics_in.resolve(topic_id, inline)
                self.mesh._deliver_data(self, claimed, topic, text, payload, True)
            elif event.frame_type == FrameType.EVENT:
                self.events.receive_frame(event.payload, self.connection.now())
                self.mesh._deliver_events(self)
            else:
                self.mesh._on_game_frame(self, event.frame_type, event.payload)
        except ProtocolError as exc:
            self.protocol_error(str(exc))

    def _on_channel(self, channel: DataChannel) -> None:
        prefix, _, sid_text = channel.label.partition("/")
        if prefix != "track" or not sid_text.isdigit():
            channel.close()
            self.protocol_error(f"unexpected channel {channel.label!r}")
            return
        sid = int(sid_text)
        track = self.mesh.room._tracks.get(sid)
        if track is None:
            # The channel overtook the server's TRACK_PUBLISHED: keep it until that arrives.
            if len(self._orphans) >= MAX_ORPHAN_CHANNELS or sid in self._orphans:
                channel.close()
                return
            self._orphans[sid] = channel
            return
        self._bind_track(track, channel)

    def _bind_track(self, track: Any, channel: DataChannel) -> None:
        if track.participant.pid != self.pid:
            # Only the publisher's own pair may carry its track: nobody poses as another.
            channel.close()
            self.protocol_error(f"channel of {track.participant.identity!r}'s track {track.sid}")
            return
        if not self.can_publish:
            channel.close()
            self.dropped += 1
            return
        self.mesh.room._bind_track(track, channel)

    def track_published(self, track: Any) -> None:
        """The server announced ``track``: bind a channel of it that came first."""
        channel = self._orphans.pop(track.sid, None)
        if channel is not None:
            self._bind_track(track, channel)


_PEER_MESSAGES: dict[Kind, Callable[[PeerPair, Any], None]] = {
    Kind.TOPIC: PeerPair._on_topic,
    Kind.SUBSCRIBE: PeerPair._on_subscribe,
    Kind.DATA: PeerPair._on_data,
    Kind.EXTENSION: PeerPair._on_extension,
}


class TrackFanout:
    """A published LocalDataTrack in a P2P room: one channel per subscribing peer."""

    def __init__(self, mesh: Mesh, track: LocalDataTrack, sid: int) -> None:
        self.mesh = mesh
        self.track = track
        self.sid = sid
        #: the largest message, as on a group room's channel with these settings
        self.max_message_bytes = (
            MAX_DATAGRAM_BYTES if track.max_retransmits == 0 else MAX_RELIABLE_MESSAGE_BYTES
        )
        self.channels: dict[int, DataChannel] = {}
        self.closed = False

    def open_on(self, pair: PeerPair) -> None:
        """Open the track's channel to ``pair`` (its link is open)."""
        link = pair.link
        if self.closed or link is None or not pair.can_subscribe:
            return
        track = self.track
        try:
            channel = link.create_channel(
                f"track/{self.sid}",
                ordered=track.ordered,
                max_packet_life_time=track.max_packet_life_time,
                max_retransmits=track.max_retransmits,
            )
        except ChannelNotOpen:
            return
        self.channels[pair.pid] = channel

    def forget(self, pid: int) -> None:
        channel = self.channels.pop(pid, None)
        if channel is not None:
            channel.close()

    async def wait_open(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the channels to the open pairs are open."""
        waits = [c.wait_open() for c in self.channels.values()]
        if waits:
            with contextlib.suppress(TimeoutError, ChannelNotOpen):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*waits)

    def send(self, data: bytes | str) -> bool:
        """Send to every subscriber: False if an unreliable message was dropped for any."""
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        if size > self.max_message_bytes:
            raise ValueError(
                f"message of {size} bytes exceeds the {self.max_message_bytes}-byte limit of "
                f"track {self.track.name!r}"
            )
        sent = True
        for channel in list(self.channels.values()):
            try:
                sent = channel.send(data) and sent
            except ChannelNotOpen:
                continue  # that peer's channel is opening or going: it misses this one
        return sent

    def close(self) -> None:
        self.closed = True
        self.mesh.local_tracks.pop(self.sid, None)
        for channel in self.channels.values():
            channel.close()
        self.channels.clear()


@attrs.define(eq=False)
class _OutStream:
    """A stream this client sends: who still has to answer."""

    stream_id: int
    receivers: set[int]
    failures: list[str] = attrs.field(factory=list)


class Mesh:
    """A peer-to-peer room's direct links, from this client: one :class:`PeerPair` per peer.

    Created by :class:`~netcode.rooms.client.Room` when it joins a P2P room (``room.mesh``).
    """

    def __init__(self, room: Room) -> None:
        self.room = room
        #: the pairs, by the peer's pid
        self.pairs: dict[int, PeerPair] = {}
        #: PEER_INFO flags of every participant, ours included
        self.flags: dict[int, int] = {}
        #: the room's listen host (0: none)
        self.host_pid = 0
        #: offer a 127.0.0.1 candidate (the room server is on this machine)
        self.include_loopback = _is_loopback_url(room._url)
        #: our published tracks, by sid
        self.local_tracks: dict[int, TrackFanout] = {}
        #: the game this client hosts (a listen server), if any
        self.listen: ListenRoom | None = None
        #: what each peer may send this client a second (see netcode.rooms.limits)
        self.budgets = room.peer_budgets or PeerBudgets()
        #: peers refused for flooding
        self.refusals = 0
        self.protocol_errors = 0
        self._calls: dict[int, tuple[int, float]] = {}  # request id -> (callee pid, expiry)
        self._out_streams: dict[int, _OutStream] = {}
        self._in_streams: dict[int, set[int]] = {}  # sender pid -> its stream ids
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watch_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ who

    @property
    def pid(self) -> int:
        return self.room.local_participant.pid

    @property
    def can_publish(self) -> bool:
        return bool(self.flags.get(self.pid, 0) & PEER_PUBLISH)

    @property
    def is_host(self) -> bool:
        """This client is the room's listen host."""
        return self.host_pid != 0 and self.host_pid == self.pid

    @property
    def host_pair(self) -> PeerPair | None:
        """The pair to the room's listen host (None: no host, or we are it)."""
        return self.pairs.get(self.host_pid) if self.host_pid else None

    def pair_of(self, identity: str) -> PeerPair | None:
        participant = self.room.remote_participants.get(identity)
        return self.pairs.get(participant.pid) if participant is not None else None

    def connected_to(self, identity: str) -> bool:
        """The direct link to ``identity`` is open."""
        pair = self.pair_of(identity)
        return pair is not None and pair.is_open

    async def wait_connected(
        self, identities: Iterable[str] | None = None, timeout: float = 10.0
    ) -> None:
        """Wait until the links to ``identities`` (default: everyone in the room) are open.

        Raises TimeoutError after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                wanted = (
                    list(self.room.remote_participants) if identities is None else list(identities)
                )
                if all(self.connected_to(identity) for identity in wanted):
                    return
                await asyncio.sleep(0.01)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per peer identity: link state, RTT, backlog, protocol errors and the lossy packets
        dropped because the link was backed up."""
        out = {}
        for pair in self.pairs.values():
            stats = pair.connection.endpoint.stats()
            out[pair.identity or str(pair.pid)] = {
                "state": pair.state,
                "links": pair.links_used,
                "rtt_ms": stats.rtt_ms,
                "connect_ms": [round(t * 1000, 1) for t in pair.connect_times],
                "backlog": pair.send_backlog(),
                "protocol_errors": pair.protocol_errors,
                "lossy_dropped": pair.lossy_dropped,
            }
        return out

    # ------------------------------------------------------------------ server messages

    def on_peer_info(self, body: Any) -> None:
        pid, flags = int(body.pid), int(body.flags)
        self.flags[pid] = flags
        if flags & PEER_HOST:
            self.host_pid = pid
        elif self.host_pid == pid:
            self.host_pid = 0
        if pid == self.pid:
            if not self._ready.done():
                self._ready.set_result(None)
                loop = asyncio.get_running_loop()
                self._watch_task = loop.create_task(self._watch())
                self._watch_task.add_done_callback(_log_task_error)
            return
        if self.room.participant_by_pid(pid) is None:
            raise ProtocolError(f"PEER_INFO for unknown participant {pid}")
        pair = self.pairs.get(pid)
        if pair is None:
            pair = self.pairs[pid] = PeerPair(self, pid, flags)
            pair.start()
        else:
            pair.flags = flags

    def on_offer(self, body: Any) -> None:
        pair = self.pairs.get(body.pid)
        if pair is not None:
            pair.on_offer(int(body.attempt), str(body.sdp))

    def on_answer(self, body: Any) -> None:
        pair = self.pairs.get(body.pid)
        if pair is not None:
            pair.on_answer(int(body.attempt), str(body.sdp))

    async def ready(self) -> None:
        """Until the server told us our own rights (its first PEER_INFO after JOINED)."""
        await asyncio.shield(self._ready)

    def peer_left(self, pid: int) -> None:
        """The server said the participant left: its pair goes for good."""
        pair = self.pairs.pop(pid, None)
        self.flags.pop(pid, None)
        if pid == self.host_pid:
            self.host_pid = 0
        if pair is None:
            return
        identity = pair.identity
        pair.close()
        for fanout in self.local_tracks.values():
            fanout.forget(pid)
        self._peer_gone(pair, identity, "disconnected", "the sender disconnected")
        if self.listen is not None:
            self.listen._peer_left(pair)

    async def close(self) -> None:
        """The room is leaving: close every pair."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        if self.listen is not None:
            self.listen._close()
        links = [pair.link for pair in self.pairs.values() if pair.link is not None]
        for pair in list(self.pairs.values()):
            pair.close()
        self.pairs.clear()
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            now = loop.time()
            for pair in list(self.pairs.values()):
                link = pair.link
                if pair.state != "open" or link is None:
                    continue
                if link.closed.is_set():
                    pair.link_lost("connection closed")
                elif (silent := now - pair.connection.last_received) > self.room.dead_after:
                    pair.link_lost(f"no datagram for {silent:.1f} s")

    def _pair_opened(self, pair: PeerPair) -> None:
        if self.listen is not None:
            self.listen._peer_ready(pair)

    def _pair_refused(self, pair: PeerPair, why: str) -> None:
        for fanout in self.local_tracks.values():
            fanout.forget(pair.pid)
        self._peer_gone(pair, pair.identity, f"refused ({why})", f"the sender was refused ({why})")
        if self.listen is not None:
            self.listen._peer_left(pair)

    def _pair_lost(self, pair: PeerPair, why: str) -> None:
        for fanout in self.local_tracks.values():
            fanout.channels.pop(pair.pid, None)
        self._peer_gone(
            pair,
            pair.identity,
            f"the direct link dropped ({why})",
            f"the direct link to the sender dropped ({why})",
        )
        if self.listen is not None:
            self.listen._peer_lost(pair)

    # ------------------------------------------------------------------ sending

    def _targets(self, destinations: list[int], topic: str) -> list[PeerPair]:
        wanted = set(destinations)
        return [
            pair
            for pair in self.pairs.values()
            if (not wanted or pair.pid in wanted) and pair.wants(topic)
        ]

    def publish_data(
        self, data: bytes, text: bool, reliable: bool, destinations: list[int], topic: str
    ) -> None:
        """``publish_data``: straight to each destination that subscribes to ``topic``."""
        if not self.can_publish:
            logger.warning("the token lacks can_publish_data: data not sent")
            return
        for pair in self._targets(destinations, topic):
            pair.send_data(self.pid, topic, text, data, lossy=not reliable)

    def send_event(self, codec: Any, body: bytes, topic: str, destinations: list[int]) -> None:
        """A game event (encoded), to each destination's pair, in order, exactly once."""
        if not self.can_publish:
            logger.warning("the token lacks can_publish_data: event not sent")
            return
        for pair in self._targets(destinations, topic):
            pair.events.send_down(codec.type_id, self.pid, topic, body)
            pair.connection.schedule_flush()

    def send_host_frame(self, frame_type: int, payload: bytes, **options: Any) -> None:
        """A frame for the room's listen host (a Replica's inputs and receipts)."""
        pair = self.host_pair
        if pair is None:
            raise DisconnectedError("no game host in this room to send to")
        pair.connection.send_frame(frame_type, payload, **options)

    def send_backlog(self) -> int:
        """The largest backlog towards any peer (a stream goes at its slowest receiver's pace)."""
        return max((pair.send_backlog() for pair in self.pairs.values()), default=0)

    def set_subscriptions(self) -> None:
        """Tell every peer the room's subscription (Room.set_subscriptions)."""
        fields = self.room._subscribe_fields()
        for pair in self.pairs.values():
            if pair.state != "closed":
                pair.send_message(Kind.SUBSCRIBE, **fields)

    def track_fanout(self, track: LocalDataTrack, sid: int) -> TrackFanout:
        """Open ``track``'s channels to every subscribing peer (and later ones)."""
        fanout = self.local_tracks[sid] = TrackFanout(self, track, sid)
        for pair in self.pairs.values():
            if pair.is_open:
                fanout.open_on(pair)
        return fanout

    def track_published(self, track: Any) -> None:
        """TRACK_PUBLISHED arrived: its channel may have come first on the publisher's pair."""
        pair = self.pairs.get(track.participant.pid)
        if pair is not None:
            pair.track_published(track)

    def send_extension(self, channel: int, body: bytes) -> None:
        """An EXTENSION message of this client's layers (RPC, streams, events fallback is
        per pair): routed to the participants it is for."""
        if channel == ExtensionChannel.RPC:
            self._send_rpc(body)
        elif channel == ExtensionChannel.STREAMS:
            self._send_stream(body)
        else:
            raise ProtocolError(f"EXTENSION channel {channel} has no peer-to-peer route")

    # ------------------------------------------------------------------ receiving

    def _deliver_data(
        self, pair: PeerPair, claimed: int, topic: str, text: bool, payload: bytes, lossy: bool
    ) -> None:
        if not pair.can_publish or not self.room.subscribes_to(topic):
            pair.dropped += 1
            return
        kind = DataPacketKind.LOSSY if lossy else DataPacketKind.RELIABLE
        self.room._deliver(pair.sender_of(claimed), topic, text, payload, kind)

    def _deliver_events(self, pair: PeerPair) -> None:
        now = pair.connection.now()
        for event, claimed, topic in pair.events.receive_down(pair.protocol_error):
            if not pair.meter.event(now):
                pair.refuse("flooding: too many game events a second")
                return
            if not pair.can_publish or not self.room.subscribes_to(topic):
                pair.dropped += 1
                continue
            self.room._dispatch_event(event, pair.sender_of(claimed), topic)
            if self.listen is not None:
                self.listen._event_received(pair, event, topic)

    def _on_game_frame(self, pair: PeerPair, frame_type: int, payload: bytes) -> None:
        if self.listen is not None:
            self.listen._frame_received(pair, frame_type, payload)
            return
        handler = self.room.frame_handlers.get(frame_type) if pair.is_host else None
        if handler is None:
            raise ProtocolError(f"frame type {frame_type} from a peer that does not host")
        handler(payload)

    def _on_extension(self, pair: PeerPair, channel: int, claimed: int, body: bytes) -> None:
        if channel == ExtensionChannel.EVENTS:
            pair.events.receive_fallback(body)
            self._deliver_events(pair)
        elif channel == ExtensionChannel.RPC:
            self._receive_rpc(pair, body)
        elif channel == ExtensionChannel.STREAMS:
            self._receive_stream(pair, body)
        elif self.listen is not None:
            self.listen._extension_received(pair, channel, body)
        elif pair.is_host:
            handler = self.room.extension_handlers.get(channel)
            if handler is not None:
                handler(pair.sender_of(claimed), body)
        else:
            raise ProtocolError(f"EXTENSION channel {channel} from a peer that does not host")

    def _peer_gone(self, pair: PeerPair, identity: str, reason: str, sender_reason: str) -> None:
        """Calls to and streams from and to ``pair`` end (it left, or its link dropped)."""
        for request_id, (callee, _) in list(self._calls.items()):
            if callee == pair.pid:
                del self._calls[request_id]
                error = RpcError(RpcErrorCode.RECIPIENT_DISCONNECTED, f"Recipient {reason}")
                self._local(ExtensionChannel.RPC, pair.pid, _rpc_error(request_id, error))
        for stream in list(self._out_streams.values()):
            if pair.pid in stream.receivers:
                stream.receivers.discard(pair.pid)
                stream.failures.append(f"{identity}: {reason}")
                self._stream_done(stream)
        for stream_id in self._in_streams.pop(pair.pid, set()):
            trailer = encode_stream(
                StreamMessageType.TRAILER, stream_id=stream_id, reason=sender_reason
            )
            self._local(ExtensionChannel.STREAMS, pair.pid, trailer)

    def _local(self, channel: int, sender_pid: int, body: bytes) -> None:
        """Hand a message to this client's own layer, as if from ``sender_pid`` (soon: the
        layer may not have registered what it is waiting for yet)."""
        handler = self.room.extension_handlers.get(channel)
        if handler is not None:
            asyncio.get_running_loop().call_soon(_call_guarded, handler, sender_pid, body)

    # ------------------------------------------------------------------ RPC

    def _send_rpc(self, body: bytes) -> None:
        type_, message = decode_rpc_untrusted(body)
        if type_ is not RpcMessageType.REQUEST:
            # an answer of ours: to the caller it names (if the call came from it)
            pair = self.pairs.get(message.peer)
            if pair is not None:
                pair.send_extension(ExtensionChannel.RPC, body)
            return
        request_id = message.request_id

        def refuse(error: RpcError) -> None:
            self._local(ExtensionChannel.RPC, 0, _rpc_error(request_id, error))

        if not self.can_publish:
            denied = "permission denied: token lacks can_publish_data"
            return refuse(RpcError(RpcErrorCode.SEND_FAILED, denied))
        pair = self.pair_of(message.identity)
        if pair is None or pair.state == "closed":
            return refuse(RpcError.built_in(RpcErrorCode.RECIPIENT_NOT_FOUND))
        now = asyncio.get_running_loop().time()
        for old in [rid for rid, (_, expiry) in self._calls.items() if expiry < now]:
            del self._calls[old]
        if len(self._calls) >= MAX_CALLS_IN_FLIGHT:
            return refuse(
                RpcError(
                    RpcErrorCode.SEND_FAILED,
                    f"Failed to send: over {MAX_CALLS_IN_FLIGHT} calls in flight",
                )
            )
        expiry = now + message.response_timeout_ms / 1000 + ROUTER_GRACE_S
        self._calls[request_id] = (pair.pid, expiry)
        pair.send_extension(ExtensionChannel.RPC, body)

    def _receive_rpc(self, pair: PeerPair, body: bytes) -> None:
        type_, message = decode_rpc_untrusted(body)
        handler = self.room.extension_handlers.get(ExtensionChannel.RPC)
        if handler is None:
            return
        if type_ is RpcMessageType.REQUEST:
            if not pair.meter.rpc(pair.connection.now()):
                pair.refuse("flooding: too many RPC requests a second")
                return
            if not pair.can_publish:
                pair.dropped += 1
                return
            stamped = encode_rpc(
                RpcMessageType.REQUEST,
                request_id=message.request_id,
                version=message.version,
                identity=pair.identity,  # the caller, as the server admitted it
                method=message.method,
                response_timeout_ms=message.response_timeout_ms,
                payload=message.payload.encode(),
            )
            handler(pair.pid, stamped)
            return
        call = self._calls.get(message.request_id)
        if call is None or call[0] != pair.pid:
            return  # late, or an answer to a call that was not made to this peer
        if type_ is not RpcMessageType.ACK:
            del self._calls[message.request_id]
        handler(pair.pid, body)

    # ------------------------------------------------------------------ streams

    def _send_stream(self, body: bytes) -> None:
        type_, message = decode_stream_untrusted(body)
        if type_ is StreamMessageType.RECEIPT:
            pair = self.pairs.get(message.peer)
            if pair is not None:
                pair.send_extension(ExtensionChannel.STREAMS, body)
            return
        stream_id = message.stream_id
        if type_ is StreamMessageType.HEADER:
            self._open_stream(message)
            return
        stream = self._out_streams.get(stream_id)
        if stream is None:
            return  # ended already (every receiver answered or left)
        if type_ is StreamMessageType.CHUNK:
            for pid in list(stream.receivers):
                pair = self.pairs.get(pid)
                if pair is None:
                    continue
                if pair.send_backlog() > MAX_RELAY_BACKLOG_BYTES:
                    reason = f"the receiver fell more than {MAX_RELAY_BACKLOG_BYTES} bytes behind"
                    stream.receivers.discard(pid)
                    stream.failures.append(f"{pair.identity}: {reason}")
                    trailer = encode_stream(
                        StreamMessageType.TRAILER, stream_id=stream_id, reason=reason
                    )
                    pair.send_extension(ExtensionChannel.STREAMS, trailer)
                    continue
                pair.send_extension(ExtensionChannel.STREAMS, body)
            self._stream_done(stream)
        elif type_ is StreamMessageType.TRAILER:
            for pid in stream.receivers:
                pair = self.pairs.get(pid)
                if pair is not None:
                    pair.send_extension(ExtensionChannel.STREAMS, body)
            if message.reason:  # we gave up: nobody's receipt will come
                self._out_streams.pop(stream_id, None)
        else:
            raise ProtocolError(f"stream {type_.name} is not sent by a client")

    def _open_stream(self, header: Any) -> None:
        stream_id = header.stream_id

        def result(reason: str) -> None:
            self._local(
                ExtensionChannel.STREAMS,
                0,
                encode_stream(StreamMessageType.RESULT, stream_id=stream_id, reason=reason),
            )

        if not self.can_publish:
            return result("permission denied: token lacks can_publish_data")
        if len(self._out_streams) >= MAX_STREAMS_IN_FLIGHT:
            return result(f"over {MAX_STREAMS_IN_FLIGHT} streams in flight")
        receivers = self._targets(list(header.destinations), header.topic)
        if not receivers:
            return result("")  # delivered to all of nobody
        self._out_streams[stream_id] = _OutStream(stream_id, {pair.pid for pair in receivers})
        forwarded = forwarded_header(stream_id, header)
        for pair in receivers:
            pair.send_extension(ExtensionChannel.STREAMS, forwarded)

    def _stream_done(self, stream: _OutStream) -> None:
        if stream.receivers or self._out_streams.get(stream.stream_id) is not stream:
            return
        del self._out_streams[stream.stream_id]
        self._local(
            ExtensionChannel.STREAMS,
            0,
            encode_stream(
                StreamMessageType.RESULT,
                stream_id=stream.stream_id,
                reason="; ".join(stream.failures),
            ),
        )

    def _receive_stream(self, pair: PeerPair, body: bytes) -> None:
        type_, message = decode_stream_untrusted(body)
        if type_ is StreamMessageType.RECEIPT:
            stream = self._out_streams.get(message.stream_id)
            if stream is None or pair.pid not in stream.receivers:
                return  # late, or not a stream this peer receives
            stream.receivers.discard(pair.pid)
            if message.reason:
                stream.failures.append(f"{pair.identity}: {message.reason}")
            self._stream_done(stream)
            return
        if type_ is StreamMessageType.RESULT:
            raise ProtocolError("stream RESULT from a peer")
        handler = self.room.extension_handlers.get(ExtensionChannel.STREAMS)
        if type_ is StreamMessageType.HEADER:
            if not pair.can_publish:
                pair.dropped += 1
                refusal = encode_stream(
                    StreamMessageType.RECEIPT,
                    stream_id=message.stream_id,
                    peer=pair.pid,
                    reason="permission denied: the sender's token lacks can_publish_data",
                )
                pair.send_extension(ExtensionChannel.STREAMS, refusal)
                return
            self._in_streams.setdefault(pair.pid, set()).add(message.stream_id)
        elif message.stream_id not in self._in_streams.get(pair.pid, ()):
            return  # not a stream this peer opened to us
        elif type_ is StreamMessageType.TRAILER:
            self._in_streams[pair.pid].discard(message.stream_id)
        if handler is not None:
            handler(pair.pid, body)


def _call_guarded(handler: Callable[[int, bytes], None], pid: int, body: bytes) -> None:
    try:
        handler(pid, body)
    except Exception:
        logger.exception("extension handler raised")


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("peer-to-peer task failed", exc_info=task.exception())
