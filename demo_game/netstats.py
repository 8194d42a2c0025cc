"""What the net-graph overlay shows: a plain stats record and a short history of it.

The network layer fills ``NetStats`` (a few times a second is plenty); the renderer only
reads it. Nothing here imports pygame or netcode.
"""

from __future__ import annotations

from collections import deque

import attrs

__all__ = ["NetHistory", "NetStats"]


@attrs.frozen
class NetStats:
    """One sample of the connection's health, as the net graph (F3) shows it."""

    mode: str = "offline"  #: "offline", "connecting", "connected", ...
    rtt_ms: float = 0.0  #: smoothed round-trip time
    loss: float = 0.0  #: measured datagram loss, 0..1
    kbps_in: float = 0.0  #: received, kilobits per second
    kbps_out: float = 0.0  #: sent, kilobits per second
    snapshot_bytes: int = 0  #: bytes of the latest snapshot (all its datagrams)
    datagrams_per_snapshot: float = 0.0  #: datagrams the latest snapshot took
    interp_buffer_ms: float = 0.0  #: how far behind the newest snapshot we render
    sim_latency_ms: float = 0.0  #: simulated extra one-way latency (F5/F6)
    sim_loss: float = 0.0  #: simulated extra loss, 0..1 (F7/F8)
    fps: float = 0.0  #: frames drawn per second


class NetHistory:
    """The last ``max_samples`` samples of the graphed values, oldest first."""

    def __init__(self, max_samples: int = 120) -> None:
        self.kbps_in: deque[float] = deque(maxlen=max_samples)
        self.kbps_out: deque[float] = deque(maxlen=max_samples)
        self.rtt_ms: deque[float] = deque(maxlen=max_samples)

    def __len__(self) -> int:
        return len(self.rtt_ms)

    def append(self, stats: NetStats) -> None:
        """Record one sample (call at a steady rate, e.g. 10 Hz)."""
        self.kbps_in.append(stats.kbps_in)
        self.kbps_out.append(stats.kbps_out)
        self.rtt_ms.append(stats.rtt_ms)
