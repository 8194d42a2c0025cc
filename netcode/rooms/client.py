"""The client side of rooms: Room, participants, data packets and data tracks.

The API follows LiveKit's Python SDK (``Room``, ``LocalParticipant.publish_data``,
``@room.on("data_received")``) and Twilio's DataTrack guide (``LocalDataTrack`` with
``ordered`` / ``max_packet_life_time`` / ``max_retransmits``, ``RemoteDataTrack`` emitting
``"message"``)::

    room = Room()

    @room.on("data_received")
    def on_data(packet: DataPacket) -> None:
        print(packet.participant.identity, packet.topic, packet.data)

    await room.connect(url, token)
    await room.local_participant.publish_data("hello", reliable=True, topic="chat")

A room outlives its links. With no datagram from the server for ``dead_after`` seconds (3 by
default; the server PINGs every second) or when the peer connection fails, the room emits
``reconnecting`` and resumes its session on a new peer connection on its own, with backoff,
using the resume credential the server gave at join (the token may have expired meanwhile).
Reliable data, game events, RPC and streams sent by either side meanwhile arrive exactly once
and in order; ``reconnected`` follows. If the session cannot be resumed, ``disconnected``
says why: ``server_unreachable``, ``session_expired``, ``server_restarted``, ``node_lost``
(the worker or cluster node that hosted the session is gone: join again),
``server_shutdown``, ``duplicate_identity``, ``slow_consumer``, ``protocol_error``...
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import os
import random
import ssl as ssl_module
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from netcode.auth import token_error_from_code
from netcode.core import EndpointConfig, Event, FrameReceived, ReceiveCounter, ReplayLog
from netcode.core.stats import ConnectionStats
from netcode.errors import NetcodeError, ProtocolError
from netcode.rooms.emitter import EventEmitter
from netcode.rooms.events import EventLink, encode_fallback
from netcode.rooms.limits import PeerBudgets
from netcode.rooms.protocol import (
    LOSSY_DATA_MAX_AGE_S,
    MAX_TRACK_NAME_CHARS,
    UNCOUNTED_KINDS,
    ExtensionChannel,
    Kind,
    decode_lossy_down_untrusted,
    decode_message_untrusted,
    dispatch_message_untrusted,
    encode_lossy_up,
    encode_message,
    identity_list,
    track_options,
)
from netcode.rooms.rpc import RpcClient, RpcHandler
from netcode.rooms.streams import (
    ByteStreamHandler,
    StreamInfo,
    StreamProgress,
    StreamsClient,
    TextStreamHandler,
)
from netcode.rooms.topics import IncomingTopics, OutgoingTopics, check_topic
from netcode.trace import TraceSink, TraceTarget, TraceWriter
from netcode.transport.connection import DatagramConnection
from netcode.transport.ice import IceServerLike, to_rtc_ice_servers
from netcode.transport.impair import ImpairedPath, Impairment
from netcode.transport.webrtc import (
    ChannelNotOpen,
    ConnectError,
    DataChannel,
    PeerLink,
    SignalingClient,
    SignalingError,
    client_ssl_context,
    connect_peer,
)
from netcode.wire import FrameType

if TYPE_CHECKING:
    from netcode.rooms.listen import ListenRoom
    from netcode.rooms.p2p import Mesh
    from netcode.rooms.server import RoomHost

__all__ = [
    "MAX_LOSSY_PAYLOAD_BYTES",
    "MAX_RELIABLE_PAYLOAD_BYTES",
    "ConnectionState",
    "DataPacket",
    "DataPacketKind",
    "DisconnectedError",
    "LocalDataTrack",
    "LocalParticipant",
    "RemoteDataTrack",
    "RemoteParticipant",
    "Room",
    "TrackRefused",
]

logger = logging.getLogger(__name__)

#: Largest reliable ``publish_data`` payload: LiveKit's 15 KiB (the rest of the 16 KiB
#: message is room for our headers).
MAX_RELIABLE_PAYLOAD_BYTES = 15 * 1024

#: Largest lossy ``publish_data`` payload. Up to about 1140 bytes a lossy packet is one
#: datagram; above, the core splits it into fragments (at most 8), lost whole if any one is
#: lost (as LiveKit warns). 8 KiB leaves room for the topic name and destinations.
MAX_LOSSY_PAYLOAD_BYTES = 8 * 1024
assert EndpointConfig().max_message_bytes >= MAX_LOSSY_PAYLOAD_BYTES + 2 + 1 + 256 + 1 + 2 * 255


class DataPacketKind(enum.Enum):
    RELIABLE = "reliable"
    LOSSY = "lossy"


class ConnectionState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  #: the link dropped; the session is being resumed


#: Reasons a resume attempt can be refused for good (the server said so).
_FINAL_RESUME_REFUSALS = frozenset({"session_expired", "server_restarted", "node_lost"})
#: A new resume attempt starts this often while earlier ones are still connecting (seconds),
#: and at most this many are in flight; attempts that fail at once back off up to the cap.
_ATTEMPT_SPACING_S = 0.5
_MAX_ATTEMPT_SPACING_S = 2.0
_MAX_ATTEMPTS_IN_FLIGHT = 4
#: How often the room checks its link and sends owed ACKs, seconds.
_WATCH_INTERVAL_S = 0.25
#: Longest ``disconnect`` waits for the server to act on LEAVE, seconds.
_LEAVE_TIMEOUT_S = 1.0
_UNCOUNTED_BYTES = frozenset(int(k) for k in UNCOUNTED_KINDS)


class DisconnectedError(NetcodeError):
    """The room is not connected."""


class TrackRefused(NetcodeError):
    """The server refused to publish a data track (the message says why)."""


@attrs.define(eq=False)
class RemoteParticipant:
    """Another participant of the room."""

    sid: str
    identity: str
    name: str
    metadata: str
    pid: int = attrs.field(repr=False)
    #: the participant's published data tracks, by name
    tracks: dict[str, RemoteDataTrack] = attrs.field(factory=dict, repr=False)
    #: True while the participant's link is down and the server holds its session
    reconnecting: bool = attrs.field(default=False, repr=False)


@attrs.frozen
class DataPacket:
    """A data packet received in a room."""

    data: bytes | str  #: the payload, as the sender gave it (str stays str)
    participant: RemoteParticipant | None  #: the sender (None: the server itself)
    topic: str  #: the sender's topic ("" if none)
    kind: DataPacketKind  #: RELIABLE or LOSSY


class _TrackSender(Protocol):
    """Sends a track's messages to its subscribers (a P2P room's per-peer channels)."""

    def send(self, data: bytes | str) -> bool: ...

    def close(self) -> None: ...


class LocalDataTrack:
    """A data track this client can publish (Twilio's DataTrack, in a LiveKit room).

    ``ordered=False`` lets messages overtake each other; ``max_packet_life_time`` (ms) or
    ``max_retransmits`` (at most one of them, integers in 0..65535) make delivery partial.
    """

    def __init__(
        self,
        name: str,
        *,
        ordered: bool = True,
        max_packet_life_time: int | None = None,
        max_retransmits: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name or len(name) > MAX_TRACK_NAME_CHARS:
            raise ValueError(f"track name must be 1 to {MAX_TRACK_NAME_CHARS} characters")
        if max_packet_life_time is not None and max_retransmits is not None:
            raise ValueError("max_packet_life_time and max_retransmits are mutually exclusive")
        for label, value in (
            ("max_packet_life_time", max_packet_life_time),
            ("max_retransmits", max_retransmits),
        ):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535
            ):
                raise ValueError(f"{label} must be an integer in 0..65535, not {value!r}")
        self.name = name
        self.ordered = ordered
        self.max_packet_life_time = max_packet_life_time
        self.max_retransmits = max_retransmits
        self.sid: int | None = None
        self._channel: DataChannel | None = None
        self._fanout: _TrackSender | None = None  # P2P rooms: a channel per peer

    @property
    def reliable(self) -> bool:
        return self.max_packet_life_time is None and self.max_retransmits is None

    @property
    def is_published(self) -> bool:
        return self._channel is not None or self._fanout is not None

    def send(self, data: bytes | str) -> bool:
        """Send a message to every subscriber (str arrives as str, bytes as bytes).

        Returns False if an unreliable message was dropped because the link is backed up.
        Raises ValueError over the size limit and DisconnectedError if not published.
        """
        if self._fanout is not None:
            return self._fanout.send(data)
        if self._channel is None:
            raise DisconnectedError(f"track {self.name!r} is not published")
        try:
            return self._channel.send(data)
        except ChannelNotOpen as exc:
            raise DisconnectedError(str(exc)) from None

    def __repr__(self) -> str:
        return f"LocalDataTrack({self.name!r}, sid={self.sid})"


class RemoteDataTrack(EventEmitter):
    """A data track another participant published; emits ``"message"`` (str or bytes)."""

    EVENTS = frozenset({"message"})

    def __init__(
        self,
        sid: int,
        name: str,
        participant: RemoteParticipant,
        ordered: bool,
        max_packet_life_time: int | None,
        max_retransmits: int | None,
    ) -> None:
        super().__init__()
        self.sid = sid
        self.name = name
        self.participant = participant
        self.ordered = ordered
        self.max_packet_life_time = max_packet_life_time
        self.max_retransmits = max_retransmits
        self.channel: DataChannel | None = None

    @property
    def is_subscribed(self) -> bool:
        return self.channel is not None

    def __repr__(self) -> str:
        return f"RemoteDataTrack({self.name!r}, from {self.participant.identity!r})"


class LocalParticipant:
    """This client, in the room."""

    def __init__(self, room: Room) -> None:
        self._room = room
        self.sid = ""
        self.identity = ""
        self.name = ""
        self.metadata = ""
        self.pid = 0
        #: published tracks, by name
        self.tracks: dict[str, LocalDataTrack] = {}
        self._track_requests = itertools.count(1)
        self._pending_tracks: dict[int, asyncio.Future[int]] = {}

    async def publish_data(
        self,
        payload: bytes | str,
        *,
        reliable: bool = True,
        destination_identities: str | Iterable[str] = (),
        topic: str = "",
    ) -> None:
        """Send a data packet to the room, or to the participants named.

        ``destination_identities``: a list of identities (or one identity as a str);
        default: everyone. Named identities not in the room receive nothing.

        Reliable packets (at most 15 KiB) arrive complete and in order; lossy ones (one
        datagram, or up to MAX_LOSSY_PAYLOAD_BYTES in fragments lost whole if one is lost)
        arrive fast or not at all. str arrives as str, bytes as bytes.
        """
        self._room.publish_data(payload, reliable, destination_identities, check_topic(topic))

    async def publish_track(self, track: LocalDataTrack, *, timeout: float = 10.0) -> None:
        """Publish a data track; raises TrackRefused if the server refuses it."""
        if track.name in self.tracks:
            raise TrackRefused(f"a track named {track.name!r} is already published")
        room = self._room
        if room._require_link() is None:
            raise DisconnectedError("the room is reconnecting: publish the track once it is back")
        request_id = next(self._track_requests) & 0xFFFF
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending_tracks[request_id] = future
        room._send(
            Kind.PUBLISH_TRACK,
            request_id=request_id,
            name=track.name,
            options=track_options(track.ordered, track.max_packet_life_time, track.max_retransmits),
        )
        try:
            async with asyncio.timeout(timeout):
                sid = await future
        finally:
            self._pending_tracks.pop(request_id, None)
        if room.mesh is not None:
            # P2P: a channel to each subscribing peer, straight from here
            track.sid = sid
            fanout = room.mesh.track_fanout(track, sid)
            track._fanout = fanout
            self.tracks[track.name] = track
            await fanout.wait_open(timeout)
            return
        link = room.link
        if link is None:
            raise DisconnectedError("the link dropped while the track was being published")
        track.sid = sid
        track._channel = link.create_channel(
            f"track/{sid}",
            ordered=track.ordered,
            max_packet_life_time=track.max_packet_life_time,
            max_retransmits=track.max_retransmits,
        )
        await track._channel.wait_open()
        self.tracks[track.name] = track

    async def unpublish_track(self, track: LocalDataTrack) -> None:
        """Stop publishing a data track."""
        if self.tracks.get(track.name) is not track or track.sid is None:
            raise ValueError(f"track {track.name!r} is not published")
        del self.tracks[track.name]
        self._room._send(Kind.TRACK_UNPUBLISHED, pid=0, sid=track.sid)
        if track._channel is not None:
            track._channel.close()
        track._channel = None
        if track._fanout is not None:
            track._fanout.close()
        track._fanout = None

    async def register_rpc_method(self, method: str, handler: RpcHandler) -> None:
        """Serve RPC ``method``: ``handler(RpcInvocationData)`` returns (or awaits) a str.

        A handler that raises RpcError sends its code; any other exception reaches the
        caller as APPLICATION_ERROR.
        """
        self._room.rpc.register_method(method, handler)

    def unregister_rpc_method(self, method: str) -> None:
        """Stop serving RPC ``method``."""
        self._room.rpc.unregister_method(method)

    async def perform_rpc(
        self,
        *,
        destination_identity: str,
        method: str,
        payload: str,
        response_timeout: float = 10.0,
    ) -> str:
        """Call ``method`` on another participant and return its response payload.

        Raises RpcError (see RpcErrorCode) if the call fails.
        """
        return await self._room.rpc.perform(destination_identity, method, payload, response_timeout)

    async def send_text(
        self,
        text: str,
        *,
        topic: str = "",
        destination_identities: str | Iterable[str] = (),
        on_progress: StreamProgress | None = None,
    ) -> StreamInfo:
        """Send ``text`` as a stream (any length up to MAX_STREAM_BYTES of UTF-8).

        Returns once every receiver has it; raises StreamError if the stream was cut (a
        receiver's cap, the sender or a receiver disconnecting...).
        ``on_progress(sent_bytes, total_bytes)`` follows the sending.
        """
        return await self._room.streams.send_text(
            text,
            topic=topic,
            destination_identities=destination_identities,
            on_progress=on_progress,
        )

    async def send_bytes(
        self,
        data: bytes,
        *,
        name: str = "",
        mime_type: str = "application/octet-stream",
        topic: str = "",
        destination_identities: str | Iterable[str] = (),
        on_progress: StreamProgress | None = None,
    ) -> StreamInfo:
        """Send ``data`` as a byte stream (see send_text)."""
        return await self._room.streams.send_bytes(
            data,
            name=name,
            mime_type=mime_type,
            topic=topic,
            destination_identities=destination_identities,
            on_progress=on_progress,
        )

    async def send_file(
        self,
        path: str | os.PathLike[str],
        *,
        topic: str = "",
        name: str | None = None,
        mime_type: str | None = None,
        destination_identities: str | Iterable[str] = (),
        on_progress: StreamProgress | None = None,
    ) -> StreamInfo:
        """Send a file as a byte stream, with its name and MIME type (see send_text)."""
        return await self._room.streams.send_file(
            path,
            topic=topic,
            name=name,
            mime_type=mime_type,
            destination_identities=destination_identities,
            on_progress=on_progress,
        )

    def _track_answer(self, request_id: int, sid: int | None, reason: str = "") -> None:
        future = self._pending_tracks.get(request_id)
        if future is None or future.done():
            return
        if sid is None:
            future.set_exception(TrackRefused(reason))
        else:
            future.set_result(sid)


class Room(EventEmitter):
    """A room on a netcode server, as one client sees it.

    Events (``@room.on(name)``): ``participant_connected(RemoteParticipant)``,
    ``participant_disconnected(RemoteParticipant)``, ``data_received(DataPacket)``,
    ``track_published(RemoteDataTrack, RemoteParticipant)``, ``track_unpublished(...)``,
    ``track_subscribed(RemoteDataTrack, RemoteParticipant)``, ``track_unsubscribed(...)``,
    ``connection_state_changed(ConnectionState)``, ``disconnected(reason: str)``,
    ``reconnecting()``, ``reconnected()``, ``participant_reconnecting(RemoteParticipant)``,
    ``participant_reconnected(RemoteParticipant)``.

    ``trace`` (a path, opened at connect and closed at disconnect, appended to when the room
    connects again, or a :class:`~netcode.trace.TraceWriter`) records the connection's
    datagrams, acks, losses, RTT and data per topic, tagged with this client's identity.
    """

    EVENTS = frozenset(
        {
            "participant_connected",
            "participant_disconnected",
            "data_received",
            "track_published",
            "track_unpublished",
            "track_subscribed",
            "track_unsubscribed",
            "connection_state_changed",
            "disconnected",
            "reconnecting",
            "reconnected",
            "participant_reconnecting",
            "participant_reconnected",
        }
    )

    def __init__(
        self,
        *,
        endpoint_config: EndpointConfig | None = None,
        trace: TraceTarget = None,
        peer_budgets: PeerBudgets | None = None,
    ) -> None:
        super().__init__()
        #: P2P rooms: what each other participant may send this client a second over its
        #: direct link (a peer over budget is refused until it leaves; default PeerBudgets())
        self.peer_budgets = peer_budgets
        self._trace = TraceSink(trace)
        self._trace_conn = ""
        self.name = ""
        self.local_participant = LocalParticipant(self)
        #: other participants, by identity
        self.remote_participants: dict[str, RemoteParticipant] = {}
        self.connection_state = ConnectionState.DISCONNECTED
        self.endpoint_config = endpoint_config
        self.link: PeerLink | None = None
        self.connection: DatagramConnection | None = None
        #: handlers of frames of the higher layers, by frame type
        self.frame_handlers: dict[int, Callable[[bytes], None]] = {}
        #: handlers of EXTENSION messages, by channel: (sender pid, body)
        self.extension_handlers: dict[int, Callable[[int, bytes], None]] = {}
        #: RPC: the methods this client serves and its calls in flight
        self.rpc = RpcClient(self, ExtensionChannel.RPC)
        #: streams: handlers by topic, streams being sent and received
        self.streams = StreamsClient(self, ExtensionChannel.STREAMS)
        #: malformed messages and frames received from the server
        self.protocol_errors = 0
        self._by_pid: dict[int, RemoteParticipant] = {}
        self._topics_out = OutgoingTopics()
        self._topics_in = IncomingTopics()
        self._joined: asyncio.Future[None] | None = None
        self._tracks: dict[int, RemoteDataTrack] = {}
        self._orphan_channels: dict[int, DataChannel] = {}
        self._subscriptions: frozenset[str] | None = None  # None: every topic
        #: topiced packets and snapshots that arrived outside our subscription and were
        #: dropped (the server forwards by the subscription it last heard of: until a
        #: SUBSCRIBE reaches it, after the join or a change, it may still send the others)
        self.unsubscribed_dropped = 0
        self.events: EventLink | None = None
        #: P2P rooms: the direct links to the other participants (None in a group room)
        self.mesh: Mesh | None = None
        self._event_handlers: dict[type, list[Callable[..., Any]]] = {}
        self.frame_handlers[FrameType.EVENT] = self._on_event_frame
        self.extension_handlers[ExtensionChannel.EVENTS] = self._on_fallback_event
        self._disconnect_reason = ""
        self._watch_task: asyncio.Task[None] | None = None
        self._resume_task: asyncio.Task[None] | None = None
        # the session: what outlives a link (resumes connect as the join did)
        self._url = ""
        self._room_name = ""
        self._ssl: ssl_module.SSLContext | None = None
        self._ice_servers: list[IceServerLike] = []
        self._session: dict[str, Any] | None = None  # session, secret (from JOINED)
        self._replay = ReplayLog()
        self._received = ReceiveCounter()
        self._episode = 0  # drops since connect: resume attempts carry it
        self._lost_at = 0.0
        # joins and resumes ride one kept-alive HTTP(S) connection when it is still up
        self._http = SignalingClient()
        #: the impairment acting on this room's UDP datagrams (None: none)
        self.impairment: ImpairedPath | None = None
        #: the server's explanation of the last ERROR it sent
        self.error_message = ""
        #: seconds without a datagram before the link is declared dead (the server's
        #: figure once joined)
        self.dead_after = 3.0
        #: seconds the server holds the session after a drop (the server's figure)
        self.grace_period = 20.0
        #: resume the session on its own after a drop (False: a drop disconnects)
        self.auto_reconnect = True
        #: sessions resumed on a new link since connect
        self.reconnects = 0
        #: how long each resume took, from the drop being noticed to RESUMED (seconds)
        self.resume_times: list[float] = []
        #: how long the attempt that resumed took, from its request to RESUMED (seconds)
        self.last_resume_attempt_s = 0.0

    # ------------------------------------------------------------------ connection

    async def connect(
        self,
        url: str,
        token: str,
        *,
        topics: Iterable[str] | None = None,
        room: str = "",
        timeout: float = 10.0,
        auto_reconnect: bool = True,
        impairment: Impairment | ImpairedPath | None = None,
        ssl: ssl_module.SSLContext | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        ice_servers: Iterable[IceServerLike] | None = None,
    ) -> None:
        """Join the room the token names (``room``, if given, must be that room).

        ``topics`` limits what the server forwards (default: every topic).
        ``auto_reconnect``: resume the session on a new link after a drop (the default);
        False makes a drop end in ``disconnected``.
        ``impairment`` impairs every UDP datagram of this client's peer connections both ways
        (latency, loss, blackouts...: see :mod:`netcode.transport.impair`); the path, kept
        across resumes, is :attr:`impairment`.

        ``https://`` URLs: the server's certificate is verified against the system's CAs;
        ``ca_file`` (a PEM file: a self-signed server's certificate, or a private CA) or
        ``ssl`` (an ``ssl.SSLContext``) trusts others. ``ice_servers``: STUN/TURN servers
        (:class:`~netcode.IceServer`, or URLs such as ``"stun:host:3478"``) for players
        behind NAT. Resumes use the same URL, TLS settings and ICE servers.

        Raises a TokenError subclass if the token is refused, ConnectError if the server
        cannot be reached, its certificate is not trusted, or the connection fails.
        """
        if self.connection_state is not ConnectionState.DISCONNECTED:
            raise NetcodeError(f"room is {self.connection_state.value}")
        tls = client_ssl_context(ssl, ca_file)  # raises before any state changes
        ice: list[IceServerLike] = list(to_rtc_ice_servers(ice_servers))  # checked now
        self._set_state(ConnectionState.CONNECTING)
        self.auto_reconnect = auto_reconnect
        self._url, self._room_name = url, room
        self._ssl, self._ice_servers = tls, ice
        if isinstance(impairment, Impairment):
            impairment = ImpairedPath(impairment)
        self.impairment = impairment
        self._session = None
        self._replay = ReplayLog()
        self._received = ReceiveCounter()
        self.reconnects = 0
        self._episode = 0
        try:
            async with asyncio.timeout(timeout):
                self.link = link = await connect_peer(
                    url,
                    token,
                    timeout=timeout,
                    room=room,
                    impairment=impairment,
                    ssl=tls,
                    ice_servers=ice,
                    http=self._http,
                )
                self._joined = asyncio.get_running_loop().create_future()
                writer = self._trace.open()
                self._trace_conn = str(link.server_info.get("identity") or link.name)
                self.connection = DatagramConnection(
                    link,
                    self._on_event,
                    config=self.endpoint_config,
                    name=link.name,
                    on_malformed=self._protocol_error,
                    tracer=None if writer is None else writer.tracer(self._trace_conn),
                )
                self._trace_record("open", {"room": link.server_info.get("room", room)})
                self.events = EventLink(
                    self.connection.endpoint,
                    lambda message_id, message: self.send_extension(
                        ExtensionChannel.EVENTS, encode_fallback(message_id, message)
                    ),
                    name=link.name,
                )
                self.connection.add_flush_hook(self.events)
                if link.server_info.get("room_type") == "p2p":
                    from netcode.rooms.p2p import Mesh

                    self.mesh = Mesh(self)
                link.on_channel(self._on_channel)
                link.on_reliable(self._on_reliable)
                link.on_state_change(self._on_link_state)
                # a new session forwards every topic until told otherwise
                self._subscribe(topics)
                if self._subscriptions is not None:
                    self._send(Kind.SUBSCRIBE, **self._subscribe_fields())
                await self._joined
                if self.mesh is not None:
                    await self.mesh.ready()  # our rights on the mesh (PEER_INFO) are known
        except BaseException as exc:
            await self._teardown()
            self._set_state(ConnectionState.DISCONNECTED)
            if isinstance(exc, TimeoutError) and not isinstance(exc, NetcodeError):
                raise ConnectError(f"no answer from {url} within {timeout} s") from None
            raise
        self._set_state(ConnectionState.CONNECTED)
        loop = asyncio.get_running_loop()
        self._watch_task = loop.create_task(self._watch_link(link))
        self._watch_task.add_done_callback(_log_task_error)

    async def disconnect(self) -> None:
        """Leave the room (the server ends the session at once)."""
        if self.connection_state is ConnectionState.DISCONNECTED:
            return
        self._disconnect_reason = self._disconnect_reason or "client_initiated"
        link = self.link
        if link is not None and self.connection_state is ConnectionState.CONNECTED:
            with contextlib.suppress(ChannelNotOpen, TimeoutError):
                link.send_reliable(encode_message(Kind.LEAVE))
                # The server closes the link when LEAVE arrives; without LEAVE it would hold
                # the session for its grace period, and others would see us reconnecting.
                await asyncio.wait_for(link.wait_closed(), _LEAVE_TIMEOUT_S)
        await self._teardown()
        self._finish_disconnect()

    def isconnected(self) -> bool:
        return self.connection_state is ConnectionState.CONNECTED

    async def set_subscriptions(self, topics: Iterable[str] | None) -> None:
        """Receive only these topics (None: all). Untopiced packets always arrive."""
        self._subscribe(topics)
        self._send(Kind.SUBSCRIBE, **self._subscribe_fields())
        if self.mesh is not None:
            self.mesh.set_subscriptions()

    @property
    def trace(self) -> TraceWriter | None:
        """The trace being recorded (None if not tracing)."""
        return self._trace.writer

    def _trace_record(self, kind: str, fields: dict[str, Any] | None = None) -> None:
        writer = self._trace.writer
        if writer is not None:
            writer.record(kind, writer.now(), fields, conn=self._trace_conn)

    def stats(self) -> ConnectionStats:
        """Statistics of the lossy channel (RTT, loss, bytes)."""
        if self.connection is None:
            raise DisconnectedError("room is not connected")
        return self.connection.endpoint.stats()

    def register_text_stream_handler(self, topic: str, handler: TextStreamHandler) -> None:
        """Receive text streams on ``topic``: ``handler(TextStreamReader, sender_identity)``."""
        self.streams.register_text_handler(topic, handler)

    def register_byte_stream_handler(self, topic: str, handler: ByteStreamHandler) -> None:
        """Receive byte streams on ``topic``: ``handler(ByteStreamReader, sender_identity)``."""
        self.streams.register_byte_handler(topic, handler)

    def participant_by_pid(self, pid: int) -> RemoteParticipant | None:
        return self._by_pid.get(pid)

    # ------------------------------------------------------------------ sending

    def _require_link(self) -> PeerLink | None:
        """The current link (None while reconnecting); raises DisconnectedError if the room
        is not connected or reconnecting."""
        if self.connection_state is ConnectionState.CONNECTED and self.link is not None:
            return self.link
        if self.connection_state is ConnectionState.RECONNECTING:
            return None
        raise DisconnectedError("room is not connected")

    def send_backlog(self) -> int:
        """Bytes waiting to reach the server: the link's queue, or while reconnecting, the
        reliable messages the server has not confirmed."""
        link = self.link
        if self.mesh is not None:  # P2P: the data goes to the peers
            return self.mesh.send_backlog()
        if self.connection_state is ConnectionState.CONNECTED and link is not None:
            return link.send_backlog()
        return self._replay.bytes

    def _send(self, kind: Kind, **fields: Any) -> None:
        """Send a reliable message; while reconnecting it waits for the next link."""
        state = self.connection_state
        live = state in (ConnectionState.CONNECTED, ConnectionState.RECONNECTING)
        if not live and (state is not ConnectionState.CONNECTING or self.link is None):
            raise DisconnectedError("room is not connected")
        message = encode_message(kind, **fields)
        if kind not in UNCOUNTED_KINDS:
            self._replay.append(message)  # raises SendQueueFull past its bound
        link = self.link
        if link is not None and self.connection_state is not ConnectionState.RECONNECTING:
            with contextlib.suppress(ChannelNotOpen):
                link.send_reliable(message)  # else it waits in the replay log

    def _destination_pids(self, identities: str | Iterable[str]) -> list[int] | None:
        """The pids of the named participants present ([] when none were named: everyone).

        None when identities were named but none is in the room: as in LiveKit, an identity
        not in the room receives nothing, so the packet goes nowhere. A str alone is one
        identity.
        """
        named = identity_list(identities)
        pids = [p.pid for i in named if (p := self.remote_participants.get(i)) is not None]
        return None if named and not pids else pids

    def send_extension(self, channel: int, body: bytes) -> None:
        """Send an EXTENSION message (used by the events, RPC and streams layers)."""
        if self.mesh is not None and channel in (ExtensionChannel.RPC, ExtensionChannel.STREAMS):
            self._require_link()
            self.mesh.send_extension(channel, body)  # P2P: straight to the participants
            return
        self._send(Kind.EXTENSION, channel=channel, pid=0, body=body)

    def send_event(
        self, event: Any, *, destination_identities: str | Iterable[str] = (), topic: str = ""
    ) -> None:
        """Send a game event: delivered exactly once and in order, quickly even under loss.

        ``destination_identities``: the participants to send to (a list, or one identity as
        a str); default everyone.

        Raises SendQueueFull when events are sent faster than the link drains them.
        """
        self._require_link()
        assert self.events is not None and self.connection is not None
        destinations = self._destination_pids(destination_identities)
        if destinations is None:
            return
        if self.mesh is not None:  # P2P: on each destination's own link
            codec = self.events.registry.of(event)
            self.mesh.send_event(codec, codec.encode(event), check_topic(topic), destinations)
            return
        self.events.send_up(event, check_topic(topic), destinations)
        self.connection.schedule_flush()

    def on_event(self, event_cls: type, handler: Callable[..., Any] | None = None) -> Any:
        """Register ``handler(event, participant, topic)`` for an event type (a decorator).

        ``participant`` is the sender, or None for the server.
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._event_handlers.setdefault(event_cls, []).append(fn)
            return fn

        return register if handler is None else register(handler)

    def _on_event_frame(self, payload: bytes) -> None:
        if self.events is None or self.connection is None:
            return
        self.events.receive_frame(payload, self.connection.now())
        self._dispatch_events()

    def _on_fallback_event(self, sender_pid: int, body: bytes) -> None:
        if self.events is not None:
            self.events.receive_fallback(body)
            self._dispatch_events()

    def _dispatch_events(self) -> None:
        assert self.events is not None
        for event, pid, topic in self.events.receive_down(self._protocol_error):
            self._dispatch_event(event, pid, topic)

    def _dispatch_event(self, event: Any, pid: int, topic: str) -> None:
        """Call the handlers of ``event`` from participant ``pid`` (0: the game host)."""
        participant = self._by_pid.get(pid)
        if pid and participant is None:
            return  # from someone who already left
        for handler in list(self._event_handlers.get(type(event), ())):
            try:
                handler(event, participant, topic)
            except Exception:
                logger.exception("event handler %r raised", handler)

    def send_frame(self, frame_type: int, payload: bytes, **options: Any) -> None:
        """Send a frame of a higher layer on the lossy channel (see Endpoint.send_frame).

        In a P2P room it goes to the room's listen host (DisconnectedError if none).
        """
        self._require_link()
        if self.mesh is not None:
            self.mesh.send_host_frame(frame_type, payload, **options)
            return
        assert self.connection is not None
        self.connection.send_frame(frame_type, payload, **options)

    @property
    def host_connection(self) -> DatagramConnection | None:
        """The connection to the room's game host: the server's in a group room, the
        listen host's direct link in a P2P room (None: not connected, or no host)."""
        if self.mesh is not None:
            pair = self.mesh.host_pair
            return pair.connection if pair is not None and pair.is_open else None
        return self.connection

    @property
    def host_topics_in(self) -> IncomingTopics:
        """Topic ids bound by the room's game host (for its SNAPSHOT frames)."""
        if self.mesh is not None:
            pair = self.mesh.host_pair
            if pair is None:
                raise ProtocolError("a game-host frame with no game host in the room")
            return pair.topics_in
        return self._topics_in

    def host_game(self, host: RoomHost) -> ListenRoom:
        """Host a game for the others: this client is a P2P room's listen host.

        ``host`` is a :class:`~netcode.rooms.host.GameHost` (or any RoomHost); the other
        participants' Replicas replicate from it over their direct links. The token needs
        the ``room_host`` grant. See :mod:`netcode.rooms.listen`.
        """
        from netcode.rooms.listen import host_game

        return host_game(self, host)

    def publish_data(
        self,
        payload: bytes | str,
        reliable: bool,
        destination_identities: str | Iterable[str],
        topic: str,
    ) -> None:
        self._require_link()
        text = isinstance(payload, str)
        if isinstance(payload, str):
            data = payload.encode()
        elif isinstance(payload, bytes | bytearray | memoryview):
            data = bytes(payload)
        else:
            raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")
        destinations = self._destination_pids(destination_identities)
        if destinations is None:
            return
        if reliable:
            if len(data) > MAX_RELIABLE_PAYLOAD_BYTES:
                raise ValueError(
                    f"reliable payload of {len(data)} bytes exceeds the limit of "
                    f"{MAX_RELIABLE_PAYLOAD_BYTES} bytes (15 KiB); send larger data as a stream"
                )
            if self.mesh is not None:  # P2P: straight to the destinations
                self.mesh.publish_data(data, text, True, destinations, topic)
                return
            topic_id, new = self._topics_out.bind(topic)
            if new:
                self._send(Kind.TOPIC, topic_id=topic_id, name=topic)
            self._send(
                Kind.DATA,
                pid=0,
                topic_id=topic_id,
                text=text,
                destinations=destinations,
                payload=data,
            )
            self._trace_record("topic_send", {"topic": topic, "bytes": len(data), "lossy": False})
            return
        if len(data) > MAX_LOSSY_PAYLOAD_BYTES:
            raise ValueError(
                f"lossy payload of {len(data)} bytes exceeds the limit of "
                f"{MAX_LOSSY_PAYLOAD_BYTES} bytes; use reliable=True or a stream"
            )
        if self.mesh is not None:  # P2P: straight to the destinations
            self.mesh.publish_data(data, text, False, destinations, topic)
            return
        topic_id, inline = self._topics_out.lossy_ref(topic)
        frame = encode_lossy_up(topic_id, inline, text, destinations, data)
        on_delivery = None if inline is None else self._topics_out.confirm_when_acked(topic_id)
        assert self.connection is not None
        # While the link is backed up, lossy data waits in the endpoint's queue; if it has
        # not left within LOSSY_DATA_MAX_AGE_S it is stale, and dropped (and counted) unsent.
        connection = self.connection
        connection.send_frame(
            FrameType.DATA,
            frame,
            on_delivery=on_delivery,
            expires_at=connection.now() + LOSSY_DATA_MAX_AGE_S,
        )
        self._trace_record("topic_send", {"topic": topic, "bytes": len(data), "lossy": True})

    # ------------------------------------------------------------------ receiving

    def _protocol_error(self, what: str = "malformed datagram") -> None:
        self.protocol_errors += 1
        logger.warning("malformed message from the server: %s", what)

    def _on_reliable(self, data: bytes | str) -> None:
        counted = not (data and isinstance(data, bytes) and data[0] in _UNCOUNTED_BYTES)
        if counted and self._received.count():
            self._send_ack()
        try:
            dispatch_message_untrusted(data, _SERVER_MESSAGES, self)
        except ProtocolError as exc:
            self._protocol_error(str(exc))

    def _send_ack(self) -> None:
        link = self.link
        if link is not None and self.connection_state is ConnectionState.CONNECTED:
            with contextlib.suppress(ChannelNotOpen):
                link.send_reliable(encode_message(Kind.ACK, received=self._received.take_ack()))

    def _on_ack(self, body: Any) -> None:
        self._replay.confirm(body.received)

    def _on_resumed(self, body: Any) -> None:
        raise ProtocolError("RESUMED outside a resume")  # a resume's first message only

    def _on_participant_reconnecting(self, body: Any) -> None:
        participant = self._by_pid.get(body.pid)
        if participant is not None and not participant.reconnecting:
            participant.reconnecting = True
            self.emit("participant_reconnecting", participant)

    def _on_participant_reconnected(self, body: Any) -> None:
        participant = self._by_pid.get(body.pid)
        if participant is not None and participant.reconnecting:
            participant.reconnecting = False
            self.emit("participant_reconnected", participant)

    def _mesh(self) -> Mesh:
        if self.mesh is None:
            raise ProtocolError("peer-to-peer signaling in a group room")
        return self.mesh

    def _on_peer_info(self, body: Any) -> None:
        self._mesh().on_peer_info(body)

    def _on_peer_offer(self, body: Any) -> None:
        self._mesh().on_offer(body)

    def _on_peer_answer(self, body: Any) -> None:
        self._mesh().on_answer(body)

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, FrameReceived):
            return
        try:
            if event.frame_type == FrameType.DATA:
                pid, topic_id, inline, text, payload = decode_lossy_down_untrusted(event.payload)
                topic = self._topics_in.resolve(topic_id, inline)
                self._deliver(pid, topic, text, payload, DataPacketKind.LOSSY)
            else:
                handler = self.frame_handlers.get(event.frame_type)
                if handler is not None:
                    handler(event.payload)
        except ProtocolError as exc:
            self._protocol_error(str(exc))

    def _subscribe(self, topics: Iterable[str] | None) -> None:
        self._subscriptions = None if topics is None else frozenset(map(check_topic, topics))

    def _subscribe_fields(self) -> dict[str, Any]:
        """The fields of the SUBSCRIBE message that says this client's subscription."""
        subscriptions = self._subscriptions
        return {"all": subscriptions is None, "topics": sorted(subscriptions or ())}

    def subscribes_to(self, topic: str) -> bool:
        """Whether packets of ``topic`` reach this client: untopiced ones always do, topics
        only if subscribed (default: all)."""
        subscriptions = self._subscriptions
        return not topic or subscriptions is None or topic in subscriptions

    def drop_unsubscribed(self, topic: str) -> bool:
        """True, counting it in ``unsubscribed_dropped``, if a packet or snapshot of ``topic``
        is outside the subscription (the room's receivers drop it then)."""
        if self.subscribes_to(topic):
            return False
        self.unsubscribed_dropped += 1
        return True

    def _deliver(
        self, pid: int, topic: str, text: bool, payload: bytes, kind: DataPacketKind
    ) -> None:
        participant = self._by_pid.get(pid)
        if pid and participant is None:
            return  # from someone who already left
        if self.drop_unsubscribed(topic):
            return
        lossy = kind is DataPacketKind.LOSSY
        self._trace_record("topic_recv", {"topic": topic, "bytes": len(payload), "lossy": lossy})
        if text:
            try:
                data: bytes | str = payload.decode()
            except UnicodeDecodeError:
                raise ProtocolError("text payload is not UTF-8") from None
        else:
            data = payload
        self.emit("data_received", DataPacket(data, participant, topic, kind))

    def _add_participant(self, wire: Any) -> RemoteParticipant:
        participant = RemoteParticipant(
            sid=f"PA_{wire.pid}",
            identity=wire.identity,
            name=wire.name,
            metadata=wire.metadata,
            pid=wire.pid,
        )
        self._by_pid[wire.pid] = participant
        self.remote_participants[wire.identity] = participant
        return participant

    def _on_joined(self, body: Any) -> None:
        local = self.local_participant
        local.pid = body.pid
        local.sid = f"PA_{body.pid}"
        info = self.link.server_info if self.link is not None else {}
        local.identity = str(info.get("identity", ""))
        local.name = str(info.get("name", ""))
        local.metadata = str(info.get("metadata", ""))
        self.name = body.room
        self._session = {"session": body.session, "secret": body.resume_secret}
        self.grace_period = body.grace_ms / 1000
        self.dead_after = max(body.dead_after_ms / 1000, 0.5)
        self.streams.pace_to_budget(body.message_bytes_per_s)
        for wire in body.participants:
            self._add_participant(wire)
        for wire in body.tracks:
            self._on_track_published(wire, emit=False)
        if self._joined is not None and not self._joined.done():
            self._joined.set_result(None)

    def _on_participant_joined(self, body: Any) -> None:
        self.emit("participant_connected", self._add_participant(body))

    def _on_participant_left(self, body: Any) -> None:
        if self.mesh is not None:
            self.mesh.peer_left(body.pid)
        participant = self._by_pid.pop(body.pid, None)
        if participant is None:
            return
        self.remote_participants.pop(participant.identity, None)
        for track in list(participant.tracks.values()):
            self._drop_track(track)
        self.emit("participant_disconnected", participant)

    def _on_topic(self, body: Any) -> None:
        self._topics_in.learn(body.topic_id, body.name)

    def _on_data(self, body: Any) -> None:
        topic = self._topics_in.resolve(body.topic_id)
        self._deliver(body.pid, topic, body.text, body.payload, DataPacketKind.RELIABLE)

    def _on_track_accepted(self, body: Any) -> None:
        self.local_participant._track_answer(body.request_id, body.sid)

    def _on_track_refused(self, body: Any) -> None:
        self.local_participant._track_answer(body.request_id, None, body.reason)

    def _on_track_published(self, body: Any, emit: bool = True) -> None:
        participant = self._by_pid.get(body.pid)
        if participant is None:
            raise ProtocolError(f"track of unknown participant {body.pid}")
        options = body.options
        track = RemoteDataTrack(
            body.sid,
            body.name,
            participant,
            options.ordered,
            options.max_packet_life_time,
            options.max_retransmits,
        )
        self._tracks[body.sid] = track
        participant.tracks[track.name] = track
        self.emit("track_published", track, participant)
        channel = self._orphan_channels.pop(body.sid, None)
        if channel is not None:
            self._bind_track(track, channel)
        if self.mesh is not None:
            self.mesh.track_published(track)

    def _on_track_unpublished(self, body: Any) -> None:
        track = self._tracks.get(body.sid)
        if track is not None:
            self._drop_track(track)

    def _drop_track(self, track: RemoteDataTrack) -> None:
        self._tracks.pop(track.sid, None)
        track.participant.tracks.pop(track.name, None)
        if track.channel is not None:
            track.channel.close()
            track.channel = None
            self.emit("track_unsubscribed", track, track.participant)
        self.emit("track_unpublished", track, track.participant)

    def _on_channel(self, channel: DataChannel) -> None:
        prefix, _, sid_text = channel.label.partition("/")
        if prefix != "track" or not sid_text.isdigit():
            channel.close()
            self._protocol_error(f"unexpected channel {channel.label!r}")
            return
        sid = int(sid_text)
        track = self._tracks.get(sid)
        if track is None:
            # The channel overtook its TRACK_PUBLISHED message: keep it until that arrives.
            if len(self._orphan_channels) >= 64:
                channel.close()
                return
            self._orphan_channels[sid] = channel
            return
        self._bind_track(track, channel)

    def _bind_track(self, track: RemoteDataTrack, channel: DataChannel) -> None:
        resubscribed = track.channel is not None  # the same track on a resumed session's link
        track.channel = channel
        channel.set_handler(lambda message: track.emit("message", message))
        if not resubscribed:
            self.emit("track_subscribed", track, track.participant)

    def _on_error(self, body: Any) -> None:
        logger.warning("server says %s: %s", body.code, body.message)
        self._disconnect_reason = str(body.code)
        self.error_message = str(body.message)
        if self._joined is not None and not self._joined.done():
            try:
                error: Exception = token_error_from_code(body.code, body.message)
            except Exception:
                error = ConnectError(f"{body.code}: {body.message}")
            self._joined.set_exception(error)

    def _on_extension(self, body: Any) -> None:
        handler = self.extension_handlers.get(body.channel)
        if handler is not None:
            handler(body.pid, bytes(body.body))

    def _on_link_state(self, state: str) -> None:
        if state in ("failed", "closed") and self._joined is not None and not self._joined.done():
            self._joined.set_exception(ConnectError(f"connection {state} before joining"))

    async def _watch_link(self, link: PeerLink) -> None:
        """While the room lives: notice a dead or closed link, and send owed ACKs."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            if self.connection_state is not ConnectionState.CONNECTED:
                if self.connection_state is ConnectionState.DISCONNECTED:
                    return
                continue
            link_now, connection = self.link, self.connection
            if link_now is None or connection is None or link_now.closed.is_set():
                self._link_lost("connection closed")
            elif (silent := loop.time() - connection.last_received) > self.dead_after:
                self._link_lost(f"no datagram from the server for {silent:.1f} s")
            elif self._received.ack_owed:
                self._send_ack()

    def _link_lost(self, why: str) -> None:
        if self.connection_state is not ConnectionState.CONNECTED:
            return
        loop = asyncio.get_running_loop()
        if not self.auto_reconnect or self._session is None or self._disconnect_reason:
            # The server ended the session (it said why in an ERROR), or no resuming.
            self._disconnect_reason = self._disconnect_reason or "connection_lost"
            logger.info("room %r: link lost (%s); disconnecting", self.name, why)
            task = loop.create_task(self._disconnect_now())
            task.add_done_callback(_log_task_error)
            return
        logger.info("room %r: link lost (%s); resuming the session", self.name, why)
        self._lost_at = loop.time()
        self._episode += 1
        self._set_state(ConnectionState.RECONNECTING)
        self._let_link_go()
        self.emit("reconnecting")
        self._resume_task = loop.create_task(self._resume())
        self._resume_task.add_done_callback(_log_task_error)

    async def _disconnect_now(self) -> None:
        await self._teardown()
        self._finish_disconnect()

    def _let_link_go(self) -> None:
        link, self.link = self.link, None
        if self.connection is not None:
            self.connection.detach()
        if link is not None:
            link.on_reliable(None)  # read nothing more: the received count stays exact
            link.on_channel(None)
            task = asyncio.get_running_loop().create_task(link.close())
            task.add_done_callback(_log_task_error)

    async def _resume(self) -> None:
        """Resume the session on a new link, until it works or cannot.

        Attempts overlap: a new one starts every ``_ATTEMPT_SPACING_S`` while earlier ones
        are still connecting (at most ``_MAX_ATTEMPTS_IN_FLIGHT``), because one that began
        while the path was dead waits on backed-off ICE and DTLS retransmissions once the
        path returns, where a fresh one connects in a few round trips. All carry this drop's
        ``episode`` number and the server resumes on the first whose link opens, refusing
        the others, so exactly one gets RESUMED.
        """
        loop = asyncio.get_running_loop()
        # The server notices the drop about dead_after after us at worst, then holds the
        # session for grace_period: past that, trying is pointless.
        deadline = self._lost_at + self.grace_period + self.dead_after
        episode = self._episode
        attempts: set[asyncio.Task[bool]] = set()
        reason = "server_unreachable"
        number = 0
        spacing = _ATTEMPT_SPACING_S
        cancelled = False
        try:
            while self.connection_state is ConnectionState.RECONNECTING:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if len(attempts) < _MAX_ATTEMPTS_IN_FLIGHT:
                    number += 1
                    attempts.add(
                        loop.create_task(self._attempt(episode, number, min(remaining, 5.0)))
                    )
                done, attempts = await asyncio.wait(
                    attempts, timeout=min(spacing, remaining), return_when=asyncio.FIRST_COMPLETED
                )
                failed_fast = False
                for task in done:
                    try:
                        if task.result():
                            return
                    except SignalingError as exc:
                        if exc.code in _FINAL_RESUME_REFUSALS:
                            reason = exc.code
                            return
                        logger.info("room %r: resume attempt refused: %s", self.name, exc)
                        failed_fast = True
                    except (ConnectError, OSError, TimeoutError) as exc:
                        logger.info("room %r: resume attempt failed: %s", self.name, exc)
                        failed_fast = True
                if failed_fast:
                    # Refused or unreachable at once (the server is down, say): back off.
                    await asyncio.sleep(spacing * (0.5 + random.random()))
                    spacing = min(spacing * 2, _MAX_ATTEMPT_SPACING_S)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            for task in attempts:
                task.cancel()
            if not cancelled and self.connection_state is ConnectionState.RECONNECTING:
                logger.info("room %r: could not resume (%s)", self.name, reason)
                self._disconnect_reason = reason
                await self._teardown(cancel_resume=False)
                self._finish_disconnect()

    async def _attempt(self, episode: int, number: int, timeout: float) -> bool:
        """One resume attempt: True once its link is the room's (see ``_adopt``)."""
        assert self._session is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        resume = {**self._session, "received": self._received.received, "episode": episode}
        link = await connect_peer(
            self._url,
            "",
            timeout=timeout,
            room=self._room_name,
            resume=resume,
            impairment=self.impairment,
            name=f"resume{episode}.{number}",
            ssl=self._ssl,
            ice_servers=self._ice_servers,
            http=self._http,
        )
        adopted: asyncio.Future[bool] = loop.create_future()

        def on_message(data: bytes | str) -> None:
            if adopted.done():
                if adopted.result():
                    self._on_reliable(data)  # the session's link now
                return
            try:
                kind, body = decode_message_untrusted(data)
            except ProtocolError as exc:
                adopted.set_exception(ConnectError(f"bad first message on resume: {exc}"))
                return
            if kind is Kind.RESUMED and self.connection_state is ConnectionState.RECONNECTING:
                try:
                    self._adopt(link, int(body.received), started)
                except ProtocolError as exc:
                    adopted.set_exception(ConnectError(f"resume refused: {exc}"))
                    return
                adopted.set_result(True)
            elif kind is Kind.ERROR:
                adopted.set_exception(SignalingError(str(body.message), code=str(body.code)))
            else:
                adopted.set_exception(ConnectError(f"{kind.name} before RESUMED"))

        link.on_reliable(on_message)
        try:
            async with asyncio.timeout(timeout):
                return await adopted
        except BaseException:
            if not (adopted.done() and not adopted.cancelled() and adopted.exception() is None):
                link.on_reliable(None)
                await link.close()
            raise

    def _adopt(self, link: PeerLink, server_received: int, started: float) -> None:
        """RESUMED arrived on ``link``: it becomes the session's link, and what the server
        did not receive is sent again (the messages after RESUMED follow at once)."""
        replay = self._replay.replay_from(server_received)  # ProtocolError if impossible
        loop = asyncio.get_running_loop()
        for message in replay:
            link.send_reliable(message)
        self.link = link
        assert self.connection is not None
        self.connection.attach(link)
        link.on_channel(self._on_channel)
        for track in self.local_participant.tracks.values():
            if track.sid is not None and track._fanout is None:
                track._channel = link.create_channel(
                    f"track/{track.sid}",
                    ordered=track.ordered,
                    max_packet_life_time=track.max_packet_life_time,
                    max_retransmits=track.max_retransmits,
                )
        self.reconnects += 1
        self.resume_times.append(loop.time() - self._lost_at)
        self.last_resume_attempt_s = loop.time() - started
        logger.info(
            "room %r: resumed in %.0f ms (%d messages replayed)",
            self.name,
            self.resume_times[-1] * 1e3,
            len(replay),
        )
        self._set_state(ConnectionState.CONNECTED)
        self.emit("reconnected")

    async def _teardown(self, cancel_resume: bool = True) -> None:
        resume_task, self._resume_task = self._resume_task, None
        if cancel_resume and resume_task is not None and not resume_task.done():
            resume_task.cancel()
        watch_task, self._watch_task = self._watch_task, None
        if watch_task is not None and watch_task is not asyncio.current_task():
            watch_task.cancel()
        self.events = None
        mesh, self.mesh = self.mesh, None
        if mesh is not None:
            await mesh.close()
        http, self._http = self._http, SignalingClient()
        await http.close()
        if self.connection is not None:
            self.connection.close()
            self.connection = None
            self._trace_record("close")
        self._trace.close()
        link, self.link = self.link, None
        if link is not None:
            await link.close()

    def _finish_disconnect(self) -> None:
        for participant in list(self._by_pid.values()):
            for remote in list(participant.tracks.values()):
                self._drop_track(remote)
        self._by_pid.clear()
        self.remote_participants.clear()
        self._orphan_channels.clear()
        self.rpc.close()
        self.streams.close()
        for local in self.local_participant.tracks.values():
            local._channel = None
            local._fanout = None
        self.local_participant.tracks.clear()
        self._topics_in = IncomingTopics()
        self._topics_out = OutgoingTopics()
        self._set_state(ConnectionState.DISCONNECTED)
        reason, self._disconnect_reason = self._disconnect_reason, ""
        self.emit("disconnected", reason)

    def _set_state(self, state: ConnectionState) -> None:
        if state is not self.connection_state:
            logger.info("room %r: %s -> %s", self.name, self.connection_state.value, state.value)
            self.connection_state = state
            self.emit("connection_state_changed", state)


_SERVER_MESSAGES: dict[Kind, Callable[[Room, Any], None]] = {
    Kind.JOINED: Room._on_joined,
    Kind.PARTICIPANT_JOINED: Room._on_participant_joined,
    Kind.PARTICIPANT_LEFT: Room._on_participant_left,
    Kind.TOPIC: Room._on_topic,
    Kind.DATA: Room._on_data,
    Kind.TRACK_ACCEPTED: Room._on_track_accepted,
    Kind.TRACK_REFUSED: Room._on_track_refused,
    Kind.TRACK_PUBLISHED: Room._on_track_published,
    Kind.TRACK_UNPUBLISHED: Room._on_track_unpublished,
    Kind.ERROR: Room._on_error,
    Kind.EXTENSION: Room._on_extension,
    Kind.ACK: Room._on_ack,
    Kind.RESUMED: Room._on_resumed,
    Kind.PARTICIPANT_RECONNECTING: Room._on_participant_reconnecting,
    Kind.PARTICIPANT_RECONNECTED: Room._on_participant_reconnected,
    Kind.PEER_INFO: Room._on_peer_info,
    Kind.PEER_OFFER: Room._on_peer_offer,
    Kind.PEER_ANSWER: Room._on_peer_answer,
}


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("room task failed", exc_info=task.exception())
