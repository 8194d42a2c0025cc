"""Headless bot players: an :class:`~demo_game.client.ArenaClient` driven by a BotBrain.

A bot is an ordinary networked client (its own Room, replicas, prediction and events); its
brain sees what any client sees: its own predicted player, the pickups announced by events
and the replicated environment. ``run`` ticks it at the client tick rate until stopped.
"""

from __future__ import annotations

import asyncio

from demo_game.bots import BOT_NAMES, FRIENDLY_PHRASES, BotBrain
from demo_game.client import ArenaClient
from demo_game.sim import TICK_S

__all__ = ["BotClient", "bot_name"]


def bot_name(index: int) -> str:
    """The name of the ``index``-th bot (Ada, Bix, ..., then Ada8, Bix9, ...)."""
    base = BOT_NAMES[index % len(BOT_NAMES)]
    return base if index < len(BOT_NAMES) else f"{base}{index}"


class BotClient(ArenaClient):
    """A networked client whose inputs and chat come from a :class:`BotBrain`."""

    def __init__(self, *, seed: int = 0, chatty: bool = True) -> None:
        super().__init__(seed=seed)
        self.brain = BotBrain(0, seed=seed, phrases=FRIENDLY_PHRASES if chatty else ())
        #: chat lines this bot said
        self.said = 0

    def think(self) -> tuple[float, float]:
        """This tick's movement (and maybe a chat line, sent at once)."""
        me = self.me
        if me is None:
            return 0.0, 0.0
        action = self.brain.think(
            self.tick + 1, self.clock_s, me, list(self.pickups.values()), self.environment_view()
        )
        if action.chat and self.say(action.chat):
            self.said += 1
        return action.input.move_x, action.input.move_y

    def bot_step(self) -> None:
        """One tick: decide, then send and predict."""
        self.clock_s += TICK_S
        self.step(self.think())

    async def run(self, stop: asyncio.Event, *, stats_every_s: float = 0.1) -> None:
        """Tick on a fixed schedule until ``stop`` is set or the room disconnects."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        next_stats = next_tick
        while not stop.is_set() and self.connected:
            now = loop.time()
            if now < next_tick:
                await asyncio.sleep(next_tick - now)
                continue
            behind = int((now - next_tick) / TICK_S)
            if behind > 5:  # the loop stalled: skip ahead rather than burst
                next_tick += behind * TICK_S
            self.bot_step()
            next_tick += TICK_S
            if now >= next_stats:
                self.record_stats(now)
                next_stats = now + stats_every_s
