"""Token buckets: how much a peer may send per second, with a burst, checked before work.

Sans-IO: time comes in as ``now`` (seconds on any monotonic clock).
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` units a second, at most ``burst`` at once; :meth:`take` says if one fits."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None if now == 0.0 else now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend ``amount`` if the bucket holds it (True); else spend nothing (False)."""
        if self._at is None:
            self._at = now
        elif now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False

    def level(self, now: float) -> float:
        """Units available at ``now``."""
        if self._at is None or now <= self._at:
            return self._tokens
        return min(self.burst, self._tokens + (now - self._at) * self.rate)
