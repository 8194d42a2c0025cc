"""One client<->server WebRTC peer connection (aiortc) with netcode's data channels.

Theory of operation
-------------------
A :class:`PeerLink` owns one ``RTCPeerConnection``. Both ends create the two base channels
with ``negotiated=True`` and fixed stream ids, so they are usable as soon as the SCTP
association is up, without a DATA_CHANNEL_OPEN round trip:

- ``reliable`` (id 0): ordered, fully reliable; control, events, RPC, streams;
- ``lossy`` (id 1): unordered, ``maxRetransmits=0``; one netcode datagram per message.

Either end may add channels for data tracks with :meth:`PeerLink.create_channel`; those are
announced in band (DCEP) and the other end's ``on_channel`` handler receives them. aiortc
gives in-band channels ids of the DTLS role's parity and skips ids in use, so they never
collide with 0 and 1.

Every channel is wrapped in a :class:`DataChannel` that enforces message sizes, counts
traffic and shields aiortc from exceptions raised by handlers. Unreliable channels apply
backpressure by dropping: all channels of a connection share one SCTP association with one
send queue and congestion window, and aiortc queues an unreliable message behind it instead
of discarding it (../shared/PLATFORM-FACTS.md), so a datagram sent while more than
``lossy_backlog_limit_bytes`` wait in the connection's queues is dropped and counted instead
of arriving late.

Messages received before a handler is installed are kept (a bounded number) and delivered
when it is, so the server can hand a link to the application after it opened without losing
what the client sent first.

Loopback: aioice never gathers 127.0.0.1, so two peers on a machine whose only interface is
loopback never connect. :func:`loopback_candidates` adds a 127.0.0.1 host candidate to the
gathering done inside it (see that function for why it is done this way).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import aioice.ice
import aiortc.rtcsctptransport
import attrs
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection

from netcode.errors import NetcodeError
from netcode.transport.consent import patient_consent
from netcode.transport.ice import IceServerLike, to_rtc_ice_servers
from netcode.transport.impair import ImpairedPath, Impairment
from netcode.transport.sctp import delay_acks
from netcode.wire import MAX_DATAGRAM_BYTES

__all__ = [
    "DEFAULT_CWND_FLOOR_PACKETS",
    "DEFAULT_LOSSY_BACKLOG_LIMIT_BYTES",
    "LOSSY_CHANNEL_ID",
    "LOSSY_LABEL",
    "MAX_EXTRA_CHANNELS",
    "MAX_PENDING_MESSAGES",
    "MAX_RELIABLE_MESSAGE_BYTES",
    "NO_CANDIDATES",
    "RELIABLE_CHANNEL_ID",
    "RELIABLE_LABEL",
    "ChannelNotOpen",
    "ChannelStats",
    "ConnectError",
    "ConnectTimeout",
    "DataChannel",
    "PeerLink",
    "has_candidates",
    "hold_cwnd_floor",
    "is_loopback_host",
    "loopback_candidates",
    "make_peer_connection",
]

logger = logging.getLogger(__name__)

RELIABLE_LABEL = "reliable"
LOSSY_LABEL = "lossy"
#: Fixed SCTP stream ids of the pre-negotiated channels (the same on both ends).
RELIABLE_CHANNEL_ID = 0
LOSSY_CHANNEL_ID = 1

#: Largest message on a reliable channel, the rooms layer's protocol limit (LiveKit allows
#: 15 KiB of user payload; the rest is our framing). Larger data goes as a chunked stream.
MAX_RELIABLE_MESSAGE_BYTES = 16 * 1024

#: Default backlog (bytes queued in the connection, not yet handed to the network) above
#: which an unreliable message is dropped. Eight full datagrams: room for one tick's burst
#: of snapshot parts, small enough that a dropped datagram would have been stale anyway.
DEFAULT_LOSSY_BACKLOG_LIMIT_BYTES = 8 * MAX_DATAGRAM_BYTES

#: Messages kept per channel while no handler is installed; more are dropped and counted.
MAX_PENDING_MESSAGES = 256

#: Data-track channels a peer may open on one connection; more are closed at once.
MAX_EXTRA_CHANNELS = 64

#: Floor under each association's congestion window, in full packets (see hold_cwnd_floor).
DEFAULT_CWND_FLOOR_PACKETS = 16

MessageHandler = Callable[[bytes | str], object]
ChannelHandler = Callable[["DataChannel"], object]
StateHandler = Callable[[str], object]


class ConnectError(NetcodeError):
    """A peer connection could not be established (server unreachable, ICE/DTLS failed...)."""


class ConnectTimeout(ConnectError, TimeoutError):
    """A peer connection was not established within the allowed time."""


class ChannelNotOpen(NetcodeError):
    """A message was sent on a channel that is not open (still connecting, or closed)."""


# --- loopback candidates --------------------------------------------------------------------

_include_loopback: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "netcode_include_loopback", default=False
)
_LOOPBACK_ADDRESS = "127.0.0.1"


def _install_loopback_hook() -> None:
    """Wrap aioice's host-address enumeration so it can add 127.0.0.1 when asked.

    aioice's ``Connection.gather_candidates`` asks the module-level
    ``aioice.ice.get_host_addresses`` for the addresses to bind host candidates on, and that
    function skips 127.0.0.1 (RFC 8445 5.1.1.1 forbids loopback candidates). aioice offers no
    per-connection option, so the wrapper consults a context variable: it changes nothing
    unless the gathering runs inside :func:`loopback_candidates`, so other code using aiortc
    in the same process is unaffected. aiortc gathers inside ``setLocalDescription`` in
    tasks created from the caller's task, which inherit its context.
    """
    original = aioice.ice.get_host_addresses
    if getattr(original, "_netcode_loopback_hook", False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses: list[str] = original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        if use_ipv4 and _include_loopback.get() and _LOOPBACK_ADDRESS not in addresses:
            addresses.append(_LOOPBACK_ADDRESS)
        return addresses

    get_host_addresses._netcode_loopback_hook = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses


#: The error when ICE gathered nothing to offer.
NO_CANDIDATES = "ICE gathered no local candidates: no usable network interface"


def has_candidates(sdp: str) -> bool:
    """True if the SDP carries at least one ICE candidate."""
    return "\na=candidate:" in sdp


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (IPv6 in brackets or not)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def loopback_candidates(enabled: bool = True) -> Iterator[None]:
    """Within this block, ICE gathering also offers a 127.0.0.1 host candidate.

    Wrap ``setLocalDescription`` (where aiortc gathers) with it. Only useful when both peers
    are on the same machine: a remote peer cannot reach our loopback address and would
    waste connectivity checks on it, which is why it is not always on.
    """
    _install_loopback_hook()
    token = _include_loopback.set(enabled)
    try:
        yield
    finally:
        _include_loopback.reset(token)


def make_peer_connection(
    ice_servers: Iterable[IceServerLike] | None = None,
) -> RTCPeerConnection:
    """An RTCPeerConnection with ``ice_servers`` (STUN/TURN, see :class:`IceServer`;
    default: none).

    aiortc's default is Google's public STUN server; without internet access, gathering
    would wait for its timeout, and a game server on a LAN or loopback needs none.
    """
    return RTCPeerConnection(RTCConfiguration(iceServers=to_rtc_ice_servers(ice_servers)))


# --- channels -------------------------------------------------------------------------------


@attrs.define
class ChannelStats:
    """Traffic counters of one data channel."""

    #: messages handed to the SCTP layer
    messages_sent: int = 0
    #: payload bytes handed to the SCTP layer
    bytes_sent: int = 0
    #: messages delivered to the handler (or waiting for one)
    messages_received: int = 0
    #: payload bytes of the received messages
    bytes_received: int = 0
    #: unreliable messages not sent because the connection's send queue was backed up
    send_drops: int = 0
    #: received messages discarded: oversized, wrong type, or no room while no handler
    receive_drops: int = 0
    #: exceptions raised by the message handler (logged, never propagated into aiortc)
    handler_errors: int = 0


def _payload_bytes(data: bytes | str) -> int:
    """Size of ``data`` on the wire (UTF-8 for str)."""
    if isinstance(data, bytes):
        return len(data)
    # isascii() is O(1) in CPython (a flag of the string object): encode only when needed.
    return len(data) if data.isascii() else len(data.encode("utf-8"))


def _is_reliable(raw: RTCDataChannel) -> bool:
    return raw.maxRetransmits is None and raw.maxPacketLifeTime is None


def _ahead_of_reliable(raw: RTCDataChannel) -> None:
    """Move the message just sent on the unreliable channel ``raw`` ahead of the reliable
    messages waiting in the association's queue.

    aiortc keeps one queue of whole messages per association, first in first out, and hands
    the next one to SCTP only when SCTP has sent all of the previous one's chunks: behind a
    burst of bulk reliable data (a relayed file, a stream) a datagram of game state would
    wait its turn, and arrive late enough to be useless. Unreliable messages go first
    (among themselves in order); a reliable message already being sent is not interrupted.
    Streams are independent in SCTP, so this changes no channel's own order.
    """
    queue = getattr(raw.transport, "_data_channel_queue", None)
    if queue is None or len(queue) < 2:
        return
    last = len(queue) - 1
    for index in range(last):
        if _is_reliable(queue[index][0]):
            break
    else:
        return
    item = queue[last]
    del queue[last]
    queue.insert(index, item)


class DataChannel:
    """One data channel of a :class:`PeerLink`: size limits, backpressure and counters.

    Not created directly: use :attr:`PeerLink.reliable`, :attr:`PeerLink.lossy`,
    :meth:`PeerLink.create_channel` or the link's ``on_channel`` handler.
    """

    def __init__(
        self, raw: RTCDataChannel, link: PeerLink, *, max_message_bytes: int, binary_only: bool
    ) -> None:
        self._raw = raw
        self._reliable = _is_reliable(raw)  # fixed when the channel is made
        self._link = link
        self._handler: MessageHandler | None = None
        self._pending: deque[bytes | str] = deque()
        self._opened = asyncio.get_running_loop().create_future()
        self._binary_only = binary_only
        #: largest message accepted in either direction, in bytes
        self.max_message_bytes = max_message_bytes
        #: traffic counters
        self.stats = ChannelStats()
        raw.on("message", self._on_message)
        raw.on("open", self._on_open)
        raw.on("close", self._on_close)
        if raw.readyState == "open":
            self._on_open()

    # properties of the channel, as negotiated

    @property
    def label(self) -> str:
        """The channel's label."""
        return str(self._raw.label)

    @property
    def id(self) -> int | None:
        """The SCTP stream id (None until an in-band channel has been assigned one)."""
        value = self._raw.id
        return None if value is None else int(value)

    @property
    def ordered(self) -> bool:
        """Whether messages are delivered in order."""
        return bool(self._raw.ordered)

    @property
    def max_retransmits(self) -> int | None:
        """Retransmission limit, or None."""
        value = self._raw.maxRetransmits
        return None if value is None else int(value)

    @property
    def max_packet_life_time(self) -> int | None:
        """Retransmission time limit in milliseconds, or None."""
        value = self._raw.maxPacketLifeTime
        return None if value is None else int(value)

    @property
    def reliable(self) -> bool:
        """True if every message is delivered (no retransmission limit)."""
        return self._reliable

    @property
    def ready_state(self) -> str:
        """``connecting``, ``open``, ``closing`` or ``closed``."""
        return str(self._raw.readyState)

    @property
    def buffered_amount(self) -> int:
        """Bytes sent on this channel and not yet handed to the SCTP association."""
        return int(self._raw.bufferedAmount)

    @property
    def raw(self) -> RTCDataChannel:
        """The underlying aiortc channel (for diagnostics; send through this wrapper)."""
        return self._raw

    # sending

    def send(self, data: bytes | str) -> bool:
        """Send one message. Returns False if an unreliable channel dropped it (backed up).

        Raises ValueError if the message exceeds :attr:`max_message_bytes`, TypeError for
        a str on a binary-only channel, and :class:`ChannelNotOpen` if not open.
        """
        size = _payload_bytes(data)
        if size > self.max_message_bytes:
            raise ValueError(
                f"message of {size} bytes exceeds the {self.max_message_bytes}-byte limit of "
                f"channel {self.label!r} ({self._limit_name()})"
            )
        if self._binary_only and not isinstance(data, bytes):
            raise TypeError(f"channel {self.label!r} carries bytes, not {type(data).__name__}")
        if self._raw.readyState != "open":
            raise ChannelNotOpen(f"channel {self.label!r} is {self._raw.readyState}")
        if not self.reliable:
            backlog = self._link.datagram_backlog()
            # An empty queue always takes one message, so a partially reliable channel can
            # carry messages larger than the limit; otherwise the backlog stays under it.
            if backlog and backlog + size > self._link.backlog_limit:
                self.stats.send_drops += 1
                return False
        self._raw.send(data)
        if not self.reliable:
            _ahead_of_reliable(self._raw)
        self.stats.messages_sent += 1
        self.stats.bytes_sent += size
        return True

    def _limit_name(self) -> str:
        if self.max_message_bytes == MAX_DATAGRAM_BYTES:
            return "MAX_DATAGRAM_BYTES"
        if self.max_message_bytes == MAX_RELIABLE_MESSAGE_BYTES:
            return "MAX_RELIABLE_MESSAGE_BYTES"
        return "max_message_bytes"

    # receiving

    @property
    def handler(self) -> MessageHandler | None:
        """The installed message handler (to chain another in front of it, say)."""
        return self._handler

    def set_handler(self, handler: MessageHandler | None) -> None:
        """Install the function called with each received message (None: keep them).

        Messages received while no handler was installed are delivered now, in order.
        """
        self._handler = handler
        while handler is not None and self._pending and self._handler is handler:
            self._deliver(handler, self._pending.popleft())

    def _on_message(self, data: bytes | str) -> None:
        # Called by aiortc's SCTP receive path: must not raise.
        size = _payload_bytes(data)
        if (self._binary_only and not isinstance(data, bytes)) or size > self.max_message_bytes:
            self.stats.receive_drops += 1
            why = (
                f"a message of {size} bytes over the channel's limit of {self.max_message_bytes}"
                if size > self.max_message_bytes
                else "a text message on a binary channel"
            )
            logger.debug("%s: dropped %s on channel %r", self._link.name, why, self.label)
            self._link._refused(f"{why} (channel {self.label!r})", size)
            return
        self.stats.messages_received += 1
        self.stats.bytes_received += size
        handler = self._handler
        if handler is not None:
            self._deliver(handler, data)
        elif len(self._pending) < MAX_PENDING_MESSAGES:
            self._pending.append(data)
        else:
            self.stats.receive_drops += 1

    def _deliver(self, handler: MessageHandler, data: bytes | str) -> None:
        try:
            handler(data)
        except Exception:
            self.stats.handler_errors += 1
            logger.exception("%s: handler of channel %r raised", self._link.name, self.label)

    # lifecycle

    def _on_open(self) -> None:
        if not self._opened.done():
            self._opened.set_result(None)
        self._link._channel_opened(self)

    def _on_close(self) -> None:
        if not self._opened.done():
            self._opened.set_exception(ChannelNotOpen(f"channel {self.label!r} closed"))
            self._opened.exception()  # mark retrieved: nobody may be waiting
        self._link._channel_closed(self)

    async def wait_open(self) -> None:
        """Wait until the channel is open; raises :class:`ChannelNotOpen` if it closes first."""
        await asyncio.shield(self._opened)

    def close(self) -> None:
        """Close this channel (the peer sees it close too)."""
        if self._raw.readyState not in ("closing", "closed"):
            self._raw.close()

    def __repr__(self) -> str:
        return f"<DataChannel {self.label!r} id={self.id} {self.ready_state}>"


# --- the link -------------------------------------------------------------------------------

_link_ids = itertools.count(1)


class PeerLink:
    """One client<->server peer connection with the ``reliable`` and ``lossy`` channels.

    Create it with ``connect_peer()`` (client) or receive it from ``SignalingServer``'s
    ``on_peer`` (server); the constructor is for those two and for tests.

    ``impairment`` (an :class:`~netcode.transport.impair.Impairment`, or an
    :class:`~netcode.transport.impair.ImpairedPath` to share or keep a handle on) impairs
    every UDP datagram of ``pc`` both ways; it is attached here, so create the link before
    ``setLocalDescription``. The active path is :attr:`impairment`.

    ``delayed_acks`` (the default) delays this association's SCTP acknowledgements as RFC
    4960 6.2 allows and lets them ride the next outgoing DATA packet
    (:mod:`netcode.transport.sctp`): a game connection then sends half the UDP datagrams.
    """

    def __init__(
        self,
        pc: RTCPeerConnection,
        *,
        name: str = "",
        lossy_backlog_limit_bytes: int = DEFAULT_LOSSY_BACKLOG_LIMIT_BYTES,
        impairment: Impairment | ImpairedPath | None = None,
        cwnd_floor_packets: int = DEFAULT_CWND_FLOOR_PACKETS,
        delayed_acks: bool = True,
    ) -> None:
        self._pc = pc
        #: prefix of this link's log lines
        self.name = name or f"link#{next(_link_ids)}"
        #: unreliable messages are dropped while more than this many bytes wait to be sent
        self.backlog_limit = lossy_backlog_limit_bytes
        #: what the server said about itself in its answer (client side), else empty
        self.server_info: dict[str, Any] = {}
        #: server side: the fields of the resume request this link answered, else None
        self.resume_request: dict[str, Any] | None = None
        #: set once the link is closed, whichever end closed it
        self.closed = asyncio.Event()
        self._channels: list[DataChannel] = []
        self._remote_channels: set[DataChannel] = set()
        self._channel_handler: ChannelHandler | None = None
        self._refused_handler: Callable[[str, int], object] | None = None
        self._pending_channels: list[DataChannel] = []
        self._state_handlers: list[StateHandler] = []
        self._state = str(pc.connectionState)
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._close_task: asyncio.Task[None] | None = None

        self.reliable = self._wrap(
            pc.createDataChannel(RELIABLE_LABEL, negotiated=True, id=RELIABLE_CHANNEL_ID),
            max_message_bytes=MAX_RELIABLE_MESSAGE_BYTES,
        )
        self.lossy = self._wrap(
            pc.createDataChannel(
                LOSSY_LABEL,
                negotiated=True,
                id=LOSSY_CHANNEL_ID,
                ordered=False,
                maxRetransmits=0,
            ),
            max_message_bytes=MAX_DATAGRAM_BYTES,
            binary_only=True,
        )
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        _shorten_initial_rto(pc)
        if cwnd_floor_packets:
            hold_cwnd_floor(pc, cwnd_floor_packets)
        #: the delayed, bundled SCTP acknowledgements of this link (None: aiortc's own)
        self.sack_policy = delay_acks(pc) if delayed_acks else None
        patient_consent(pc)  # a slow answer to a consent check must not close the link
        # Attached once the channels gave pc its ICE transport, before any gathering.
        self._impairment: ImpairedPath | None = None
        if impairment is not None:
            path = impairment if isinstance(impairment, ImpairedPath) else ImpairedPath(impairment)
            path.attach(pc)
            self._impairment = path

    @property
    def pc(self) -> RTCPeerConnection:
        """The underlying aiortc peer connection."""
        return self._pc

    @property
    def impairment(self) -> ImpairedPath | None:
        """The impairment acting on this link's UDP datagrams, or None."""
        return self._impairment

    @property
    def connection_state(self) -> str:
        """``new``, ``connecting``, ``connected``, ``failed`` or ``closed``."""
        return self._state

    @property
    def channels(self) -> list[DataChannel]:
        """All channels of the link, the two base channels first."""
        return list(self._channels)

    # sending

    def send_reliable(self, data: bytes | str) -> None:
        """Send on the reliable channel (str arrives as str, bytes as bytes).

        Raises ValueError over MAX_RELIABLE_MESSAGE_BYTES (16 KiB).
        """
        self.reliable.send(data)

    def send_lossy(self, data: bytes) -> bool:
        """Send one datagram on the lossy channel; False if dropped because backed up.

        Raises ValueError over MAX_DATAGRAM_BYTES (1160).
        """
        return self.lossy.send(data)

    def send_backlog(self) -> int:
        """Bytes sent on any channel of this link and not yet handed to the SCTP layer.

        aiortc moves messages from its shared data-channel queue to SCTP only when SCTP's
        own queue is empty, i.e. when the congestion window has room, so this is the data
        waiting behind the congestion window.
        """
        return sum(channel._raw.bufferedAmount for channel in self._channels)

    def datagram_backlog(self) -> int:
        """Bytes a new datagram would wait behind: what the unreliable channels sent and
        the association has not taken yet. Unreliable messages go ahead of queued reliable
        ones, so a backlog of bulk reliable data does not make datagrams stale; the
        reliable message being sent when one is queued still goes first (at most
        MAX_RELIABLE_MESSAGE_BYTES)."""
        backlog = 0
        for channel in self._channels:
            if not channel._reliable:
                backlog += channel._raw.bufferedAmount
        return backlog

    def create_channel(
        self,
        label: str,
        *,
        ordered: bool = True,
        max_packet_life_time: int | None = None,
        max_retransmits: int | None = None,
    ) -> DataChannel:
        """Open an extra channel (for a data track); the peer's ``on_channel`` gets it.

        ``max_packet_life_time`` (ms) and ``max_retransmits`` make it unreliable (at most
        one of them). A channel with ``max_retransmits=0`` carries single datagrams (at most
        MAX_DATAGRAM_BYTES); others carry up to MAX_RELIABLE_MESSAGE_BYTES.
        """
        if self._pc.connectionState == "closed" or self.closed.is_set():
            raise ChannelNotOpen(f"{self.name} is closed")
        raw = self._pc.createDataChannel(
            label,
            ordered=ordered,
            maxPacketLifeTime=max_packet_life_time,
            maxRetransmits=max_retransmits,
        )
        return self._wrap(raw, max_message_bytes=_limit_for(raw))

    # receiving

    def on_reliable(self, handler: MessageHandler | None) -> None:
        """Install the handler of reliable messages (``bytes`` or ``str``)."""
        self.reliable.set_handler(handler)

    def on_lossy(self, handler: Callable[[bytes], object] | None) -> None:
        """Install the handler of lossy datagrams (always ``bytes``)."""
        # The lossy channel drops non-bytes on receipt, so the handler only sees bytes.
        self.lossy.set_handler(handler)  # type: ignore[arg-type]

    def on_inbound_bytes(self, handler: Callable[[int], bool] | None) -> bool:
        """Install the meter of the bytes the peer sends on every channel but the lossy one,
        called with each SCTP DATA chunk's size as it arrives, before it is reassembled into
        a message: False drops the chunk (the peer went over its budget). Returns False if
        this link cannot meter chunks (aiortc's own acknowledgements): then meter messages."""
        policy = self.sack_policy
        if policy is None:
            return False
        if handler is None:
            policy.admit = None
            return True
        lossy_id = self.lossy.raw.id

        def admit(stream_id: int, size: int) -> bool:
            return stream_id == lossy_id or handler(size)

        policy.admit = admit
        return True

    def on_refused(self, handler: Callable[[str, int], object] | None) -> None:
        """Install the handler of messages a channel refused on receipt (over its size
        limit, or text on a binary channel): called with what was wrong and the size."""
        self._refused_handler = handler

    def _refused(self, why: str, size: int) -> None:
        handler = self._refused_handler
        if handler is None:
            return
        try:
            handler(why, size)
        except Exception:
            logger.exception("%s: the refused-message handler raised", self.name)

    def on_channel(self, handler: ChannelHandler | None) -> None:
        """Install the handler of channels the peer opens; earlier ones are delivered now."""
        self._channel_handler = handler
        while handler is not None and self._pending_channels:
            self._deliver_channel(handler, self._pending_channels.pop(0))

    def on_state_change(self, handler: StateHandler) -> None:
        """Call ``handler(state)`` on each connection-state change."""
        self._state_handlers.append(handler)

    def stats(self) -> dict[str, ChannelStats]:
        """Counters per channel label (a label used twice shows its last channel)."""
        return {channel.label: channel.stats for channel in self._channels}

    # lifecycle

    async def wait_open(self, timeout: float | None = None) -> None:
        """Wait until both base channels are open.

        Raises :class:`ConnectError` if the connection fails or closes first and
        :class:`ConnectTimeout` after ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._opened)
        except TimeoutError:
            raise ConnectTimeout(
                f"{self.name}: not open within {timeout} s (connection {self._state})"
            ) from None

    @property
    def is_open(self) -> bool:
        """True once both base channels opened and until the link closes."""
        return self._opened.done() and not self._opened.exception() and not self.closed.is_set()

    async def close(self) -> None:
        """Close the peer connection and every channel. Safe to call more than once."""
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._close())
        await asyncio.shield(self._close_task)

    async def wait_closed(self) -> None:
        """Wait until the link is closed (by either end or by a failure)."""
        await self.closed.wait()

    async def _close(self) -> None:
        self._fail_open(ConnectError(f"{self.name}: closed before it opened"))
        try:
            await self._pc.close()
        except Exception:
            logger.exception("%s: error while closing the peer connection", self.name)
        self._set_state("closed")
        self.closed.set()

    def _schedule_close(self) -> None:
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._close())

    def _fail_open(self, error: Exception) -> None:
        if not self._opened.done():
            self._opened.set_exception(error)
            self._opened.exception()  # retrieved: a link may close with nobody waiting

    def _wrap(
        self, raw: RTCDataChannel, *, max_message_bytes: int, binary_only: bool = False
    ) -> DataChannel:
        channel = DataChannel(
            raw, self, max_message_bytes=max_message_bytes, binary_only=binary_only
        )
        self._channels.append(channel)
        return channel

    def _channel_opened(self, channel: DataChannel) -> None:
        if (
            channel in (self.reliable, self.lossy)
            and self.reliable.ready_state == "open"
            and self.lossy.ready_state == "open"
            and not self._opened.done()
        ):
            logger.debug("%s: channels open", self.name)
            self._opened.set_result(None)

    def _channel_closed(self, channel: DataChannel) -> None:
        if channel is self.reliable or channel is self.lossy:
            # Without both base channels the link is useless: close it all.
            logger.debug("%s: base channel %r closed", self.name, channel.label)
            self._schedule_close()
        elif channel in self._channels:
            self._channels.remove(channel)
            self._remote_channels.discard(channel)

    def _on_datachannel(self, raw: RTCDataChannel) -> None:
        # A peer-opened channel: the peer chose its settings, so bound how many it may open.
        if len(self._remote_channels) >= MAX_EXTRA_CHANNELS:
            logger.warning("%s: peer opened too many channels; closing %r", self.name, raw.label)
            raw.close()
            return
        channel = self._wrap(raw, max_message_bytes=_limit_for(raw))
        self._remote_channels.add(channel)
        if self._channel_handler is not None:
            self._deliver_channel(self._channel_handler, channel)
        else:
            self._pending_channels.append(channel)

    def _deliver_channel(self, handler: ChannelHandler, channel: DataChannel) -> None:
        try:
            handler(channel)
        except Exception:
            logger.exception("%s: on_channel handler raised", self.name)

    def _on_connection_state(self) -> None:
        state = str(self._pc.connectionState)
        self._set_state(state)
        if state in ("failed", "closed"):
            self._fail_open(ConnectError(f"{self.name}: connection {state}"))
            self._schedule_close()

    def _set_state(self, state: str) -> None:
        if state == self._state:
            return
        logger.debug("%s: %s -> %s", self.name, self._state, state)
        self._state = state
        for handler in list(self._state_handlers):
            try:
                handler(state)
            except Exception:
                logger.exception("%s: state handler raised", self.name)

    def __repr__(self) -> str:
        return f"<PeerLink {self.name} {self._state}>"


#: SCTP's retransmission timeout before the first round-trip sample (seconds). aiortc uses
#: RFC 4960's 3 s, so a lost INIT or COOKIE-ECHO stalls a connect or resume for 3 s; RFC 9260,
#: which obsoletes RFC 4960, lowered RTO.Initial to 1 s.
SCTP_INITIAL_RTO_S = 1.0


def _shorten_initial_rto(pc: RTCPeerConnection) -> None:
    """Give ``pc``'s SCTP association RFC 9260's initial RTO (this association only)."""
    sctp = pc.sctp
    if sctp is not None and isinstance(getattr(sctp, "_rto", None), float | int):
        sctp._rto = min(float(sctp._rto), SCTP_INITIAL_RTO_S)


def hold_cwnd_floor(pc: RTCPeerConnection, packets: int) -> bool:
    """Keep ``pc``'s SCTP congestion window at ``packets`` full packets or more.

    aiortc's SCTP congestion control (RFC 4960) halves the window on a loss and drops it to
    one packet on a retransmission timeout (at least 1 s), and every data channel of the
    connection waits behind it, the lossy one included: at 5% loss a game's snapshots and
    events then queue for seconds (docs/BENCHMARKS.md, "Events on the real stack"). netcode
    paces its datagrams itself (a token bucket) and drops unreliable ones that would queue,
    so below the floor the window protects little and costs the game its latency; above it,
    SCTP's congestion control is unchanged. Affects this association only. Returns False if
    aiortc's internals are not as expected (the connection then works unchanged).
    """
    sctp = pc.sctp
    if sctp is None or not isinstance(getattr(sctp, "_cwnd", None), int):
        return False
    receive_sack = getattr(sctp, "_receive_sack_chunk", None)
    t3_expired = getattr(sctp, "_t3_expired", None)
    if receive_sack is None or t3_expired is None:
        return False
    floor = packets * int(getattr(aiortc.rtcsctptransport, "USERDATA_MAX_LENGTH", 1200))

    async def receive_sack_chunk(chunk: Any) -> None:
        await receive_sack(chunk)
        sctp._cwnd = max(sctp._cwnd, floor)

    def t3_expired_held() -> None:
        t3_expired()  # schedules the retransmission, which runs after the floor is back
        sctp._cwnd = max(sctp._cwnd, floor)

    sctp._receive_sack_chunk = receive_sack_chunk  # type: ignore[method-assign]
    sctp._t3_expired = t3_expired_held  # type: ignore[method-assign]
    sctp._cwnd = max(sctp._cwnd, floor)
    return True


def _limit_for(raw: RTCDataChannel) -> int:
    # A message sent without retransmissions is lost if any of its packets is: keep it to
    # one packet. Channels that retransmit (even for a limited time) may carry more.
    if raw.maxRetransmits == 0:
        return MAX_DATAGRAM_BYTES
    return MAX_RELIABLE_MESSAGE_BYTES
