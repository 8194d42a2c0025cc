"""The room server: hosts many rooms, relays data and tracks, enforces tokens and grants.

Theory of operation
-------------------
Each client holds one WebRTC peer connection to the server (a "group room"). The server
verifies the client's access token during signaling, puts the participant in the room the
token names, and tells everyone: the newcomer gets ``JOINED`` with the room as it is, the
others ``PARTICIPANT_JOINED``. From then on the server relays:

- reliable ``publish_data`` on the reliable channel, lossy ``publish_data`` as DATA frames in
  netcode datagrams on the lossy channel, each stamped with the sender's pid by the server
  (never taken from the client) and forwarded only to the named destinations that subscribe
  to the packet's topic;
- data tracks hop by hop: the publisher opens a channel with the track's reliability
  settings; the server opens one with the same settings to every other participant and
  forwards each message.

A participant that sends malformed messages or frames is counted; past
``max_protocol_errors`` it is disconnected, and the room carries on.

Sessions outlive links. A participant (its identity, pid, topic tables, event and replication
state, and the reliable messages it has not confirmed) is a session; its peer connection is a
link. With no datagram from the client for ``dead_after`` seconds (it PINGs every second
even when idle), or when its link fails, the participant becomes *reconnecting*: the others
get PARTICIPANT_RECONNECTING, and the session is held for ``grace_period`` seconds. A client
that comes back with the session's resume credential (from JOINED) gets its new link
attached to the same participant: RESUMED tells it how many of its reliable messages the
server received, the server replays the ones the client did not receive, and both go on with
nothing lost or duplicated (see netcode.core.replay). After the grace period the participant
leaves as if it had disconnected. A client that leaves on purpose says LEAVE first.

A room's game host (:class:`RoomHost`) sees participants come and go and receives the
frames and extension messages of the higher layers (replication, events, RPC, streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import secrets
import ssl as ssl_module
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from netcode.auth import Claims, MissingGrant, TokenError, TokenVerifier
from netcode.core import (
    DEFAULT_MAX_REPLAY_BYTES,
    EndpointConfig,
    Event,
    FrameReceived,
    ReceiveCounter,
    ReplayLog,
)
from netcode.errors import ProtocolError, SendQueueFull
from netcode.rooms import mesh
from netcode.rooms.events import EventLink, encode_fallback
from netcode.rooms.limits import PeerBudgets, PeerMeter
from netcode.rooms.protocol import (
    LOSSY_DATA_MAX_AGE_S,
    MAX_TRACK_NAME_CHARS,
    UNCOUNTED_KINDS,
    ExtensionChannel,
    Kind,
    decode_lossy_up_untrusted,
    dispatch_message_untrusted,
    encode_lossy_down,
    encode_message,
    subscription_topics,
    track_options,
    wanted_pids,
)
from netcode.rooms.rpc import RpcRouter
from netcode.rooms.streams import StreamRouter
from netcode.rooms.topics import IncomingTopics, OutgoingTopics, TooManyTopics, TopicTableFull
from netcode.trace import TraceSink, TraceTarget, TraceWriter
from netcode.transport.connection import DatagramConnection
from netcode.transport.ice import IceServerLike
from netcode.transport.impair import ImpairedPath, Impairment
from netcode.transport.signaling import HttpReply, PageHandler
from netcode.transport.webrtc import (
    ChannelNotOpen,
    DataChannel,
    PeerLink,
    SessionRefused,
    SignalingLimits,
    SignalingServer,
)
from netcode.web import NETCODE_JS_PATH, asset
from netcode.wire import FrameType

__all__ = [
    "ExtensionChannel",
    "ExtensionRouter",
    "RoomHost",
    "RoomServer",
    "ServerParticipant",
    "ServerRoom",
    "ServerTrack",
]

logger = logging.getLogger(__name__)

#: Tracks one participant may publish at once.
MAX_TRACKS_PER_PARTICIPANT = 16
#: Participants in one room.
DEFAULT_MAX_PARTICIPANTS = 200
#: Silence (no datagram) after which a link is declared dead, seconds.
DEFAULT_DEAD_AFTER_S = 3.0
#: Longest message an ERROR carries (longer ones are cut).
MAX_ERROR_MESSAGE_CHARS = 500
#: Seconds a client whose datagrams keep arriving may leave every datagram of ours
#: unacknowledged (a path that works one way, or a client that does not read its lossy
#: channel) before its link is let go as a dead one.
DEFAULT_UNACKED_AFTER_S = 10.0
#: Topic names one participant may publish on. Each client's table of the topics it receives
#: holds MAX_TOPICS (1024): with this budget, 16 publishers at their limit fit in it.
DEFAULT_MAX_TOPICS_PER_PARTICIPANT = 64
#: How long a dropped participant's session is held for it to resume, seconds.
DEFAULT_GRACE_PERIOD_S = 20.0
#: How often the server checks for dead links and sends owed ACKs, seconds.
_WATCH_INTERVAL_S = 0.25

_UNCOUNTED_BYTES = frozenset(int(k) for k in UNCOUNTED_KINDS)


ExtensionRouter = Callable[["ServerRoom", "ServerParticipant", bytes], None]


class RoomHost:
    """Server-side logic attached to a room (the game host). Override what you need.

    The base of :class:`~netcode.rooms.host.GameHost` (a tick loop with replication, which
    most games want); subclass RoomHost directly for a room that needs only to see who
    comes and goes and what they send (a lobby, a turn-based game, a bot)::

        class Referee(RoomHost):
            def participant_joined(self, participant):
                participant.room.send_data(f"welcome {participant.identity}", topic="chat")

            def event_received(self, participant, event, topic):
                if isinstance(event, Chat) and event.text == "!score":
                    participant.room.send_event(Chat("3:1"), destination_pids=participant.pid)

        server.room("lobby").attach_host(Referee())

    Every method is called from the event loop and must not block. ``participant`` is a
    :class:`ServerParticipant` (``identity``, ``name``, ``metadata``, ``pid``, ``room``,
    ``claims``); its room (a :class:`ServerRoom`) sends with ``send_data`` and
    ``send_event``.
    """

    #: True if the host sends to every participant each tick: relayed game events then
    #: wait for that tick's datagram instead of leaving in one of their own (at 30 Hz, at
    #: most 33 ms later, for half the datagrams and SCTP acknowledgements). Such a host calls
    #: ``release_events()`` on every participant of the room each tick, and sets this False
    #: when it stops ticking (GameHost does both).
    sends_every_tick = False

    def participant_joined(self, participant: ServerParticipant) -> None:
        """A participant joined (after it got JOINED)."""

    def participant_left(self, participant: ServerParticipant) -> None:
        """A participant left or was disconnected."""

    def participant_reconnecting(self, participant: ServerParticipant) -> None:
        """A participant's link dropped; its session is held for it (nothing reaches it)."""

    def participant_reconnected(self, participant: ServerParticipant) -> None:
        """A reconnecting participant is back on a new link."""

    def frame_received(self, participant: ServerParticipant, frame_type: int, data: bytes) -> None:
        """A frame of a higher layer (not DATA) arrived from ``participant``.

        Raise ProtocolError for a malformed frame: it is counted against the participant.
        """

    def extension_received(self, participant: ServerParticipant, channel: int, body: bytes) -> None:
        """An EXTENSION message of an application channel arrived from ``participant``."""

    def event_received(self, participant: ServerParticipant, event: Any, topic: str) -> None:
        """A game event arrived from ``participant`` (it is relayed to the others too)."""

    def close(self) -> None:
        """The room is closing."""


class ServerTrack:
    """A data track a participant published, relayed to the others."""

    def __init__(
        self,
        owner: ServerParticipant,
        sid: int,
        name: str,
        ordered: bool,
        max_packet_life_time: int | None,
        max_retransmits: int | None,
    ) -> None:
        self.owner = owner
        self.sid = sid
        self.name = name
        self.ordered = ordered
        self.max_packet_life_time = max_packet_life_time
        self.max_retransmits = max_retransmits
        self.inbound: DataChannel | None = None
        self.outbound: dict[int, DataChannel] = {}  # subscriber pid -> channel
        self.relayed = 0

    @property
    def label(self) -> str:
        return f"track/{self.sid}"

    def wire(self) -> dict[str, Any]:
        return {
            "pid": self.owner.pid,
            "sid": self.sid,
            "name": self.name,
            "options": track_options(self.ordered, self.max_packet_life_time, self.max_retransmits),
        }

    def relay(self, message: bytes | str) -> None:
        owner = self.owner
        if not owner.meter.message(owner.connection.now(), len(message)):
            owner._flooding("data-track messages")
            return
        self.relayed += 1
        room = owner.room
        for pid, channel in list(self.outbound.items()):
            try:
                channel.send(message)
            except (ChannelNotOpen, ValueError):
                continue  # a subscriber's channel closing or not yet open: it misses this one
            subscriber = room.participants.get(pid)
            if subscriber is not None and channel.reliable:
                subscriber.check_backlog()


class ServerParticipant:
    """One connected client, as the server sees it."""

    def __init__(
        self, room: ServerRoom, pid: int, claims: Claims, link: PeerLink, server: RoomServer
    ) -> None:
        self.room = room
        self.pid = pid
        self.claims = claims
        self.identity = claims.identity
        self.name = claims.name
        self.metadata = claims.metadata
        self.link: PeerLink | None = link
        #: prefix of this participant's log lines (``name`` is the display name, from the token)
        self.log_name = link.name
        self.server = server
        #: the session's resume credential (sent in JOINED)
        self.session_id = f"{server.instance_id}.{secrets.token_hex(12)}"
        self.resume_secret = secrets.token_hex(16)
        #: reliable messages sent and not confirmed, to replay on a new link
        self.replay = ReplayLog(server.max_replay_bytes)
        #: reliable messages received, for ACKs and RESUMED
        self.received = ReceiveCounter()
        #: True while the link is down and the session is held
        self.reconnecting = False
        #: links this session has had (1 + resumes)
        self.links_used = 1
        #: the client's drop count of the current link (0: the link it joined on)
        self.episode = 0
        #: why the session ended ("" while it lives)
        self.end_reason = ""
        self._ending = False
        self._grace_timer: asyncio.TimerHandle | None = None
        #: the server's trace (records of this participant are tagged with its identity)
        self.trace = trace = server.trace
        self.connection = DatagramConnection(
            link,
            self._on_event,
            config=server.endpoint_config,
            name=link.name,
            on_malformed=lambda: self.protocol_error("malformed datagram"),
            tracer=None if trace is None else trace.tracer(self.identity),
        )
        if trace is not None:
            fields = {"room": room.name, "pid": pid}
            trace.record("open", self.connection.now(), fields, conn=self.identity)
        #: this participant's inbound budgets (see netcode.rooms.limits)
        self.meter = PeerMeter(server.budgets)
        self.connection.admit = self._admit_datagram
        self.events = EventLink(
            self.connection.endpoint,
            lambda message_id, message: self.send_extension(
                ExtensionChannel.EVENTS, encode_fallback(message_id, message)
            ),
            name=link.name,
        )
        self.connection.add_flush_hook(self.events)
        self.subscriptions: frozenset[str] | None = None  # None: every topic
        self.topics_in = IncomingTopics(server.max_topics_per_participant, self._admit_topic)
        self.topics_out = OutgoingTopics()
        self.tracks: dict[int, ServerTrack] = {}
        self.protocol_errors = 0
        self.packets_relayed = 0
        #: lossy packets not relayed: over the sender's relay budget
        self.lossy_throttled = 0
        #: lossy packets for this client dropped because its send queue was full
        self.lossy_dropped = 0
        #: packets for this client dropped because its topic table was full
        self.topics_dropped = 0
        #: set once this client was disconnected for not reading
        self.slow = False
        self.left = asyncio.Event()

    def wire(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "identity": self.identity,
            "name": self.name,
            "metadata": self.metadata,
        }

    @property
    def can_publish(self) -> bool:
        return self.claims.grants.can_publish_data

    @property
    def can_subscribe(self) -> bool:
        return self.claims.grants.can_subscribe

    def subscribes_to(self, topic: str) -> bool:
        """Untopiced packets always arrive; topics only if subscribed (default: all)."""
        return self.can_subscribe and (
            not topic or self.subscriptions is None or topic in self.subscriptions
        )

    # sending to this client

    def send_message(self, kind: Kind, **fields: Any) -> None:
        message = encode_message(kind, **fields)
        if kind not in UNCOUNTED_KINDS:
            if self._ending:
                return
            try:
                self.replay.append(message)
            except SendQueueFull as exc:
                self._slow_consumer(str(exc))
                return
        link = self.link
        if link is None:
            return  # reconnecting: the message waits in the replay log
        try:
            link.send_reliable(message)
        except ChannelNotOpen:
            return  # the link is going: the message waits in the replay log
        self.check_backlog()

    def send_backlog(self) -> int:
        """Bytes waiting to reach this client: the link's queue, or while reconnecting, the
        reliable messages it has not confirmed."""
        link = self.link
        return self.replay.bytes if link is None else link.send_backlog()

    def check_backlog(self) -> None:
        """Disconnect a client that stopped reading: its reliable queue must not grow forever."""
        link = self.link
        if (
            not self.slow
            and link is not None
            and link.send_backlog() > self.server.max_backlog_bytes
        ):
            self._slow_consumer(f"more than {self.server.max_backlog_bytes} bytes queued")

    def _slow_consumer(self, why: str) -> None:
        if self.slow:
            return
        self.slow = True
        logger.warning("%s: disconnecting a slow client (%s)", self.log_name, why)
        self.server.slow_disconnects += 1
        self.disconnect("slow_consumer", why)

    def send_data(
        self, sender_pid: int, topic: str, text: bool, payload: bytes, lossy: bool
    ) -> None:
        """Relay a data packet to this client on the matching channel."""
        try:
            self._send_data(sender_pid, topic, text, payload, lossy)
        except TopicTableFull as exc:
            # Bound on what this client must learn; each publisher's own budget is smaller.
            self.topics_dropped += 1
            if self.topics_dropped == 1:
                logger.warning("%s: %s; packets on new topics are dropped", self.log_name, exc)

    def _send_data(
        self, sender_pid: int, topic: str, text: bool, payload: bytes, lossy: bool
    ) -> None:
        if lossy:
            topic_id, inline = self.topics_out.lossy_ref(topic)
            on_delivery = None if inline is None else self.topics_out.confirm_when_acked(topic_id)
            try:
                self.connection.send_frame(
                    FrameType.DATA,
                    encode_lossy_down(sender_pid, topic_id, inline, text, payload),
                    on_delivery=on_delivery,
                    expires_at=self.connection.now() + LOSSY_DATA_MAX_AGE_S,
                )
            except SendQueueFull:
                self.lossy_dropped += 1  # this client cannot keep up: lossy data is expendable
                return
        else:
            topic_id, new = self.topics_out.bind(topic)
            if new:
                self.send_message(Kind.TOPIC, topic_id=topic_id, name=topic)
            self.send_message(
                Kind.DATA,
                pid=sender_pid,
                topic_id=topic_id,
                text=text,
                destinations=[],
                payload=payload,
            )
        self.trace_topic("topic_send", topic, len(payload), lossy)

    def send_frame(
        self, frame_type: int, payload: bytes, *, topic: str = "", **options: Any
    ) -> None:
        """Send a frame of a higher layer to this client (see Endpoint.send_frame).

        ``topic`` only labels the frame's bytes in the trace (a host's snapshots, say).
        """
        self.connection.send_frame(frame_type, payload, **options)
        if topic:
            self.trace_topic("topic_send", topic, len(payload), True)

    def trace_topic(self, kind: str, topic: str, nbytes: int, lossy: bool) -> None:
        """Record ``topic_send`` / ``topic_recv`` of ``nbytes`` on ``topic``, if tracing."""
        if self.trace is not None:
            fields = {"topic": topic, "bytes": nbytes, "lossy": lossy}
            self.trace.record(kind, self.connection.now(), fields, conn=self.identity)

    def send_extension(self, channel: int, body: bytes, sender_pid: int = 0) -> None:
        self.send_message(Kind.EXTENSION, channel=channel, pid=sender_pid, body=body)

    def disconnect(self, code: str = "", message: str = "") -> None:
        """End this participant's session and close its link (with an ERROR first if ``code``).

        The participant leaves the room at once; it cannot resume.
        """
        if self._ending:
            return
        if code:
            # the reason may quote what the peer sent: keep the message well under the
            # reliable channel's limit
            if len(message) > MAX_ERROR_MESSAGE_CHARS:
                message = message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
            self.send_message(Kind.ERROR, code=code, message=message)
        self._ending = True
        self.end_reason = code or "disconnected"
        link = self.link
        if link is not None:
            asyncio.get_running_loop().create_task(link.close())
        self.server._end_session(self)

    # the link

    @property
    def ending(self) -> bool:
        """True once the session is over (left, disconnected or expired)."""
        return self._ending

    def link_closed(self, link: PeerLink) -> None:
        """``link`` closed: the participant leaves if it meant to, else it is reconnecting."""
        if link is not self.link or self._ending:
            return
        self.link_lost(f"link {link.connection_state}")

    def link_lost(self, why: str) -> None:
        """The link is dead: hold the session for the grace period."""
        if self.reconnecting or self._ending:
            return
        logger.info("%s: link lost (%s); holding the session", self.identity, why)
        self.reconnecting = True
        self._let_link_go()
        for other in self.room.participants.values():
            if other is not self:
                other.send_message(Kind.PARTICIPANT_RECONNECTING, pid=self.pid)
        if self.room.host is not None:
            self.room.host.participant_reconnecting(self)
        self._grace_timer = asyncio.get_running_loop().call_later(
            self.server.grace_period, self._grace_expired
        )

    def _let_link_go(self) -> None:
        link, self.link = self.link, None
        self.connection.detach()
        for track in self.tracks.values():
            track.inbound = None  # the client opens it again on its next link
        for track in self.room.tracks():
            channel = track.outbound.pop(self.pid, None)
            if channel is not None:
                channel.close()
        if link is not None:
            link.on_reliable(None)
            link.on_refused(None)
            link.on_inbound_bytes(None)
            link.on_channel(None)
            asyncio.get_running_loop().create_task(link.close())

    def _grace_expired(self) -> None:
        self._grace_timer = None
        if self.reconnecting and not self._ending:
            logger.info(
                "%s: did not come back within %.0f s", self.identity, self.server.grace_period
            )
            self._ending = True
            self.end_reason = "session_expired"
            self.server._end_session(self)

    def resume(self, link: PeerLink, client_received: int, episode: int) -> None:
        """Attach ``link`` to this session: RESUMED, then what the client did not receive.

        ``episode`` counts the client's drops: it may try several links for one drop, and
        only the first to open here is taken; the others are refused as ``superseded``.
        """
        if self._ending:
            raise SessionRefused("session_expired", "the session ended")
        if episode <= self.episode:
            raise SessionRefused("superseded", "another link already resumed this session")
        try:
            replay = self.replay.replay_from(client_received)
        except ProtocolError as exc:
            raise SessionRefused("session_expired", f"cannot resume: {exc}") from None
        if not link.is_open:
            # it died while it was being set up (the client tries another): keep the session
            # as it is rather than attach it to a dead link
            raise SessionRefused("link_closed", "the new link closed before it could be used")
        was_reconnecting = self.reconnecting
        if self.link is not None:
            self._let_link_go()  # the client saw the drop before we did
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        self.reconnecting = False
        self.links_used += 1
        self.episode = episode
        self.link = link
        link.send_reliable(encode_message(Kind.RESUMED, received=self.received.take_ack()))
        for message in replay:
            link.send_reliable(message)
        self.connection.attach(link)
        self.listen(link)
        if self.can_subscribe:
            for track in self.room.tracks():
                self.room._subscribe(self, track)
        logger.info("%s: resumed on a new link (%d messages replayed)", self.identity, len(replay))
        if was_reconnecting:
            for other in self.room.participants.values():
                if other is not self:
                    other.send_message(Kind.PARTICIPANT_RECONNECTED, pid=self.pid)
            if self.room.host is not None:
                self.room.host.participant_reconnected(self)

    def check_link(self, now: float) -> None:
        """Called every few hundred ms: dead-link detection and owed ACKs."""
        if self.reconnecting or self._ending or self.link is None:
            return
        silent = now - self.connection.last_received
        if silent > self.server.dead_after:
            self.link_lost(f"no datagram for {silent:.1f} s")
            return
        unacked = self.connection.unacked_for(now)
        if unacked > self.server.unacked_after:
            # Its datagrams arrive but it acknowledges none of ours: the path works one way
            # only, or it does not read. Either way the link is no use (and resending into
            # it costs the server): let it go and hold the session, as for a dead link. A
            # client whose path failed one way resumes on a new link; one that does not read
            # loses its session after the grace period.
            self.server.one_way_links += 1
            logger.warning(
                "%s: acknowledged none of our datagrams for %.1f s", self.log_name, unacked
            )
            self.link_lost(f"acknowledged none of our datagrams for {unacked:.1f} s")
            return
        if self.received.ack_owed:
            self.send_message(Kind.ACK, received=self.received.take_ack())

    # receiving from this client

    def protocol_error(self, what: str | ProtocolError) -> None:
        if isinstance(what, TooManyTopics):
            if not self._ending:
                logger.warning("%s: %s; disconnecting", self.log_name, what)
                self.disconnect("too_many_topics", str(what))
            return
        what = str(what)[:300]
        self.protocol_errors += 1
        self.server.protocol_errors += 1
        logger.info("%s: protocol error %d: %s", self.log_name, self.protocol_errors, what)
        if self.protocol_errors == self.server.max_protocol_errors:
            logger.warning("%s: too many protocol errors; disconnecting", self.log_name)
            self.disconnect("protocol_error", f"too many malformed messages ({what})")

    def _admit_topic(self) -> str | None:
        if self.meter.new_topic(self.connection.now()):
            return None
        budgets = self.server.budgets
        return (
            f"peer bound new topic names faster than {budgets.new_topics_per_s:g} a second "
            f"(after the first {budgets.new_topics_burst})"
        )

    def _admit_datagram(self, now: float, size: int) -> bool:
        if self.meter.datagram(now, size):
            return True
        if self.meter.flooding(now) and not self._ending:
            self._flooding("datagrams")
        return False

    def _flooding(self, what: str) -> None:
        budgets = self.server.budgets
        logger.warning("%s: over its budget of %s; disconnecting (flooding)", self.log_name, what)
        self.server.flood_disconnects += 1
        self.disconnect(
            "flooding",
            f"too many {what} a second (budgets: {budgets.datagrams_per_s:g} datagrams and "
            f"{budgets.datagram_bytes_per_s:g} bytes, {budgets.messages_per_s:g} reliable "
            f"messages and {budgets.message_bytes_per_s:g} bytes, "
            f"{budgets.events_per_s:g} events, {budgets.rpc_per_s:g} RPC, "
            f"{budgets.relay_bytes_per_s:g} bytes relayed)",
        )

    def on_reliable(self, data: bytes | str) -> None:
        if self._ending:
            return
        if not self.meter.message(self.connection.now(), len(data)):
            self._flooding("reliable messages")
            return
        counted = not (data and isinstance(data, bytes) and data[0] in _UNCOUNTED_BYTES)
        if counted and self.received.count():
            self.send_message(Kind.ACK, received=self.received.take_ack())
        handlers = _P2P_CLIENT_MESSAGES if self.room.p2p else _CLIENT_MESSAGES
        try:
            dispatch_message_untrusted(data, handlers, self)
        except ProtocolError as exc:
            self.protocol_error(exc)

    def on_refused(self, why: str, size: int) -> None:
        """A channel of this client's link refused a message: its bytes count against the
        budget all the same, and it is a protocol error (our clients never send one)."""
        if self._ending:
            return
        if not self.meter.message(self.connection.now(), size):
            self._flooding("reliable messages")
            return
        self.protocol_error(why)

    def listen(self, link: PeerLink) -> None:
        """Take this client's messages, refusals, bytes and channels from ``link``."""
        link.on_reliable(self.on_reliable)
        link.on_refused(self.on_refused)
        self.meter.bytes_by_chunk = link.on_inbound_bytes(self.inbound_bytes)
        link.on_channel(self.on_channel)

    def inbound_bytes(self, size: int) -> bool:
        """``size`` bytes arrived on one of this client's reliable channels (an SCTP chunk,
        before the message is whole): charged to its budget at once, so a client sending
        big messages over budget is cut off before the server reassembles them."""
        if self._ending:
            return False
        if self.meter.message_bytes(self.connection.now(), size):
            return True
        self._flooding("bytes on its reliable channels")
        return False

    def _on_ack(self, body: Any) -> None:
        self.replay.confirm(body.received)

    def _on_leave(self, body: Any) -> None:
        self.disconnect()

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, FrameReceived):
            return
        try:
            if event.frame_type == FrameType.DATA:
                self._on_lossy_data(event.payload)
            elif event.frame_type == FrameType.EVENT:
                self.events.receive_frame(event.payload, self.connection.now())
                self._relay_events()
            elif self.room.host is not None:
                self.room.host.frame_received(self, event.frame_type, event.payload)
        except ProtocolError as exc:
            self.protocol_error(exc)

    def _relay_events(self) -> None:
        now = self.connection.now()
        for type_id, topic, destinations, body in self.events.receive_up(self.protocol_error):
            if not self.meter.event(now):
                self._flooding("game events")
                return
            if not self.can_publish:
                continue
            try:
                self.room.route_event(self, type_id, topic, body, destinations)
            except Exception:  # never lose the rest of the batch to one event's failure
                logger.exception("%s: relaying an event failed", self.log_name)

    def send_event_body(self, type_id: int, sender_pid: int, topic: str, body: bytes) -> bool:
        """Queue an encoded event for this client; False if its queue is full."""
        try:
            self.events.send_down(type_id, sender_pid, topic, body)
        except SendQueueFull:
            return False
        host = self.room.host
        paced = host is not None and host.sends_every_tick
        # with a host that sends every tick, the event waits for the tick's datagram
        # (release_events), even if a datagram from the client starts a flush before
        self.events.channel.hold_new = paced
        if not paced:
            self.connection.schedule_flush()
        return True

    def release_events(self) -> None:
        """Let the events held for the host's tick leave at the next flush (the host calls
        it every tick, before it sends; see ReliableChannel.hold_new)."""
        if self.events.channel.release_new():
            self.connection.schedule_flush()

    def _on_lossy_data(self, payload: bytes) -> None:
        topic_id, inline, text, destinations, data = decode_lossy_up_untrusted(payload)
        topic = self.topics_in.resolve(topic_id, inline)
        if not self.can_publish:
            return  # refused at publish time on the client; silently dropped here
        self.room.route(self, topic, text, data, destinations, lossy=True)

    def _on_topic(self, body: Any) -> None:
        self.topics_in.learn(body.topic_id, body.name)

    def _on_subscribe(self, body: Any) -> None:
        self.subscriptions = subscription_topics(body)

    def _on_data(self, body: Any) -> None:
        topic = self.topics_in.resolve(body.topic_id)
        if not self.can_publish:
            self.send_message(
                Kind.ERROR, code="permission_denied", message="token lacks can_publish_data"
            )
            return
        self.room.route(self, topic, body.text, body.payload, body.destinations, lossy=False)

    def _on_publish_track(self, body: Any) -> None:
        self.room.publish_track(self, body.request_id, body.name, body.options)

    def _on_unpublish_track(self, body: Any) -> None:
        track = self.tracks.get(body.sid)
        if track is None:
            raise ProtocolError(f"unpublish of unknown track {body.sid}")
        self.room.unpublish_track(track)

    def _on_extension(self, body: Any) -> None:
        if body.channel == ExtensionChannel.RPC and not self.meter.rpc(self.connection.now()):
            self._flooding("RPC messages")
            return
        router = self.server.extension_routers.get(body.channel)
        if router is not None:
            router(self.room, self, bytes(body.body))
        elif self.room.host is not None:
            self.room.host.extension_received(self, body.channel, bytes(body.body))

    def on_channel(self, channel: DataChannel) -> None:
        """The client opened a channel: it must be the channel of a track it published."""
        prefix, _, sid_text = channel.label.partition("/")
        track = self.tracks.get(int(sid_text)) if sid_text.isdigit() else None
        if prefix != "track" or track is None or track.inbound is not None or self.room.p2p:
            channel.close()
            self.protocol_error(f"unexpected channel {channel.label!r}")
            return
        track.inbound = channel
        channel.set_handler(track.relay)


_CLIENT_MESSAGES = {
    Kind.TOPIC: ServerParticipant._on_topic,
    Kind.SUBSCRIBE: ServerParticipant._on_subscribe,
    Kind.DATA: ServerParticipant._on_data,
    Kind.PUBLISH_TRACK: ServerParticipant._on_publish_track,
    Kind.TRACK_UNPUBLISHED: ServerParticipant._on_unpublish_track,
    Kind.EXTENSION: ServerParticipant._on_extension,
    Kind.ACK: ServerParticipant._on_ack,
    Kind.LEAVE: ServerParticipant._on_leave,
}

#: Peer-to-peer rooms: the server brokers offers and answers and relays no data.
_P2P_CLIENT_MESSAGES = {
    **_CLIENT_MESSAGES,
    Kind.TOPIC: mesh.refuse_data,
    Kind.DATA: mesh.refuse_data,
    Kind.EXTENSION: mesh.refuse_relayed_extension,
    Kind.PEER_OFFER: mesh.relay_offer,
    Kind.PEER_ANSWER: mesh.relay_answer,
}


class ServerRoom:
    """One room: its participants, their tracks, and an optional game host.

    ``p2p``: a peer-to-peer room, where participants connect to each other directly and
    the server only admits them and brokers their offers and answers (see
    :mod:`netcode.rooms.mesh`).
    """

    def __init__(self, name: str, server: RoomServer, *, p2p: bool = False) -> None:
        self.name = name
        self.server = server
        self.participants: dict[int, ServerParticipant] = {}
        self.host: RoomHost | None = None
        #: peer-to-peer: the server relays offers and answers, never data
        self.p2p = p2p
        #: peer-to-peer: the pid of the room's listen host (0: none)
        self.host_pid = 0
        #: peer-to-peer: PEER_OFFER and PEER_ANSWER messages forwarded
        self.signals_relayed = 0
        self._pids = itertools.count(1)
        self._sids = itertools.count(1)

    def by_identity(self, identity: str) -> ServerParticipant | None:
        for participant in self.participants.values():
            if participant.identity == identity:
                return participant
        return None

    def tracks(self) -> list[ServerTrack]:
        return [t for p in self.participants.values() for t in p.tracks.values()]

    def _next_id(self, counter: itertools.count[int], used: Iterable[int]) -> int:
        taken = set(used)
        for _ in range(0x10000):
            candidate = next(counter) & 0xFFFF
            if candidate and candidate not in taken:
                return candidate
        raise RuntimeError("no free id")

    def join(self, claims: Claims, link: PeerLink) -> ServerParticipant:
        previous = self.by_identity(claims.identity)
        if previous is not None:
            # As in LiveKit, a second connection with the same identity replaces the first.
            previous.disconnect("duplicate_identity", "the same identity connected again")
        if len(self.participants) >= self.server.max_participants:
            raise MissingGrant(f"room {self.name!r} is full", grant="room_join")
        if self.p2p:
            mesh.check_join(self, claims)
        pid = self._next_id(self._pids, self.participants)
        participant = ServerParticipant(self, pid, claims, link, self.server)
        participant.send_message(
            Kind.JOINED,
            pid=pid,
            room=self.name,
            participants=[p.wire() for p in self.participants.values()],
            tracks=[t.wire() for t in self.tracks()] if participant.can_subscribe else [],
            session=participant.session_id,
            resume_secret=participant.resume_secret,
            grace_ms=round(self.server.grace_period * 1000),
            dead_after_ms=round(self.server.dead_after * 1000),
            message_bytes_per_s=min(
                round(participant.meter.budgets.message_bytes_per_s), 2**32 - 1
            ),
        )
        for other in self.participants.values():
            other.send_message(Kind.PARTICIPANT_JOINED, **participant.wire())
        self.participants[pid] = participant
        if self.p2p:
            mesh.announce_join(self, participant)
        if participant.can_subscribe:
            for track in self.tracks():
                self._subscribe(participant, track)
        participant.listen(link)
        logger.info("%s joined room %r as pid %d", claims.identity, self.name, pid)
        if self.host is not None:
            self.host.participant_joined(participant)
        return participant

    def leave(self, participant: ServerParticipant) -> None:
        if self.participants.get(participant.pid) is not participant:
            return
        del self.participants[participant.pid]
        participant.left.set()
        if participant.trace is not None:
            now = participant.connection.now()
            participant.trace.record("close", now, conn=participant.identity)
        self.server.rpc.participant_left(participant)
        self.server.streams.participant_left(participant)
        participant.connection.close()
        for track in list(participant.tracks.values()):
            self.unpublish_track(track)
        for track in self.tracks():
            channel = track.outbound.pop(participant.pid, None)
            if channel is not None:
                channel.close()
        if participant._grace_timer is not None:
            participant._grace_timer.cancel()
            participant._grace_timer = None
        for other in self.participants.values():
            other.send_message(Kind.PARTICIPANT_LEFT, pid=participant.pid)
        logger.info("%s left room %r", participant.identity, self.name)
        if self.p2p:
            mesh.peer_left(self, participant)
        if self.host is not None:
            self.host.participant_left(participant)

    def route(
        self,
        sender: ServerParticipant,
        topic: str,
        text: bool,
        payload: bytes,
        destinations: Iterable[int],
        *,
        lossy: bool,
    ) -> None:
        """Relay a data packet from ``sender`` to its destinations (default: everyone else)."""
        sender.trace_topic("topic_recv", topic, len(payload), lossy)
        wanted = set(destinations)
        targets = [
            target
            for target in self.participants.values()
            if target is not sender
            and (not wanted or target.pid in wanted)
            and target.subscribes_to(topic)
        ]
        if targets and not sender.meter.relay(sender.connection.now(), len(payload) * len(targets)):
            if lossy:
                sender.lossy_throttled += 1
            else:
                sender._flooding("bytes of data relayed")
            return
        for target in targets:
            try:
                target.send_data(sender.pid, topic, text, payload, lossy)
            except Exception:  # one target's trouble is never the others'
                logger.exception("%s: relaying to %s failed", sender.log_name, target.log_name)
                continue
            sender.packets_relayed += 1

    def route_event(
        self,
        sender: ServerParticipant,
        type_id: int,
        topic: str,
        body: bytes,
        destinations: Iterable[int] = (),
    ) -> None:
        """Relay a game event from ``sender`` to its destinations (default: everyone else)."""
        codec = sender.events.registry.by_id[type_id]
        if self.host is not None:
            try:
                event = codec.decode_untrusted(body)
            except ProtocolError as exc:
                sender.protocol_error(str(exc))
                return
            self.host.event_received(sender, event, topic)
        wanted = set(destinations)
        for target in list(self.participants.values()):
            if target is sender or (wanted and target.pid not in wanted):
                continue
            if not target.subscribes_to(topic):
                continue
            try:
                queued = target.send_event_body(type_id, sender.pid, topic, body)
            except Exception:  # one target's trouble is never the others'
                logger.exception(
                    "%s: relaying an event to %s failed", sender.log_name, target.log_name
                )
                continue
            if not queued:
                # The queue is the target's: it belongs to the peer that does not drain it
                # (a sender's own flood is bounded by its own queue, on the way in).
                target._slow_consumer("its game-event queue is full")

    def _wanted(
        self, pids: int | Iterable[int], identities: str | Iterable[str]
    ) -> set[int] | None:
        """The pids named (empty: everyone); None if only identities not here were named."""
        return wanted_pids(self.participants.values(), pids, identities)

    def send_event(
        self,
        event: Any,
        *,
        topic: str = "",
        destination_pids: int | Iterable[int] = (),
        destination_identities: str | Iterable[str] = (),
    ) -> None:
        """Send a game event from the server itself (sender pid 0), reliably and in order.

        Destinations (default everyone): pids, identities, or both; a single pid or a single
        identity (str) may be given alone.
        """
        wanted = self._wanted(destination_pids, destination_identities)
        if wanted is None:
            return
        for target in list(self.participants.values()):
            if (not wanted or target.pid in wanted) and target.subscribes_to(topic):
                codec = target.events.registry.of(event)
                if not target.send_event_body(codec.type_id, 0, topic, codec.encode(event)):
                    logger.warning("%s: event queue full; event dropped", target.identity)

    def send_data(
        self,
        payload: bytes | str,
        *,
        reliable: bool = True,
        topic: str = "",
        destination_pids: int | Iterable[int] = (),
        destination_identities: str | Iterable[str] = (),
    ) -> None:
        """Send a data packet from the server itself (sender pid 0), to everyone or to the
        pids or identities named (a single pid or identity may be given alone)."""
        text = isinstance(payload, str)
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        wanted = self._wanted(destination_pids, destination_identities)
        if wanted is None:
            return
        for target in list(self.participants.values()):
            if (not wanted or target.pid in wanted) and target.subscribes_to(topic):
                try:
                    target.send_data(0, topic, text, data, lossy=not reliable)
                except Exception:  # one target's trouble is never the others'
                    logger.exception("sending data to %s failed", target.log_name)

    def publish_track(
        self, owner: ServerParticipant, request_id: int, name: str, options: Any
    ) -> None:
        def refuse(reason: str) -> None:
            owner.send_message(Kind.TRACK_REFUSED, request_id=request_id, reason=reason)

        if not owner.can_publish:
            return refuse("permission denied: token lacks can_publish_data")
        if not name or len(name) > MAX_TRACK_NAME_CHARS:
            return refuse(f"track name must be 1 to {MAX_TRACK_NAME_CHARS} characters")
        if any(t.name == name for t in owner.tracks.values()):
            return refuse(f"a track named {name!r} is already published")
        if len(owner.tracks) >= MAX_TRACKS_PER_PARTICIPANT:
            return refuse(f"at most {MAX_TRACKS_PER_PARTICIPANT} tracks per participant")
        if options.has_max_packet_life_time and options.has_max_retransmits:
            return refuse("max_packet_life_time and max_retransmits are mutually exclusive")
        sid = self._next_id(self._sids, (t.sid for t in self.tracks()))
        track = ServerTrack(
            owner,
            sid,
            name,
            options.ordered,
            options.max_packet_life_time,
            options.max_retransmits,
        )
        owner.tracks[sid] = track
        owner.send_message(Kind.TRACK_ACCEPTED, request_id=request_id, sid=sid)
        for other in self.participants.values():
            if other is not owner and other.can_subscribe:
                other.send_message(Kind.TRACK_PUBLISHED, **track.wire())
                self._subscribe(other, track)

    def _subscribe(self, subscriber: ServerParticipant, track: ServerTrack) -> None:
        if subscriber is track.owner or subscriber.link is None or self.p2p:
            return  # (in a P2P room the publisher opens the channels itself)
        try:
            channel = subscriber.link.create_channel(
                track.label,
                ordered=track.ordered,
                max_packet_life_time=track.max_packet_life_time,
                max_retransmits=track.max_retransmits,
            )
        except ChannelNotOpen:
            return
        track.outbound[subscriber.pid] = channel

    def unpublish_track(self, track: ServerTrack) -> None:
        owner = track.owner
        if owner.tracks.pop(track.sid, None) is None:
            return
        if track.inbound is not None:
            track.inbound.close()
        for channel in track.outbound.values():
            channel.close()
        track.outbound.clear()
        for other in self.participants.values():
            if other is not owner and other.can_subscribe:
                other.send_message(Kind.TRACK_UNPUBLISHED, pid=owner.pid, sid=track.sid)

    def attach_host(self, host: RoomHost) -> None:
        """Attach the room's game host; it is told of participants already present."""
        self.host = host
        for participant in list(self.participants.values()):
            host.participant_joined(participant)


def _route_fallback_event(room: ServerRoom, sender: ServerParticipant, body: bytes) -> None:
    """An event too large for a datagram, sent over the reliable channel in its place."""
    sender.events.receive_fallback(body)
    sender._relay_events()


class RoomServer:
    """Hosts rooms over WebRTC; clients join with access tokens.

    ::

        server = RoomServer(api_key, api_secret)
        await server.start("127.0.0.1", 7880)
        ...
        await server.stop()

    ``trace`` (a path, opened at start and closed at stop, or a
    :class:`~netcode.trace.TraceWriter`) records every connection's datagrams, acks, losses,
    RTT and data per topic; a game host adds its ``tick`` records to :attr:`trace`.
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        endpoint_config: EndpointConfig | None = None,
        max_protocol_errors: int = 20,
        max_participants: int = DEFAULT_MAX_PARTICIPANTS,
        max_backlog_bytes: int = 8 * 1024 * 1024,
        max_replay_bytes: int = DEFAULT_MAX_REPLAY_BYTES,
        max_topics_per_participant: int = DEFAULT_MAX_TOPICS_PER_PARTICIPANT,
        budgets: PeerBudgets | None = None,
        signaling_limits: SignalingLimits | None = None,
        dead_after: float = DEFAULT_DEAD_AFTER_S,
        grace_period: float = DEFAULT_GRACE_PERIOD_S,
        unacked_after: float = DEFAULT_UNACKED_AFTER_S,
        impairment: Impairment | Callable[[Claims], Impairment | ImpairedPath | None] | None = None,
        trace: TraceTarget = None,
        ssl: ssl_module.SSLContext | None = None,
        ice_servers: Iterable[IceServerLike] | None = None,
        cors_origins: Iterable[str] | None = None,
        room_types: Mapping[str, str] | None = None,
    ) -> None:
        """``ssl``: serve signaling over HTTPS with this context (its certificate chain
        loaded; :attr:`url` is then ``https://``); plain HTTP is for 127.0.0.1 and
        development. ``ice_servers``: STUN/TURN servers for the server's end of every peer
        connection (:class:`~netcode.IceServer`, or URLs such as ``"stun:host:3478"``).
        ``cors_origins``: web origins whose pages may call the signaling endpoint
        (``https://game.example.org``, or ``"*"``). See docs/DEPLOY.md.

        ``dead_after``: seconds without a datagram before a client's link is declared
        dead; ``grace_period``: seconds a dropped client's session is held for it to resume;
        ``unacked_after``: seconds a client that keeps sending may leave all our datagrams
        unacknowledged (the path works one way, or it does not read) before its link is let
        go as a dead one (the session is held for ``grace_period``);
        ``max_replay_bytes``: reliable bytes a client may leave unconfirmed (then it is
        disconnected as a slow consumer); ``impairment`` impairs every client's UDP
        datagrams at the server, both ways (an Impairment for all, or a function of the
        client's claims; see :mod:`netcode.transport.impair`).

        ``room_types``: room name -> ``"p2p"`` (peer to peer: participants connect to each
        other directly, the server only admits them and brokers their offers and answers;
        see docs/ROOM-TYPES.md) or ``"group"`` (the default: the server relays)."""
        room_types = dict(room_types or {})
        for room_name, kind in room_types.items():
            if kind not in mesh.ROOM_TYPES:
                raise ValueError(f"room {room_name!r}: type must be 'p2p' or 'group', not {kind!r}")
        #: the type of each room named here (others are group rooms)
        self.room_types = room_types
        if not dead_after > 0:
            raise ValueError(f"dead_after must be positive seconds, got {dead_after!r}")
        if not grace_period >= 0:
            raise ValueError(f"grace_period must be 0 or more seconds, got {grace_period!r}")
        if not unacked_after > dead_after:
            raise ValueError(
                f"unacked_after must be more than dead_after ({dead_after} s), "
                f"got {unacked_after!r}"
            )
        self.verifier = TokenVerifier(api_key, api_secret)
        #: this server process's id: session ids start with it, so a restarted server
        #: tells a resuming client "server_restarted" rather than "session_expired"
        self.instance_id = secrets.token_hex(4)
        self.dead_after = dead_after
        self.grace_period = grace_period
        self.unacked_after = unacked_after
        self.max_replay_bytes = max_replay_bytes
        #: topic names one participant may publish on (more: disconnected, too_many_topics)
        self.max_topics_per_participant = max_topics_per_participant
        #: what each participant may send a second (see netcode.rooms.limits)
        self.budgets = budgets or PeerBudgets()
        #: participants disconnected for going over their budgets
        self.flood_disconnects = 0
        #: sessions by id, while they live (connected or reconnecting)
        self.sessions: dict[str, ServerParticipant] = {}
        self._watch_task: asyncio.Task[None] | None = None
        self._trace = TraceSink(trace)
        self.endpoint_config = endpoint_config
        self.max_protocol_errors = max_protocol_errors
        self.max_participants = max_participants
        #: a client with more than this queued towards it (it stopped reading) is dropped
        self.max_backlog_bytes = max_backlog_bytes
        self.slow_disconnects = 0
        #: links let go because the client acknowledged nothing for ``unacked_after``
        self.one_way_links = 0
        self.rooms: dict[str, ServerRoom] = {}
        #: EXTENSION channel -> router(room, sender, body) for layers the server itself runs
        #: (RPC, streams); a router raises ProtocolError for a malformed body. Channels with
        #: no router go to the room's host.
        self.extension_routers: dict[int, ExtensionRouter] = {
            ExtensionChannel.EVENTS: _route_fallback_event,
        }
        self.extension_routers[ExtensionChannel.RPC] = self.rpc = RpcRouter(ExtensionChannel.RPC)
        self.extension_routers[ExtensionChannel.STREAMS] = self.streams = StreamRouter(
            ExtensionChannel.STREAMS
        )
        #: protocol errors counted against all participants since start
        self.protocol_errors = 0
        self._signaling = SignalingServer(
            self._authorize,
            self._on_peer,
            answer_info=self._answer_info,
            resume=self._authorize_resume,
            impairment=impairment,
            ssl=ssl,
            ice_servers=ice_servers,
            cors_origins=cors_origins,
            limits=signaling_limits,
        )
        # the browser client (netcode.js), for pages of this server or of the CORS origins
        self.add_page(
            NETCODE_JS_PATH,
            HttpReply(asset("netcode.js"), "text/javascript; charset=utf-8"),
            cors=True,
        )

    @property
    def url(self) -> str:
        """Base URL clients pass to ``Room.connect`` (after start)."""
        return self._signaling.url

    @property
    def signaling(self) -> SignalingServer:
        """The HTTP(S) signaling server clients connect through (its ``forward_key`` trusts
        the routers of a worker pool or cluster: see :mod:`netcode.cluster`)."""
        return self._signaling

    def add_page(self, path: str, page: HttpReply | PageHandler, *, cors: bool = False) -> None:
        """Serve GET ``path`` beside signaling (before :meth:`start`): a fixed
        :class:`~netcode.transport.signaling.HttpReply` or ``page(query, remote_address)``
        returning one. ``cors``: the ``cors_origins`` may fetch it too. The browser client
        is served so, at ``/netcode.js``."""
        self._signaling.add_page(path, page, cors=cors)

    @property
    def trace(self) -> TraceWriter | None:
        """The trace being recorded (None if not tracing): ``trace.record("tick", now, {...})``."""
        return self._trace.writer

    async def start(self, host: str = "127.0.0.1", port: int = 7880) -> None:
        """Listen for clients on ``host``:``port`` (port 0 picks a free one)."""
        self._trace.open()
        await self._signaling.start(host, port)
        self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        """Disconnect everyone (``server_shutdown``) and stop listening."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        for room in list(self.rooms.values()):
            for participant in list(room.participants.values()):
                participant.disconnect("server_shutdown", "the server is shutting down")
            if room.host is not None:
                room.host.close()
        await asyncio.sleep(0.05)  # let the ERRORs leave before the links close
        await self._signaling.stop()
        self.rooms.clear()
        self._trace.close()

    async def __aenter__(self) -> RoomServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def room(self, name: str, *, p2p: bool | None = None) -> ServerRoom:
        """The room called ``name``, created if needed (to attach a host before anyone joins).

        ``p2p``: make it a peer-to-peer room (True) or a group room (False); None: as
        ``room_types`` says (group by default). Raises ValueError to change the type of a
        room that has participants.
        """
        room = self.rooms.get(name)
        if p2p is None:
            p2p = self.room_types.get(name) == "p2p" if room is None else room.p2p
        if room is None:
            room = self.rooms[name] = ServerRoom(name, self, p2p=p2p)
        elif room.p2p != p2p:
            if room.participants:
                raise ValueError(f"room {name!r} has participants: its type cannot change")
            room.p2p = p2p
        return room

    def room_type(self, name: str) -> str:
        """``"p2p"`` or ``"group"``: the type of room ``name`` (existing or to be made)."""
        room = self.rooms.get(name)
        if room is not None:
            return "p2p" if room.p2p else "group"
        return self.room_types.get(name, "group")

    async def _authorize(self, token: str, requested_room: str) -> Claims:
        claims = self.verifier.verify(token, room=requested_room or None)
        room = self.rooms.get(claims.grants.room)
        if room is not None and len(room.participants) >= self.max_participants:
            raise MissingGrant(f"room {claims.grants.room!r} is full", grant="room_join")
        if room is not None and room.p2p:
            mesh.check_join(room, claims)
        return claims

    def _answer_info(self, claims: Claims) -> dict[str, Any]:
        return {
            "room": claims.grants.room,
            "identity": claims.identity,
            "name": claims.name,
            "metadata": claims.metadata,
            "room_type": self.room_type(claims.grants.room),
        }

    async def _authorize_resume(self, fields: Any) -> Claims:
        participant = self._session(fields)
        return participant.claims

    def _session(self, fields: Any) -> ServerParticipant:
        session_id = str(fields["session"])
        participant = self.sessions.get(session_id)
        if participant is None or participant.ending:
            if session_id.partition(".")[0] != self.instance_id:
                raise SessionRefused(
                    "server_restarted", "the server restarted; the session is gone: join again"
                )
            raise SessionRefused("session_expired", "no such session (it expired or ended)")
        offered = str(fields["secret"]).encode("utf-8", "replace")  # any text: compare bytes
        if not hmac.compare_digest(offered, participant.resume_secret.encode()):
            raise SessionRefused("session_expired", "wrong resume secret")
        return participant

    async def _on_peer(self, link: PeerLink, claims: Claims) -> None:
        if link.resume_request is not None:
            try:
                participant = self._session(link.resume_request)
                request = link.resume_request
                participant.resume(link, int(request["received"]), int(request["episode"]))
            except SessionRefused as exc:
                with contextlib.suppress(ChannelNotOpen):
                    link.send_reliable(encode_message(Kind.ERROR, code=exc.code, message=str(exc)))
                    await asyncio.sleep(0.05)
                await link.close()
                return
        else:
            room = self.room(claims.grants.room)
            try:
                participant = room.join(claims, link)
            except TokenError as exc:
                link.send_reliable(encode_message(Kind.ERROR, code=exc.code, message=str(exc)))
                await link.close()
                return
            self.sessions[participant.session_id] = participant
        try:
            await link.wait_closed()
        finally:
            participant.link_closed(link)

    def _end_session(self, participant: ServerParticipant) -> None:
        """A session is over: the participant leaves its room."""
        self.sessions.pop(participant.session_id, None)
        room = participant.room
        room.leave(participant)
        if not room.participants and room.host is None and self.rooms.get(room.name) is room:
            self.rooms.pop(room.name, None)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            now = loop.time()
            for participant in list(self.sessions.values()):
                try:
                    participant.check_link(now)
                except Exception:
                    logger.exception("%s: link check failed", participant.identity)
