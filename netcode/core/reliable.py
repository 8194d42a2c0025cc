"""Reliable-ordered messages over the lossy channel, in the manner of yojimbo.

Theory of operation
-------------------
A :class:`ReliableChannel` sits on an :class:`~netcode.core.Endpoint` and gives each
direction of a connection a stream of messages (game events) delivered exactly once and in
the order they were sent, without waiting for SCTP's retransmission timer (at least 1 s in
aiortc) when a packet is lost. Each side of a connection has one channel; it both sends its
own messages and receives the peer's.

Sending. ``send(message)`` gives the message the next 16-bit id (wrapping, compared with
:func:`~netcode.core.seq.seq_diff`) and queues it. ``flush(now)``, called every tick, packs
into EVENT frames (netcode/wire/events.py), oldest id first, every queued message that is

- not yet sent, or
- not acknowledged and last sent more than ``resend_timeout`` ago, or
- carried last by a frame the endpoint has reported LOST,

and hands the frames to ``endpoint.send_frame`` with a delivery callback. A message is
acknowledged, and forgotten, as soon as any frame carrying it is reported ACKED: the
endpoint acknowledges datagrams, and a datagram that arrived was handed whole to the peer's
channel. The resend timeout follows the measured round trip::

    resend_timeout = clamp(srtt + resend_rttvar_factor * rttvar, min_resend_s, max_resend_s)

(``initial_resend_s`` before the first sample), doubled for each resend of the same
message (up to 4 s apart), so that a stalled path is not fed every queued message again
each second. ``srtt`` already includes the peer's ack
delay, so an acknowledgement normally arrives before the timeout; the variation term keeps
spurious resends rare, and a spurious resend costs only bytes (the receiver drops the
duplicate) while a late one costs a tick of latency for every message behind it. The
endpoint's LOST verdict comes only after its loss timeout (about 1.5 RTT) or 33 newer acks,
so it is a backstop that makes the message due at once, never the main trigger; and only
for its first transmission (a resend's LOST waits for the backed-off timer).

Early copies. Waiting for the timeout costs a lost message about RTT + ack delay + a tick
before its resend even leaves, and every message behind it waits too. So, as Quake 3 does
with its reliable commands, unacknowledged messages ride again in the datagrams that leave
anyway: when a flush sends an EVENT frame, its spare room carries early copies; and when
nothing is due but the endpoint has frames queued (a snapshot, an input: a datagram leaves
now), the channel adds an EVENT frame of early copies that fits the spare room of that
datagram. Oldest first, at most ``redundant_copies`` per message (a resend means the path
is losing far more or is stalled, and earns no new copies: they would only add to a queue),
at least ``copy_spacing_s`` apart (so that one burst of loss does not take every copy). A
lost datagram then costs one tick instead of a round trip, for a few bytes in datagrams
that leave regardless; no datagram is sent just for a copy. The resend timer runs from the
latest copy (an acknowledgement of a copy cannot come sooner, and resending while it is on
its way would be spurious); the LOST trigger stays with the transmission, so a loss of
every copy still resends about a round trip after the last.

Window. The receiver buffers at most ``window`` ids past the next one it expects and drops
anything further ahead as forged. Because a dropped message in an acknowledged datagram
would be lost for good, the sender never sends an id ``window`` or more past the oldest id
it does not know the receiver has (``max_send_queue_messages <= window`` makes the queue
bound imply it).

Fallback. A message longer than ``max_inline_bytes`` is not fragmented on the lossy path
(one lost piece would cost the whole message): it takes its id in the sequence and is
handed to the owner's ``fallback(message_id, message)`` at once, to go over the SCTP
reliable channel; the peer's owner passes it to ``receive_fallback`` and the channel
delivers it in order with the rest. The sender counts a fallback id as outstanding, for its
window, until the receiver reports it has passed it: the receiver sends an EVENT frame
without messages whose ``base_id`` is its next expected id (a *fallback acknowledgement*),
resent until the endpoint reports it ACKED.

Receiving. ``receive_frame(payload, now)`` takes each EVENT frame the owner drains from the
endpoint; messages within the window are buffered by id; duplicates, ids behind or too far
ahead and malformed frames are dropped and counted. Contiguous messages from the next
expected id move to the delivery queue, read with ``next_message()`` or ``received()``.

Bounds: the send queue (``max_send_queue_messages`` ids, ``max_send_queue_bytes`` bytes;
``send`` raises SendQueueFull beyond them), the reorder buffer (``window`` messages, each
at most one frame or ``max_message_bytes`` if it came by the fallback path, and in all at
most ``max_send_queue_bytes + max_message_bytes``, which an honest peer cannot exceed) and
the frames one flush sends (``max_frames_per_flush``). Delivered messages wait until the
owner reads them, which it does every tick. The channel does no IO and reads no clock.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable

import attrs

from netcode.core.endpoint import Endpoint
from netcode.core.events import Delivery
from netcode.core.seq import seq_add, seq_diff
from netcode.errors import ProtocolError, SendQueueFull
from netcode.wire import (
    EVENT_FRAME_HEADER_BYTES,
    HEADER_BYTES,
    MAX_DATAGRAM_BYTES,
    MAX_EVENT_ID_SPAN,
    MAX_FRAME_PAYLOAD_BYTES,
    FrameType,
    decode_event_frame_untrusted,
    encode_event_frame,
    event_entry_bytes,
)

__all__ = [
    "FallbackSender",
    "ReliableChannel",
    "ReliableConfig",
    "ReliableCounters",
    "ReliableStats",
]

logger = logging.getLogger(__name__)

FallbackSender = Callable[[int, bytes], None]
"""``fallback(message_id, message)``: send a large message over the reliable path."""


@attrs.frozen
class ReliableConfig:
    """Tunables of a :class:`ReliableChannel`. Both sides of a connection must agree on
    ``window`` and ``initial_id``."""

    #: Ids the receiver buffers past the next one it expects; the sender never runs further
    #: ahead of what it knows the receiver has.
    window: int = 1024
    #: Bounds of the send queue (messages not yet acknowledged, fallback ids included, and
    #: their bytes); ``send`` raises SendQueueFull beyond them.
    max_send_queue_messages: int = 1024
    max_send_queue_bytes: int = 256 * 1024
    #: Longer messages go to the ``fallback`` callable instead of the lossy path.
    max_inline_bytes: int = 1000
    #: Longest message ``send`` and ``receive_fallback`` accept (SCTP's limit is 262144).
    max_message_bytes: int = 256 * 1024
    #: Largest EVENT frame payload; lower it to leave room for other frames in a datagram.
    max_frame_bytes: int = MAX_FRAME_PAYLOAD_BYTES
    #: EVENT frames one ``flush`` may send (a backlog drains over several ticks).
    max_frames_per_flush: int = 4
    #: Resend timeout before the first round-trip sample.
    initial_resend_s: float = 0.25
    #: resend timeout = srtt + factor * rttvar, clamped to [min_resend_s, max_resend_s].
    resend_rttvar_factor: float = 2.0
    min_resend_s: float = 0.030
    max_resend_s: float = 1.0
    #: Early copies of a message (before its resend timeout, in all) that may ride in the
    #: spare room of datagrams sent anyway, so that one lost datagram costs a tick, not a
    #: round trip.
    redundant_copies: int = 3
    #: Least time between two transmissions (first, copy) of one message.
    copy_spacing_s: float = 0.015
    #: Id of the first message each side sends (tests use it to cross the wrap).
    initial_id: int = 0

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.window <= MAX_EVENT_ID_SPAN // 2:
            raise ValueError(f"window={self.window} is not in 1..{MAX_EVENT_ID_SPAN // 2}")
        if not 1 <= self.max_send_queue_messages <= self.window:
            raise ValueError(
                f"max_send_queue_messages={self.max_send_queue_messages} must be in "
                f"1..window={self.window}, or the receiver could drop what the sender sends"
            )
        if not EVENT_FRAME_HEADER_BYTES + 8 <= self.max_frame_bytes <= MAX_FRAME_PAYLOAD_BYTES:
            raise ValueError(
                f"max_frame_bytes={self.max_frame_bytes} is not in "
                f"{EVENT_FRAME_HEADER_BYTES + 8}..{MAX_FRAME_PAYLOAD_BYTES}"
            )
        largest_entry = event_entry_bytes(self.window, self.max_inline_bytes)
        if EVENT_FRAME_HEADER_BYTES + largest_entry > self.max_frame_bytes:
            raise ValueError(
                f"max_inline_bytes={self.max_inline_bytes} does not fit one EVENT frame of "
                f"max_frame_bytes={self.max_frame_bytes}"
            )
        if self.max_message_bytes < self.max_inline_bytes:
            raise ValueError("max_message_bytes is smaller than max_inline_bytes")
        if self.max_frames_per_flush < 1:
            raise ValueError("max_frames_per_flush must be at least 1")


@attrs.define
class ReliableCounters:
    """Monotonic counters of one channel."""

    messages_queued: int = 0  #: accepted by ``send`` for the lossy path
    messages_fallback: int = 0  #: accepted by ``send`` and handed to the fallback path
    messages_sent: int = 0  #: first transmissions on the lossy path
    messages_resent: int = 0  #: further transmissions (timeout or LOST)
    messages_redundant: int = 0  #: early copies in the spare room of frames going out anyway
    messages_acked: int = 0
    frames_sent: int = 0  #: EVENT frames with messages
    frames_acked: int = 0
    frames_lost: int = 0
    queue_full: int = 0  #: ``send`` calls refused with SendQueueFull
    messages_received: int = 0  #: accepted into the reorder buffer (either path)
    messages_delivered: int = 0  #: moved to the delivery queue, in order
    duplicates: int = 0  #: dropped: already received
    out_of_window: int = 0  #: dropped: far behind, or ``window`` or more ahead (forged)
    #: dropped: the reorder buffer already held more bytes than an honest peer can send
    reorder_overflow: int = 0
    frames_malformed: int = 0  #: dropped: the EVENT frame did not decode
    fallback_oversized: int = 0  #: ``receive_fallback`` messages over max_message_bytes
    fallback_acks_sent: int = 0
    fallback_acks_ignored: int = 0  #: acknowledged ids we never assigned


@attrs.frozen
class ReliableStats:
    """A snapshot of a channel's state and counters."""

    counters: ReliableCounters  #: a copy of the counters
    unacked_messages: int  #: lossy messages sent or queued, not yet acknowledged
    fallback_outstanding: int  #: fallback ids the receiver has not yet reported passing
    send_queue_bytes: int  #: bytes of the unacknowledged lossy messages
    reorder_buffered: int  #: messages received ahead of a missing one
    delivery_queued: int  #: delivered messages the owner has not read yet
    resend_timeout_ms: float  #: current resend timeout


#: Upper bound of an entry's bytes beyond its data (skip and length varints).
_MAX_ENTRY_OVERHEAD = 4
#: An EVENT frame of early copies is added to a departing datagram only with more room
#: than this (frame header, base id and one short message).
_MIN_COPY_FRAME_BYTES = 16
_DATAGRAM_ROOM = MAX_DATAGRAM_BYTES - HEADER_BYTES
#: Bytes of a frame's type and length, at most.
_FRAME_OVERHEAD = 3


#: get_timer keeps its answer while the resend timeout stays within this fraction of the one
#: it was computed for (it moves with every RTT sample; recomputing scans the messages in
#: flight, up to the send queue's bound on a stalled peer)
_TIMER_SLACK = 0.05

#: Resends of one message back off (x2 each) up to this many seconds apart.
_MAX_BACKOFF_S = 4.0


def _backoff(timeout: float, timeouts: int) -> float:
    """The wait after ``timeouts`` timeouts in a row: doubled per timeout (as TCP's RTO),
    so a stalled path is not fed a resend of every queued message every second."""
    return min(timeout * (1 << min(timeouts, 8)), max(timeout, _MAX_BACKOFF_S))


_DOUBLINGS = tuple(1 << timeouts for timeouts in range(9))


def _backoffs(timeout: float) -> list[float]:
    """``_backoff`` for 0..8 timeouts (more wait as long as 8), for walks over the queue."""
    cap = max(timeout, _MAX_BACKOFF_S)
    return [min(timeout * doubling, cap) for doubling in _DOUBLINGS]


def _spare_datagram_room(queued_bytes: int) -> int:
    """Room left in the last datagram that ``queued_bytes`` of frames fill (0: none leaves).

    An estimate (the endpoint packs first fit): the frame bytes past the last full datagram.
    """
    if queued_bytes <= 0:
        return 0
    used = queued_bytes % _DATAGRAM_ROOM
    return _DATAGRAM_ROOM - used if used else 0


class _Outgoing:
    __slots__ = ("copies", "data", "due", "frame", "last_copy", "last_sent", "resends")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.last_sent: float | None = None
        self.last_copy = 0.0  # when it last left, as a transmission or an early copy
        self.frame = -1  # token of the frame that carried it last
        self.due = False  # that frame was reported LOST: resend at the next flush
        self.copies = 0  # early copies sent (in all: a resend earns no new ones)
        self.resends = 0  # resends so far; each doubles the next wait


class ReliableChannel:
    """Reliable-ordered messages over an endpoint's lossy path. See the module docstring."""

    def __init__(
        self,
        endpoint: Endpoint,
        config: ReliableConfig | None = None,
        *,
        fallback: FallbackSender | None = None,
        name: str = "",
    ) -> None:
        self.endpoint = endpoint
        self.config = config = config or ReliableConfig()
        self.fallback = fallback
        self.name = name
        self.counters = ReliableCounters()
        self.last_received_at: float | None = None
        # sending
        self._next_id = config.initial_id & 0xFFFF
        self._outgoing: dict[int, _Outgoing] = {}  # insertion order = id order
        self._outgoing_bytes = 0
        self._fallback_outstanding: deque[int] = deque()
        self._next_frame_token = 0
        self._last_flush_at = 0.0
        # receiving
        self._next_expected = config.initial_id & 0xFFFF
        self._buffer: dict[int, tuple[bytes, bool]] = {}  # id -> (message, came by fallback)
        self._buffered_bytes = 0
        # An honest peer never has more than its send queue's bytes (and one message that
        # went by the fallback path) ahead of what we delivered: more is a peer pinning memory.
        self._max_buffered_bytes = config.max_send_queue_bytes + config.max_message_bytes
        self._delivered: deque[bytes] = deque()
        self._fallback_ack_owed = False
        # get_timer's answer, kept while nothing that could make it earlier changed (a
        # stalled peer leaves up to max_send_queue messages outstanding, and the connection
        # asks on every datagram it receives): a new or LOST message sets _urgent (the answer
        # is "at once" without a walk over the queue), and every other change that can move
        # a deadline counts in _changes. An acknowledgement only removes deadlines, so the
        # answer stands (at worst a flush comes early, finds nothing due and recomputes it).
        # The resend timeout moves with every RTT sample; a change within _TIMER_SLACK of the
        # one the answer was computed for keeps it (a resend a few percent early or late).
        self._urgent = False
        self._changes = 0
        # timer resends wait until then (see flush), a doubling hold while nothing is acked
        self._hold_until = 0.0
        self._hold_set_at = 0.0
        self._hold_level = 0
        self._timer_key: tuple[int, bool] | None = None
        self._timer_timeout = 0.0
        # _backoffs of the last resend timeout (flushes and timers walk the queue with it)
        self._waits_timeout = -1.0
        self._waits: list[float] = []
        self._timer_value: float | None = None
        # new messages wait for release_new() while hold_new is set (see there)
        self._hold_new = False
        self._released = False

    # ---------------------------------------------------------------- API: sending

    def send(self, message: bytes) -> int:
        """Queue ``message`` for reliable, ordered delivery and return its id.

        Raises SendQueueFull when the send queue is at its bound (nothing is queued then),
        and ValueError for a message over ``max_message_bytes``, or over
        ``max_inline_bytes`` when the channel has no ``fallback``.
        """
        config = self.config
        n = len(message)
        if len(self._outgoing) + len(self._fallback_outstanding) >= config.max_send_queue_messages:
            self.counters.queue_full += 1
            raise SendQueueFull(
                f"{self.name}: reliable send queue holds {config.max_send_queue_messages} "
                f"unacknowledged messages (max_send_queue_messages); the peer is not keeping up"
            )
        message_id = self._next_id
        if n > config.max_inline_bytes:
            if n > config.max_message_bytes:
                raise ValueError(
                    f"message of {n} bytes exceeds max_message_bytes={config.max_message_bytes}"
                )
            if self.fallback is None:
                raise ValueError(
                    f"message of {n} bytes exceeds max_inline_bytes={config.max_inline_bytes} "
                    f"and the channel has no fallback path"
                )
            # If the fallback refuses (raises), the id is not consumed.
            self.fallback(message_id, message)
            self._next_id = seq_add(message_id, 1)
            self._fallback_outstanding.append(message_id)
            self.counters.messages_fallback += 1
            return message_id
        if self._outgoing_bytes + n > config.max_send_queue_bytes:
            self.counters.queue_full += 1
            raise SendQueueFull(
                f"{self.name}: reliable send queue holds {self._outgoing_bytes} bytes; adding "
                f"{n} would exceed max_send_queue_bytes={config.max_send_queue_bytes}"
            )
        self._next_id = seq_add(message_id, 1)
        self._outgoing[message_id] = _Outgoing(message)
        if not self._hold_new or self._released:
            self._urgent = True
        self._outgoing_bytes += n
        self.counters.messages_queued += 1
        return message_id

    @property
    def hold_new(self) -> bool:
        """While True, a new message waits for :meth:`release_new` instead of leaving at the
        next flush; resends, LOST repairs and acknowledgements are not held.

        For an owner that sends a datagram every tick (a game host): its events then ride
        the tick's datagram, instead of leaving alone at a flush some datagram from the
        peer started (which costs a datagram and the SCTP acknowledgement it draws).
        Setting it False lets held messages go at the next flush.
        """
        return self._hold_new

    @hold_new.setter
    def hold_new(self, value: bool) -> None:
        if self._hold_new and not value:
            self._urgent = True  # what was held is new: due at once
        self._hold_new = value

    def release_new(self) -> bool:
        """Let the new messages held by :attr:`hold_new` go at the next flush; True if some
        wait (the caller then flushes)."""
        if not self._hold_new or self._released:
            return self._released
        outgoing = self._outgoing
        if not outgoing or next(reversed(outgoing.values())).last_sent is not None:
            return False  # nothing new (unsent messages are the newest)
        self._released = self._urgent = True
        return True

    def flush(self, now: float) -> int:
        """Hand what is due to the endpoint as EVENT frames; returns the frames sent.

        Call it every tick (and after ``send`` if the message should leave before the next
        tick). Messages go oldest id first; at most ``max_frames_per_flush`` frames. When
        everything due fits one frame, its spare room carries early copies; with nothing
        due, early copies go only if the endpoint has frames queued (see
        ``ReliableConfig.redundant_copies``).
        """
        self._last_flush_at = now
        if self._fallback_ack_owed:
            self._send_fallback_ack()
        if not self._outgoing:
            return 0
        self._check_hold()
        if not self._urgent:
            when = self.get_timer()
            if when is None or when > now:
                return 0  # nothing due: no walk over the queue
        self._changes += 1  # the walk below finds what is due; get_timer's answer is stale
        config = self.config
        timeout = self.resend_timeout
        spacing = config.copy_spacing_s
        window = config.window
        base = self._window_base()
        room_per_frame = config.max_frame_bytes - EVENT_FRAME_HEADER_BYTES
        due_bytes = 0
        hold = self._hold_until
        waits = self._backoffs(timeout)
        timed_out = False
        selected: list[tuple[int, _Outgoing]] = []
        candidates: list[tuple[int, _Outgoing]] = []
        held = self._hold_new and not self._released
        for message_id, out in self._outgoing.items():
            if seq_diff(message_id, base) >= window:
                break  # the receiver might not have room for it yet
            if out.last_sent is None and held:
                break  # new, held until release_new (the newest come last)
            if out.last_sent is None or out.due:
                selected.append((message_id, out))
                due_bytes += _MAX_ENTRY_OVERHEAD + len(out.data)
            elif now >= out.last_copy + waits[min(out.resends, 8)]:
                if now >= hold:  # else it waits for the peer's next sign of life
                    selected.append((message_id, out))
                    due_bytes += _MAX_ENTRY_OVERHEAD + len(out.data)
                    timed_out = True
            elif out.copies < config.redundant_copies and now >= out.last_copy + spacing:
                candidates.append((message_id, out))
        if timed_out:
            # Nothing acknowledged for a whole resend timeout: the path may be stalled.
            # Until the peer acknowledges something, no other message resends on its timer
            # before a doubling hold (as TCP backs off its one retransmission timer).
            stalled = self._hold_level > 0  # and nothing acknowledged since the last one
            self._hold_set_at = now
            self._hold_level = level = self._hold_level + 1
            self._hold_until = now + _backoff(timeout, level)
        if timed_out and stalled:
            # A timeout after a timeout: as TCP resends its oldest segment, one frame of the
            # oldest messages goes (the ones the receiver waits on, whatever their own
            # timers say). So a stalled peer is sent a frame per hold, not its whole queue.
            # What else was due goes at the next flush.
            probe: list[tuple[int, _Outgoing]] = []
            room = room_per_frame
            for message_id, out in self._outgoing.items():
                cost = event_entry_bytes(0, len(out.data))
                if seq_diff(message_id, base) >= window or cost > room:
                    break
                probe.append((message_id, out))
                room -= cost
            sent = self._emit(probe, now, resend=True) if probe else False
            self._urgent = True
            return 1 if sent else 0
        if not selected:
            self._urgent = self._released = False
            # Early copies only ride datagrams that leave anyway: the frames queued in the
            # endpoint, in the room their last datagram has left.
            room = _spare_datagram_room(self.endpoint.send_queue_bytes)
            if not candidates or room <= _MIN_COPY_FRAME_BYTES:
                return 0
            spare = min(room - _FRAME_OVERHEAD - EVENT_FRAME_HEADER_BYTES, room_per_frame)
        else:
            spare = room_per_frame - due_bytes
        if candidates and spare > 0:
            early = []
            for message_id, out in candidates:  # oldest first: the receiver waits on those
                cost = _MAX_ENTRY_OVERHEAD + len(out.data)
                if cost > spare:
                    break
                spare -= cost
                early.append((message_id, out))
            if early:
                selected.extend(early)
                selected.sort(key=lambda entry: seq_diff(entry[0], base))
        frames = 0
        batch: list[tuple[int, _Outgoing]] = []
        room = room_per_frame
        previous = -1
        for message_id, out in selected:
            skip = 0 if previous < 0 else seq_diff(message_id, previous) - 1
            cost = event_entry_bytes(skip, len(out.data))
            if cost > room:
                if not self._emit(batch, now):
                    return frames
                frames += 1
                if frames >= config.max_frames_per_flush:
                    return frames
                batch = []
                room = room_per_frame
                cost = event_entry_bytes(0, len(out.data))
            batch.append((message_id, out))
            room -= cost
            previous = message_id
        if batch:
            if not self._emit(batch, now):
                return frames
            frames += 1
        self._urgent = self._released = False  # every message that was new or due left
        return frames

    def get_timer(self) -> float | None:
        """When ``flush`` next has something to send, or None.

        A time at or before the last flush means at once (a new, LOST or owed message).
        """
        if self._fallback_ack_owed:
            return self._last_flush_at
        if not self._outgoing:
            return None
        if self._urgent:
            return self._last_flush_at
        self._check_hold()
        config = self.config
        timeout = self.resend_timeout
        # Early copies are worth a flush only while a datagram is about to leave.
        copies = (
            config.redundant_copies > 0
            and _spare_datagram_room(self.endpoint.send_queue_bytes) > _MIN_COPY_FRAME_BYTES
        )
        key = (self._changes, copies)
        if key == self._timer_key and abs(timeout - self._timer_timeout) <= (
            _TIMER_SLACK * self._timer_timeout
        ):
            return self._timer_value
        self._timer_key = key
        self._timer_timeout = timeout
        self._timer_value = value = self._earliest_deadline(timeout, copies)
        return value

    def _backoffs(self, timeout: float) -> list[float]:
        if timeout != self._waits_timeout:
            self._waits_timeout = timeout
            self._waits = _backoffs(timeout)
        return self._waits

    def _earliest_deadline(self, timeout: float, copies: bool) -> float | None:
        config = self.config
        base = self._window_base()
        hold = self._hold_until
        last_flush = self._last_flush_at
        waits = self._backoffs(timeout)
        window = config.window
        copy_limit = config.redundant_copies if copies else 0
        spacing = config.copy_spacing_s
        earliest: float | None = None
        held = self._hold_new and not self._released
        for message_id, out in self._outgoing.items():
            if seq_diff(message_id, base) >= window:
                break
            if out.last_sent is None and held:
                break  # new and held: no deadline until release_new
            if out.last_sent is None or out.due:
                return last_flush
            deadline = out.last_copy + waits[min(out.resends, 8)]
            if deadline <= last_flush:
                deadline = hold  # timed out, held (no early copy then: it would be a resend)
            elif out.copies < copy_limit and out.last_copy + spacing < deadline:
                deadline = out.last_copy + spacing
            if earliest is None or deadline < earliest:
                earliest = deadline
        return earliest

    # ---------------------------------------------------------------- API: receiving

    def receive_frame(self, payload: bytes, now: float) -> None:
        """Process one EVENT frame payload from the peer. Bad input is dropped and counted."""
        self.last_received_at = now
        try:
            frame = decode_event_frame_untrusted(payload)
        except ProtocolError as exc:
            self.counters.frames_malformed += 1
            logger.debug("%s: dropped malformed EVENT frame: %s", self.name, exc)
            return
        if not frame.messages:
            self._on_fallback_ack(frame.base_id)
            return
        for message_id, message in frame.messages:
            self._accept(message_id, message, False)
        self._deliver()

    def receive_fallback(self, message_id: int, message: bytes) -> None:
        """Accept a message the peer sent over the fallback path (untrusted input).

        It is delivered in order with the messages of the lossy path; duplicates, ids out of
        the window and messages over ``max_message_bytes`` are dropped and counted.
        """
        if not 0 <= message_id <= 0xFFFF:
            self.counters.out_of_window += 1
            return
        if len(message) > self.config.max_message_bytes:
            self.counters.fallback_oversized += 1
            return
        self._accept(message_id, message, True)
        self._deliver()

    def next_message(self) -> bytes | None:
        """The next delivered message, in order, or None."""
        return self._delivered.popleft() if self._delivered else None

    def received(self) -> list[bytes]:
        """Every delivered message not yet read, in order (empties the delivery queue)."""
        out = list(self._delivered)
        self._delivered.clear()
        return out

    # ---------------------------------------------------------------- state

    @property
    def resend_timeout(self) -> float:
        """Seconds after which an unacknowledged message is sent again."""
        config = self.config
        rtt = self.endpoint.rtt
        if rtt.smoothed is None:
            return config.initial_resend_s
        timeout = rtt.smoothed + config.resend_rttvar_factor * rtt.variation
        return min(max(timeout, config.min_resend_s), config.max_resend_s)

    @property
    def next_send_id(self) -> int:
        """Id the next ``send`` will assign."""
        return self._next_id

    @property
    def next_receive_id(self) -> int:
        """Id of the next message the receiving side will deliver."""
        return self._next_expected

    @property
    def unacked_messages(self) -> int:
        return len(self._outgoing)

    @property
    def send_queue_bytes(self) -> int:
        return self._outgoing_bytes

    def stats(self) -> ReliableStats:
        return ReliableStats(
            counters=attrs.evolve(self.counters),
            unacked_messages=len(self._outgoing),
            fallback_outstanding=len(self._fallback_outstanding),
            send_queue_bytes=self._outgoing_bytes,
            reorder_buffered=len(self._buffer),
            delivery_queued=len(self._delivered),
            resend_timeout_ms=self.resend_timeout * 1000,
        )

    # ---------------------------------------------------------------- internals

    def _window_base(self) -> int:
        """Oldest id the sender does not know the receiver has."""
        base = self._next_id
        if self._outgoing:
            base = next(iter(self._outgoing))
        if self._fallback_outstanding:
            oldest = self._fallback_outstanding[0]
            if seq_diff(oldest, base) < 0:
                base = oldest
        return base

    def _emit(self, batch: list[tuple[int, _Outgoing]], now: float, resend: bool = False) -> bool:
        """Send one frame of ``batch`` (``resend``: all of it as resends, none as early
        copies); False if the endpoint's queue is full."""
        token = self._next_frame_token
        ids = tuple(message_id for message_id, _ in batch)
        payload = encode_event_frame(ids[0], [(message_id, out.data) for message_id, out in batch])
        try:
            self.endpoint.send_frame(
                FrameType.EVENT, payload, on_delivery=functools.partial(self._on_frame, token, ids)
            )
        except SendQueueFull:
            # The endpoint is backed up; everything stays due and goes at a later flush.
            return False
        self._next_frame_token = token + 1
        self._changes += 1
        counters = self.counters
        counters.frames_sent += 1
        waits = self._backoffs(self.resend_timeout)
        for _, out in batch:
            if out.last_sent is None:
                counters.messages_sent += 1
            elif not (resend or out.due) and now < out.last_copy + waits[min(out.resends, 8)]:
                # An early copy: the LOST trigger stays with the transmission it copies;
                # the resend timer runs from the latest copy.
                counters.messages_redundant += 1
                out.copies += 1
                out.last_copy = now
                continue
            else:
                counters.messages_resent += 1
                out.resends += 1
            out.last_sent = out.last_copy = now
            out.frame = token
            out.due = False
        return True

    def _check_hold(self) -> None:
        if self._hold_until:
            acked = self.endpoint.last_acked_at
            if acked is not None and acked > self._hold_set_at:
                self._end_hold()  # the peer acknowledged a datagram (a PING): it is back

    def _end_hold(self) -> None:
        if self._hold_level > 1:
            # The peer is back after a stall (timeouts in a row, nothing acknowledged):
            # what it was sent meanwhile is lost, and the messages' own timers are out of
            # order after the probes. Everything goes again, oldest first.
            for out in self._outgoing.values():
                if out.last_sent is not None:
                    out.due = True
            self._urgent = True
        self._hold_until = 0.0
        self._hold_level = 0
        self._changes += 1

    def _on_frame(self, token: int, ids: tuple[int, ...], delivery: Delivery) -> None:
        outgoing = self._outgoing
        if delivery is Delivery.ACKED:
            if self._hold_until:  # a sign of life: timed-out messages resend at once
                self._end_hold()
            if seq_diff(self._next_id, self._window_base()) > self.config.window:
                # messages past the window may enter it now: unsent, so due at once
                self._urgent = True
            self.counters.frames_acked += 1
            for message_id in ids:
                out = outgoing.pop(message_id, None)
                if out is not None:
                    self.counters.messages_acked += 1
                    self._outgoing_bytes -= len(out.data)
        else:
            self.counters.frames_lost += 1
            for message_id in ids:
                out = outgoing.get(message_id)
                # Only the latest transmission's fate matters: an older frame's LOST says
                # nothing about a resend still in flight. Only the first transmission's
                # LOST resends at once: after that the path is stalled or losing heavily,
                # and the backed-off timer paces resends.
                if out is not None and out.frame == token and not out.resends:
                    out.due = True
                    self._urgent = True

    def _send_fallback_ack(self) -> None:
        payload = encode_event_frame(self._next_expected, [])
        try:
            self.endpoint.send_frame(
                FrameType.EVENT, payload, on_delivery=self._on_fallback_ack_delivery
            )
        except SendQueueFull:
            return
        self._fallback_ack_owed = False
        self._changes += 1
        self.counters.fallback_acks_sent += 1

    def _on_fallback_ack_delivery(self, delivery: Delivery) -> None:
        if delivery is Delivery.LOST:
            # Resend the newest position: it tells the peer at least as much.
            self._fallback_ack_owed = True
            self._changes += 1

    def _on_fallback_ack(self, next_expected: int) -> None:
        if seq_diff(self._next_id, next_expected) < 0:
            self.counters.fallback_acks_ignored += 1
            return
        outstanding = self._fallback_outstanding
        self._urgent = True  # the window's base may move: messages past it may enter it
        while outstanding and seq_diff(next_expected, outstanding[0]) > 0:
            outstanding.popleft()

    def _accept(self, message_id: int, message: bytes, via_fallback: bool) -> None:
        distance = seq_diff(message_id, self._next_expected)
        window = self.config.window
        if distance < 0:
            if distance >= -window:
                self.counters.duplicates += 1
            else:
                self.counters.out_of_window += 1
            return
        if distance >= window:
            self.counters.out_of_window += 1
            logger.debug(
                "%s: dropped message %d, %d ahead of the window", self.name, message_id, distance
            )
            return
        if message_id in self._buffer:
            self.counters.duplicates += 1
            return
        if distance and self._buffered_bytes + len(message) > self._max_buffered_bytes:
            self.counters.reorder_overflow += 1
            return
        self._buffer[message_id] = (message, via_fallback)
        self._buffered_bytes += len(message)
        self.counters.messages_received += 1

    def _deliver(self) -> None:
        buffer = self._buffer
        expected = self._next_expected
        delivered = 0
        while expected in buffer:
            message, via_fallback = buffer.pop(expected)
            self._buffered_bytes -= len(message)
            self._delivered.append(message)
            if via_fallback:
                self._fallback_ack_owed = True
                self._changes += 1
            expected = seq_add(expected, 1)
            delivered += 1
        self._next_expected = expected
        self.counters.messages_delivered += delivered
