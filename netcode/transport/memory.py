"""An in-process link with seeded impairment, under scripted time, and two-endpoint helpers.

:class:`SimulatedPath` carries datagrams one way with latency, jitter, loss, duplication,
reordering and a bandwidth cap, all drawn from one ``random.Random(seed)``, so a run is
exactly repeatable. :class:`SimulatedLink` is two paths; :class:`EndpointPair` drives two
:class:`~netcode.core.Endpoint` objects across a link, one fixed time step at a time, in the
style of aioquic's and h11's tests::

    pair = client_and_server(LinkConditions(latency_ms=50, loss=0.05), seed=1)
    pair.client.send_frame(FrameType.DATA, b"hello")
    pair.run_until(lambda: pair.server_frames, max_steps=100)
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

import attrs

from netcode.core import Endpoint, EndpointConfig, FrameReceived
from netcode.core.events import Event

__all__ = [
    "EndpointPair",
    "LinkConditions",
    "PathCounters",
    "SimulatedLink",
    "SimulatedPath",
    "client_and_server",
]


@attrs.frozen
class LinkConditions:
    """Impairments of one direction of a simulated link. Probabilities are 0..1."""

    latency_ms: float = 0.0  #: one-way base delay
    jitter_ms: float = 0.0  #: delay varies uniformly within +-jitter_ms
    loss: float = 0.0  #: probability a datagram is dropped
    duplicate: float = 0.0  #: probability a datagram is delivered twice
    reorder: float = 0.0  #: probability a datagram is held back behind later ones
    reorder_delay_ms: float = 30.0  #: how long a reordered datagram is held back (average)
    bandwidth_kbps: float | None = None  #: serialisation rate cap; None is unlimited
    max_queue_ms: float = 250.0  #: under the cap, datagrams queued longer are tail-dropped

    def __attrs_post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is not a probability in 0..1")
        if self.jitter_ms > self.latency_ms:
            raise ValueError(f"jitter_ms={self.jitter_ms} exceeds latency_ms={self.latency_ms}")


@attrs.define
class PathCounters:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    queue_dropped: int = 0
    duplicated: int = 0
    reordered: int = 0


class SimulatedPath:
    """One direction of a link: ``send(data, now)`` now, ``receive(now)`` when due."""

    def __init__(self, conditions: LinkConditions, rng: random.Random) -> None:
        self.conditions = conditions
        self.counters = PathCounters()
        self._rng = rng
        self._in_transit: list[tuple[float, int, bytes]] = []
        self._order = 0
        self._busy_until = 0.0

    def send(self, data: bytes, now: float) -> None:
        c = self.conditions
        rng = self._rng
        self.counters.sent += 1
        if c.bandwidth_kbps is not None:
            start = max(now, self._busy_until)
            if start - now > c.max_queue_ms / 1000:
                self.counters.queue_dropped += 1
                return
            self._busy_until = start + len(data) * 8 / (c.bandwidth_kbps * 1000)
            departs = self._busy_until
        else:
            departs = now
        if rng.random() < c.loss:
            self.counters.lost += 1
            return
        copies = 2 if rng.random() < c.duplicate else 1
        self.counters.duplicated += copies - 1
        for _ in range(copies):
            delay_ms = c.latency_ms + rng.uniform(-c.jitter_ms, c.jitter_ms)
            if rng.random() < c.reorder:
                self.counters.reordered += 1
                delay_ms += c.reorder_delay_ms * rng.uniform(0.5, 1.5)
            self._order += 1
            heapq.heappush(self._in_transit, (departs + delay_ms / 1000, self._order, data))

    def receive(self, now: float) -> list[bytes]:
        """Datagrams that have arrived by ``now``, in arrival order."""
        due = []
        transit = self._in_transit
        while transit and transit[0][0] <= now:
            due.append(heapq.heappop(transit)[2])
        self.counters.delivered += len(due)
        return due

    def next_arrival(self) -> float | None:
        return self._in_transit[0][0] if self._in_transit else None

    @property
    def in_transit(self) -> int:
        return len(self._in_transit)


class SimulatedLink:
    """A two-way link: ``a_to_b`` and ``b_to_a`` paths sharing one seeded generator."""

    def __init__(
        self,
        a_to_b: LinkConditions | None = None,
        b_to_a: LinkConditions | None = None,
        *,
        seed: int = 0,
    ) -> None:
        rng = random.Random(seed)
        self.a_to_b = SimulatedPath(a_to_b or LinkConditions(), rng)
        self.b_to_a = SimulatedPath(b_to_a or a_to_b or LinkConditions(), rng)


class EndpointPair:
    """Two endpoints joined by a simulated link, driven by scripted time.

    Each :meth:`step` advances the clock by ``dt``, delivers what has arrived, runs timers
    and sends what each endpoint has queued. Received frames and delivery reports are kept
    in lists (``client_frames`` holds the frames the client received, and so on).
    """

    def __init__(
        self, client: Endpoint, server: Endpoint, link: SimulatedLink, *, now: float = 0.0
    ) -> None:
        self.client = client
        self.server = server
        self.link = link
        self.now = now
        self.client_frames: list[FrameReceived] = []
        self.server_frames: list[FrameReceived] = []
        self.client_reports: list[Event] = []
        self.server_reports: list[Event] = []
        self.on_client_event: Callable[[Event], None] | None = None
        self.on_server_event: Callable[[Event], None] | None = None

    def transfer(self) -> None:
        """Deliver everything due now to both sides, then send what both have queued."""
        now = self.now
        for data in self.link.a_to_b.receive(now):
            self.server.receive_datagram(data, now)
        for data in self.link.b_to_a.receive(now):
            self.client.receive_datagram(data, now)
        for endpoint, path in ((self.client, self.link.a_to_b), (self.server, self.link.b_to_a)):
            endpoint.handle_timer(now)
            for data in endpoint.datagrams_to_send(now):
                path.send(data, now)
        self._drain(self.client, self.client_frames, self.client_reports, self.on_client_event)
        self._drain(self.server, self.server_frames, self.server_reports, self.on_server_event)

    def step(self, dt: float) -> None:
        """Advance time by ``dt`` seconds and transfer."""
        self.now += dt
        self.transfer()

    def roundtrip(self, dt: float = 0.001, max_steps: int = 10_000) -> None:
        """Step until nothing is in transit and neither side has anything queued."""
        self.run_until(self.idle, max_steps=max_steps, dt=dt)

    def idle(self) -> bool:
        return (
            self.link.a_to_b.in_transit == 0
            and self.link.b_to_a.in_transit == 0
            and self.client.send_queue_bytes == 0
            and self.server.send_queue_bytes == 0
        )

    def run_until(
        self, condition: Callable[[], object], *, max_steps: int, dt: float = 0.001
    ) -> int:
        """Step until ``condition()`` is true; fail loudly after ``max_steps``. Returns steps."""
        for steps in range(max_steps + 1):
            if condition():
                return steps
            self.step(dt)
        raise AssertionError(f"condition still false after {max_steps} steps of {dt} s")

    @staticmethod
    def _drain(
        endpoint: Endpoint,
        frames: list[FrameReceived],
        reports: list[Event],
        hook: Callable[[Event], None] | None,
    ) -> None:
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, FrameReceived):
                frames.append(event)
            else:
                reports.append(event)
            if hook is not None:
                hook(event)


def client_and_server(
    conditions: LinkConditions | None = None,
    reverse: LinkConditions | None = None,
    *,
    seed: int = 0,
    config: EndpointConfig | None = None,
    server_config: EndpointConfig | None = None,
) -> EndpointPair:
    """A client and a server endpoint over a fresh simulated link."""
    client = Endpoint(config, name="client")
    server = Endpoint(server_config or config, name="server")
    return EndpointPair(client, server, SimulatedLink(conditions, reverse, seed=seed))
