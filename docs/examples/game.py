"""A whole networked game in one file: a GameHost on the server, a Replica on each client.

    python docs/examples/game.py --duration 5

The server (an authoritative 30 Hz tick loop) and two players run in this one process, each
player over its own WebRTC connection to 127.0.0.1, exactly as they would across the
internet. What it shows:

- the server: entity types with their quantization (``@entity``, ``qfloat``), a
  ``GameHost`` whose hooks spawn a player per participant (``on_join``), apply inputs
  (``on_input``) and remove players (``on_leave``), and ``assign_entity`` telling each
  participant which entity is its own;
- the client: a ``Replica`` of the ``position`` topic, ``replica.own_entity_id`` to find
  the local player, ``send_input`` each tick, ``Predictor`` to move the local player at
  once and reconcile it when the server's state arrives (zero corrections: the input
  rules are deterministic and quantization-exact), ``interpolated()`` for the others.
"""

from __future__ import annotations

import argparse
import asyncio
import math

from netcode import (
    AccessToken,
    GameHost,
    Grants,
    Predictor,
    Replica,
    Room,
    RoomServer,
    SchemaRegistry,
    ServerParticipant,
    entity,
    qfloat,
)

API_KEY, API_SECRET = "example-key", "example-secret-of-at-least-32-characters"
ROOM = "arena"
TICK_RATE = 30
ARENA_M = 100.0
STEP_M = 0.25  # metres per tick at full speed

#: Our entity types (a registry of their own, apart from netcode's default one).
REGISTRY = SchemaRegistry()


@entity(type_id=1, registry=REGISTRY)
class Player:
    """A player: a position with 1 cm precision (the wire carries 14 bits per axis)."""

    x: float = qfloat(0.0, ARENA_M, 0.01)
    y: float = qfloat(0.0, ARENA_M, 0.01)


# --- the rules, shared by the server and the client's prediction -------------------------


def encode_input(dx: int, dy: int) -> bytes:
    """One tick's input: a direction on each axis, -1, 0 or 1."""
    return bytes([dx + 1, dy + 1])


def apply_input(player: Player, data: bytes) -> Player:
    """Move one tick. Deterministic and rounded to the wire's 1 cm: the client's prediction
    lands exactly where the server's state will be."""
    if len(data) != 2 or max(data) > 2:
        return player  # a malformed input moves nobody
    dx, dy = data[0] - 1, data[1] - 1

    def move(value: float, direction: int) -> float:
        return round(min(ARENA_M, max(0.0, value + direction * STEP_M)), 2)

    return Player(x=move(player.x, dx), y=move(player.y, dy))


# --- the server ----------------------------------------------------------------------------


def start_game(server: RoomServer) -> GameHost:
    """Attach a game host to the room: one player entity per participant."""
    host = GameHost(tick_rate=TICK_RATE, registry=REGISTRY)
    players: dict[int, int] = {}  # participant pid -> entity id

    def on_join(participant: ServerParticipant) -> None:
        eid = host.world.spawn(Player(x=ARENA_M / 2, y=ARENA_M / 2))
        players[participant.pid] = eid
        host.assign_entity(participant, eid)  # the client's replica.own_entity_id

    def on_input(participant: ServerParticipant, tick: int, data: bytes) -> None:
        eid = players.get(participant.pid)
        if eid is not None:
            host.world.set(eid, apply_input(host.world.get(eid), data))

    def on_leave(participant: ServerParticipant) -> None:
        host.world.despawn(players.pop(participant.pid))

    host.on_join, host.on_input, host.on_leave = on_join, on_input, on_leave
    host.attach(server.room(ROOM))
    return host


# --- a client ------------------------------------------------------------------------------


class Client:
    """One player: walks a circle of its own, predicted locally."""

    def __init__(self, name: str, phase: float) -> None:
        self.name = name
        self.phase = phase
        self.room = Room()
        self.replica = Replica(self.room, registry=REGISTRY)  # before connecting
        self.predictor: Predictor[Player, bytes] = Predictor(apply_input)
        self.tick = 0
        self.reconciled_tick = -1
        self.corrections = 0
        self.max_correction_m = 0.0

    async def connect(self, url: str) -> None:
        grants = Grants(room_join=True, room=ROOM)
        token = AccessToken(API_KEY, API_SECRET).with_identity(self.name).with_grants(grants)
        await self.room.connect(url, token.to_jwt())

    def step(self) -> None:
        """One client tick: reconcile with the newest snapshot, then send and predict."""
        replica = self.replica
        eid = replica.own_entity_id
        if eid is None or eid not in replica:
            return  # the server has not shown us our player yet
        if self.predictor.state is None:
            self.predictor.reset(replica.get(eid))
        server_tick = replica.decoder.tick_of(eid)
        applied = replica.last_input_applied(server_tick)
        if server_tick > self.reconciled_tick and applied is not None:
            self.reconciled_tick = server_tick
            before = self.predictor.state
            assert before is not None
            after = self.predictor.reconcile(replica.get(eid), applied)
            error = math.hypot(after.x - before.x, after.y - before.y)
            if error > 1e-6:
                self.corrections += 1
                self.max_correction_m = max(self.max_correction_m, error)
        self.tick += 1
        angle = self.phase + self.tick / 20
        data = encode_input(round(math.cos(angle)), round(math.sin(angle)))
        replica.send_input(self.tick, data)
        self.predictor.predict(self.tick, data)

    def report(self) -> str:
        me, eid = self.predictor.state, self.replica.own_entity_id
        others = [
            f"entity {other} at ({p.x:.2f}, {p.y:.2f})"
            for other, p in sorted(self.replica.interpolated().items())
            if other != eid
        ]
        where = f"({me.x:.2f}, {me.y:.2f})" if me is not None else "unknown"
        return (
            f"{self.name}: own entity {eid}, predicted at {where}, "
            f"{self.corrections} corrections (max {self.max_correction_m:.2f} m); "
            f"sees {', '.join(others) or 'nobody'}"
        )


async def main(duration: float) -> None:
    server = RoomServer(API_KEY, API_SECRET)
    await server.start("127.0.0.1", 0)  # 0: any free port
    host = start_game(server)
    clients = [Client("alice", 0.0), Client("bob", math.pi)]
    for client in clients:
        await client.connect(server.url)
    loop = asyncio.get_running_loop()
    started = loop.time()
    next_tick = started
    while loop.time() - started < duration:
        for client in clients:
            client.step()
        next_tick += 1 / TICK_RATE
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
    for client in clients:
        print(client.report())
    for client in clients:
        await client.room.disconnect()
    await host.stop()
    await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A GameHost and two predicted players.")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds to play (5)")
    asyncio.run(main(parser.parse_args().duration))
