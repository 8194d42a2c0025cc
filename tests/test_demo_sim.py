"""The demo's simulation rules: deterministic, bounded, and doing what the game needs."""

from __future__ import annotations

import ast
import math
import pathlib
import random

import attrs
import pytest

from demo_game import sim
from demo_game.sim import (
    ARENA_SIZE_M,
    MAX_SPEED_MPS,
    PLAYER_RADIUS_M,
    TICK_S,
    ChatLog,
    ChatPosted,
    PickupCollected,
    PickupDespawned,
    PickupSpawned,
    PlayerInput,
    PlayerScored,
    PlayerState,
    World,
    apply_input,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _player(x: float = 100.0, y: float = 100.0) -> PlayerState:
    return PlayerState(id=1, name="ann", colour=(255, 0, 0), x=x, y=y)


def _scripted_inputs(seed: int, ticks: int) -> list[PlayerInput]:
    rng = random.Random(seed)
    out = []
    for t in range(ticks):
        if t % 20 == 0:
            mx, my = rng.choice([-1.0, 0.0, 1.0]), rng.choice([-1.0, 0.0, 1.0])
        out.append(PlayerInput(t, mx, my))
    return out


def _run(seed: int, ticks: int) -> tuple[list[sim.WorldSnapshot], list[sim.GameEvent]]:
    world = World(seed)
    a, _ = world.add_player("ann")
    b, _ = world.add_player("bob")
    ins_a, ins_b = _scripted_inputs(1, ticks), _scripted_inputs(2, ticks)
    snaps, events = [], []
    for t in range(ticks):
        events += world.step({a.id: ins_a[t], b.id: ins_b[t]}, TICK_S)
        if t % 10 == 0:
            world.say(a.id, f"hello {t}")
        snaps.append(world.snapshot())
    return snaps, events


def test_simulation_module_imports_no_pygame_no_clock_no_global_random() -> None:
    tree = ast.parse((ROOT / "demo_game" / "sim.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert node.value.id not in ("time", "datetime")
            if node.value.id == "random":
                assert node.attr == "Random"
    assert imported <= {"__future__", "enum", "math", "random", "collections", "attrs"}


def test_same_seed_and_inputs_give_identical_worlds() -> None:
    snaps_1, events_1 = _run(seed=7, ticks=900)
    snaps_2, events_2 = _run(seed=7, ticks=900)
    assert snaps_1 == snaps_2
    assert events_1 == events_2
    assert repr(snaps_1[-1]) == repr(snaps_2[-1])  # bit for bit, floats included


def test_different_seeds_give_different_worlds() -> None:
    assert _run(seed=1, ticks=60)[0][-1] != _run(seed=2, ticks=60)[0][-1]


def test_apply_input_is_pure_and_replayable() -> None:
    start = _player(50.0, 60.0)
    inputs = _scripted_inputs(3, 300)
    a = b = start
    for inp in inputs:
        a = apply_input(a, inp, TICK_S)
    for inp in inputs:
        b = apply_input(b, inp, TICK_S)
    assert a == b
    assert start == _player(50.0, 60.0)


@pytest.mark.parametrize(
    "move",
    [(1.0, 0.0), (0.0, -1.0), (1.0, 1.0), (-1.0, 1.0), (10.0, 0.0), (0.3, 0.4), (1e9, -1e9)],
)
def test_apply_input_never_exceeds_max_speed(move: tuple[float, float]) -> None:
    p = _player()
    q = apply_input(p, PlayerInput(0, *move), TICK_S)
    dist = math.hypot(q.x - p.x, q.y - p.y)
    # 1 cm rounding on each axis is the only slack.
    assert dist <= MAX_SPEED_MPS * TICK_S + 0.01 * math.sqrt(2)
    if move in ((1.0, 1.0), (1.0, 0.0)):
        assert dist == pytest.approx(MAX_SPEED_MPS * TICK_S, abs=0.01)


def test_apply_input_clamps_dt_and_rejects_nan() -> None:
    p = _player()
    far = apply_input(p, PlayerInput(0, 1.0, 0.0), dt=5.0)
    assert far.x - p.x <= MAX_SPEED_MPS * sim.MAX_DT_S + 0.01
    assert apply_input(p, PlayerInput(0, math.nan, math.inf), TICK_S) == p
    assert apply_input(p, PlayerInput(0, 1.0, 0.0), dt=math.nan).x == p.x
    assert apply_input(p, PlayerInput(0, 0.0, 0.0), TICK_S) == p


def test_apply_input_keeps_player_in_arena_and_positions_on_centimetres() -> None:
    p = _player(1.0, ARENA_SIZE_M - 1.0)
    for t in range(120):
        p = apply_input(p, PlayerInput(t, -1.0, 1.0), TICK_S)
        assert p.x == round(p.x * 100) / 100 and p.y == round(p.y * 100) / 100
    assert p.x == PLAYER_RADIUS_M
    assert p.y == ARENA_SIZE_M - PLAYER_RADIUS_M


def test_heading_follows_movement() -> None:
    p = apply_input(_player(), PlayerInput(0, 0.0, 1.0), TICK_S)
    assert p.heading == pytest.approx(math.pi / 2, abs=0.01)
    still = apply_input(p, PlayerInput(1, 0.0, 0.0), TICK_S)
    assert still.heading == p.heading


def test_missing_input_repeats_the_last_one() -> None:
    world = World(3, npc_count=0, pickup_target=0)
    p, _ = world.add_player("ann")
    world.step({p.id: PlayerInput(5, 1.0, 0.0)}, TICK_S)
    x1 = world.players[p.id].x
    world.step({}, TICK_S)
    assert world.players[p.id].x > x1
    assert world.last_input_tick[p.id] == 5


def test_pickups_spawn_and_are_collected_with_score() -> None:
    world = World(11, npc_count=0, pickup_target=5)
    events = world.step({}, TICK_S)
    spawned = [e for e in events if isinstance(e, PickupSpawned)]
    assert len(spawned) == 5 and len(world.pickups) == 5
    p, _ = world.add_player("ann")
    target = spawned[0].pickup
    # Put the player right on the pickup: the next step collects it.
    world.players[p.id] = attrs.evolve(world.players[p.id], x=target.x, y=target.y)
    events = world.step({}, TICK_S)
    assert PickupCollected(target.id, p.id, target.kind) in events
    assert PickupDespawned(target.id, "collected") in events
    scored = [e for e in events if isinstance(e, PlayerScored)]
    assert scored and scored[0].player_id == p.id
    assert world.players[p.id].score == scored[0].score >= 1
    assert target.id not in world.pickups
    # ... and a new one appears elsewhere after the respawn delay.
    later: list[sim.GameEvent] = []
    for _ in range(int(sim.PICKUP_RESPAWN_DELAY_S[1] / TICK_S) + 2):
        later += world.step({}, TICK_S)
    respawned = [e.pickup for e in later if isinstance(e, PickupSpawned)]
    assert len(respawned) >= 1
    assert all(r.id != target.id for r in respawned)
    assert len(world.pickups) == 5


def test_uncollected_pickups_expire_and_respawn() -> None:
    world = World(5, npc_count=0, pickup_target=6)
    events: list[sim.GameEvent] = []
    for _ in range(int((sim.PICKUP_LIFETIME_S[1] + 5) / TICK_S)):
        events += world.step({}, TICK_S)
    expired = [e for e in events if isinstance(e, PickupDespawned) and e.reason == "expired"]
    assert len(expired) >= 6
    assert len(world.pickups) == 6  # the population is kept up
    spawned_ids = {e.pickup.id for e in events if isinstance(e, PickupSpawned)}
    assert {e.pickup_id for e in expired} <= spawned_ids


def test_storm_hurts_players_inside_and_they_heal_outside() -> None:
    world = World(2, npc_count=0, pickup_target=0)
    p, _ = world.add_player("ann")
    env = world.environment
    world.players[p.id] = attrs.evolve(world.players[p.id], x=env.hazard_x, y=env.hazard_y)
    for _ in range(int(1.0 / TICK_S)):
        world.step({}, TICK_S)
    hurt = world.players[p.id].health
    assert hurt < 100
    # Walk well out of the storm (teleport for the test) and heal.
    world.players[p.id] = attrs.evolve(world.players[p.id], x=5.0, y=5.0)
    for _ in range(int(3.0 / TICK_S)):
        world.step({}, TICK_S)
    assert world.players[p.id].health > hurt


def test_running_out_of_health_respawns_the_player() -> None:
    world = World(2, npc_count=0, pickup_target=0)
    p, _ = world.add_player("ann")
    events: list[sim.GameEvent] = []
    for _ in range(int(20.0 / TICK_S)):
        env = world.environment
        world.players[p.id] = attrs.evolve(world.players[p.id], x=env.hazard_x, y=env.hazard_y)
        events += world.step({}, TICK_S)
        if any(isinstance(e, sim.PlayerRespawned) for e in events):
            break
    assert sim.PlayerDowned(p.id) in events
    assert world.players[p.id].health == 100


def test_environment_cycles_day_night_weather_and_moves_hazard() -> None:
    world = World(9, npc_count=0, pickup_target=0)
    lights, weathers, centres = [], set(), set()
    events: list[sim.GameEvent] = []
    for _ in range(int(240 / TICK_S)):
        events += world.step({}, TICK_S)
        env = world.environment
        lights.append(env.light)
        weathers.add(env.weather)
        centres.add((env.hazard_x, env.hazard_y))
        assert 25.0 <= env.hazard_x <= ARENA_SIZE_M - 25.0
        assert 0.0 <= env.light <= 1.0
    assert min(lights) < 0.2 and max(lights) > 0.95  # night and noon both happen
    assert len(weathers) >= 2
    assert any(isinstance(e, sim.WeatherChanged) for e in events)
    assert len(centres) > 100
    assert sim.light_level_at(0.0) == sim.light_level_at(sim.DAY_LENGTH_S)


def test_npcs_wander_at_walking_speed_with_pauses() -> None:
    world = World(4, npc_count=6, pickup_target=0)
    before = {n.id: n for n in world.npcs.values()}
    paused_seen = moving_seen = False
    for _ in range(int(20 / TICK_S)):
        prev = dict(world.npcs)
        world.step({}, TICK_S)
        for nid, n in world.npcs.items():
            step = math.hypot(n.x - prev[nid].x, n.y - prev[nid].y)
            assert step <= sim.NPC_SPEED_MPS * TICK_S + 0.015
            paused_seen |= not n.moving
            moving_seen |= n.moving
    assert paused_seen and moving_seen
    assert any((n.x, n.y) != (before[n.id].x, before[n.id].y) for n in world.npcs.values())


def test_entity_ids_are_unique_across_types() -> None:
    world = World(1)
    p, _ = world.add_player("ann")
    world.step({}, TICK_S)
    ids = [p.id, *world.npcs, *world.pickups]
    assert len(ids) == len(set(ids))
    with pytest.raises(ValueError):
        world.add_player("bob", player_id=p.id)


def test_chat_is_sanitised_and_the_log_is_bounded() -> None:
    world = World(1)
    p, _ = world.add_player("ann")
    line = world.say(p.id, "  hi\x00 there\n" + "x" * 500)
    assert line is not None
    assert line.text.startswith("hi there ") and len(line.text) == sim.MAX_CHAT_CHARS
    assert world.say(p.id, "   ") is None
    assert world.say(999, "hello") is None
    log = ChatLog(max_lines=3)
    for i in range(10):
        log.add(ChatPosted(i, 1, "ann", str(i)))
    assert [line.text for line in log.lines] == ["7", "8", "9"]
    assert [line.text for line in log.last(2)] == ["8", "9"]
    assert log.last(0) == []


def test_players_join_and_leave_with_events() -> None:
    world = World(1)
    p, events = world.add_player("a-very-long-player-name")
    assert events == [sim.PlayerJoined(p)] and len(p.name) <= 16
    assert sim.SPAWN_MARGIN_M <= p.x <= ARENA_SIZE_M - sim.SPAWN_MARGIN_M
    assert world.remove_player(p.id) == [sim.PlayerLeft(p.id)]
    assert world.remove_player(p.id) == []
