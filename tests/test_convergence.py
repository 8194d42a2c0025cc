"""Replication converges from any state: the game host and a Replica over the simulated link.

A real :class:`GameHost` and a real :class:`Replica` (on an unconnected :class:`Room`) talk
through two :class:`~netcode.core.Endpoint` objects joined by the seeded simulated link of
``netcode.transport.memory``, under scripted time: every frame, datagram ACK and loss is the
real one. Only the rooms plumbing (signaling, the reliable channel) is replaced by a small
stand-in participant, so subscriptions and the Replica's creation can be scripted.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netcode.core import Endpoint, FrameReceived
from netcode.core.events import Event
from netcode.errors import ProtocolError
from netcode.replication import SchemaRegistry, World, entity, qfloat, qint
from netcode.rooms import Room
from netcode.rooms.host import GameHost
from netcode.rooms.replica import Replica
from netcode.rooms.server import ExtensionChannel
from netcode.rooms.topics import OutgoingTopics
from netcode.transport.memory import EndpointPair, LinkConditions, SimulatedLink

REG = SchemaRegistry()
TICK_RATE = 30.0
STEPS_PER_TICK = 4


@entity(type_id=1, registry=REG)
class Mover:
    x: float = qfloat(-100, 100, 0.01)
    y: float = qfloat(-100, 100, 0.01)


@entity(type_id=2, registry=REG)
class Marker:
    score: int = qint(0, 1000)


CALM = LinkConditions(latency_ms=10)


class Connection:
    """The parts of a DatagramConnection the game host uses, on the pair's scripted clock."""

    def __init__(self, endpoint: Endpoint, clock: Callable[[], float]) -> None:
        self.endpoint = endpoint
        self.now = clock
        self.attached_at = clock()

    def unacked_for(self, now: float) -> float:
        acked = self.endpoint.last_acked_at
        return now - (self.attached_at if acked is None else max(acked, self.attached_at))


class Participant:
    """The parts of a ServerParticipant the game host uses."""

    def __init__(self, endpoint: Endpoint, clock: Callable[[], float]) -> None:
        self.pid = 1
        self.identity = "ann"
        self.connection = Connection(endpoint, clock)
        self.left = asyncio.Event()
        self.reconnecting = False
        self.topics_out = OutgoingTopics()
        self.subscribed = True
        self.hellos: list[bytes] = []

    def subscribes_to(self, topic: str) -> bool:
        return self.subscribed or topic != "position"

    def send_frame(self, frame_type: int, payload: bytes, *, topic: str = "", **opts: Any) -> None:
        self.connection.endpoint.send_frame(frame_type, payload, **opts)

    def release_events(self) -> None:
        pass  # no game events here

    def send_extension(self, channel: int, body: bytes, sender_pid: int = 0) -> None:
        assert channel == ExtensionChannel.HOST
        self.hellos.append(body)


class Harness:
    def __init__(self, seed: int, *, replica: bool = True, max_world: int = 65536) -> None:
        self.rng = random.Random(seed)
        self.host = GameHost(tick_rate=TICK_RATE, registry=REG)
        self.host.world = World(REG, max_entities=max_world)
        self.pair = EndpointPair(
            Endpoint(name="client"), Endpoint(name="server"), SimulatedLink(CALM, seed=seed)
        )
        self.participant = Participant(self.pair.server, lambda: self.pair.now)
        self.room = Room()
        self.room.connection = SimpleNamespace(endpoint=self.pair.client)  # type: ignore[assignment]
        self.room.send_frame = self.pair.client.send_frame  # type: ignore[method-assign,assignment]
        self.pair.on_client_event = self._client_event
        self.pair.on_server_event = self._server_event
        self.host.participant_joined(self.participant)  # type: ignore[arg-type]
        self.replica: Replica | None = None
        if replica:
            self.make_replica()
        self.refused = 0
        #: the client sends an input every tick (acks and receipts ride it at once)
        self.send_inputs = False

    def make_replica(self) -> Replica:
        self.replica = Replica(self.room, registry=REG)
        self.replica.hub.receipt_delay = 0.0  # scripted time: no loop timers
        for body in self.participant.hellos:
            self.room.extension_handlers[ExtensionChannel.HOST](0, body)
        self.replica.clock.update(self.pair.now, 0.0)  # one clock for both ends
        return self.replica

    def set_link(self, down: LinkConditions, up: LinkConditions | None = None) -> None:
        self.pair.link.a_to_b.conditions = up or down
        self.pair.link.b_to_a.conditions = down

    def _client_event(self, event: Event) -> None:
        if isinstance(event, FrameReceived):
            self.room._on_event(event)

    def _server_event(self, event: Event) -> None:
        if isinstance(event, FrameReceived):
            try:
                self.host.frame_received(self.participant, event.frame_type, event.payload)  # type: ignore[arg-type]
            except ProtocolError:
                self.refused += 1

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.host.tick += 1
            self.host.run_tick(self.pair.now)
            for step in range(STEPS_PER_TICK):
                if step == STEPS_PER_TICK // 2 and self.send_inputs and self.replica is not None:
                    # the client's frame, half a tick after the server's
                    self.replica.send_input(self.host.tick, b"\0")
                self.pair.step(1 / TICK_RATE / STEPS_PER_TICK)

    # -- checks

    def decoder_world(self) -> dict[int, list[Any]]:
        assert self.replica is not None
        decoder = self.replica.decoder
        return {eid: list(decoder.quantized(eid)) for eid in decoder.entity_ids()}

    def server_world(self) -> dict[int, list[Any]]:
        world = self.host.world
        return {eid: list(world.quantized(eid)) for eid in world.entity_ids()}

    def converged(self) -> bool:
        return self.replica is not None and self.decoder_world() == self.server_world()

    def ticks_to_converge(self, limit: int) -> int:
        for n in range(limit + 1):
            if self.converged():
                return n
            self.tick()
        raise AssertionError(
            f"not converged after {limit} ticks: client {sorted(self.decoder_world())}, "
            f"server {sorted(self.server_world())}"
        )


def spawn_movers(world: World, n: int) -> list[int]:
    return [world.spawn(Mover(x=float(i), y=0.0)) for i in range(n)]


def move_all(world: World, tick: int) -> None:
    for eid in list(world.entity_ids()):
        if world.schema_of(eid).type_id == 1:
            world.update(eid, x=50 * math.sin(tick / 7 + eid), y=50 * math.cos(tick / 5 + eid))


# -- reproductions of the reported desyncs ---------------------------------------------


async def test_late_replica_converges() -> None:
    """Parts arrive (and are ACKed by the transport) before the client has a Replica."""
    h = Harness(1, replica=False)
    spawn_movers(h.host.world, 10)
    h.host.on_tick = lambda tick, dt: move_all(h.host.world, tick)
    h.tick(30)
    h.make_replica()
    h.host.on_tick = lambda tick, dt: None  # at rest: the newest states must match exactly
    assert h.ticks_to_converge(15) <= 15


async def test_client_cap_lower_than_the_world_never_desyncs() -> None:
    """The client's decoder holds at most 8 entities; the server has 20."""
    h = Harness(2)
    assert h.replica is not None
    h.replica.decoder.max_entities = 8
    ids = spawn_movers(h.host.world, 20)
    h.host.on_tick = lambda tick, dt: move_all(h.host.world, tick)
    h.tick(20)
    h.host.on_tick = lambda tick, dt: None
    h.tick(10)
    client = h.decoder_world()
    server = h.server_world()
    assert len(client) == 8  # as many as it may hold, each exactly the server's state
    assert all(server[eid] == state for eid, state in client.items())
    # once the world fits the client's cap, the client holds all of it
    for eid in ids[:14]:
        h.host.world.despawn(eid)
    assert h.ticks_to_converge(15) <= 15


async def test_unsubscribe_resubscribe_converges() -> None:
    """The server drops its encoder and later makes a new one; the client keeps its decoder."""
    h = Harness(3, max_world=12)
    world = h.host.world
    ids = spawn_movers(world, 10)
    h.host.on_tick = lambda tick, dt: move_all(world, tick)
    h.tick(20)
    h.participant.subscribed = False
    h.tick(3)
    for eid in ids[:6]:  # despawned while unsubscribed; ids come back as other types
        world.despawn(eid)
    for _ in range(6):
        world.spawn(Marker(score=7))
    h.tick(3)
    h.participant.subscribed = True
    h.tick(5)
    h.host.on_tick = lambda tick, dt: None
    assert h.ticks_to_converge(15) <= 15


async def test_converges_by_itself_after_seconds_of_total_loss() -> None:
    """A dead link both ways for three seconds (a session resuming), then a calm one."""
    h = Harness(4)
    world = h.host.world
    spawn_movers(world, 10)
    h.host.on_tick = lambda tick, dt: move_all(world, tick)
    h.tick(10)
    h.set_link(LinkConditions(loss=1.0))
    for n in range(90):
        if n % 10 == 0:
            world.despawn(next(iter(world.entity_ids())))
            world.spawn(Marker(score=n))
        h.tick()
    h.set_link(CALM)
    h.host.on_tick = lambda tick, dt: None
    assert h.ticks_to_converge(15) <= 15


# -- a stopped entity is drawn where it stopped -------------------------------------------


async def test_a_stopped_entity_is_drawn_at_rest_not_past_it() -> None:
    """Acks (and receipts) ride the client's inputs and return within a tick."""
    h = Harness(5)
    h.set_link(LinkConditions(latency_ms=5))
    h.send_inputs = True
    assert h.replica is not None
    world = h.host.world
    eid = world.spawn(Mover(x=10.0, y=0.0))

    def run(tick: int, dt: float) -> None:
        if tick <= 10:
            world.update(eid, x=10.0 + tick)  # moves one unit a tick up to x=20, then rests

    h.host.on_tick = run
    h.tick(12)
    seen = []
    for _ in range(30):
        h.tick()
        seen.append(h.replica.interpolated(h.pair.now)[eid].x)
    assert seen == [pytest.approx(20.0, abs=0.005)] * len(seen)


# -- random interleavings ----------------------------------------------------------------

PHASE = st.fixed_dictionaries(
    {
        "ticks": st.integers(1, 12),
        "loss": st.sampled_from([0.0, 0.1, 0.3, 1.0]),
        "up_loss": st.sampled_from([0.0, 0.1, 0.5, 1.0]),
        "duplicate": st.sampled_from([0.0, 0.2]),
        "reorder": st.sampled_from([0.0, 0.3]),
        "action": st.sampled_from(
            ["none", "none", "unsubscribe", "subscribe", "replica", "cap_low", "cap_high"]
        ),
        "churn": st.integers(0, 3),
    }
)


def run_interleaving(seed: int, start_with_replica: bool, phases: list[dict[str, Any]]) -> None:
    h = Harness(seed, replica=start_with_replica, max_world=16)  # small: ids are reused soon
    world = h.host.world
    rng = random.Random(seed)
    spawn_movers(world, 8)
    churn = [0]

    def step(tick: int, dt: float) -> None:
        move_all(world, tick)
        for _ in range(churn[0]):
            if rng.random() < 0.5 and len(world) > 2:
                world.despawn(rng.choice(list(world.entity_ids())))
            elif len(world) < world.max_entities:
                if rng.random() < 0.5:
                    world.spawn(Marker(score=rng.randrange(1000)))
                else:
                    world.spawn(Mover(x=rng.uniform(-50, 50), y=0.0))

    h.host.on_tick = step
    for phase in phases:
        h.set_link(
            LinkConditions(
                latency_ms=20,
                jitter_ms=10,
                loss=phase["loss"],
                duplicate=phase["duplicate"],
                reorder=phase["reorder"],
            ),
            LinkConditions(latency_ms=20, jitter_ms=10, loss=phase["up_loss"]),
        )
        churn[0] = phase["churn"]
        action = phase["action"]
        if action == "unsubscribe":
            h.participant.subscribed = False
        elif action == "subscribe":
            h.participant.subscribed = True
        elif action == "replica" and h.replica is None:
            h.make_replica()
        elif action in ("cap_low", "cap_high") and h.replica is not None:
            h.replica.decoder.max_entities = 4 if action == "cap_low" else 4096
        h.tick(phase["ticks"])
    # the disturbance ends: calm link, subscribed, a Replica that may hold everything, and
    # a world at rest (so that the newest states must be exactly the server's)
    h.set_link(CALM)
    h.participant.subscribed = True
    if h.replica is None:
        h.make_replica()
    assert h.replica is not None
    h.replica.decoder.max_entities = 4096
    h.host.on_tick = lambda tick, dt: None
    h.ticks_to_converge(20)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    start_with_replica=st.booleans(),
    phases=st.lists(PHASE, min_size=1, max_size=6),
)
async def test_any_interleaving_converges(
    seed: int, start_with_replica: bool, phases: list[dict[str, Any]]
) -> None:
    run_interleaving(seed, start_with_replica, phases)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    start_with_replica=st.booleans(),
    phases=st.lists(PHASE, min_size=1, max_size=20),
)
async def test_any_interleaving_converges_heavy(
    seed: int, start_with_replica: bool, phases: list[dict[str, Any]]
) -> None:
    run_interleaving(seed, start_with_replica, phases)
