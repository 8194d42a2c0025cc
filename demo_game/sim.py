"""The rules of the arena: a pure, deterministic simulation.

Theory of operation
-------------------
The same code runs on the authoritative server (``World.step`` once per tick) and in the
client's prediction (``apply_input`` for the local player, replayed on reconciliation). It
therefore does no IO, never reads a clock (``dt`` and time come in as arguments) and draws
randomness only from the world's own seeded ``random.Random``. Two worlds built with the same
seed and stepped with the same inputs and ``dt`` values hold identical states, bit for bit.

Positions are metres in a 200 x 200 m arena (x to the right, y downwards, as on screen).
Replication sends positions with 1 cm precision, so the simulation rounds every position it
writes to 1 cm and every heading to 1/1024 of a turn: the value a client receives is exactly
the value the server holds, and a client replaying its inputs from a received state computes
what the server computed. Player movement uses only +, *, / and sqrt (correctly rounded in
IEEE 754), so prediction matches the server across platforms.

State is split in two:

* replicated records (``PlayerState``, ``NpcState``, ``PickupState``, ``EnvironmentState``),
  small frozen values that a client can hold and draw;
* server-only bookkeeping inside ``World`` (NPC targets, pickup lifetimes, respawn queue,
  hazard drift, timers) that clients never need.

``World.step`` returns the game events of the tick (past-tense records: ``PickupSpawned``,
``PickupCollected``, ``PlayerScored``...), which the network layer sends reliably.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Iterable, Mapping

import attrs

__all__ = [
    "ARENA_SIZE_M",
    "DAY_LENGTH_S",
    "MAX_CHAT_CHARS",
    "MAX_SPEED_MPS",
    "NPC_SPEED_MPS",
    "PICKUP_RADIUS_M",
    "PLAYER_COLOURS",
    "PLAYER_RADIUS_M",
    "TICK_RATE_HZ",
    "TICK_S",
    "ChatLog",
    "ChatPosted",
    "Colour",
    "EnvironmentState",
    "GameEvent",
    "NpcState",
    "PickupCollected",
    "PickupDespawned",
    "PickupKind",
    "PickupSpawned",
    "PickupState",
    "PlayerDowned",
    "PlayerInput",
    "PlayerJoined",
    "PlayerLeft",
    "PlayerRespawned",
    "PlayerScored",
    "PlayerState",
    "Weather",
    "WeatherChanged",
    "World",
    "WorldSnapshot",
    "apply_input",
    "hazard_radius_at",
    "light_level_at",
    "players_near",
    "quantize_heading",
    "quantize_m",
    "sanitize_chat",
]

ARENA_SIZE_M = 200.0
TICK_RATE_HZ = 30
TICK_S = 1.0 / TICK_RATE_HZ
#: Longest step ``apply_input`` accepts: a late or forged input cannot teleport a player.
MAX_DT_S = 0.1
MAX_SPEED_MPS = 6.0
PLAYER_RADIUS_M = 0.6
PICKUP_RADIUS_M = 0.45
NPC_RADIUS_M = 0.5
NPC_SPEED_MPS = 2.0
NPC_WANDER_RANGE_M = 25.0
CM_PER_M = 100.0
HEADING_STEPS = 1024

#: Players spawn in the middle of the arena, so that a fresh game has company in view.
SPAWN_MARGIN_M = 80.0
PICKUP_MARGIN_M = 4.0
PICKUP_TARGET_COUNT = 90
PICKUP_LIFETIME_S = (25.0, 45.0)
PICKUP_RESPAWN_DELAY_S = (1.5, 4.0)

DAY_LENGTH_S = 120.0
WEATHER_SPELL_S = (20.0, 45.0)

HAZARD_SPEED_MPS = 1.5
HAZARD_TURN_S = (8.0, 16.0)
HAZARD_BASE_RADIUS_M = 16.0
HAZARD_PULSE_RADIUS_M = 5.0
HAZARD_PULSE_PERIOD_S = 30.0
HAZARD_TICK_S = 0.5
HAZARD_DAMAGE = 4
REGEN_TICK_S = 1.0
REGEN_HEALTH = 2
MAX_HEALTH = 100

MAX_CHAT_CHARS = 120

Colour = tuple[int, int, int]

#: Bright, distinct player colours; readable on the grass-green arena by day and by night.
PLAYER_COLOURS: tuple[Colour, ...] = (
    (255, 99, 72),
    (72, 160, 255),
    (255, 206, 60),
    (186, 104, 255),
    (40, 220, 200),
    (255, 120, 200),
    (150, 230, 80),
    (255, 160, 40),
)


class Weather(enum.IntEnum):
    """The sky over the arena; sent with the environment state."""

    CLEAR = 0
    RAIN = 1
    FOG = 2


class PickupKind(enum.IntEnum):
    """What a pickup gives: coins and gems score, hearts heal (and score a little)."""

    COIN = 0
    GEM = 1
    HEART = 2


PICKUP_POINTS = {PickupKind.COIN: 1, PickupKind.GEM: 5, PickupKind.HEART: 1}
PICKUP_HEAL = {PickupKind.COIN: 0, PickupKind.GEM: 0, PickupKind.HEART: 30}
PICKUP_WEIGHTS = ((PickupKind.COIN, 70), (PickupKind.GEM, 15), (PickupKind.HEART, 15))


# -- replicated state ---------------------------------------------------------------------


@attrs.frozen
class PlayerInput:
    """One tick of a player's intent, as sent by the client (redundantly) to the server."""

    tick: int  #: the client's tick number for this input (for acks and reconciliation)
    move_x: float  #: -1 (left) .. 1 (right)
    move_y: float  #: -1 (up) .. 1 (down)


IDLE_INPUT = PlayerInput(tick=-1, move_x=0.0, move_y=0.0)


@attrs.frozen
class PlayerState:
    """A player as every client sees it."""

    id: int  #: entity id, unique in the world
    name: str  #: display name
    colour: Colour  #: (r, g, b)
    x: float  #: metres, 1 cm steps
    y: float  #: metres, 1 cm steps
    heading: float = 0.0  #: radians in (-pi, pi], 0 = facing +x
    health: int = MAX_HEALTH  #: 0..100
    score: int = 0  #: points collected


@attrs.frozen
class NpcState:
    """A wandering critter as clients see it (its plans stay on the server)."""

    id: int  #: entity id
    x: float  #: metres
    y: float  #: metres
    heading: float  #: radians
    moving: bool  #: walking (True) or pausing (False)


@attrs.frozen
class PickupState:
    """A pickup lying in the arena."""

    id: int  #: entity id
    kind: PickupKind  #: coin, gem or heart
    x: float  #: metres
    y: float  #: metres


@attrs.frozen
class EnvironmentState:
    """Slow-changing state, replicated at a lower rate than positions."""

    time_s: float  #: seconds since the world started
    light: float  #: 0.0 (darkest night) .. 1.0 (noon)
    weather: Weather  #: clear, rain or fog
    hazard_x: float  #: storm centre, metres
    hazard_y: float  #: storm centre, metres
    hazard_radius: float  #: storm radius, metres


@attrs.frozen
class WorldSnapshot:
    """Everything replicated, at one tick: what a client's view holds."""

    tick: int  #: ticks stepped so far
    players: tuple[PlayerState, ...]  #: sorted by id
    npcs: tuple[NpcState, ...]  #: sorted by id
    pickups: tuple[PickupState, ...]  #: sorted by id
    environment: EnvironmentState  #: the environment at this tick


# -- events -------------------------------------------------------------------------------


@attrs.frozen
class PlayerJoined:
    """A player entered the arena."""

    player: PlayerState  #: their state on arrival


@attrs.frozen
class PlayerLeft:
    """A player left the arena."""

    player_id: int  #: who left


@attrs.frozen
class PickupSpawned:
    """A pickup appeared."""

    pickup: PickupState  #: the new pickup


@attrs.frozen
class PickupCollected:
    """A player touched a pickup (a ``PickupDespawned`` follows)."""

    pickup_id: int  #: the pickup taken
    player_id: int  #: who took it
    kind: PickupKind  #: what it was


@attrs.frozen
class PickupDespawned:
    """A pickup left the arena."""

    pickup_id: int  #: the pickup removed
    reason: str  #: "collected" or "expired"


@attrs.frozen
class PlayerScored:
    """A player's score went up."""

    player_id: int  #: who scored
    points: int  #: points gained
    score: int  #: their new total


@attrs.frozen
class PlayerDowned:
    """A player's health ran out inside the storm (they respawn at once)."""

    player_id: int  #: who went down


@attrs.frozen
class PlayerRespawned:
    """A player came back with full health."""

    player_id: int  #: who
    x: float  #: where, metres
    y: float  #: where, metres


@attrs.frozen
class WeatherChanged:
    """The weather turned."""

    weather: Weather  #: the new weather


@attrs.frozen
class ChatPosted:
    """A line of chat."""

    tick: int  #: server tick when posted
    player_id: int  #: sender
    name: str  #: sender's name at the time
    text: str  #: sanitised text, at most MAX_CHAT_CHARS characters


GameEvent = (
    PlayerJoined
    | PlayerLeft
    | PickupSpawned
    | PickupCollected
    | PickupDespawned
    | PlayerScored
    | PlayerDowned
    | PlayerRespawned
    | WeatherChanged
    | ChatPosted
)


# -- pure helpers -------------------------------------------------------------------------


def quantize_m(value: float) -> float:
    """Round metres to the 1 cm steps that replication carries."""
    # k / 100 is the double nearest to k centimetres, whatever path computed k.
    return round(value * CM_PER_M) / CM_PER_M


def quantize_heading(angle: float) -> float:
    """Round an angle to 1/1024 of a turn, in (-pi, pi]."""
    step = 2.0 * math.pi / HEADING_STEPS
    n = round(angle / step) % HEADING_STEPS
    if n > HEADING_STEPS // 2:
        n -= HEADING_STEPS
    return n * step


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


def _finite_or_zero(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def apply_input(player: PlayerState, inp: PlayerInput, dt: float) -> PlayerState:
    """Move ``player`` by one input over ``dt`` seconds; the client's prediction runs this.

    The direction is clamped to a unit vector (a diagonal is as fast as a straight line, a
    forged (10, 0) is no faster than (1, 0)); speed is at most ``MAX_SPEED_MPS``; ``dt`` is
    clamped to ``[0, MAX_DT_S]``; the player stays inside the arena. Pure and deterministic.
    """
    mx = _clamp(_finite_or_zero(inp.move_x), -1.0, 1.0)
    my = _clamp(_finite_or_zero(inp.move_y), -1.0, 1.0)
    length_sq = mx * mx + my * my
    if length_sq < 1e-6:
        return player
    if length_sq > 1.0:
        length = math.sqrt(length_sq)
        mx, my = mx / length, my / length
    step = MAX_SPEED_MPS * _clamp(_finite_or_zero(dt), 0.0, MAX_DT_S)
    low, high = PLAYER_RADIUS_M, ARENA_SIZE_M - PLAYER_RADIUS_M
    x = quantize_m(_clamp(player.x + mx * step, low, high))
    y = quantize_m(_clamp(player.y + my * step, low, high))
    heading = quantize_heading(math.atan2(my, mx))
    return attrs.evolve(player, x=x, y=y, heading=heading)


def light_level_at(time_s: float) -> float:
    """Daylight at ``time_s``: a sine over ``DAY_LENGTH_S``, from 0.15 (night) to 1 (noon).

    The world starts in the morning (0.575, rising).
    """
    phase = 2.0 * math.pi * time_s / DAY_LENGTH_S
    return round(0.575 + 0.425 * math.sin(phase), 3)


def hazard_radius_at(time_s: float) -> float:
    """The storm breathes: its radius swings around ``HAZARD_BASE_RADIUS_M``."""
    phase = 2.0 * math.pi * time_s / HAZARD_PULSE_PERIOD_S
    return quantize_m(HAZARD_BASE_RADIUS_M + HAZARD_PULSE_RADIUS_M * math.sin(phase))


def sanitize_chat(text: str) -> str:
    """Printable characters only, whitespace collapsed, at most ``MAX_CHAT_CHARS``."""
    kept = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(kept.split())[:MAX_CHAT_CHARS]


class ChatLog:
    """The last ``max_lines`` chat lines, oldest first."""

    def __init__(self, max_lines: int = 50) -> None:
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self._lines: deque[ChatPosted] = deque(maxlen=max_lines)

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, line: ChatPosted) -> None:
        """Append a line, dropping the oldest when full."""
        self._lines.append(line)

    def last(self, n: int) -> list[ChatPosted]:
        """The newest ``n`` lines, oldest first."""
        if n <= 0:
            return []
        return list(self._lines)[-n:]

    @property
    def lines(self) -> tuple[ChatPosted, ...]:
        """All lines kept, oldest first."""
        return tuple(self._lines)


# -- the world ----------------------------------------------------------------------------


@attrs.define
class _NpcPlan:
    target_x: float
    target_y: float
    pause_s: float


class World:
    """The authoritative arena: players, NPCs, pickups and the environment.

    ``step(inputs_by_player, dt)`` advances one tick. A player without an input this tick
    repeats their last one (the usual server policy when an input packet is late); the tick
    of the input last applied is in ``last_input_tick`` for the client's reconciliation.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        npc_count: int = 24,
        pickup_target: int = PICKUP_TARGET_COUNT,
    ) -> None:
        self.rng = random.Random(seed)
        self.tick = 0
        self.time_s = 0.0
        self.players: dict[int, PlayerState] = {}
        self.npcs: dict[int, NpcState] = {}
        self.pickups: dict[int, PickupState] = {}
        self.chat = ChatLog()
        self.last_input_tick: dict[int, int] = {}
        self._last_input: dict[int, PlayerInput] = {}
        self._next_id = 1
        self._npc_plans: dict[int, _NpcPlan] = {}
        self._pickup_expires_s: dict[int, float] = {}
        self._pending_spawns_s: list[float] = [0.0] * pickup_target
        self._weather = Weather.CLEAR
        self._weather_until_s = self.rng.uniform(*WEATHER_SPELL_S)
        self._hazard_x = quantize_m(self.rng.uniform(60.0, 140.0))
        self._hazard_y = quantize_m(self.rng.uniform(60.0, 140.0))
        self._hazard_vx, self._hazard_vy = self._random_heading_velocity()
        self._hazard_turn_s = self.rng.uniform(*HAZARD_TURN_S)
        self._hazard_timer_s = 0.0
        self._regen_timer_s = 0.0
        for _ in range(npc_count):
            self._spawn_npc()

    # -- players --------------------------------------------------------------------------

    def add_player(
        self, name: str, colour: Colour | None = None, *, player_id: int | None = None
    ) -> tuple[PlayerState, list[GameEvent]]:
        """Place a new player at a random spot near the middle; returns it and its events."""
        pid = self._new_id() if player_id is None else player_id
        if pid in self.players or pid in self.npcs or pid in self.pickups:
            raise ValueError(f"entity id {pid} is taken")
        self._next_id = max(self._next_id, pid + 1)
        if colour is None:
            colour = PLAYER_COLOURS[len(self.players) % len(PLAYER_COLOURS)]
        x, y = self._spawn_point()
        player = PlayerState(id=pid, name=name[:16], colour=colour, x=x, y=y)
        self.players[pid] = player
        return player, [PlayerJoined(player)]

    def remove_player(self, player_id: int) -> list[GameEvent]:
        """Take a player out; returns ``[PlayerLeft]`` (or nothing if unknown)."""
        if self.players.pop(player_id, None) is None:
            return []
        self._last_input.pop(player_id, None)
        self.last_input_tick.pop(player_id, None)
        return [PlayerLeft(player_id)]

    def say(self, player_id: int, text: str) -> ChatPosted | None:
        """Post a chat line from a player; None if the player is unknown or the text empty."""
        player = self.players.get(player_id)
        clean = sanitize_chat(text)
        if player is None or not clean:
            return None
        line = ChatPosted(tick=self.tick, player_id=player_id, name=player.name, text=clean)
        self.chat.add(line)
        return line

    # -- stepping -------------------------------------------------------------------------

    def step(self, inputs_by_player: Mapping[int, PlayerInput], dt: float) -> list[GameEvent]:
        """Advance one tick of ``dt`` seconds; returns the events of this tick, in order."""
        events: list[GameEvent] = []
        dt = _clamp(_finite_or_zero(dt), 0.0, MAX_DT_S)
        self.tick += 1
        self.time_s += dt
        self._move_players(inputs_by_player, dt)
        self._move_npcs(dt)
        self._update_environment(dt, events)
        self._hurt_and_heal(dt, events)
        self._collect_pickups(events)
        self._expire_pickups(events)
        self._spawn_pickups(events)
        return events

    def _move_players(self, inputs_by_player: Mapping[int, PlayerInput], dt: float) -> None:
        for pid in sorted(self.players):
            inp = inputs_by_player.get(pid)
            if inp is None:
                inp = self._last_input.get(pid, IDLE_INPUT)
            else:
                self._last_input[pid] = inp
                self.last_input_tick[pid] = inp.tick
            self.players[pid] = apply_input(self.players[pid], inp, dt)

    def _move_npcs(self, dt: float) -> None:
        for nid in sorted(self.npcs):
            npc, plan = self.npcs[nid], self._npc_plans[nid]
            if plan.pause_s > 0.0:
                plan.pause_s -= dt
                if plan.pause_s <= 0.0:
                    plan.target_x, plan.target_y = self._wander_target(npc.x, npc.y)
                if npc.moving:
                    self.npcs[nid] = attrs.evolve(npc, moving=False)
                continue
            dx, dy = plan.target_x - npc.x, plan.target_y - npc.y
            dist = math.sqrt(dx * dx + dy * dy)
            step = NPC_SPEED_MPS * dt
            if dist <= step:
                x, y = plan.target_x, plan.target_y
                plan.pause_s = self.rng.uniform(1.0, 4.0)
            else:
                x, y = npc.x + dx / dist * step, npc.y + dy / dist * step
            heading = quantize_heading(math.atan2(dy, dx)) if dist > 1e-9 else npc.heading
            self.npcs[nid] = NpcState(nid, quantize_m(x), quantize_m(y), heading, True)

    def _update_environment(self, dt: float, events: list[GameEvent]) -> None:
        if self.time_s >= self._weather_until_s:
            choices = [w for w in Weather if w != self._weather]
            # Clear skies are the most common; rain and fog are spells.
            if self._weather != Weather.CLEAR:
                choices = [Weather.CLEAR, Weather.CLEAR, *choices]
            self._weather = self.rng.choice(choices)
            self._weather_until_s = self.time_s + self.rng.uniform(*WEATHER_SPELL_S)
            events.append(WeatherChanged(self._weather))
        self._hazard_turn_s -= dt
        if self._hazard_turn_s <= 0.0:
            self._hazard_vx, self._hazard_vy = self._random_heading_velocity()
            self._hazard_turn_s = self.rng.uniform(*HAZARD_TURN_S)
        low, high = 25.0, ARENA_SIZE_M - 25.0
        x = self._hazard_x + self._hazard_vx * dt
        y = self._hazard_y + self._hazard_vy * dt
        if not low <= x <= high:
            self._hazard_vx = -self._hazard_vx
        if not low <= y <= high:
            self._hazard_vy = -self._hazard_vy
        self._hazard_x = quantize_m(_clamp(x, low, high))
        self._hazard_y = quantize_m(_clamp(y, low, high))

    def _hurt_and_heal(self, dt: float, events: list[GameEvent]) -> None:
        self._hazard_timer_s += dt
        while self._hazard_timer_s >= HAZARD_TICK_S:
            self._hazard_timer_s -= HAZARD_TICK_S
            for pid in sorted(self.players):
                if self.in_hazard(self.players[pid].x, self.players[pid].y):
                    self._damage(pid, HAZARD_DAMAGE, events)
        self._regen_timer_s += dt
        while self._regen_timer_s >= REGEN_TICK_S:
            self._regen_timer_s -= REGEN_TICK_S
            for pid in sorted(self.players):
                p = self.players[pid]
                if p.health < MAX_HEALTH and not self.in_hazard(p.x, p.y):
                    health = min(MAX_HEALTH, p.health + REGEN_HEALTH)
                    self.players[pid] = attrs.evolve(p, health=health)

    def _damage(self, pid: int, amount: int, events: list[GameEvent]) -> None:
        p = self.players[pid]
        health = p.health - amount
        if health > 0:
            self.players[pid] = attrs.evolve(p, health=health)
            return
        x, y = self._spawn_point()
        self.players[pid] = attrs.evolve(p, health=MAX_HEALTH, x=x, y=y)
        events.append(PlayerDowned(pid))
        events.append(PlayerRespawned(pid, x, y))

    def _collect_pickups(self, events: list[GameEvent]) -> None:
        reach_sq = (PLAYER_RADIUS_M + PICKUP_RADIUS_M) ** 2
        for pid in sorted(self.players):
            for kid in sorted(self.pickups):
                p, pickup = self.players[pid], self.pickups[kid]
                dx, dy = p.x - pickup.x, p.y - pickup.y
                if dx * dx + dy * dy > reach_sq:
                    continue
                points = PICKUP_POINTS[pickup.kind]
                health = min(MAX_HEALTH, p.health + PICKUP_HEAL[pickup.kind])
                self.players[pid] = attrs.evolve(p, score=p.score + points, health=health)
                self._remove_pickup(kid)
                events.append(PickupCollected(kid, pid, pickup.kind))
                events.append(PickupDespawned(kid, "collected"))
                events.append(PlayerScored(pid, points, p.score + points))

    def _expire_pickups(self, events: list[GameEvent]) -> None:
        for kid in sorted(self.pickups):
            if self.time_s >= self._pickup_expires_s[kid]:
                self._remove_pickup(kid)
                events.append(PickupDespawned(kid, "expired"))

    def _remove_pickup(self, kid: int) -> None:
        del self.pickups[kid]
        del self._pickup_expires_s[kid]
        self._pending_spawns_s.append(self.time_s + self.rng.uniform(*PICKUP_RESPAWN_DELAY_S))

    def _spawn_pickups(self, events: list[GameEvent]) -> None:
        due = [t for t in self._pending_spawns_s if t <= self.time_s]
        if not due:
            return
        self._pending_spawns_s = [t for t in self._pending_spawns_s if t > self.time_s]
        for _ in due:
            kid = self._new_id()
            kind = self.rng.choices(
                [k for k, _ in PICKUP_WEIGHTS], weights=[w for _, w in PICKUP_WEIGHTS]
            )[0]
            low, high = PICKUP_MARGIN_M, ARENA_SIZE_M - PICKUP_MARGIN_M
            x = quantize_m(self.rng.uniform(low, high))
            y = quantize_m(self.rng.uniform(low, high))
            pickup = PickupState(kid, kind, x, y)
            self.pickups[kid] = pickup
            self._pickup_expires_s[kid] = self.time_s + self.rng.uniform(*PICKUP_LIFETIME_S)
            events.append(PickupSpawned(pickup))

    # -- views ----------------------------------------------------------------------------

    @property
    def environment(self) -> EnvironmentState:
        """The environment as replicated (on the slower ``environment`` topic)."""
        return EnvironmentState(
            time_s=self.time_s,
            light=light_level_at(self.time_s),
            weather=self._weather,
            hazard_x=self._hazard_x,
            hazard_y=self._hazard_y,
            hazard_radius=hazard_radius_at(self.time_s),
        )

    def in_hazard(self, x: float, y: float) -> bool:
        """Is the point (metres) inside the storm?"""
        r = hazard_radius_at(self.time_s)
        dx, dy = x - self._hazard_x, y - self._hazard_y
        return dx * dx + dy * dy < r * r

    def snapshot(self) -> WorldSnapshot:
        """All replicated state at this tick (equal snapshots mean equal worlds to clients)."""
        return WorldSnapshot(
            tick=self.tick,
            players=tuple(self.players[k] for k in sorted(self.players)),
            npcs=tuple(self.npcs[k] for k in sorted(self.npcs)),
            pickups=tuple(self.pickups[k] for k in sorted(self.pickups)),
            environment=self.environment,
        )

    # -- internals ------------------------------------------------------------------------

    def _new_id(self) -> int:
        eid = self._next_id
        self._next_id += 1
        return eid

    def _spawn_point(self) -> tuple[float, float]:
        low, high = SPAWN_MARGIN_M, ARENA_SIZE_M - SPAWN_MARGIN_M
        for _ in range(8):
            x = quantize_m(self.rng.uniform(low, high))
            y = quantize_m(self.rng.uniform(low, high))
            if not self.in_hazard(x, y):
                break
        return x, y

    def _random_heading_velocity(self) -> tuple[float, float]:
        angle = self.rng.uniform(-math.pi, math.pi)
        return HAZARD_SPEED_MPS * math.cos(angle), HAZARD_SPEED_MPS * math.sin(angle)

    def _wander_target(self, x: float, y: float) -> tuple[float, float]:
        low, high = NPC_RADIUS_M + 2.0, ARENA_SIZE_M - NPC_RADIUS_M - 2.0
        tx = x + self.rng.uniform(-NPC_WANDER_RANGE_M, NPC_WANDER_RANGE_M)
        ty = y + self.rng.uniform(-NPC_WANDER_RANGE_M, NPC_WANDER_RANGE_M)
        return quantize_m(_clamp(tx, low, high)), quantize_m(_clamp(ty, low, high))

    def _spawn_npc(self) -> None:
        nid = self._new_id()
        x = quantize_m(self.rng.uniform(20.0, ARENA_SIZE_M - 20.0))
        y = quantize_m(self.rng.uniform(20.0, ARENA_SIZE_M - 20.0))
        tx, ty = self._wander_target(x, y)
        self.npcs[nid] = NpcState(nid, x, y, 0.0, False)
        self._npc_plans[nid] = _NpcPlan(tx, ty, self.rng.uniform(0.0, 2.0))


def players_near(
    players: Iterable[PlayerState], x: float, y: float, radius_m: float
) -> list[PlayerState]:
    """Players within ``radius_m`` of a point (a helper for interest management and bots)."""
    r_sq = radius_m * radius_m
    return [p for p in players if (p.x - x) ** 2 + (p.y - y) ** 2 <= r_sq]
