"""Drawing the demo under SDL's dummy driver: frames are non-trivial and players are visible."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import attrs
import pygame
import pytest

from demo_game.netstats import NetHistory, NetStats
from demo_game.offline import OfflineGame
from demo_game.render import DEFAULT_SIZE, Renderer
from demo_game.scene import Scene, interpolate_snapshots
from demo_game.sim import TICK_S, PlayerInput, Weather, World

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _pygame() -> object:
    pygame.display.init()
    pygame.font.init()
    yield None
    pygame.quit()


def _busy_scene(*, light: float | None = None, weather: Weather | None = None) -> Scene:
    """Four players a few metres apart around the local one, some chat, the net graph on."""
    world = World(5)
    ids = [world.add_player(name)[0].id for name in ("you", "Ada", "Bix", "Cleo")]
    for _ in range(30):
        world.step({}, TICK_S)
    me = world.players[ids[0]]
    for k, pid in enumerate(ids[1:]):
        angle = k * 2.1
        world.players[pid] = attrs.evolve(
            world.players[pid], x=me.x + 6 * math.cos(angle), y=me.y + 5 * math.sin(angle)
        )
    world.step({pid: PlayerInput(1, 1.0, 0.5) for pid in ids}, TICK_S)
    world.say(ids[1], "hi everyone!")
    history = NetHistory()
    for i in range(120):
        history.append(NetStats(rtt_ms=45 + 8 * math.sin(i / 9), kbps_in=30 + 6 * math.sin(i / 7)))
    stats = NetStats(
        mode="connected",
        rtt_ms=48,
        loss=0.01,
        kbps_in=34.0,
        kbps_out=6.0,
        snapshot_bytes=812,
        datagrams_per_snapshot=1.0,
        interp_buffer_ms=100,
    )
    scene = Scene.from_snapshot(
        world.snapshot(),
        local_player_id=ids[0],
        chat_lines=world.chat.lines,
        show_net_graph=True,
        net_stats=stats,
        net_history=history,
        clock_s=1.0,
    )
    env = scene.environment
    scene.environment = attrs.evolve(
        env,
        light=env.light if light is None else light,
        weather=env.weather if weather is None else weather,
        # Keep the storm away from the players so their colours are not tinted.
        hazard_x=me.x + 60.0,
    )
    return scene


def _draw(scene: Scene) -> pygame.Surface:
    surface = pygame.Surface(DEFAULT_SIZE)
    Renderer().draw(surface, scene)
    return surface


def _colour_near(
    surface: pygame.Surface,
    centre: tuple[int, int],
    colour: tuple[int, int, int],
    radius: int = 10,
    tolerance: int = 6,
) -> bool:
    cx, cy = centre
    for x in range(cx - radius, cx + radius + 1):
        for y in range(cy - radius, cy + radius + 1):
            if 0 <= x < surface.get_width() and 0 <= y < surface.get_height():
                r, g, b, _ = surface.get_at((x, y))
                if max(abs(r - colour[0]), abs(g - colour[1]), abs(b - colour[2])) <= tolerance:
                    return True
    return False


def test_frame_with_net_graph_draws_every_player_where_it_stands(tmp_path: Path) -> None:
    scene = _busy_scene(light=1.0, weather=Weather.CLEAR)
    path = tmp_path / "frame.png"
    pygame.image.save(_draw(scene), str(path))
    image = pygame.image.load(str(path))
    colours = {image.get_at((x, y))[:3] for x in range(0, 960, 3) for y in range(0, 640, 3)}
    assert len(colours) > 50  # not blank, not a single colour
    renderer = Renderer()
    for player in scene.players:
        centre = renderer.project(scene, player.x, player.y)
        assert _colour_near(image, centre, player.colour), player.name
    assert renderer.project(scene, scene.local_player.x, scene.local_player.y) == (480, 320)


def test_net_graph_toggle_changes_the_top_right_corner() -> None:
    scene = _busy_scene(light=1.0, weather=Weather.CLEAR)
    on = _draw(scene)
    scene.show_net_graph = False
    off = _draw(scene)
    corner = pygame.Rect(700, 20, 240, 240)
    differing = sum(
        on.get_at((x, y)) != off.get_at((x, y))
        for x in range(corner.left, corner.right, 4)
        for y in range(corner.top, corner.bottom, 4)
    )
    assert differing > 500


@pytest.mark.parametrize(
    ("light", "weather"), [(0.15, Weather.CLEAR), (1.0, Weather.RAIN), (1.0, Weather.FOG)]
)
def test_night_and_weather_change_the_picture_but_players_stay_visible(
    light: float, weather: Weather
) -> None:
    plain = _draw(_busy_scene(light=1.0, weather=Weather.CLEAR))
    scene = _busy_scene(light=light, weather=weather)
    effect = _draw(scene)
    assert pygame.image.tobytes(plain, "RGB") != pygame.image.tobytes(effect, "RGB")
    me = scene.local_player
    assert me is not None
    assert _colour_near(effect, (480, 320), me.colour, tolerance=60)


def test_chat_input_line_is_drawn_when_typing() -> None:
    scene = _busy_scene(light=1.0, weather=Weather.CLEAR)
    idle = _draw(scene)
    scene.chat_input = "hello there"
    typing = _draw(scene)
    box = pygame.Rect(10, 500, 330, 140)
    assert any(
        idle.get_at((x, y)) != typing.get_at((x, y))
        for x in range(box.left, box.right, 2)
        for y in range(box.top, box.bottom, 2)
    )


def test_interpolation_lies_between_ticks() -> None:
    world = World(1, npc_count=0, pickup_target=0)
    p, _ = world.add_player("ann")
    old = world.snapshot()
    world.step({p.id: PlayerInput(1, 1.0, 0.0)}, TICK_S)
    new = world.snapshot()
    half = interpolate_snapshots(old, new, 0.5)
    assert half.players[0].x == pytest.approx((old.players[0].x + new.players[0].x) / 2)


def test_offline_game_runs_and_renders_frames() -> None:
    game = OfflineGame(seed=3, bots=3, autopilot=True, show_net_graph=True)
    surface = pygame.Surface(DEFAULT_SIZE)
    renderer = Renderer()
    start = {p.id: (p.x, p.y) for p in game.world.players.values()}
    for _ in range(180):  # three seconds at 60 fps
        game.frame([], 1 / 60)
        renderer.draw(surface, game.scene())
    moved = [pid for pid, p in game.world.players.items() if (p.x, p.y) != start[pid]]
    assert len(moved) == 4
    assert game.world.tick == pytest.approx(90, abs=1)


def test_offline_command_headless_exits_zero_and_saves_a_screenshot(tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo_game.offline",
            "--headless",
            "--duration",
            "2.5",
            "--bots",
            "2",
            "--screenshot",
            str(shot),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "t=  2.0s" in out.stdout and "final:" in out.stdout
    assert pygame.image.load(str(shot)).get_size() == DEFAULT_SIZE


@pytest.mark.skipif(
    bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
    reason="a display is available here",
)
def test_offline_command_without_a_display_suggests_headless() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SDL_VIDEODRIVER", "DISPLAY")}
    env["SDL_AUDIODRIVER"] = "dummy"
    out = subprocess.run(
        [sys.executable, "-m", "demo_game.offline", "--duration", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--headless" in out.stderr and "Traceback" not in out.stderr
