"""Headless bot brains: what a bot player presses each tick, from what it can see.

A brain is pure and seeded: it reads its own player, the pickups and the environment (the same
things a client's replica holds), and returns a ``BotAction`` (a ``PlayerInput`` and maybe a
chat line). It never touches the world, so the same brain drives a bot in the offline mode or
a headless networked bot client.

Behaviour: run out of the storm when in or near it; otherwise head for the nearest pickup
outside the storm (sticking to a target until it is gone), or wander when none is near; steer
round the storm on the way; say a friendly line every 5 to 10 seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import attrs

from demo_game.sim import (
    ARENA_SIZE_M,
    EnvironmentState,
    PickupState,
    PlayerInput,
    PlayerState,
)

__all__ = ["BOT_NAMES", "FRIENDLY_PHRASES", "BotAction", "BotBrain"]

FRIENDLY_PHRASES: tuple[str, ...] = (
    "hi all!",
    "gg",
    "nice one",
    "that storm is mean",
    "anyone seen a gem?",
    "race you to the next coin",
    "good luck, have fun",
    "it's getting dark...",
    "love the rain",
    "watch out, storm behind you",
    "hearts are over here",
    "o/",
)

BOT_NAMES: tuple[str, ...] = ("Ada", "Bix", "Cleo", "Dot", "Echo", "Fig", "Gus", "Hana")

SAFETY_MARGIN_M = 5.0
SIGHT_M = 60.0
CHAT_INTERVAL_S = (5.0, 10.0)


@attrs.frozen
class BotAction:
    """What a bot does this tick."""

    input: PlayerInput  #: movement
    chat: str | None = None  #: a line to say, or None


class BotBrain:
    """One bot's decision making (seeded; the same seed and views give the same actions)."""

    def __init__(
        self, player_id: int, seed: int, phrases: Sequence[str] = FRIENDLY_PHRASES
    ) -> None:
        self.player_id = player_id
        self.rng = random.Random(seed)
        self.phrases = tuple(phrases)
        self.target_id: int | None = None
        self.wander_to: tuple[float, float] | None = None
        self.wander_until_s = 0.0
        self.wobble = 0.0
        self.next_chat_s = self.rng.uniform(1.0, CHAT_INTERVAL_S[1])

    def think(
        self,
        tick: int,
        time_s: float,
        me: PlayerState,
        pickups: Sequence[PickupState],
        environment: EnvironmentState,
    ) -> BotAction:
        """Decide this tick's input (and maybe a chat line) from the bot's view."""
        dx, dy = self._desired_direction(time_s, me, pickups, environment)
        # A slow random walk of the heading makes bots look less robotic.
        self.wobble = max(-0.35, min(0.35, self.wobble + self.rng.uniform(-0.05, 0.05)))
        c, s = math.cos(self.wobble), math.sin(self.wobble)
        dx, dy = dx * c - dy * s, dx * s + dy * c
        length = math.hypot(dx, dy)
        move = (dx / length, dy / length) if length > 1e-6 else (0.0, 0.0)
        chat = None
        if time_s >= self.next_chat_s and self.phrases:
            chat = self.rng.choice(self.phrases)
            self.next_chat_s = time_s + self.rng.uniform(*CHAT_INTERVAL_S)
        return BotAction(PlayerInput(tick, round(move[0], 4), round(move[1], 4)), chat)

    def _desired_direction(
        self,
        time_s: float,
        me: PlayerState,
        pickups: Sequence[PickupState],
        env: EnvironmentState,
    ) -> tuple[float, float]:
        hx, hy = me.x - env.hazard_x, me.y - env.hazard_y
        hazard_dist = math.hypot(hx, hy)
        danger = env.hazard_radius + SAFETY_MARGIN_M
        if hazard_dist < danger:
            self.target_id = None
            if hazard_dist < 1e-6:
                return 1.0, 0.0
            return hx / hazard_dist, hy / hazard_dist
        goal = self._goal(time_s, me, pickups, env)
        gx, gy = goal[0] - me.x, goal[1] - me.y
        dist = math.hypot(gx, gy)
        if dist < 1e-6:
            return 0.0, 0.0
        gx, gy = gx / dist, gy / dist
        # Steer round the storm: push away from it, harder the closer it is.
        push = max(0.0, (danger + 8.0 - hazard_dist) / 8.0)
        return gx + push * hx / hazard_dist, gy + push * hy / hazard_dist

    def _goal(
        self,
        time_s: float,
        me: PlayerState,
        pickups: Sequence[PickupState],
        env: EnvironmentState,
    ) -> tuple[float, float]:
        def safe(p: PickupState) -> bool:
            limit = env.hazard_radius + SAFETY_MARGIN_M
            return math.hypot(p.x - env.hazard_x, p.y - env.hazard_y) > limit

        by_id = {p.id: p for p in pickups}
        current = by_id.get(self.target_id) if self.target_id is not None else None
        if current is not None and safe(current):
            return current.x, current.y
        candidates = [(math.hypot(p.x - me.x, p.y - me.y), p.id, p) for p in pickups if safe(p)]
        candidates = [c for c in candidates if c[0] <= SIGHT_M]
        if candidates:
            _, self.target_id, best = min(candidates)
            return best.x, best.y
        self.target_id = None
        if self.wander_to is None or time_s >= self.wander_until_s:
            margin = 10.0
            self.wander_to = (
                min(ARENA_SIZE_M - margin, max(margin, me.x + self.rng.uniform(-40.0, 40.0))),
                min(ARENA_SIZE_M - margin, max(margin, me.y + self.rng.uniform(-40.0, 40.0))),
            )
            self.wander_until_s = time_s + self.rng.uniform(5.0, 10.0)
        return self.wander_to
