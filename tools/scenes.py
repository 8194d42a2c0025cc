"""Seeded benchmark scenes for replication: the bench, the demo and the load tests share them.

A scene owns its entity schemas (in its own registry), fills a World in ``setup`` and moves
it one tick in ``step``. Same seed, same world, tick for tick.

``arena256`` (30 Hz)
    A 200 x 200 m arena at 1 cm precision: 32 players (name, colour, health 0-100, heading)
    running continuously at 3-6 m/s with frequent turns, taking damage and healing; 64 NPCs
    walking at 2 m/s between waypoints with 1-4 s pauses; 160 pickups standing still, three
    of which despawn every second and respawn elsewhere.

``bodies900`` (60 Hz), after Glenn Fiedler's cube demo
    900 one-metre cubes, position x, y within +-256 m and z within 0..32 m at 1/512 m,
    orientation a unit quaternion. A disturbance wanders through the pile and knocks resting
    cubes into the air (in bursts, wherever it goes), keeping about a tenth of them in
    motion: they fly under gravity, tumble with their angular velocity, bounce on the ground
    (restitution, friction, the lowest corner of the rotated cube touching), tip over onto a
    face and fall asleep.
"""

from __future__ import annotations

import enum
import math
import random
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from netcode.replication import (
    SchemaRegistry,
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

__all__ = ["SCENES", "Arena256", "Bodies900", "Scene"]

F64 = npt.NDArray[np.float64]


class Scene(Protocol):
    name: str
    tick_hz: int
    registry: SchemaRegistry

    def setup(self, world: World) -> None: ...

    def step(self, world: World, tick: int) -> None: ...

    def moving_fraction(self) -> float: ...


# -- arena256 ----------------------------------------------------------------------------

ARENA = SchemaRegistry()
ARENA_M = 200.0


class NpcKind(enum.Enum):
    GUARD = 0
    MERCHANT = 1
    VILLAGER = 2
    CHICKEN = 3


class PickupKind(enum.Enum):
    HEALTH = 0
    AMMO = 1
    ARMOR = 2
    SPEED = 3
    COIN = 4


@entity(type_id=1, registry=ARENA, priority=2.0)
class Player:
    x: float = qfloat(0.0, ARENA_M, 0.01, group="pos")
    y: float = qfloat(0.0, ARENA_M, 0.01, group="pos")
    heading: float = qangle(bits=10)
    health: int = qint(0, 100, default=100)
    name: str = qstring(max_bytes=16)
    colour: tuple[int, int, int] = qcolor()


@entity(type_id=2, registry=ARENA)
class Npc:
    x: float = qfloat(0.0, ARENA_M, 0.01, group="pos")
    y: float = qfloat(0.0, ARENA_M, 0.01, group="pos")
    heading: float = qangle(bits=10)
    kind: NpcKind = qenum(NpcKind)
    walking: bool = qbool()


@entity(type_id=3, registry=ARENA, priority=0.5)
class Pickup:
    x: float = qfloat(0.0, ARENA_M, 0.01, group="pos")
    y: float = qfloat(0.0, ARENA_M, 0.01, group="pos")
    kind: PickupKind = qenum(PickupKind)


_NAMES = [
    "ash", "bo", "cyra", "dax", "elin", "fenwick", "gus", "hana", "ivo", "jun", "kaito",
    "lena", "milo", "nia", "otto", "pia", "quinn", "rhea", "sol", "tove", "uma", "vik",
    "wren", "xiu", "yara", "zed", "Åsa", "Björn", "Chloé", "Dário", "Émile", "Żaneta",
]  # fmt: skip


class Arena256:
    """32 players, 64 NPCs and 160 pickups in a 200 x 200 m arena at 30 Hz."""

    name = "arena256"
    tick_hz = 30
    registry = ARENA

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.players: list[dict[str, Any]] = []
        self.npcs: list[dict[str, Any]] = []
        self.pickups: list[int] = []
        self._moving = 0

    def _spot(self) -> tuple[float, float]:
        r = self.rng
        return (r.uniform(2.0, ARENA_M - 2.0), r.uniform(2.0, ARENA_M - 2.0))

    def setup(self, world: World) -> None:
        r = self.rng
        for i in range(32):
            x, y = self._spot()
            p = {
                "x": x,
                "y": y,
                "heading": r.uniform(-math.pi, math.pi),
                "speed": r.uniform(3.0, 6.0),
                "turn": 0.0,
                "next_turn": 0,
                "health": 100.0,
            }
            colour = (r.randrange(256), r.randrange(256), r.randrange(256))
            p["id"] = world.spawn(
                Player(x=x, y=y, heading=p["heading"], name=_NAMES[i], colour=colour)
            )
            self.players.append(p)
        for _ in range(64):
            x, y = self._spot()
            n = {"x": x, "y": y, "heading": 0.0, "target": self._spot(), "pause": 0}
            n["id"] = world.spawn(
                Npc(x=x, y=y, heading=0.0, kind=r.choice(list(NpcKind)), walking=True)
            )
            self.npcs.append(n)
        for _ in range(160):
            self.pickups.append(self._spawn_pickup(world))

    def _spawn_pickup(self, world: World) -> int:
        x, y = self._spot()
        return world.spawn(Pickup(x=x, y=y, kind=self.rng.choice(list(PickupKind))))

    def step(self, world: World, tick: int) -> None:
        r = self.rng
        dt = 1.0 / self.tick_hz
        moving = 0
        for p in self.players:
            if tick >= p["next_turn"]:  # frequent turns: a new turn rate every 0.3-1.2 s
                p["turn"] = r.uniform(-2.5, 2.5)
                p["speed"] = min(6.0, max(3.0, p["speed"] + r.uniform(-1.0, 1.0)))
                p["next_turn"] = tick + r.randrange(9, 36)
            p["heading"] = (p["heading"] + p["turn"] * dt + math.pi) % math.tau - math.pi
            x = p["x"] + math.cos(p["heading"]) * p["speed"] * dt
            y = p["y"] + math.sin(p["heading"]) * p["speed"] * dt
            if not 0.5 < x < ARENA_M - 0.5:  # bounce off the walls
                p["heading"] = math.pi - p["heading"]
                x = min(max(x, 0.5), ARENA_M - 0.5)
            if not 0.5 < y < ARENA_M - 0.5:
                p["heading"] = -p["heading"]
                y = min(max(y, 0.5), ARENA_M - 0.5)
            p["x"], p["y"] = x, y
            changes: dict[str, Any] = {"x": x, "y": y, "heading": p["heading"]}
            if r.random() < 0.01:  # hit
                p["health"] = max(0.0, p["health"] - r.randrange(5, 40))
            elif p["health"] < 100:
                p["health"] = min(100.0, p["health"] + 2.0 * dt)  # regenerate 2 hp/s
            if p["health"] <= 0:
                p["health"] = 100.0  # respawn in place, full health
            changes["health"] = int(p["health"])
            world.update(p["id"], **changes)
            moving += 1
        for n in self.npcs:
            if n["pause"] > 0:
                n["pause"] -= 1
                if n["pause"] == 0:
                    n["target"] = self._spot()
                    world.update(n["id"], walking=True)
                continue
            tx, ty = n["target"]
            dx, dy = tx - n["x"], ty - n["y"]
            dist = math.hypot(dx, dy)
            step = 2.0 * dt
            if dist <= step:
                n["x"], n["y"] = tx, ty
                n["pause"] = r.randrange(30, 120)
                world.update(n["id"], x=tx, y=ty, walking=False)
                continue
            n["x"] += dx / dist * step
            n["y"] += dy / dist * step
            n["heading"] = math.atan2(dy, dx)
            world.update(n["id"], x=n["x"], y=n["y"], heading=n["heading"])
            moving += 1
        if tick % self.tick_hz == 0:  # every second, three pickups move elsewhere
            for _ in range(3):
                i = r.randrange(len(self.pickups))
                world.despawn(self.pickups[i])
                self.pickups[i] = self._spawn_pickup(world)
        self._moving = moving

    def moving_fraction(self) -> float:
        return self._moving / 256


# -- bodies900 ---------------------------------------------------------------------------

BODIES = SchemaRegistry()


@entity(type_id=1, registry=BODIES)
class Body:
    x: float = qfloat(-256.0, 256.0, 1 / 512, group="pos")
    y: float = qfloat(-256.0, 256.0, 1 / 512, group="pos")
    z: float = qfloat(0.0, 32.0, 1 / 512, group="pos")
    rot: tuple[float, float, float, float] = qquat(bits=9)


def _quat_mul(a: F64, b: F64) -> F64:
    """Hamilton products of (x, y, z, w) quaternions, row by row."""
    ax, ay, az, aw = a.T
    bx, by, bz, bw = b.T
    return np.stack(
        (
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ),
        axis=1,
    )


def _rot_matrices(q: F64) -> F64:
    x, y, z, w = q.T
    return np.stack(
        (
            np.stack((1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)), axis=1),
            np.stack((2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)), axis=1),
            np.stack((2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)), axis=1),
        ),
        axis=1,
    )


class Bodies900:
    """900 cubes, about a tenth of them knocked into the air at any moment, at 60 Hz."""

    name = "bodies900"
    tick_hz = 60
    registry = BODIES
    count = 900
    half = 0.5  # half the edge of a cube, metres
    gravity = 9.81
    restitution = 0.35
    target_moving = 0.1

    def __init__(self, seed: int = 1) -> None:
        self.np_rng = np.random.default_rng(seed)
        n = self.count
        side = 30
        gx, gy = np.meshgrid(np.arange(side), np.arange(side))
        self.pos = np.zeros((n, 3))
        self.pos[:, 0] = (gx.ravel() - side / 2) * 1.6
        self.pos[:, 1] = (gy.ravel() - side / 2) * 1.6
        self.pos[:, 2] = self.half
        yaw = self.np_rng.uniform(0, math.tau, n)
        self.rot = np.stack((np.zeros(n), np.zeros(n), np.sin(yaw / 2), np.cos(yaw / 2)), axis=1)
        self.vel = np.zeros((n, 3))
        self.omega = np.zeros((n, 3))
        self.awake = np.zeros(n, dtype=bool)
        self.ids: list[int] = []
        # the disturbance: wanders through the pile, knocking what it meets
        self.dist_pos = np.array([0.0, 0.0])
        self.dist_heading = 0.0

    def setup(self, world: World) -> None:
        for i in range(self.count):
            x, y, z = self.pos[i]
            self.ids.append(world.spawn(Body(x=x, y=y, z=z, rot=tuple(self.rot[i]))))

    def _knock(self, tick: int) -> None:
        rng = self.np_rng
        dt = 1.0 / self.tick_hz
        self.dist_heading += rng.normal(0.0, 0.6) * math.sqrt(dt)
        step = 6.0 * dt * np.array([math.cos(self.dist_heading), math.sin(self.dist_heading)])
        self.dist_pos += step
        # stay over the pile: steer back towards its centre when drifting out
        centre = self.pos[:, :2].mean(axis=0)
        if np.linalg.norm(self.dist_pos - centre) > 20.0:
            back = centre - self.dist_pos
            self.dist_heading = math.atan2(back[1], back[0]) + rng.normal(0.0, 0.5)
        room = int(self.target_moving * self.count) - int(self.awake.sum())
        if room <= 0:
            return
        # a burst: the resting cubes nearest the disturbance go up, a few per tick
        d = self.pos[:, :2] - self.dist_pos
        dist = np.hypot(d[:, 0], d[:, 1])
        dist[self.awake] = np.inf
        near = np.argsort(dist)[: min(room, 6)]
        hit = near[dist[near] < 8.0]
        if not len(hit):
            return
        k = len(hit)
        away = d[hit] / np.maximum(dist[hit], 0.1)[:, None]
        speed = rng.uniform(1.0, 4.0, k)
        self.vel[hit, 0] = away[:, 0] * speed
        self.vel[hit, 1] = away[:, 1] * speed
        self.vel[hit, 2] = rng.uniform(3.0, 7.0, k)
        axis = rng.normal(size=(k, 3))
        axis /= np.linalg.norm(axis, axis=1)[:, None]
        self.omega[hit] = axis * rng.uniform(3.0, 10.0, k)[:, None]
        self.awake[hit] = True

    def step(self, world: World, tick: int) -> None:
        self._knock(tick)
        idx = np.flatnonzero(self.awake)
        if not len(idx):
            return
        dt = 1.0 / self.tick_hz
        pos, vel, rot, omega = self.pos[idx], self.vel[idx], self.rot[idx], self.omega[idx]
        vel[:, 2] -= self.gravity * dt
        pos += vel * dt
        # integrate orientation: dq/dt = 0.5 * (omega, 0) * q
        wq = np.concatenate((omega, np.zeros((len(idx), 1))), axis=1)
        rot = rot + 0.5 * dt * _quat_mul(wq, rot)
        rot /= np.linalg.norm(rot, axis=1)[:, None]
        # the lowest corner of the rotated cube: half * sum |R[2, j]|
        m = _rot_matrices(rot)
        low = self.half * np.abs(m[:, 2, :]).sum(axis=1)
        ground = pos[:, 2] <= low
        if ground.any():
            g = np.flatnonzero(ground)
            pos[g, 2] = low[g]
            vz = vel[g, 2]
            vel[g, 2] = np.where(vz < 0, -vz * self.restitution, vz)
            vel[g, :2] *= 0.8  # friction
            omega[g] *= 0.75
            # tip over onto the nearest face: rotate the body axis closest to vertical
            # towards vertical (gravity's torque on a cube standing on an edge or corner)
            up = m[g, 2, :]  # world z in body axes = third row of R
            j = np.abs(up).argmax(axis=1)
            axis_world = m[g, :, j]  # that body axis, in world coordinates
            sign = np.sign(axis_world[:, 2])
            target = np.array([0.0, 0.0, 1.0])
            cross = np.cross(axis_world * sign[:, None], target)
            omega[g] += cross * 25.0 * dt
        slow = (
            ground
            & (np.abs(vel[:, 2]) < 0.3)
            & (np.linalg.norm(vel[:, :2], axis=1) < 0.2)
            & (np.linalg.norm(omega, axis=1) < 0.4)
        )
        # walls of the +-256 m world
        for a in (0, 1):
            out = np.abs(pos[:, a]) > 255.0
            vel[out, a] *= -0.5
            pos[:, a] = np.clip(pos[:, a], -255.0, 255.0)
        pos[:, 2] = np.minimum(pos[:, 2], 31.5)
        self.pos[idx], self.vel[idx], self.rot[idx], self.omega[idx] = pos, vel, rot, omega
        if slow.any():  # settled: fall asleep
            s = idx[slow]
            self.vel[s] = 0.0
            self.omega[s] = 0.0
            self.awake[s] = False
        for i in idx.tolist():
            x, y, z = self.pos[i]
            world.update(self.ids[i], x=x, y=y, z=z, rot=self.rot[i])

    def moving_fraction(self) -> float:
        return float(self.awake.mean())


SCENES: dict[str, type[Arena256] | type[Bodies900]] = {
    "arena256": Arena256,
    "bodies900": Bodies900,
}
