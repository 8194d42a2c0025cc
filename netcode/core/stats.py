"""Connection statistics: counters, round-trip time, jitter, loss and clock offset."""

from __future__ import annotations

from collections import Counter, deque

import attrs

__all__ = ["ClockEstimator", "ConnectionStats", "Counters", "LossEstimator", "RttEstimator"]


@attrs.define
class Counters:
    """Monotonic counters of one endpoint. Per-type counters are keyed by frame type."""

    datagrams_sent: int = 0
    bytes_sent: int = 0
    datagrams_received: int = 0  #: every datagram handed to receive_datagram
    bytes_received: int = 0
    datagrams_accepted: int = 0  #: received, valid, in window and not a duplicate
    datagrams_acked: int = 0
    datagrams_lost: int = 0
    datagrams_malformed: int = 0  #: dropped: failed to decode or named an unknown frame
    datagrams_duplicate: int = 0  #: dropped: already received
    datagrams_stale: int = 0  #: dropped: older than the ack window, cannot be deduplicated
    datagrams_out_of_window: int = 0  #: dropped: sequence implausibly far ahead
    acks_ignored: int = 0  #: headers acknowledging a sequence we never sent
    frames_sent: Counter[int] = attrs.field(factory=Counter)
    frame_bytes_sent: Counter[int] = attrs.field(factory=Counter)
    frames_received: Counter[int] = attrs.field(factory=Counter)
    frame_bytes_received: Counter[int] = attrs.field(factory=Counter)
    frames_dropped: int = 0  #: queued frames superseded or expired before they were sent
    fragments_malformed: int = 0  #: fragments inconsistent with the rest of their message
    messages_reassembled: int = 0
    messages_expired: int = 0  #: partial messages dropped by timeout or memory bound


class RttEstimator:
    """Smoothed round-trip time and its mean deviation (RFC 6298), in seconds."""

    __slots__ = ("latest", "min", "samples", "smoothed", "variation")

    def __init__(self) -> None:
        self.smoothed: float | None = None
        self.variation = 0.0
        self.latest: float | None = None
        self.min: float | None = None
        self.samples = 0

    def update(self, sample: float) -> None:
        sample = max(sample, 0.0)
        self.latest = sample
        self.samples += 1
        self.min = sample if self.min is None else min(self.min, sample)
        if self.smoothed is None:
            self.smoothed = sample
            self.variation = sample / 2
        else:
            self.variation = 0.75 * self.variation + 0.25 * abs(self.smoothed - sample)
            self.smoothed = 0.875 * self.smoothed + 0.125 * sample


class LossEstimator:
    """Fraction of ack-eliciting datagrams lost: over the whole connection and recently."""

    __slots__ = ("_recent", "_recent_lost", "acked", "lost")

    def __init__(self, window: int = 256) -> None:
        self.acked = 0
        self.lost = 0
        self._recent: deque[bool] = deque(maxlen=window)
        self._recent_lost = 0

    def record(self, lost: bool) -> None:
        if lost:
            self.lost += 1
        else:
            self.acked += 1
        recent = self._recent
        if len(recent) == recent.maxlen and recent[0]:
            self._recent_lost -= 1
        recent.append(lost)
        self._recent_lost += lost

    @property
    def total(self) -> float:
        n = self.acked + self.lost
        return self.lost / n if n else 0.0

    @property
    def recent(self) -> float:
        return self._recent_lost / len(self._recent) if self._recent else 0.0


class ClockEstimator:
    """Offset of the peer's clock from ours, from PING/PONG exchanges.

    Among the last few samples it trusts the one with the shortest round trip: its
    one-way delays were the least inflated by queueing, so its midpoint guess is the best.
    """

    __slots__ = ("_samples", "offset", "round_trip")

    def __init__(self, keep: int = 8) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=keep)
        self.offset: float | None = None  #: peer clock minus local clock, seconds
        self.round_trip: float | None = None  #: round trip of the sample in use

    def update(self, round_trip: float, offset: float) -> None:
        self._samples.append((max(round_trip, 0.0), offset))
        self.round_trip, self.offset = min(self._samples)


@attrs.frozen
class ConnectionStats:
    """A snapshot of an endpoint's statistics, for display and tools."""

    rtt_ms: float | None  #: smoothed round-trip time
    rtt_min_ms: float | None
    jitter_ms: float  #: mean deviation of the round-trip time
    loss: float  #: fraction of datagrams lost over the whole connection
    recent_loss: float  #: fraction lost among the last 256 reported
    clock_offset: float | None  #: peer clock minus ours, seconds
    datagrams_sent: int
    datagrams_received: int
    bytes_sent: int
    bytes_received: int
    datagrams_in_flight: int
    send_queue_bytes: int
