"""Encoder and decoder over a simulated lossy link: convergence, reliability, bad input."""

from __future__ import annotations

import enum
import heapq
import math
import random

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netcode.errors import ProtocolError
from netcode.replication import (
    ClientView,
    EntityDespawned,
    EntitySpawned,
    Receipt,
    SchemaRegistry,
    SnapshotDecoder,
    SnapshotEncoder,
    SnapshotPart,
    TypeStore,
    World,
    entity,
    qangle,
    qbool,
    qcolor,
    qenum,
    qfloat,
    qint,
    qquat,
    qstring,
)
from netcode.wire import MAX_FRAME_PAYLOAD_BYTES

REG = SchemaRegistry()


class Mood(enum.Enum):
    CALM = 0
    ANGRY = 1
    SLEEPY = 2


@entity(type_id=1, registry=REG)
class Avatar:
    x: float = qfloat(-100.0, 100.0, 0.01, group="pos")
    y: float = qfloat(-100.0, 100.0, 0.01, group="pos")
    heading: float = qangle(bits=10)
    health: int = qint(0, 100)
    name: str = qstring(max_bytes=12)
    tint: tuple[int, int, int] = qcolor()
    mood: Mood = qenum(Mood)
    crouched: bool = qbool()


@entity(type_id=2, registry=REG, priority=0.5)
class Crate:
    x: float = qfloat(-100.0, 100.0, 1 / 64, group="pos")
    y: float = qfloat(-100.0, 100.0, 1 / 64, group="pos")
    z: float = qfloat(0.0, 20.0, 1 / 64, group="pos")
    rot: tuple[float, float, float, float] = qquat(bits=9)
    score: int = qint(0, 100000)


class Game:
    """A seeded world that spawns, moves, changes and despawns entities."""

    def __init__(self, seed: int, world: World) -> None:
        self.rng = random.Random(seed)
        self.world = world
        self.despawned: list[int] = []
        for _ in range(40):
            self.spawn()

    def spawn(self) -> None:
        r = self.rng
        if r.random() < 0.5:
            obj: object = Avatar(
                x=r.uniform(-100, 100),
                y=r.uniform(-100, 100),
                name=r.choice(["ann", "bob", "čeněk", "dörte", "エリ"]),
                tint=(r.randrange(256), r.randrange(256), r.randrange(256)),
            )
        else:
            a = r.uniform(0, math.tau)
            obj = Crate(
                x=r.uniform(-100, 100), z=r.uniform(0, 20), rot=(0, 0, math.sin(a), math.cos(a))
            )
        self.world.spawn(obj)

    def step(self) -> None:
        r = self.rng
        ids = list(self.world.entity_ids())
        for eid in ids:
            if r.random() < 0.3:
                continue  # at rest this tick
            obj = self.world.get(eid)
            if isinstance(obj, Avatar):
                changes: dict[str, object] = {
                    "x": obj.x + r.uniform(-0.3, 0.3),
                    "y": obj.y + r.uniform(-0.3, 0.3),
                    "heading": obj.heading + r.uniform(-0.5, 0.5),
                }
                if r.random() < 0.05:
                    changes["health"] = r.randrange(101)
                if r.random() < 0.02:
                    changes["name"] = r.choice(["x", "yy", "zzz", "a long name here"])
                if r.random() < 0.05:
                    changes["crouched"] = not obj.crouched
                    changes["mood"] = r.choice(list(Mood))
                if r.random() < 0.01:
                    changes["tint"] = (r.randrange(256), 0, r.randrange(256))
                self.world.update(eid, **changes)
            else:
                a = r.uniform(0, math.tau)
                v = (r.gauss(0, 1), r.gauss(0, 1), r.gauss(0, 1))
                n = math.sqrt(sum(c * c for c in v)) or 1.0
                s = math.sin(a / 2)
                self.world.update(
                    eid,
                    z=obj.z + r.uniform(-0.5, 0.5),
                    x=obj.x + r.uniform(-5, 5) * (r.random() < 0.1),
                    rot=(v[0] / n * s, v[1] / n * s, v[2] / n * s, math.cos(a / 2)),
                    score=obj.score + r.randrange(0, 3),
                )
        for _ in range(r.randrange(3)):
            if r.random() < 0.4 and len(self.world) > 5:
                eid = r.choice(list(self.world.entity_ids()))
                self.world.despawn(eid)
                self.despawned.append(eid)
        for _ in range(r.randrange(3)):
            if r.random() < 0.4:
                self.spawn()


@attrs.define
class Client:
    """One client behind a seeded impaired link, with its encoder and decoder."""

    encoder: SnapshotEncoder
    decoder: SnapshotDecoder
    rng: random.Random
    loss: float
    dup: float
    reorder_ticks: int
    ack_delay_ticks: int
    ack_loss: float
    queue: list[tuple[int, int, str, object]] = attrs.field(factory=list)
    seq: int = 0
    alive_by_events: set[int] = attrs.field(factory=set)
    despawn_events: list[int] = attrs.field(factory=list)
    max_payload: int = 0

    def push(self, when: int, kind: str, item: object) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, kind, item))

    def send(self, tick: int, parts: list[SnapshotPart]) -> None:
        for part in parts:
            self.max_payload = max(self.max_payload, len(part.payload))
            delivered = self.rng.random() >= self.loss
            if delivered:
                at = tick + 1 + self.rng.randrange(self.reorder_ticks + 1)
                self.push(at, "part", part.payload)
                if self.rng.random() < self.dup:
                    self.push(at + self.rng.randrange(4), "part", part.payload)

    def run_until(self, tick: int) -> None:
        while self.queue and self.queue[0][0] <= tick:
            when, _, kind, item = heapq.heappop(self.queue)
            if kind == "part":
                assert isinstance(item, bytes)
                self.decoder.receive_part(item)  # never raises for the server's own parts
                receipt = self.decoder.receipt()
                if receipt is not None and self.rng.random() >= self.ack_loss:
                    self.push(when + self.ack_delay_ticks, "receipt", receipt)
                while (ev := self.decoder.next_event()) is not None:
                    if isinstance(ev, EntitySpawned):
                        assert ev.entity_id not in self.alive_by_events
                        self.alive_by_events.add(ev.entity_id)
                    else:
                        assert isinstance(ev, EntityDespawned)
                        self.alive_by_events.remove(ev.entity_id)
                        self.despawn_events.append(ev.entity_id)
            else:
                assert isinstance(item, Receipt)
                self.encoder.on_receipt(item)

    def calm(self) -> None:
        self.loss = self.dup = self.ack_loss = 0.0
        self.reorder_ticks = 0


def make_client(
    world: World,
    seed: int,
    loss: float,
    *,
    view: ClientView | None = None,
    max_part_bytes: int = MAX_FRAME_PAYLOAD_BYTES,
    history_depth: int = 32,
) -> Client:
    rng = random.Random(seed)
    return Client(
        SnapshotEncoder(world, view, max_part_bytes=max_part_bytes, history_depth=history_depth),
        SnapshotDecoder(REG, history_depth=history_depth),
        rng,
        loss=loss,
        dup=0.1 if loss else 0.0,
        reorder_ticks=4 if loss else 0,
        ack_delay_ticks=3,
        ack_loss=loss / 4,
    )


def left_half(store: TypeStore) -> np.ndarray:
    return store.q[:, 0] < (1 << 14)  # x < 0 (x is the first slot of both types)


def simulate(seed: int, noisy_ticks: int, clients: list[Client], game: Game) -> None:
    for tick in range(1, noisy_ticks + 40):
        if tick == noisy_ticks:
            for c in clients:
                c.calm()
        if tick < noisy_ticks:
            game.step()
        for c in clients:
            c.send(tick, c.encoder.encode(tick))
            c.run_until(tick)
    for c in clients:
        c.run_until(10**9)


def visible_ids(world: World, view: ClientView | None) -> set[int]:
    out = set()
    for store in world.stores.values():
        mask = store.alive.copy()
        if view is not None and view.interest is not None:
            mask &= view.interest(store)
        out.update(int(e) for e in store.eid[mask])
    return out


def check_converged(world: World, c: Client, view: ClientView | None = None) -> None:
    expected = visible_ids(world, view)
    assert set(c.decoder.entity_ids()) == expected
    assert c.alive_by_events == expected
    for eid in expected:
        assert c.decoder.quantized(eid) == world.quantized(eid), eid


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), loss=st.sampled_from([0.0, 0.05, 0.2]))
def test_clients_converge_to_the_quantized_world_after_impairment(seed: int, loss: float) -> None:
    world = World(REG)
    game = Game(seed, world)
    interest = ClientView(interest=left_half)
    clients = [
        make_client(world, seed + 1, loss),
        make_client(world, seed + 2, min(0.2, loss * 2), max_part_bytes=160),
        make_client(world, seed + 3, 0.2, view=interest, history_depth=8),
    ]
    simulate(seed, 120, clients, game)
    for c, v in zip(clients, [None, None, interest], strict=True):
        check_converged(world, c, v)
        assert c.encoder.pending_removals == 0
    assert clients[0].max_payload <= MAX_FRAME_PAYLOAD_BYTES
    assert clients[1].max_payload <= 160


def test_no_despawn_is_ever_lost_under_heavy_loss() -> None:
    world = World(REG)
    game = Game(99, world)
    c = make_client(world, 5, 0.2)
    c.reorder_ticks = 8
    simulate(99, 300, [c], game)
    check_converged(world, c)
    # every id the game despawned and the client had seen was despawned on the client too
    seen_despawns = sorted(c.despawn_events)
    assert len(seen_despawns) > 20
    assert set(c.despawn_events) <= set(game.despawned)


def test_budget_starves_nobody() -> None:
    world = World(REG)
    game = Game(3, world)
    view = ClientView(budget_bytes_per_tick=120)
    c = make_client(world, 4, 0.0, view=view)
    last_seen: dict[int, int] = {}
    for tick in range(1, 200):
        game.step()
        parts = c.encoder.encode(tick)
        assert sum(len(p.payload) for p in parts) <= 120 + 40
        c.send(tick, parts)
        c.run_until(tick)
        for eid in c.decoder.entity_ids():
            last_seen[eid] = c.decoder.tick_of(eid)
    # everything that moves keeps being refreshed, however tight the budget
    stale = [eid for eid in world.entity_ids() if eid in last_seen and 199 - last_seen[eid] > 40]
    assert stale == []


def test_part_size_limit_and_self_contained_parts() -> None:
    world = World(REG)
    Game(11, world)
    enc = SnapshotEncoder(world, max_part_bytes=100)
    parts = enc.encode(1)
    assert len(parts) > 3
    assert all(len(p.payload) <= 100 for p in parts)
    # any part alone, on a fresh client, decodes
    for p in parts:
        dec = SnapshotDecoder(REG)
        assert dec.receive_part(p.payload).applied > 0


def test_unchanged_entities_cost_nothing() -> None:
    world = World(REG)
    Game(12, world)
    c = make_client(world, 1, 0.0)
    for tick in range(1, 20):
        c.send(tick, c.encoder.encode(tick))
        c.run_until(tick)
    parts = c.encoder.encode(20)
    assert len(parts) == 1 and len(parts[0].payload) == 11  # header and one byte of body


def _server_parts(seed: int) -> tuple[World, list[bytes], list[bytes]]:
    world = World(REG)
    game = Game(seed, world)
    enc = SnapshotEncoder(world)
    parts = enc.encode(1)
    first = [p.payload for p in parts]
    enc.on_receipt(
        Receipt(enc.epoch, False, 4096, 65535, 32, tuple((1, p.part_index) for p in parts))
    )
    enc.encode(2)  # lost
    game.step()
    later = [p.payload for p in enc.encode(3)]
    return world, first, later


def test_bad_input_raises_protocol_error_and_changes_nothing() -> None:
    _world, first, later = _server_parts(21)
    dec = SnapshotDecoder(REG, max_entities=1000)
    # a delta against baselines this client never received
    with pytest.raises(ProtocolError):
        dec.receive_part(later[0])
    assert len(dec) == 0
    # too many entities
    with pytest.raises(ProtocolError):
        SnapshotDecoder(REG, max_entities=5).receive_part(first[0])
    # unknown entity type
    with pytest.raises(ProtocolError):
        SnapshotDecoder(SchemaRegistry()).receive_part(first[0])
    # truncation, at every length
    for n in range(len(first[0])):
        with pytest.raises(ProtocolError):
            dec.receive_part(first[0][:n])
    assert len(dec) == 0
    dec.receive_part(first[0])
    snapshot = {eid: list(dec.quantized(eid)) for eid in dec.entity_ids()}
    # out-of-range: Avatar.health is 7 bits for 0..100; find a full record and set 127
    bad = _with_health_127(first[0])
    with pytest.raises(ProtocolError):
        SnapshotDecoder(REG).receive_part(bad)
    assert {eid: dec.quantized(eid) for eid in dec.entity_ids()} == snapshot
    for p in later:
        dec.receive_part(p)


def _with_health_127(payload: bytes) -> bytes:
    """The part with the health bits of its first Avatar record set to 127 (> 100)."""
    from netcode.replication.bits import BitReader
    from netcode.replication.decoder import _read_full

    r = BitReader(payload, 10)
    assert r.read_eg(0) == 0  # no removals
    assert r.read(1) == 1 and r.read(8) == 1  # Avatar section
    k = r.read(3)
    r.read_eg(0)
    r.read_eg(k)
    assert r.read(2) == 2  # a full record
    schema = REG.by_id[1]
    start = r.pos
    _read_full(r, schema)
    # health follows x, y (15 bits each) and heading (10 bits)
    pos = start + 15 + 15 + 10
    bits = r.bits[:pos] + "1111111" + r.bits[pos + 7 :]
    return payload[:10] + int(bits, 2).to_bytes(len(payload) - 10, "big")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_only_ever_raises_protocol_error(data: bytes) -> None:
    dec = SnapshotDecoder(REG)
    try:
        dec.receive_part(data)
    except ProtocolError:
        assert len(dec) == 0
