"""Play the arena without networking: the simulation, bots and renderer in one process.

    python -m demo_game.offline [--headless] [--duration S] [--bots N] [--screenshot PATH]

A development aid and the seam for the networked client: ``OfflineGame`` owns a local
``World`` where the networked client will hold netcode's replica (remote players interpolated,
the local one predicted with ``apply_input``); input handling, bots and drawing stay the same.
The simulation steps at the fixed tick rate; frames are drawn between the last two ticks,
interpolated, so motion is smooth at any frame rate.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence

import pygame

from demo_game.bots import BOT_NAMES, BotBrain
from demo_game.input import InputHandler
from demo_game.netstats import NetHistory, NetStats
from demo_game.render import DEFAULT_SIZE, Renderer
from demo_game.scene import Scene, interpolate_snapshots
from demo_game.sim import TICK_S, ChatPosted, GameEvent, PlayerInput, World

__all__ = ["OfflineGame", "main"]

MAX_TICKS_PER_FRAME = 5
STATS_SAMPLE_S = 0.1
_INVISIBLE_DRIVERS = ("offscreen", "dummy")


class OfflineGame:
    """A local world with one human (or autopiloted) player and ``bots`` bot players."""

    def __init__(
        self,
        *,
        seed: int = 1,
        bots: int = 3,
        name: str = "you",
        autopilot: bool = False,
        show_net_graph: bool = False,
    ) -> None:
        self.world = World(seed)
        me, _ = self.world.add_player(name)
        self.local_id = me.id
        self.brains: dict[int, BotBrain] = {}
        for i in range(bots):
            bot, _ = self.world.add_player(
                BOT_NAMES[i % len(BOT_NAMES)] + ("" if i < 8 else str(i))
            )
            self.brains[bot.id] = BotBrain(bot.id, seed=seed * 1000 + i)
        self.autopilot = BotBrain(me.id, seed=seed * 1000 + 999, phrases=()) if autopilot else None
        self.input = InputHandler(show_net_graph=show_net_graph)
        self.commands = self.input.handle(())
        self.previous = self.current = self.world.snapshot()
        self.accumulator_s = 0.0
        self.clock_s = 0.0
        self.fps = 0.0
        self.net_history = NetHistory()
        self._sample_timer_s = 0.0
        self.event_counts: Counter[str] = Counter()
        self.new_chat: list[ChatPosted] = []
        self.quit = False

    def frame(self, events: Iterable[pygame.event.Event], frame_dt: float) -> None:
        """Handle this frame's input, then step the world by as many ticks as are due."""
        self.commands = self.input.handle(events)
        self.quit |= self.commands.quit
        if self.commands.chat_to_send:
            self._say(self.local_id, self.commands.chat_to_send)
        frame_dt = min(max(frame_dt, 0.0), MAX_TICKS_PER_FRAME * TICK_S)
        self.clock_s += frame_dt
        self.accumulator_s += frame_dt
        while self.accumulator_s >= TICK_S:
            self.accumulator_s -= TICK_S
            self.tick()
        self._sample_timer_s += frame_dt
        if self._sample_timer_s >= STATS_SAMPLE_S:
            self._sample_timer_s -= STATS_SAMPLE_S
            self.net_history.append(self.net_stats())

    def tick(self) -> list[GameEvent]:
        """One fixed simulation step with the latest human input and the bots' decisions."""
        world = self.world
        tick = world.tick + 1
        inputs: dict[int, PlayerInput] = {}
        if self.autopilot is not None:
            inputs[self.local_id] = self._bot_input(self.autopilot, tick)
        else:
            inputs[self.local_id] = self.commands.to_input(tick)
        for pid, brain in self.brains.items():
            inputs[pid] = self._bot_input(brain, tick)
        events = world.step(inputs, TICK_S)
        self.event_counts.update(type(e).__name__ for e in events)
        self.previous, self.current = self.current, world.snapshot()
        return events

    def _bot_input(self, brain: BotBrain, tick: int) -> PlayerInput:
        world = self.world
        me = world.players[brain.player_id]
        action = brain.think(
            tick, world.time_s, me, list(world.pickups.values()), world.environment
        )
        if action.chat:
            self._say(brain.player_id, action.chat)
        return action.input

    def _say(self, player_id: int, text: str) -> None:
        line = self.world.say(player_id, text)
        if line is not None:
            self.event_counts["ChatPosted"] += 1
            self.new_chat.append(line)

    def net_stats(self) -> NetStats:
        """Offline there is no network: only the simulated settings and the frame rate."""
        return NetStats(
            mode="offline",
            sim_latency_ms=self.commands.sim_latency_ms,
            sim_loss=self.commands.sim_loss,
            fps=self.fps,
        )

    def scene(self) -> Scene:
        """What to draw now: the world interpolated between the last two ticks."""
        view = interpolate_snapshots(self.previous, self.current, self.accumulator_s / TICK_S)
        return Scene.from_snapshot(
            view,
            local_player_id=self.local_id,
            chat_lines=self.world.chat.last(8),
            chat_input=self.commands.chat_input,
            show_net_graph=self.commands.show_net_graph,
            net_stats=self.net_stats(),
            net_history=self.net_history,
            clock_s=self.clock_s,
        )

    def status_line(self) -> str:
        """A one-line summary for the headless log."""
        w = self.world
        env = w.environment
        players = " ".join(
            f"{p.name}({p.x:.0f},{p.y:.0f} hp{p.health} {p.score}pts)"
            for p in sorted(w.players.values(), key=lambda p: p.id)
        )
        c = self.event_counts
        return (
            f"t={w.time_s:5.1f}s tick={w.tick} light={env.light:.2f} {env.weather.name.lower()} "
            f"pickups={len(w.pickups)} collected={c['PickupCollected']} "
            f"chats={c['ChatPosted']} | {players}"
        )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo_game.offline",
        description="Play the netcode demo arena locally, without networking.",
    )
    parser.add_argument("--headless", action="store_true", help="no window (SDL dummy driver)")
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    parser.add_argument("--bots", type=int, default=3, help="number of bot players (default 3)")
    parser.add_argument("--screenshot", default=None, help="save the last frame to this PNG")
    parser.add_argument("--seed", type=int, default=1, help="world seed (default 1)")
    parser.add_argument("--name", default="you", help="your player name")
    parser.add_argument("--net-graph", action="store_true", help="start with the net graph on")
    args = parser.parse_args(argv)
    if args.bots < 0 or args.bots > 64:
        parser.error("--bots must be between 0 and 64")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be positive")
    if args.headless and args.duration is None:
        args.duration = 10.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the offline game; returns the process exit status."""
    args = _parse_args(argv)
    if args.headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        os.environ["SDL_AUDIODRIVER"] = "dummy"
    chosen_driver = os.environ.get("SDL_VIDEODRIVER")
    try:
        pygame.display.init()
        pygame.font.init()
        # Without a display SDL quietly falls back to an invisible driver: say so instead.
        if chosen_driver is None and pygame.display.get_driver() in _INVISIBLE_DRIVERS:
            raise pygame.error(f"no display found (SDL chose {pygame.display.get_driver()!r})")
        screen = pygame.display.set_mode(DEFAULT_SIZE)
    except pygame.error as exc:
        pygame.quit()
        print(
            f"error: cannot open a window: {exc}.\n"
            "No display? Run without a window: python -m demo_game.offline --headless",
            file=sys.stderr,
        )
        return 2
    pygame.display.set_caption("netcode demo (offline)")
    game = OfflineGame(
        seed=args.seed,
        bots=args.bots,
        name=args.name,
        autopilot=args.headless,
        show_net_graph=args.net_graph,
    )
    renderer = Renderer(DEFAULT_SIZE)
    clock = pygame.time.Clock()
    elapsed_s, next_report_s = 0.0, 2.0
    try:
        while not game.quit and (args.duration is None or elapsed_s < args.duration):
            frame_dt = clock.tick(60) / 1000.0
            elapsed_s += frame_dt
            game.fps = clock.get_fps()
            game.frame(pygame.event.get(), frame_dt)
            renderer.draw(screen, game.scene())
            pygame.display.flip()
            if args.headless:
                for line in game.new_chat:
                    print(f"[chat] {line.name}: {line.text}")
                if elapsed_s >= next_report_s:
                    print(game.status_line(), flush=True)
                    next_report_s += 2.0
            game.new_chat.clear()
        if args.screenshot:
            pygame.image.save(screen, args.screenshot)
            print(f"screenshot saved to {args.screenshot}")
        print("final: " + game.status_line())
    except KeyboardInterrupt:
        pass
    finally:
        pygame.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
