"""Simulated latency and loss on a connected Room's lossy channel (F5-F8 in the demo).

:class:`LinkImpairment` wraps the room's link after ``connect``: outgoing datagrams go
through a replacement ``send_lossy``, incoming ones through a handler installed in front of
the connection's own. Each datagram is dropped with probability ``loss`` (a seeded
``random.Random``, so runs repeat) and otherwise delayed by ``latency_ms / 2`` in each
direction with ``loop.call_later``, so the round trip grows by ``latency_ms``. Only the lossy
channel is impaired: that is where netcode carries snapshots, inputs, pings and game events,
and where its own loss handling shows. Settings change at any time; ``remove`` undoes it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

__all__ = ["LinkImpairment"]

Handler = Callable[[bytes], object]


class LinkImpairment:
    """Adds latency (split over both directions) and random loss to a room's lossy channel."""

    def __init__(self, room: Any, *, seed: int = 0) -> None:
        link = room.link
        if link is None:
            raise RuntimeError("connect the room before impairing its link")
        self.link = link
        self.rng = random.Random(seed)
        self.latency_ms = 0.0
        self.loss = 0.0
        #: datagrams dropped on purpose, each way
        self.dropped_out = 0
        self.dropped_in = 0
        self._loop = asyncio.get_running_loop()
        self._send: Callable[[bytes], bool] = link.send_lossy
        # The connection installed its receive handler at construction; netcode keeps it on
        # the lossy channel (there is no public getter), so take it from there and chain it.
        self._receive: Handler | None = link.lossy.handler
        link.send_lossy = self._send_lossy
        link.on_lossy(self._on_datagram)
        self._removed = False

    def set(self, *, latency_ms: float, loss: float) -> None:
        """Change the simulated extra round-trip latency (ms) and loss (0..1)."""
        self.latency_ms = max(0.0, float(latency_ms))
        self.loss = min(1.0, max(0.0, float(loss)))

    def remove(self) -> None:
        """Restore the link (datagrams already delayed are still delivered)."""
        if self._removed:
            return
        self._removed = True
        try:
            del self.link.send_lossy  # the instance attribute: back to the class's method
        except AttributeError:
            pass
        if self._receive is not None and self.link.lossy.handler is self._on_datagram:
            self.link.on_lossy(self._receive)

    def _one_way_s(self) -> float:
        return self.latency_ms / 2000.0

    def _send_lossy(self, data: bytes) -> bool:
        if self.loss and self.rng.random() < self.loss:
            self.dropped_out += 1
            return True  # lost on the way, as far as the sender can tell
        delay = self._one_way_s()
        if delay <= 0.0:
            return self._send(data)
        self._loop.call_later(delay, self._send_later, data)
        return True

    def _send_later(self, data: bytes) -> None:
        try:
            self._send(data)
        except Exception:  # the link closed meanwhile: the datagram is lost
            self.dropped_out += 1

    def _on_datagram(self, data: bytes) -> None:
        receive = self._receive
        if receive is None:
            return
        if self.loss and self.rng.random() < self.loss:
            self.dropped_in += 1
            return
        delay = self._one_way_s()
        if delay <= 0.0:
            receive(data)
        else:
            self._loop.call_later(delay, receive, data)
