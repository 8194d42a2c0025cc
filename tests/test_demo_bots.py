"""Bot brains: seeded, sane inputs, they collect, flee the storm and chat."""

from __future__ import annotations

import math

import attrs

from demo_game.bots import FRIENDLY_PHRASES, BotBrain
from demo_game.sim import (
    TICK_S,
    EnvironmentState,
    PickupKind,
    PickupState,
    PlayerState,
    Weather,
    World,
)

ENV = EnvironmentState(0.0, 1.0, Weather.CLEAR, hazard_x=20.0, hazard_y=20.0, hazard_radius=10.0)
ME = PlayerState(1, "bot", (255, 0, 0), 100.0, 100.0)


def _run_bots(seed: int, seconds: float) -> tuple[World, list[str], dict[int, BotBrain]]:
    world = World(seed)
    brains = {}
    for i in range(3):
        p, _ = world.add_player(f"bot{i}")
        brains[p.id] = BotBrain(p.id, seed=seed * 10 + i)
    chats = []
    for _ in range(int(seconds / TICK_S)):
        inputs = {}
        for pid, brain in brains.items():
            action = brain.think(
                world.tick + 1,
                world.time_s,
                world.players[pid],
                list(world.pickups.values()),
                world.environment,
            )
            inputs[pid] = action.input
            if action.chat:
                chats.append(action.chat)
                world.say(pid, action.chat)
        world.step(inputs, TICK_S)
    return world, chats, brains


def test_inputs_are_unit_directions_with_the_tick() -> None:
    brain = BotBrain(1, seed=1)
    pickups = [PickupState(2, PickupKind.COIN, 110.0, 100.0)]
    for tick in range(100):
        action = brain.think(tick, tick * TICK_S, ME, pickups, ENV)
        assert action.input.tick == tick
        assert abs(math.hypot(action.input.move_x, action.input.move_y) - 1.0) < 1e-3


def test_bot_heads_for_the_nearest_pickup() -> None:
    brain = BotBrain(1, seed=2)
    near = PickupState(2, PickupKind.GEM, 90.0, 100.0)
    far = PickupState(3, PickupKind.COIN, 130.0, 100.0)
    action = brain.think(0, 0.0, ME, [far, near], ENV)
    assert action.input.move_x < -0.8
    assert brain.target_id == near.id


def test_bot_runs_out_of_the_storm_and_ignores_pickups_inside_it() -> None:
    brain = BotBrain(1, seed=3)
    env = attrs.evolve(ENV, hazard_x=95.0, hazard_y=100.0)
    bait = PickupState(2, PickupKind.GEM, 96.0, 100.0)
    action = brain.think(0, 0.0, ME, [bait], env)
    assert action.input.move_x > 0.8  # away from the centre at x=95
    safe_env = attrs.evolve(ENV, hazard_x=60.0, hazard_y=100.0, hazard_radius=10.0)
    inside = PickupState(4, PickupKind.GEM, 62.0, 100.0)
    outside = PickupState(5, PickupKind.COIN, 100.0, 140.0)
    brain.think(1, 0.1, ME, [inside, outside], safe_env)
    assert brain.target_id == outside.id


def test_bots_are_deterministic_collect_pickups_and_chat_every_few_seconds() -> None:
    world_a, chats_a, _ = _run_bots(seed=4, seconds=30.0)
    world_b, chats_b, _ = _run_bots(seed=4, seconds=30.0)
    assert world_a.snapshot() == world_b.snapshot() and chats_a == chats_b
    assert sum(p.score for p in world_a.players.values()) >= 6
    # 3 bots, a line every 5-10 s each, over 30 s.
    assert 6 <= len(chats_a) <= 20
    assert set(chats_a) <= set(FRIENDLY_PHRASES)
    assert len(world_a.chat) == len(chats_a)
