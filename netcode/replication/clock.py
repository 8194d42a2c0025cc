"""The client's estimate of the server clock, and the tick timeline built on it.

The connection core measures the offset of the peer's clock from PING/PONG exchanges
(``Endpoint.clock.offset``: the sample with the shortest round trip among the last eight).
:class:`ServerClock` turns those noisy measurements into a clock that never jumps backwards
in normal operation: it slews towards each new measurement at most ``max_slew`` seconds per
second (so render time runs at most 5% fast or slow), and snaps only when the error exceeds
``snap_threshold`` (a reconnect, a server restart).
"""

from __future__ import annotations

__all__ = ["ServerClock", "TickTimeline"]


class ServerClock:
    """Server time as seen by the client, from measured clock offsets."""

    def __init__(self, *, max_slew: float = 0.05, snap_threshold: float = 0.25) -> None:
        self.max_slew = max_slew
        self.snap_threshold = snap_threshold
        self.offset: float | None = None  #: server clock minus local clock, as used
        self._target: float | None = None
        self._last_local: float | None = None
        self.snaps = 0

    def update(self, local_now: float, measured_offset: float | None) -> None:
        """Feed the latest measured offset (None: nothing measured yet)."""
        if measured_offset is None:
            return
        self._advance(local_now)  # time so far slewed toward the previous target
        self._target = measured_offset
        if self.offset is None or abs(measured_offset - self.offset) > self.snap_threshold:
            if self.offset is not None:
                self.snaps += 1
            self.offset = measured_offset
            self._last_local = local_now

    def _advance(self, local_now: float) -> None:
        if self.offset is None or self._target is None or self._last_local is None:
            return
        elapsed = max(local_now - self._last_local, 0.0)
        self._last_local = local_now
        step = self.max_slew * elapsed
        error = self._target - self.offset
        self.offset += max(-step, min(step, error))

    def server_time(self, local_now: float) -> float | None:
        """The server's clock now, or None before the first measurement."""
        self._advance(local_now)
        return None if self.offset is None else local_now + self.offset


class TickTimeline:
    """Maps server ticks to server time: tick ``n`` happened at ``epoch + n / tick_rate``."""

    def __init__(self, tick_rate: float, epoch: float) -> None:
        if not tick_rate > 0:
            raise ValueError(f"tick_rate must be positive, got {tick_rate}")
        self.tick_rate = tick_rate
        self.epoch = epoch

    def time_of(self, tick: float) -> float:
        return self.epoch + tick / self.tick_rate

    def tick_at(self, server_time: float) -> float:
        """The (fractional) tick at a server time."""
        return (server_time - self.epoch) * self.tick_rate
