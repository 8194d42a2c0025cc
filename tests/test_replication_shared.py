"""Encoders of one world share their work, and every client still gets exactly its own parts.

Many clients of one world, each with its own link (receipts late, lost, out of order), caps,
view and resyncs: every encoder that shares (the default) must produce, byte for byte, the
parts an encoder that shares nothing produces for the same client, and every client's
decoder must converge on the world.
"""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netcode.errors import ProtocolError
from netcode.replication import (
    ClientView,
    Receipt,
    SchemaRegistry,
    SnapshotDecoder,
    SnapshotEncoder,
    World,
    entity,
    qangle,
    qbool,
    qfloat,
    qint,
    qstring,
)
from netcode.replication.encoder import SharedEncodings
from netcode.replication.world import TypeStore

REG = SchemaRegistry()


@entity(type_id=1, registry=REG)
class Walker:
    x: float = qfloat(0, 100, 0.01, group="pos")
    y: float = qfloat(0, 100, 0.01, group="pos")
    heading: float = qangle(bits=10)
    running: bool = qbool()


@entity(type_id=2, registry=REG, priority=0.5)
class Crate:
    hp: int = qint(0, 200)
    label: str = qstring(max_bytes=8)


def _east(store: TypeStore) -> np.ndarray:
    """Walkers east of x = 40.96 (slot 0 is x in 1 cm steps), and every Crate."""
    if store.schema.type_id == 1:
        return store.q[:, 0] >= (1 << 12)
    return np.ones(store.capacity, dtype=bool)


class Client:
    """One client, twice: a sharing encoder and one that shares nothing, fed alike."""

    def __init__(self, world: World, rng: random.Random, index: int) -> None:
        self.rng = rng
        self.index = index
        self.delay = rng.choice([1, 1, 2, 3, 5])
        self.loss = rng.choice([0.0, 0.0, 0.1, 0.3])
        self.resync_rate = 0.01
        budget = 120 if index % 5 == 4 else None
        interest = _east if index % 4 == 3 else None
        depth = rng.choice([32, 32, 4])
        max_part = rng.choice([1148, 1148, 200])
        kwargs = dict(max_part_bytes=max_part, history_depth=32, epoch=100 + index)

        def view() -> ClientView:
            return ClientView(interest=interest, budget_bytes_per_tick=budget)

        self.shared = SnapshotEncoder(world, view(), **kwargs)  # type: ignore[arg-type]
        self.alone = SnapshotEncoder(world, view(), share=False, **kwargs)  # type: ignore[arg-type]
        self.decoder = SnapshotDecoder(REG, history_depth=depth, max_entities=4096)
        self.receipts: dict[int, list[Receipt]] = defaultdict(list)

    def tick(self, tick: int) -> None:
        for arrived in self.receipts.pop(tick, []):
            self.shared.on_receipt(arrived)
            self.alone.on_receipt(arrived)
        if self.rng.random() < self.resync_rate:
            self.shared.resync()
            self.alone.resync()
        parts = self.shared.encode(tick)
        expected = self.alone.encode(tick)
        assert [p.payload for p in parts] == [p.payload for p in expected]
        assert [(p.tick, p.epoch, p.part_index) for p in parts] == [
            (p.tick, p.epoch, p.part_index) for p in expected
        ]
        for part in parts:
            if self.rng.random() < self.loss:
                continue
            try:
                self.decoder.receive_part(part.payload)
            except ProtocolError:
                pass  # the receipt asks for a resync
        receipt = self.decoder.receipt()
        if receipt is not None and self.rng.random() >= self.loss:
            self.receipts[tick + self.delay + self.rng.randrange(2)].append(receipt)


def _step(
    world: World, rng: random.Random, tick: int, walkers: list[int], crates: list[int]
) -> None:
    for eid in walkers:
        if rng.random() < 0.7:
            w = world.get(eid)
            world.update(
                eid,
                x=min(100.0, max(0.0, w.x + rng.uniform(-1, 1))),
                y=min(100.0, max(0.0, w.y + rng.uniform(-1, 1))),
                heading=w.heading + rng.uniform(-0.3, 0.3),
                running=rng.random() < 0.5,
            )
    for eid in crates:
        if rng.random() < 0.05:
            world.update(eid, hp=rng.randrange(201), label=rng.choice(["a", "box", "ÅÄÖ", ""]))
    if rng.random() < 0.1 and crates:
        world.despawn(crates.pop(rng.randrange(len(crates))))
    if rng.random() < 0.1:
        crates.append(world.spawn(Crate(hp=rng.randrange(201), label="new")))
    if rng.random() < 0.03 and walkers:
        world.despawn(walkers.pop(rng.randrange(len(walkers))))
        walkers.append(
            world.spawn(Walker(x=rng.uniform(0, 100), y=50.0, heading=0.0, running=False))
        )


def _run(seed: int, clients: int, ticks: int) -> tuple[World, list[Client]]:
    rng = random.Random(seed)
    world = World(REG)
    walkers = [
        world.spawn(
            Walker(x=rng.uniform(0, 100), y=rng.uniform(0, 100), heading=0.0, running=False)
        )
        for _ in range(40)
    ]
    crates = [world.spawn(Crate(hp=10, label="c")) for _ in range(20)]
    group = [Client(world, random.Random(seed * 1000 + i), i) for i in range(clients)]
    for tick in range(1, ticks + 1):
        _step(world, rng, tick, walkers, crates)
        for client in group:
            client.tick(tick)
    # quiet, loss-free ticks: everyone converges (a client on a 120-byte budget may start
    # them 60 entities behind: seed 142 with 5 clients needed 26)
    # (and no resyncs: one near their end would leave a client on a budget behind; hypothesis
    # found seed 4 with 5 clients, one on a budget resyncing at the 46th of 48)
    for client in group:
        client.loss = client.resync_rate = 0.0
    for tick in range(ticks + 1, ticks + 49):
        for client in group:
            client.tick(tick)
    return world, group


def _holds_the_world(world: World, client: Client) -> bool:
    decoder = client.decoder
    view = client.shared.view
    expected = set(world.entity_ids())
    if view.interest is not None:
        expected = {
            e
            for e in expected
            if world.schema_of(e).type_id != 1 or world.get(e).x >= (1 << 12) * 0.01
        }
    return set(decoder.entity_ids()) == expected and all(
        decoder.quantized(e) == world.quantized(e) for e in expected
    )


@pytest.mark.parametrize("seed", [1])
def test_sharing_encoders_send_what_each_would_alone(seed: int) -> None:
    world, group = _run(seed, clients=8, ticks=120)
    for client in group:
        assert _holds_the_world(world, client), client.index
    shared = world.encodings
    assert isinstance(shared, SharedEncodings)
    assert shared.body_hits > 0 and shared.plan_hits > 0


def test_clients_alike_encode_once() -> None:
    """Clients on like links share everything but their headers and bookkeeping."""
    rng = random.Random(5)
    world = World(REG)
    walkers = [
        world.spawn(Walker(x=rng.uniform(0, 100), y=50.0, heading=0.0, running=False))
        for _ in range(30)
    ]
    group = [Client(world, random.Random(1), i) for i in range(8)]
    for client in group:  # the same link and view for all
        client.delay, client.loss = 2, 0.0
        for encoder in (client.shared, client.alone):
            encoder.view = ClientView()
    for tick in range(1, 61):
        _step(world, rng, tick, walkers, [])
        for client in group:
            client.tick(tick)
    shared = world.encodings
    assert isinstance(shared, SharedEncodings)
    assert shared.plan_misses <= 60 + 2 and shared.plan_hits >= 7 * 58
    for client in group:
        assert _holds_the_world(world, client)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 5))
def test_sharing_is_invisible_in_any_run(seed: int, clients: int) -> None:
    world, group = _run(seed, clients=clients, ticks=40)
    for client in group:
        assert _holds_the_world(world, client), client.index


def test_encodings_of_one_tick_are_read_from_one_state_of_the_world() -> None:
    """A change between two clients' encodes of one tick is seen by the second."""
    world = World(REG)
    eid = world.spawn(Walker(x=1.0, y=1.0, heading=0.0, running=False))
    a, b = SnapshotEncoder(world), SnapshotEncoder(world)
    da, db = SnapshotDecoder(REG), SnapshotDecoder(REG)
    for part in a.encode(1):
        da.receive_part(part.payload)
    world.update(eid, x=2.0)
    for part in b.encode(1):
        db.receive_part(part.payload)
    assert da.get(eid).x == 1.0 and db.get(eid).x == 2.0
