"""The networked demo end to end over real aiortc on 127.0.0.1: bots, server and a viewer."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import pygame
import pytest

from demo_game.botclient import BotClient, bot_name
from demo_game.client import ArenaClient
from demo_game.render import DEFAULT_SIZE, Renderer
from demo_game.server import ROOM_NAME, ArenaServer, start_arena, stop_arena
from netcode.auth import InvalidSignature
from netcode.cli import make_token
from netcode.rooms import RoomServer

pytestmark = pytest.mark.webrtc

KEY, SECRET = "demo-test", "demo-test-secret-demo-test-secret-0123"
ROOT = Path(__file__).resolve().parents[1]
DEMO = (sys.executable, "-m", "demo_game")
Game = tuple[RoomServer, ArenaServer, list[BotClient], asyncio.Event]


async def eventually(condition: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.fixture
async def game() -> AsyncIterator[Game]:
    """A server and three bots ticking on this loop."""
    server, arena = await start_arena(KEY, SECRET, seed=3)
    stop = asyncio.Event()
    bots: list[BotClient] = []
    tasks = []
    for i in range(3):
        bot = BotClient(seed=30 + i)
        await bot.connect(
            server.url, make_token(KEY, SECRET, f"bot{i}", ROOM_NAME, name=bot_name(i))
        )
        bots.append(bot)
        tasks.append(asyncio.create_task(bot.run(stop)))
    yield server, arena, bots, stop
    stop.set()
    await asyncio.gather(*tasks)
    for bot in bots:
        await bot.close()
    await stop_arena(server, arena)


def _positions(client: ArenaClient) -> dict[str, tuple[float, float]]:
    players, _ = client.remote_view()
    return {p.name: (p.x, p.y) for p in players}


async def test_bots_see_each_other_move_chat_collect_and_get_the_environment(game: Game) -> None:
    _, arena, bots, _ = game
    await eventually(lambda: all(len(_positions(b)) == 2 for b in bots))
    before = [_positions(b) for b in bots]
    env_before = [b.environment_view().time_s for b in bots]
    for i, bot in enumerate(bots):
        assert bot.say(f"hello from bot {i}")
    await asyncio.sleep(3.0)
    for bot, seen in zip(bots, before, strict=True):
        now = _positions(bot)
        assert set(now) == set(seen)
        for name, (x, y) in now.items():  # every other player moved, as this client saw it
            assert math.hypot(x - seen[name][0], y - seen[name][1]) > 3.0, (bot.identity, name)
    # chat reaches everyone, sender included, as the server's sanitised lines
    for bot in bots:
        texts = {line.text for line in bot.chat.lines}
        assert {f"hello from bot {i}" for i in range(3)} <= texts
    # the environment topic arrives, at a lower rate than positions
    for bot, t0 in zip(bots, env_before, strict=True):
        assert bot.environment_view().time_s > t0 + 2.0
        assert 0 < bot.environment.snapshots_received < bot.positions.snapshots_received / 4
    # pickups spawn and despawn on every client, and every client ends with the server's set
    await eventually(lambda: all(b.pickups_despawned for b in bots), timeout=15.0)
    despawned = set.intersection(*(b.pickups_despawned for b in bots))
    assert despawned
    await eventually(lambda: all(set(b.pickups) == set(arena.sim.pickups) for b in bots))
    # prediction matched the server: each bot's own player is where the server has it
    for bot in bots:
        me = bot.me
        assert me is not None
        assert bot.corrections <= 2
    # the server kept ticking (whether it held 30 Hz on a busy machine is netcode-load's job)
    assert arena.status()["ticks"] > 60


async def test_chat_and_pickups_stay_consistent_under_simulated_loss(game: Game) -> None:
    _, arena, bots, _ = game
    for bot in bots:
        bot.set_impairment(latency_ms=80, loss=0.15)
    await asyncio.sleep(0.5)
    for i, bot in enumerate(bots):
        assert bot.say(f"lossy hello {i}")
    await eventually(
        lambda: all(
            {f"lossy hello {i}" for i in range(3)} <= {line.text for line in b.chat.lines}
            for b in bots
        )
    )
    await eventually(lambda: all(set(b.pickups) == set(arena.sim.pickups) for b in bots))
    assert all(b.impairment is not None and b.impairment.dropped_in > 0 for b in bots)
    await eventually(lambda: all(b.net_stats().rtt_ms > 60 for b in bots))


async def test_a_refused_token_raises_a_token_error(game: Game) -> None:
    server, *_ = game
    client = ArenaClient()
    with pytest.raises(InvalidSignature):
        await client.connect(server.url, make_token(KEY, "x" * 40, "eve", ROOM_NAME))


def _colour_near(
    surface: pygame.Surface, centre: tuple[int, int], colour: tuple[int, int, int], tol: int
) -> bool:
    cx, cy = centre
    for x in range(max(0, cx - 10), min(surface.get_width(), cx + 11)):
        for y in range(max(0, cy - 10), min(surface.get_height(), cy + 11)):
            r, g, b, _ = surface.get_at((x, y))
            if max(abs(r - colour[0]), abs(g - colour[1]), abs(b - colour[2])) <= tol:
                return True
    return False


async def test_screenshot_of_a_networked_client_shows_the_players(
    game: Game, tmp_path: Path
) -> None:
    server, *_ = game
    pygame.display.init()
    pygame.font.init()
    try:
        viewer = ArenaClient()
        await viewer.connect(server.url, make_token(KEY, SECRET, "viewer", ROOM_NAME, name="you"))
        loop = asyncio.get_running_loop()
        last = loop.time()
        for _ in range(60):  # two seconds of frames, standing still
            await asyncio.sleep(1 / 30)
            now = loop.time()
            viewer.advance(now - last, lambda: (0.0, 0.0))
            viewer.record_stats(now)
            last = now
        await eventually(lambda: viewer.me is not None and len(_positions(viewer)) == 3)
        scene = viewer.scene(show_net_graph=True)
        surface = pygame.Surface(DEFAULT_SIZE)
        renderer = Renderer()
        renderer.draw(surface, scene)
        path = tmp_path / "net.png"
        pygame.image.save(surface, str(path))
        image = pygame.image.load(str(path))
        colours = {image.get_at((x, y))[:3] for x in range(0, 960, 3) for y in range(0, 640, 3)}
        assert len(colours) > 50  # not blank, not a single colour
        assert scene.net_stats.mode == "connected" and scene.net_stats.rtt_ms > 0
        drawn = 0
        for player in scene.players:
            px, py = renderer.project(scene, player.x, player.y)
            if 20 <= px < 940 and 20 <= py < 620:
                assert _colour_near(image, (px, py), player.colour, tol=40), player.name
                drawn += 1
        assert drawn >= 1 and renderer.project(scene, viewer.me.x, viewer.me.y) == (480, 320)
        await viewer.close()
    finally:
        pygame.quit()


def test_netcode_demo_headless_prints_bots_moving_and_chatting() -> None:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    result = subprocess.run(
        [*DEMO, "--headless", "--bots", "3", "--duration", "8"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[chat] " in out
    moving = out.split("players seen moving: ")[1].splitlines()[0]
    metres = [float(part.split()[-2]) for part in moving.split(", ")]
    assert len(metres) == 3 and all(m > 10 for m in metres), moving


def test_netcode_demo_explains_an_unreachable_server() -> None:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    result = subprocess.run(
        [*DEMO, "--headless", "--connect", "http://127.0.0.1:9", "--token", "x.y.z"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "cannot connect" in result.stderr and "Traceback" not in result.stderr
