"""The game host and Replica end to end over real aiortc on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import eventually

from netcode.cli import make_token
from netcode.replication import SchemaRegistry, entity, qangle, qfloat, qint
from netcode.rooms import Room, RoomServer
from netcode.rooms.events import Chat
from netcode.rooms.host import GameHost
from netcode.rooms.replica import Replica
from netcode.trace import read_trace
from netcode.wire import FrameType

pytestmark = pytest.mark.webrtc

KEY, SECRET = "host-key", "host-secret-host-secret-host-secret!!"
REGISTRY = SchemaRegistry()


@entity(type_id=1, registry=REGISTRY)
class Runner:
    x: float = qfloat(0, 100, 0.01)
    y: float = qfloat(0, 100, 0.01)
    heading: float = qangle(bits=10)


@entity(type_id=2, registry=REGISTRY)
class Weather:
    light: int = qint(0, 100)


def token(identity: str) -> str:
    return make_token(KEY, SECRET, identity, "game")


class Game:
    """A host whose runners circle while ``moving`` is set."""

    def __init__(self, host: GameHost) -> None:
        self.host = host
        self.moving = True
        self.runners = [host.world.spawn(Runner(x=50, y=50)) for _ in range(12)]
        self.weather = host.environment.spawn(Weather(light=0))
        self.inputs: list[tuple[str, int, bytes]] = []
        self.environment_ticks: list[int] = []
        host.on_tick = self.tick
        host.on_input = lambda p, tick, data: self.inputs.append((p.identity, tick, data))

    def tick(self, tick: int, dt: float) -> None:
        if self.moving:
            for i, eid in enumerate(self.runners):
                angle = tick / 20 + i
                self.host.world.update(
                    eid, x=50 + 30 * math.cos(angle), y=50 + 30 * math.sin(angle), heading=angle
                )
        self.host.environment.update(self.weather, light=tick % 100)


@pytest.fixture
async def game() -> AsyncIterator[tuple[RoomServer, Game]]:
    server = RoomServer(KEY, SECRET)
    await server.start("127.0.0.1", 0)
    host = GameHost(tick_rate=30, registry=REGISTRY, environment_every=6)
    game = Game(host)
    host.attach(server.room("game"))
    yield server, game
    await host.stop()
    await server.stop()


async def join(server: RoomServer, identity: str, **kwargs: Any) -> tuple[Room, Replica]:
    room = Room()
    replica = Replica(room, registry=REGISTRY)
    await room.connect(server.url, token(identity), **kwargs)
    return room, replica


async def test_clients_converge_to_the_servers_quantized_state(
    game: tuple[RoomServer, Game],
) -> None:
    server, g = game
    clients = [await join(server, name) for name in ("ann", "ben")]
    await asyncio.sleep(0.5)
    for _, replica in clients:
        assert len(replica.entities()) == len(g.runners)
    g.moving = False
    await asyncio.sleep(0.3)
    world = g.host.world
    for _, replica in clients:
        for eid in g.runners:
            assert replica.decoder.quantized(eid) == list(world.quantized(eid))
    for room, _ in clients:
        await room.disconnect()


async def test_spawns_and_despawns_reach_every_client(game: tuple[RoomServer, Game]) -> None:
    server, g = game
    clients = [await join(server, name) for name in ("ann", "ben", "cat")]
    spawned: list[list[int]] = [[] for _ in clients]
    despawned: list[list[int]] = [[] for _ in clients]
    for (_, replica), s, d in zip(clients, spawned, despawned, strict=True):
        replica.on("spawned", lambda eid, obj, s=s: s.append(eid))
        replica.on("despawned", lambda eid, d=d: d.append(eid))
    await asyncio.sleep(0.3)
    new = g.host.world.spawn(Runner(x=1, y=2))
    await eventually(lambda: all(new in s for s in spawned))
    gone = g.runners.pop(0)
    g.host.world.despawn(gone)
    await eventually(lambda: all(gone in d for d in despawned))
    for _, replica in clients:
        assert gone not in replica.entity_ids()
        assert replica.get(new) == Runner(x=1, y=2, heading=0.0)
    for room, _ in clients:
        await room.disconnect()


async def test_environment_goes_on_its_topic_at_a_lower_rate(
    game: tuple[RoomServer, Game],
) -> None:
    server, g = game
    room, positions = await join(server, "ann")
    environment = Replica(room, topic="environment", registry=REGISTRY)
    only_positions, _ = await join(server, "ben", topics=["position"])
    await asyncio.sleep(1.0)
    assert environment.entities()[g.weather].light >= 0
    assert positions.snapshots_received > 4 * environment.snapshots_received > 0
    hub = only_positions._replication_hub
    assert "environment" not in hub.decoders
    # as between a join and its SUBSCRIBE: the host sends every topic, and ben drops the others
    (ben_at_server,) = (
        p for r in server.rooms.values() for p in r.participants.values() if p.identity == "ben"
    )
    assert ben_at_server.subscriptions == {"position"}
    ben_at_server.subscriptions = None
    await eventually(lambda: only_positions.unsubscribed_dropped > 0)
    assert "environment" not in hub.decoders
    await room.disconnect()
    await only_positions.disconnect()


async def test_inputs_arrive_once_in_order_and_are_acknowledged(
    game: tuple[RoomServer, Game],
) -> None:
    server, g = game
    room, replica = await join(server, "ann")
    for tick in range(45):
        replica.send_input(tick, tick.to_bytes(2, "big"))
        await asyncio.sleep(1 / 30)
    await eventually(lambda: len(g.inputs) == 45)
    assert [t for _, t, _ in g.inputs] == list(range(45))
    assert all(data == t.to_bytes(2, "big") for _, t, data in g.inputs)
    await eventually(
        lambda: (
            replica.latest_tick is not None
            and replica.last_input_applied(replica.latest_tick) == 44
        )
    )
    await eventually(lambda: replica.inputs.pending == [])
    await room.disconnect()


async def test_interpolation_renders_about_a_tenth_of_a_second_behind(
    game: tuple[RoomServer, Game],
) -> None:
    server, g = game
    room, replica = await join(server, "ann")
    await asyncio.sleep(0.6)
    depth = replica.buffer_depth_ms()
    assert depth is not None and 50 < depth < 160
    render_tick = replica.render_tick()
    assert render_tick is not None and replica.latest_tick is not None
    assert replica.latest_tick - 5 < render_tick < replica.latest_tick
    smooth = replica.interpolated()
    latest = replica.entities()
    eid = g.runners[1]
    assert smooth[eid] != latest[eid]  # rendered in the past, between received states
    assert math.dist((smooth[eid].x, smooth[eid].y), (50, 50)) == pytest.approx(30, abs=0.5)
    stats = replica.snapshot_stats()
    assert stats["datagrams_per_snapshot"] == 1.0 and 0 < stats["snapshot_bytes"] < 1160
    await room.disconnect()


async def test_relayed_events_ride_the_ticks_datagram(tmp_path: Any) -> None:
    # At 10 Hz a tick leaves every 100 ms, and bob's inputs reach the server every 10 ms:
    # each of those starts a flush of bob's connection. The events ann sends still wait
    # for the next tick and leave in its datagram, beside the snapshot, not alone.
    trace_path = tmp_path / "server.trace.jsonl"
    server = RoomServer(KEY, SECRET, trace=str(trace_path))
    await server.start("127.0.0.1", 0)
    host = GameHost(tick_rate=10, registry=REGISTRY)
    Game(host)
    host.attach(server.room("game"))
    try:
        ann, _ = await join(server, "ann")
        bob, bob_replica = await join(server, "bob")
        received: list[str] = []
        bob.on_event(Chat, lambda event, *_: received.append(event.text))
        await eventually(lambda: bob_replica.latest_tick is not None)
        for i in range(120):
            bob_replica.send_input(i, b"\x00")
            if i % 6 == 0:
                ann.send_event(Chat(f"line {i // 6}"))
            await asyncio.sleep(0.01)
        await eventually(lambda: len(received) == 20)
        assert received == [f"line {i}" for i in range(20)]
        await ann.disconnect()
        await bob.disconnect()
    finally:
        await host.stop()
        await server.stop()
    _, records = read_trace(trace_path)
    to_bob = [r for r in records if r["kind"] == "send" and r["conn"] == "bob"]
    sent = [{frame_type for frame_type, _ in r["frames"]} for r in to_bob]
    with_events = [types for types in sent if FrameType.EVENT in types]
    alone = [types for types in with_events if FrameType.SNAPSHOT not in types]
    assert len(with_events) >= 10  # 20 events over about 12 ticks
    assert len(alone) <= 1, alone  # (a resend may leave on its own timer)
