"""``netcode-demo``: play the arena over netcode.

    netcode-demo                          # host a game here, open the window, add 3 bots
    netcode-demo --headless --duration 10 # no window: print what the network delivers
    netcode-demo --connect URL --token T  # join a server started with netcode-demo-server
    netcode-demo --listen                 # host the game as a listen server (peer to peer)

Without ``--connect`` an embedded server and the bots run in a background thread
(:mod:`demo_game.embedded`); the player's client, in the main thread, talks to it over
WebRTC on 127.0.0.1 like any remote player. ``--headless`` uses SDL's dummy video driver
and an autopilot for the local player, and prints every two seconds what this client sees:
round-trip time, bandwidth, snapshot sizes, the other players' positions and how far each
moved, and the chat lines received.

``--listen`` hosts the game the other way (:mod:`demo_game.listen`): the room is peer to
peer, this process's host participant runs the game, every player (the local one, the bots,
and others joining with ``--connect URL --token T`` and a token it prints) replicates from
it over a direct peer connection, and the room server only admits players and brokers
their connections.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import os
import sys
import time
from collections.abc import Sequence

import pygame

from demo_game.botclient import BotClient
from demo_game.client import ArenaClient
from demo_game.embedded import EmbeddedArena
from demo_game.input import InputHandler
from demo_game.listen import ListenArena
from demo_game.render import DEFAULT_SIZE, Renderer
from netcode.auth import TokenError
from netcode.cli import add_client_network_arguments, client_network_options, percent
from netcode.transport.impair import Impairment
from netcode.transport.webrtc import ConnectError

__all__ = ["main"]

FPS = 60
#: headless without a screenshot: nothing is drawn, inputs still tick at 30 Hz
HEADLESS_FPS = 15
STATS_SAMPLE_S = 0.1
REPORT_EVERY_S = 2.0
_INVISIBLE_DRIVERS = ("offscreen", "dummy")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="netcode-demo",
        description="The netcode demo arena: a multiplayer game over WebRTC data channels.",
    )
    parser.add_argument("--headless", action="store_true", help="no window (SDL dummy driver)")
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    parser.add_argument("--bots", type=int, default=3, help="bot players to add (default 3)")
    parser.add_argument("--connect", metavar="URL", help="join this server instead of hosting")
    parser.add_argument("--token", help="access token for --connect")
    parser.add_argument(
        "--listen",
        nargs="?",
        const="127.0.0.1:0",
        metavar="HOST:PORT",
        help="host the game as a listen server in a peer-to-peer room, its room server on "
        "HOST:PORT (default 127.0.0.1 and a free port); prints tokens for other players",
    )
    parser.add_argument(
        "--guests", type=int, default=3, help="tokens to print for other players (--listen)"
    )
    parser.add_argument("--name", default="you", help="your player name (when hosting)")
    parser.add_argument("--screenshot", metavar="PATH", help="save the last frame as a PNG")
    parser.add_argument("--net-graph", action="store_true", help="start with the net graph on")
    parser.add_argument("--latency", type=float, default=0, help="simulated extra RTT, ms")
    parser.add_argument(
        "--loss",
        type=percent(50),
        default=0.0,
        metavar="PERCENT",
        help="simulated loss on the lossy channel, percent 0..50 (5 or 5%%)",
    )
    parser.add_argument("--seed", type=int, default=1, help="world seed (default 1)")
    parser.add_argument(
        "--trace", metavar="FILE", help="record the embedded server's trace (see netcode-trace)"
    )
    parser.add_argument(
        "--impair",
        metavar="SPEC",
        help="impair every UDP datagram of your connection, both ways, under WebRTC "
        "(e.g. latency=50,loss=5%%,seed=1; keys: latency jitter loss dup reorder bw seed "
        "blackout)",
    )
    add_client_network_arguments(parser)
    args = parser.parse_args(argv)
    args.network = client_network_options(parser, args)
    args.impairment = None
    if args.impair is not None:
        try:
            args.impairment = Impairment.from_spec(args.impair)
        except ValueError as exc:
            parser.error(f"--impair: {exc}")
    if not 0 <= args.bots <= 32:
        parser.error(f"--bots must be within 0..32, not {args.bots}")
    if args.duration is not None and args.duration <= 0:
        parser.error(f"--duration must be more than 0 seconds, not {args.duration:g}")
    if args.listen is not None:
        if args.connect:
            parser.error("--listen hosts the game; --connect joins one: pick one")
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            parser.error(f"--listen takes HOST:PORT (e.g. 0.0.0.0:7880), not {args.listen!r}")
        args.listen_host, args.listen_port = host.strip("[]"), int(port)
    if not 0 <= args.guests <= 32:
        parser.error("--guests must be between 0 and 32")
    if args.connect and not args.token:
        parser.error("--connect needs --token (make one with netcode-token --room arena ...)")
    if args.token and not args.connect:
        parser.error("--token goes with --connect URL")
    if not 0 <= args.latency <= 500:
        parser.error(f"--latency must be within 0..500 ms, not {args.latency:g}")
    if args.headless and args.duration is None:
        args.duration = 10.0
    return args


def _open_display(headless: bool) -> pygame.Surface:
    """The window (or an invisible surface when headless); raises pygame.error."""
    if headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    chosen = os.environ.get("SDL_VIDEODRIVER")
    pygame.display.init()
    pygame.font.init()
    # Without a display SDL may quietly fall back to an invisible driver: say so instead.
    if not headless and chosen is None and pygame.display.get_driver() in _INVISIBLE_DRIVERS:
        raise pygame.error(f"no display found (SDL chose {pygame.display.get_driver()!r})")
    screen = pygame.display.set_mode(DEFAULT_SIZE)
    pygame.display.set_caption("netcode demo arena")
    return screen


class _Reporter:
    """The headless log: what this client sees of the others, every few seconds."""

    def __init__(self, client: ArenaClient) -> None:
        self.client = client
        self.last_seen: dict[int, tuple[float, float]] = {}
        self.moved_m: dict[str, float] = {}
        self.started = time.monotonic()

    def observe(self) -> None:
        """Track how far each remote player moved (call every frame)."""
        players, _ = self.client.remote_view()
        for p in players:
            before = self.last_seen.get(p.id)
            if before is not None:
                self.moved_m[p.name] = self.moved_m.get(p.name, 0.0) + math.hypot(
                    p.x - before[0], p.y - before[1]
                )
            self.last_seen[p.id] = (p.x, p.y)

    def line(self) -> str:
        c = self.client
        s = c.net_stats()
        players, _ = c.remote_view()
        me = c.me
        t = time.monotonic() - self.started
        seen = " ".join(
            f"{p.name}({p.x:.0f},{p.y:.0f} {p.score}pts moved {self.moved_m.get(p.name, 0):.0f}m)"
            for p in sorted(players, key=lambda p: p.id)
        )
        mine = f"{me.name}({me.x:.0f},{me.y:.0f} {me.score}pts)" if me is not None else "-"
        return (
            f"t={t:4.1f}s rtt {s.rtt_ms:.0f} ms loss {s.loss * 100:.1f}% "
            f"in {s.kbps_in:.1f} kbps out {s.kbps_out:.1f} kbps snapshot {s.snapshot_bytes} B "
            f"({s.datagrams_per_snapshot:.1f} dgram) buffer {s.interp_buffer_ms:.0f} ms "
            f"corrections {c.corrections} | pickups {len(c.pickups)} "
            f"(+{len(c.pickups_spawned)} -{len(c.pickups_despawned)}) "
            f"chat lines {c.events_received['ChatLine']} | me {mine} | {seen}"
        )


async def _play(
    args: argparse.Namespace,
    screen: pygame.Surface,
    url: str,
    token: str,
    arena: EmbeddedArena | ListenArena | None,
) -> int:
    client: ArenaClient = (
        BotClient(seed=args.seed, chatty=False) if args.headless else ArenaClient()
    )
    if args.impairment is not None:
        # the local player's peer connection, both ways, at the UDP datagrams
        client.room.connect = functools.partial(  # type: ignore[method-assign]
            client.room.connect, impairment=args.impairment
        )
    try:
        await client.connect(url, token, **args.network)
    except TokenError as exc:
        print(f"error: the server refused the token: {exc}", file=sys.stderr)
        return 2
    except (ConnectError, OSError) as exc:
        print(f"error: cannot connect to {url}: {exc}", file=sys.stderr)
        return 2
    print(f"joined room 'arena' on {url} as {client.identity}", flush=True)
    handler = InputHandler(show_net_graph=args.net_graph)
    handler.sim_latency_ms, handler.sim_loss = int(args.latency), args.loss / 100
    renderer = Renderer(DEFAULT_SIZE)
    reporter = _Reporter(client)
    loop = asyncio.get_running_loop()
    started = last = loop.time()
    next_sample, next_report = started, started + REPORT_EVERY_S
    draw = not args.headless or bool(args.screenshot)
    frame_s = 1.0 / (HEADLESS_FPS if args.headless and not draw else FPS)
    frames, fps_since = 0, started
    try:
        while client.connected:
            now = loop.time()
            if args.duration is not None and now - started >= args.duration:
                break
            commands = handler.handle(pygame.event.get())
            if commands.quit:
                break
            if commands.chat_to_send:
                client.say(commands.chat_to_send)
            client.set_impairment(commands.sim_latency_ms, commands.sim_loss)
            move = (commands.move_x, commands.move_y)
            if isinstance(client, BotClient):
                client.advance(now - last, client.think)
            else:
                client.advance(now - last, lambda move=move: move)  # type: ignore[misc]
            last = now
            if now >= next_sample:
                client.record_stats(now)
                next_sample = now + STATS_SAMPLE_S
            if draw:
                scene = client.scene(
                    show_net_graph=commands.show_net_graph, chat_input=commands.chat_input
                )
                renderer.draw(screen, scene)
                pygame.display.flip()
            frames += 1
            if now - fps_since >= 1.0:
                client.fps, frames, fps_since = frames / (now - fps_since), 0, now
            if args.headless:
                reporter.observe()
                for line in client.new_chat:
                    print(f"[chat] {line.name}: {line.text}", flush=True)
                if now >= next_report:
                    print(reporter.line(), flush=True)
                    next_report += REPORT_EVERY_S
            client.new_chat.clear()
            await asyncio.sleep(max(0.0, frame_s - (loop.time() - now)))
        if not client.connected:
            print(f"disconnected from {url}", file=sys.stderr)
        if args.screenshot:
            renderer.draw(screen, client.scene(show_net_graph=True))
            pygame.image.save(screen, args.screenshot)
            print(f"screenshot saved to {args.screenshot}")
        _print_final(client, reporter, arena)
    finally:
        await client.close()
    return 0


def _print_final(
    client: ArenaClient, reporter: _Reporter, arena: EmbeddedArena | ListenArena | None
) -> None:
    print("final: " + reporter.line())
    moved = ", ".join(f"{name} {m:.0f} m" for name, m in sorted(reporter.moved_m.items()))
    print(f"final: players seen moving: {moved or 'none'}")
    print(
        f"final: chat lines received {client.events_received['ChatLine']}, "
        f"pickups spawned {len(client.pickups_spawned)} despawned "
        f"{len(client.pickups_despawned)}, collected {client.events_received['PickupTaken']}"
    )
    if arena is None:
        return
    summary = arena.summary()
    for bot in summary.get("bots", []):
        print(
            f"final: bot {bot['name']}: said {bot['said']}, score {bot['score']}, "
            f"rtt {bot['rtt_ms']:.0f} ms, in {bot['kbps_in']:.1f} kbps, "
            f"out {bot['kbps_out']:.1f} kbps, snapshot {bot['snapshot_bytes']} B, "
            f"corrections {bot['corrections']}"
        )
    server = summary.get("server")
    if server:
        print(
            f"final: server tick {server['tick']}, players {server['players']}, "
            f"tick p50 {server['tick_p50_ms'] or 0:.1f} ms, "
            f"p99 {server['tick_p99_ms'] or 0:.1f} ms, "
            f"tick rate held {server['tick_rate_held']}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``netcode-demo``; returns the exit status."""
    args = _parse_args(argv)
    try:
        screen = _open_display(args.headless)
    except pygame.error as exc:
        pygame.quit()
        print(
            f"error: cannot open a window: {exc}.\n"
            "No display? Run without a window: netcode-demo --headless",
            file=sys.stderr,
        )
        return 2
    arena: EmbeddedArena | ListenArena | None = None
    try:
        if args.connect:
            url, token = args.connect, args.token
        elif args.listen is not None:
            listen = arena = ListenArena(
                bots=args.bots, seed=args.seed, host=args.listen_host, port=args.listen_port
            )
            listen.start()
            url, token = listen.url, listen.token("player", args.name)
            print(
                f"listen server: hosting room 'arena' (peer to peer) on {listen.url} "
                f"with {args.bots} bots",
                flush=True,
            )
            for i in range(args.guests):
                guest = listen.token(f"guest-{i + 1}", f"guest {i + 1}")
                print(f"  another player: netcode-demo --connect {listen.url} --token {guest}")
        else:
            arena = EmbeddedArena(bots=args.bots, seed=args.seed, trace=args.trace)
            arena.start()
            url, token = arena.url, arena.token("player", args.name)
            print(f"hosting room 'arena' on {arena.url} with {args.bots} bots", flush=True)
        return asyncio.run(_play(args, screen, url, token, arena))
    except KeyboardInterrupt:
        return 0
    finally:
        if arena is not None:
            arena.stop()
        pygame.quit()


if __name__ == "__main__":
    raise SystemExit(main())
