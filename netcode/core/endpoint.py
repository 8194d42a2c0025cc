"""The sans-IO connection endpoint: one side of a lossy datagram path.

Theory of operation
-------------------
An :class:`Endpoint` turns a path that may lose, duplicate and reorder datagrams (a WebRTC
data channel with ``ordered=False, maxRetransmits=0``, or the simulated link of the tests)
into one where every datagram carries a sequence number and acknowledges the peer's recent
datagrams, in the manner of reliable.io. It never resends anything: it reports. Each
datagram that carries frames is reported exactly once, as ACKED when the peer's header says
it arrived, or as LOST when it can no longer be acknowledged (the peer has acknowledged a
datagram more than 32 newer, so this one has left the peer's ack window) or when no ack came
within the loss timeout. Policy (resending events, choosing delta baselines) lives in the
layers above, which attach a delivery callback to each frame they send.

Sending: ``send_frame`` queues a frame; ``datagrams_to_send(now)`` packs queued frames into
datagrams of at most MAX_DATAGRAM_BYTES (a frame too big for one datagram is split into
FRAGMENT frames), adds PONGs and periodic PINGs, and when nothing else is going out but the
peer is owed an ack, an ack-only datagram. Ack-only datagrams consume a sequence number but
are not ack-eliciting, are not tracked and are never reported.

Receiving: ``receive_datagram(data, now)`` decodes, validates, deduplicates (a sequence
already received, or too old to tell, is dropped), records the sequence for our next ack
header, processes the peer's acks, answers PINGs and reassembles fragments. Frames for the
layers above come out of ``next_event()`` as :class:`FrameReceived`, beside
:class:`DatagramAcked` / :class:`DatagramLost` reports.

Time is always an argument (``now``, seconds on any monotonic clock); call
``handle_timer(now)`` at ``get_timer()`` (or simply every tick) to run loss timeouts and
fragment expiry.

Tracing: an optional ``tracer(kind, now, fields)`` passed to the constructor is called at each
datagram sent (``"send"``), received (``"recv"``, accepted or the reason it was dropped),
acknowledged (``"ack"``), lost (``"lost"``) and round-trip update (``"rtt"``); see
:data:`Tracer`. Without one, each site costs a single ``if``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from netcode.core.events import DatagramAcked, DatagramLost, Delivery, Event, FrameReceived
from netcode.core.fragments import FRAGMENT_DATA_BYTES, Reassembler, split_message
from netcode.core.seq import seq_add, seq_diff
from netcode.core.stats import (
    ClockEstimator,
    ConnectionStats,
    Counters,
    LossEstimator,
    RttEstimator,
)
from netcode.errors import ProtocolError, SendQueueFull
from netcode.wire import (
    HEADER_BYTES,
    MAX_DATAGRAM_BYTES,
    MAX_FRAME_PAYLOAD_BYTES,
    FrameType,
    decode_datagram_untrusted,
    decode_fragment_untrusted,
    decode_ping_untrusted,
    decode_pong_untrusted,
    encode_datagram,
    encode_fragment,
    encode_ping,
    encode_pong,
    frame_bytes,
)

__all__ = ["ACK_WINDOW", "DeliveryCallback", "Endpoint", "EndpointConfig", "Tracer"]

logger = logging.getLogger(__name__)

#: How many sequences one header acknowledges: ``ack`` itself and the 32 before it.
ACK_WINDOW = 33

DeliveryCallback = Callable[[Delivery], None]

#: ``tracer(kind, now, fields)``: called with a fresh ``fields`` dict at each traced event.
#:
#: - ``"send"``: ``seq``, ``bytes`` (whole datagram), ``frames`` (``[[frame_type, payload
#:   bytes], ...]``, empty for an ack-only datagram)
#: - ``"recv"``: ``bytes``, ``result`` (``"accepted"``, ``"malformed"``, ``"duplicate"``,
#:   ``"stale"`` or ``"out_of_window"``), and unless malformed ``seq``; if accepted ``frames``
#: - ``"ack"``: ``seq``, ``bytes``, and ``rtt_ms`` when this ack gave a round-trip sample
#: - ``"lost"``: ``seq``, ``bytes``, ``reason`` (``"window"``, ``"timeout"`` or ``"overflow"``)
#: - ``"rtt"``: ``smoothed_ms``, ``variation_ms`` after each round-trip sample
Tracer = Callable[[str, float, dict[str, Any]], None]

_KNOWN_FRAME_TYPES = frozenset(int(t) for t in FrameType)
#: what send_frame takes (FRAGMENT frames are the endpoint's own)
_SENDABLE_FRAME_TYPES = _KNOWN_FRAME_TYPES - {int(FrameType.FRAGMENT)}
_MASK32 = 0xFFFFFFFF


@attrs.frozen
class EndpointConfig:
    """Tunables of an :class:`Endpoint`. The defaults suit a game sending at 20-60 Hz."""

    #: Longest an ack owed to the peer waits for a datagram to ride on before one is sent alone.
    max_ack_delay: float = 0.010
    #: Loss timeout before the first round-trip sample.
    initial_loss_timeout: float = 1.0
    #: Bounds of the loss timeout, which otherwise follows 1.5 x RTT + 4 x RTT variation.
    min_loss_timeout: float = 0.1
    max_loss_timeout: float = 3.0
    #: Sequences further ahead of the newest received than this are dropped as hostile.
    max_sequence_jump: int = 8192
    #: Datagrams awaiting their ack; beyond this the oldest is declared lost.
    max_in_flight: int = 2048
    #: Bound on queued, not yet packed frame bytes; send_frame raises SendQueueFull beyond it.
    max_send_queue_bytes: int = 256 * 1024
    #: A lossy message may be split into at most this many fragments.
    max_fragments: int = 8
    #: Reassembly bounds and timeout (seconds).
    max_reassembly_messages: int = 16
    max_reassembly_bytes: int = 64 * 1024
    reassembly_timeout: float = 1.0
    #: Seconds between PINGs (round trip and peer clock); None sends none.
    ping_interval: float | None = 1.0
    #: First sequence number this endpoint sends.
    initial_sequence: int = 0
    #: Report DatagramAcked / DatagramLost events (per-frame callbacks fire regardless).
    datagram_events: bool = True

    @property
    def max_message_bytes(self) -> int:
        """Largest payload ``send_frame`` accepts (fragmented if over one datagram)."""
        return self.max_fragments * FRAGMENT_DATA_BYTES


class _Tracker:
    """Delivery of one sent frame or fragmented message: reported once to its callback."""

    __slots__ = ("callback", "remaining")

    def __init__(self, callback: DeliveryCallback, pieces: int) -> None:
        self.callback: DeliveryCallback | None = callback
        self.remaining = pieces

    def piece_acked(self) -> None:
        self.remaining -= 1
        if self.remaining == 0 and self.callback is not None:
            callback, self.callback = self.callback, None
            callback(Delivery.ACKED)

    def lost(self) -> None:
        if self.callback is not None:
            callback, self.callback = self.callback, None
            callback(Delivery.LOST)


class _Pending:
    __slots__ = ("cancelled", "expires_at", "frame_type", "key", "payload", "size", "tracker")

    def __init__(
        self,
        frame_type: int,
        payload: bytes,
        tracker: _Tracker | None,
        key: object,
        expires_at: float | None,
    ) -> None:
        self.frame_type = frame_type
        self.payload = payload
        self.size = frame_bytes(len(payload))
        self.tracker = tracker
        self.key = key
        self.expires_at = expires_at
        self.cancelled = False


class _Sent:
    __slots__ = ("sent_at", "size", "trackers")

    def __init__(self, sent_at: float, size: int, trackers: list[_Tracker]) -> None:
        self.sent_at = sent_at
        self.size = size
        self.trackers = trackers


class Endpoint:
    """One side of a netcode connection over a lossy datagram path. See the module docstring."""

    def __init__(
        self, config: EndpointConfig | None = None, *, name: str = "", tracer: Tracer | None = None
    ) -> None:
        self.config = config = config or EndpointConfig()
        self.name = name
        self._tracer = tracer
        self.counters = Counters()
        self.rtt = RttEstimator()
        self.loss = LossEstimator()
        self.clock = ClockEstimator()
        self._events: deque[Event] = deque()
        # sending
        self._next_sequence = config.initial_sequence & 0xFFFF
        self._sent_total = 0
        self._in_flight: dict[int, _Sent] = {}  # insertion order = send order
        self._queue: deque[_Pending] = deque()
        self._queue_bytes = 0
        self._next_expiry: float | None = None  # earliest expires_at among queued frames
        self._keyed: dict[object, list[_Pending]] = {}
        self._next_message_id = 0
        self._peer_newest_ack: int | None = None
        # receiving
        self._received_newest: int | None = None
        self._received_bits = 0
        self._ack_owed_since: float | None = None
        self.last_received_at: float | None = None
        #: when the peer's acknowledgements last moved on to a newer datagram of ours (None:
        #: never), whether or not it was still counted in flight
        self.last_acked_at: float | None = None
        # pings
        self._next_ping_id = 0
        self._next_ping_at: float | None = None
        self._pings_out: dict[int, float] = {}
        self._pongs_owed: list[tuple[int, float]] = []
        self._reassembler = Reassembler(
            max_fragments=config.max_fragments,
            max_messages=config.max_reassembly_messages,
            max_bytes=config.max_reassembly_bytes,
            timeout=config.reassembly_timeout,
        )

    # ---------------------------------------------------------------- API: sending

    def send_frame(
        self,
        frame_type: int,
        payload: bytes,
        *,
        on_delivery: DeliveryCallback | None = None,
        supersede_key: object = None,
        expires_at: float | None = None,
    ) -> None:
        """Queue one frame for the next ``datagrams_to_send``.

        A payload larger than one datagram can carry is split into FRAGMENT frames (lost
        whole if any piece is lost); above ``config.max_message_bytes`` it raises ValueError.
        ``on_delivery`` is called exactly once with ACKED or LOST (LOST also when the frame
        is dropped unsent). A frame queued with a ``supersede_key`` replaces any unsent frame
        queued with the same key; one with ``expires_at`` is dropped if still unsent then.
        """
        if frame_type not in _SENDABLE_FRAME_TYPES:
            raise ValueError(f"frame type {frame_type} is not a sendable FrameType")
        n = len(payload)
        if n > MAX_FRAME_PAYLOAD_BYTES:
            limit = self.config.max_message_bytes
            if n > limit:
                raise ValueError(
                    f"payload of {n} bytes exceeds the lossy message limit of {limit} bytes "
                    f"({self.config.max_fragments} fragments of {FRAGMENT_DATA_BYTES} bytes)"
                )
            message_id = self._next_message_id
            self._next_message_id = seq_add(message_id, 1)
            pieces: list[tuple[int, bytes]] = [
                (FrameType.FRAGMENT, encode_fragment(header, data))
                for header, data in split_message(frame_type, message_id, payload)
            ]
            size = sum(frame_bytes(len(p)) for _, p in pieces)
        else:
            pieces = [(frame_type, payload)]
            size = frame_bytes(n)
        if self._queue_bytes + size > self.config.max_send_queue_bytes:
            raise SendQueueFull(
                f"send queue holds {self._queue_bytes} bytes; adding {size} would exceed "
                f"max_send_queue_bytes={self.config.max_send_queue_bytes}"
            )
        if supersede_key is not None:
            self._cancel_key(supersede_key)
        tracker = _Tracker(on_delivery, len(pieces)) if on_delivery is not None else None
        entries = [_Pending(t, p, tracker, supersede_key, expires_at) for t, p in pieces]
        self._queue.extend(entries)
        if expires_at is not None and (self._next_expiry is None or expires_at < self._next_expiry):
            self._next_expiry = expires_at
        self._queue_bytes += size
        if supersede_key is not None:
            self._keyed[supersede_key] = entries

    def datagrams_to_send(self, now: float, max_datagrams: int | None = None) -> list[bytes]:
        """Pack what is queued into datagrams and return them, oldest frames first."""
        out: list[bytes] = []
        dropped: list[_Tracker] = []
        self._drop_expired(now, dropped)
        self._maybe_ping(now)
        queue = self._queue
        while queue or self._pongs_owed:
            if max_datagrams is not None and len(out) >= max_datagrams:
                break
            room = MAX_DATAGRAM_BYTES - HEADER_BYTES
            frames: list[tuple[int, bytes]] = []
            trackers: list[_Tracker] = []
            for ping_id, received_at in self._pongs_owed:
                payload = encode_pong(ping_id, int((now - received_at) * 1e6), now)
                frames.append((FrameType.PONG, payload))
                room -= frame_bytes(len(payload))
            self._pongs_owed.clear()
            # First fit: take every queued frame that still fits, keeping the others in order.
            skipped: list[_Pending] = []
            while queue and room > 2:
                entry = queue.popleft()
                if entry.cancelled:
                    continue
                if entry.size > room:
                    skipped.append(entry)
                    if len(skipped) > 16:  # the rest will not fit either; stop looking
                        break
                    continue
                frames.append((entry.frame_type, entry.payload))
                room -= entry.size
                self._queue_bytes -= entry.size
                if entry.tracker is not None:
                    trackers.append(entry.tracker)
                if entry.key is not None:
                    self._forget_key(entry)
            queue.extendleft(reversed(skipped))
            if not frames:
                break
            out.append(self._emit(frames, trackers, now))
        # compare as get_timer() computes the deadline, so the timer always finds work
        owed = self._ack_owed_since
        room_left = max_datagrams is None or max_datagrams > 0
        if not out and room_left and owed is not None and now >= owed + self.config.max_ack_delay:
            out.append(self._emit([], [], now))
        for tracker in dropped:
            tracker.lost()
        return out

    # ---------------------------------------------------------------- API: receiving

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Process one datagram from the peer. Bad datagrams are dropped and counted."""
        counters = self.counters
        counters.datagrams_received += 1
        counters.bytes_received += len(data)
        try:
            datagram = decode_datagram_untrusted(data)
            for frame_type, _ in datagram.frames:
                if frame_type not in _KNOWN_FRAME_TYPES:
                    raise ProtocolError(f"unknown frame type {frame_type}")
        except ProtocolError as exc:
            counters.datagrams_malformed += 1
            logger.debug("%s: dropped malformed datagram: %s", self.name, exc)
            if self._tracer is not None:
                self._tracer("recv", now, {"bytes": len(data), "result": "malformed"})
            return
        sequence = datagram.sequence
        newest = self._received_newest
        if newest is not None:
            distance = seq_diff(sequence, newest)
            if distance > self.config.max_sequence_jump:
                counters.datagrams_out_of_window += 1
                self._trace_dropped(sequence, data, "out_of_window", now)
                return
            if distance == 0:
                counters.datagrams_duplicate += 1
                self._trace_dropped(sequence, data, "duplicate", now)
                return
            if distance < 0:
                if -distance >= ACK_WINDOW:
                    counters.datagrams_stale += 1
                    self._trace_dropped(sequence, data, "stale", now)
                    return
                bit = 1 << (-distance - 1)
                if self._received_bits & bit:
                    counters.datagrams_duplicate += 1
                    self._trace_dropped(sequence, data, "duplicate", now)
                    return
                self._received_bits |= bit
            else:
                bits = self._received_bits
                self._received_bits = ((bits << 1 | 1) << (distance - 1)) & _MASK32
                self._received_newest = sequence
        else:
            self._received_newest = sequence
        counters.datagrams_accepted += 1
        self.last_received_at = now
        if self._tracer is not None:
            frames = [[t, len(p)] for t, p in datagram.frames]
            fields = {"seq": sequence, "bytes": len(data), "result": "accepted", "frames": frames}
            self._tracer("recv", now, fields)
        if datagram.frames and self._ack_owed_since is None:
            self._ack_owed_since = now
        if datagram.ack is not None:
            self._process_acks(datagram.ack, datagram.ack_bits, now)
        for frame_type, payload in datagram.frames:
            counters.frames_received[frame_type] += 1
            counters.frame_bytes_received[frame_type] += len(payload)
            self._dispatch(frame_type, payload, sequence, now)

    def next_event(self) -> Event | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    # ---------------------------------------------------------------- API: timers

    def get_timer(self) -> float | None:
        """When ``handle_timer`` next has work, or None."""
        deadlines = []
        if self._in_flight:
            oldest = next(iter(self._in_flight.values()))
            deadlines.append(oldest.sent_at + self.loss_timeout)
        if self._ack_owed_since is not None:
            deadlines.append(self._ack_owed_since + self.config.max_ack_delay)
        expiry = self._reassembler.next_expiry()
        if expiry is not None:
            deadlines.append(expiry)
        if self._next_ping_at is not None:
            deadlines.append(self._next_ping_at)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Declare timed-out datagrams lost and expire partial messages."""
        timeout = self.loss_timeout
        in_flight = self._in_flight
        while in_flight:
            sequence, sent = next(iter(in_flight.items()))
            if now < sent.sent_at + timeout:
                break
            self._report_lost(sequence, now, "timeout")
        self.counters.messages_expired += self._reassembler.expire(now)

    # ---------------------------------------------------------------- state

    @property
    def loss_timeout(self) -> float:
        config = self.config
        if self.rtt.smoothed is None:
            return config.initial_loss_timeout
        timeout = 1.5 * self.rtt.smoothed + 4 * self.rtt.variation + config.max_ack_delay
        return min(max(timeout, config.min_loss_timeout), config.max_loss_timeout)

    @property
    def in_flight(self) -> int:
        """Ack-eliciting datagrams sent and not yet reported."""
        return len(self._in_flight)

    @property
    def send_queue_bytes(self) -> int:
        return self._queue_bytes

    @property
    def next_sequence(self) -> int:
        """Sequence number the next datagram will carry."""
        return self._next_sequence

    def stats(self) -> ConnectionStats:
        rtt = self.rtt
        c = self.counters
        return ConnectionStats(
            rtt_ms=None if rtt.smoothed is None else rtt.smoothed * 1000,
            rtt_min_ms=None if rtt.min is None else rtt.min * 1000,
            jitter_ms=rtt.variation * 1000,
            loss=self.loss.total,
            recent_loss=self.loss.recent,
            clock_offset=self.clock.offset,
            datagrams_sent=c.datagrams_sent,
            datagrams_received=c.datagrams_received,
            bytes_sent=c.bytes_sent,
            bytes_received=c.bytes_received,
            datagrams_in_flight=len(self._in_flight),
            send_queue_bytes=self._queue_bytes,
        )

    # ---------------------------------------------------------------- internals

    def _emit(self, frames: list[tuple[int, bytes]], trackers: list[_Tracker], now: float) -> bytes:
        sequence = self._next_sequence
        ack = self._received_newest
        data = encode_datagram(sequence, ack, self._received_bits, frames)
        self._next_sequence = seq_add(sequence, 1)
        self._sent_total += 1
        self._ack_owed_since = None
        counters = self.counters
        counters.datagrams_sent += 1
        counters.bytes_sent += len(data)
        for frame_type, payload in frames:
            counters.frames_sent[frame_type] += 1
            counters.frame_bytes_sent[frame_type] += len(payload)
        if self._tracer is not None:
            sent = [[t, len(p)] for t, p in frames]
            self._tracer("send", now, {"seq": sequence, "bytes": len(data), "frames": sent})
        if frames:
            if len(self._in_flight) >= self.config.max_in_flight:
                self._report_lost(next(iter(self._in_flight)), now, "overflow")
            self._in_flight[sequence] = _Sent(now, len(data), trackers)
        return data

    def _was_sent(self, sequence: int) -> bool:
        """True if we have sent ``sequence`` (within the last half of the sequence space)."""
        if self._sent_total == 0:
            return False
        age = seq_diff(seq_add(self._next_sequence, -1), sequence)
        return 0 <= age < min(self._sent_total, 1 << 15)

    def _process_acks(self, ack: int, ack_bits: int, now: float) -> None:
        if not self._was_sent(ack):
            # The peer acknowledges a datagram we never sent: ignore its acks entirely.
            self.counters.acks_ignored += 1
            return
        in_flight = self._in_flight
        sent = in_flight.get(ack)
        if sent is not None:
            rtt = self.rtt
            rtt.update(now - sent.sent_at)
            self._report_acked(ack, now, rtt.latest)
            if self._tracer is not None:
                assert rtt.smoothed is not None  # just updated
                fields = {"smoothed_ms": rtt.smoothed * 1e3, "variation_ms": rtt.variation * 1e3}
                self._tracer("rtt", now, fields)
        if ack_bits and in_flight:
            # The bits name up to 32 sequences. With fewer datagrams in flight (a game's
            # usual few), look the other way round: each one in flight, is its bit set?
            # Either way they are reported newest first.
            if len(in_flight) <= 32:
                acked = []
                for sequence in in_flight:
                    offset = (ack - sequence) & 0xFFFF
                    if 0 < offset <= 32 and ack_bits >> (offset - 1) & 1:
                        acked.append((offset, sequence))
                for _, sequence in sorted(acked):
                    self._report_acked(sequence, now)
            else:
                bits = ack_bits
                offset = 1
                while bits:
                    if bits & 1:
                        sequence = (ack - offset) & 0xFFFF
                        if sequence in in_flight:
                            self._report_acked(sequence, now)
                    bits >>= 1
                    offset += 1
        if self._peer_newest_ack is None or seq_diff(ack, self._peer_newest_ack) > 0:
            self._peer_newest_ack = ack
            self.last_acked_at = now
        # Anything ACK_WINDOW or more behind the newest ack can never be acknowledged now.
        newest = self._peer_newest_ack
        while in_flight:
            sequence = next(iter(in_flight))
            if seq_diff(newest, sequence) < ACK_WINDOW:
                break
            self._report_lost(sequence, now, "window")

    def _report_acked(self, sequence: int, now: float, rtt: float | None = None) -> None:
        sent = self._in_flight.pop(sequence)
        self.counters.datagrams_acked += 1
        if self._tracer is not None:
            fields: dict[str, Any] = {"seq": sequence, "bytes": sent.size}
            if rtt is not None:
                fields["rtt_ms"] = rtt * 1e3
            self._tracer("ack", now, fields)
        self.loss.record(False)
        if self.config.datagram_events:
            self._events.append(DatagramAcked(sequence, sent.size, sent.sent_at))
        for tracker in sent.trackers:
            tracker.piece_acked()

    def _report_lost(self, sequence: int, now: float, reason: str) -> None:
        sent = self._in_flight.pop(sequence)
        self.counters.datagrams_lost += 1
        if self._tracer is not None:
            fields = {"seq": sequence, "bytes": sent.size, "reason": reason}
            self._tracer("lost", now, fields)
        self.loss.record(True)
        if self.config.datagram_events:
            self._events.append(DatagramLost(sequence, sent.size, sent.sent_at))
        for tracker in sent.trackers:
            tracker.lost()

    def _trace_dropped(self, sequence: int, data: bytes, result: str, now: float) -> None:
        if self._tracer is not None:
            self._tracer("recv", now, {"seq": sequence, "bytes": len(data), "result": result})

    def _dispatch(self, frame_type: int, payload: bytes, sequence: int, now: float) -> None:
        try:
            if frame_type == FrameType.PING:
                self._pongs_owed.append((decode_ping_untrusted(payload), now))
                del self._pongs_owed[:-4]  # a flood of PINGs earns at most four PONGs
            elif frame_type == FrameType.PONG:
                self._on_pong(payload, now)
            elif frame_type == FrameType.FRAGMENT:
                header, data = decode_fragment_untrusted(payload)
                message = self._reassembler.add(header, data, now)
                if message is not None:
                    self.counters.messages_reassembled += 1
                    self._events.append(FrameReceived(header.inner_type, message, sequence))
            else:
                self._events.append(FrameReceived(frame_type, payload, sequence))
        except ProtocolError as exc:
            self.counters.fragments_malformed += frame_type == FrameType.FRAGMENT
            logger.debug("%s: dropped malformed frame %d: %s", self.name, frame_type, exc)

    def _on_pong(self, payload: bytes, now: float) -> None:
        pong = decode_pong_untrusted(payload)
        sent_at = self._pings_out.pop(pong.ping_id, None)
        if sent_at is None:
            return  # unsolicited or late: ignore
        round_trip = max(now - sent_at - pong.hold_us / 1e6, 0.0)
        self.clock.update(round_trip, pong.responder_time + round_trip / 2 - now)

    def _maybe_ping(self, now: float) -> None:
        interval = self.config.ping_interval
        if interval is None:
            return
        if self._next_ping_at is None:
            self._next_ping_at = now
        if now < self._next_ping_at:
            return
        ping_id = self._next_ping_id
        self._next_ping_id = seq_add(ping_id, 1)
        self._pings_out[ping_id] = now
        if len(self._pings_out) > 8:
            del self._pings_out[next(iter(self._pings_out))]
        self._next_ping_at = now + interval
        self._queue.appendleft(_Pending(FrameType.PING, encode_ping(ping_id), None, None, None))
        self._queue_bytes += self._queue[0].size

    def _drop_expired(self, now: float, dropped: list[_Tracker]) -> None:
        # Walk the queue only once something in it has expired: a paced backlog is
        # flushed every millisecond. Cancelled entries are skipped when packing anyway.
        if not self._queue or self._next_expiry is None or now <= self._next_expiry:
            return
        kept: deque[_Pending] = deque()
        next_expiry: float | None = None
        for entry in self._queue:
            if entry.cancelled:
                continue
            expires_at = entry.expires_at
            if expires_at is not None:
                if now > expires_at:
                    self._discard(entry, dropped)
                    continue
                if next_expiry is None or expires_at < next_expiry:
                    next_expiry = expires_at
            kept.append(entry)
        self._queue = kept
        self._next_expiry = next_expiry

    def _cancel_key(self, key: object) -> None:
        entries = self._keyed.pop(key, None)
        if not entries:
            return
        dropped: list[_Tracker] = []
        for entry in entries:
            if not entry.cancelled:
                self._discard(entry, dropped)
        for tracker in dropped:
            tracker.lost()

    def _discard(self, entry: _Pending, dropped: list[_Tracker]) -> None:
        entry.cancelled = True
        self._queue_bytes -= entry.size
        self.counters.frames_dropped += 1
        if entry.tracker is not None and entry.tracker not in dropped:
            dropped.append(entry.tracker)
        if entry.key is not None:
            self._forget_key(entry)

    def _forget_key(self, entry: _Pending) -> None:
        entries = self._keyed.get(entry.key)
        if entries is not None and entry in entries:
            entries.remove(entry)
            if not entries:
                del self._keyed[entry.key]
