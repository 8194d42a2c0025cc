"""The demo's HUD leaves the players' name labels readable and names the local player once."""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import attrs
import pygame
import pytest
from test_demo_render import _busy_scene

from demo_game.render import DEFAULT_SIZE, Renderer
from demo_game.scene import Scene
from demo_game.sim import Weather

NET_GRAPH = pygame.Rect(DEFAULT_SIZE[0] - 292, 10, 282, 268)


@pytest.fixture(scope="module", autouse=True)
def _pygame() -> object:
    pygame.display.init()
    pygame.font.init()
    yield None
    pygame.quit()


def _with_ada_at(scene: Scene, renderer: Renderer, px: int, py: int, name: str) -> Scene:
    me = scene.local_player
    assert me is not None
    x, y = me.x + (px - 480) / renderer.ppm, me.y + (py - 320) / renderer.ppm
    players = [
        attrs.evolve(p, x=x, y=y, name=name) if p.name == "Ada" else p for p in scene.players
    ]
    return attrs.evolve(scene, players=players)


def _draw(scene: Scene) -> pygame.Surface:
    surface = pygame.Surface(DEFAULT_SIZE)
    Renderer().draw(surface, scene)
    return surface


def _differs(a: pygame.Surface, b: pygame.Surface, rect: pygame.Rect) -> int:
    return sum(
        a.get_at((x, y)) != b.get_at((x, y))
        for x in range(rect.left, rect.right)
        for y in range(rect.top, rect.bottom)
    )


def test_a_name_under_the_net_graph_moves_below_its_player() -> None:
    scene, renderer = _busy_scene(light=1.0, weather=Weather.CLEAR), Renderer()
    # Ada stands just below the net graph: a label above her would fall inside the panel.
    px, py = 760, NET_GRAPH.bottom + 14
    named = _draw(_with_ada_at(scene, renderer, px, py, "Ada"))
    unnamed = _draw(_with_ada_at(scene, renderer, px, py, ""))
    assert _differs(named, unnamed, NET_GRAPH) == 0  # the panel is untouched by her label
    below = pygame.Rect(px - 30, py + 10, 60, 24)
    assert _differs(named, unnamed, below) > 20  # the label is drawn under her instead


def test_a_name_in_the_open_stays_above_its_player() -> None:
    scene, renderer = _busy_scene(light=1.0, weather=Weather.CLEAR), Renderer()
    px, py = 300, 420
    named = _draw(_with_ada_at(scene, renderer, px, py, "Ada"))
    unnamed = _draw(_with_ada_at(scene, renderer, px, py, ""))
    assert _differs(named, unnamed, pygame.Rect(px - 30, py - 40, 60, 24)) > 20


@pytest.mark.parametrize(("name", "marked"), [("you", False), ("Ann", True)])
def test_the_scoreboard_marks_the_local_player_once(name: str, marked: bool) -> None:
    scene = _busy_scene(light=1.0, weather=Weather.CLEAR)
    players = [attrs.evolve(p, name=name) if p.name == "you" else p for p in scene.players]
    renderer = Renderer()
    renderer.draw(pygame.Surface(DEFAULT_SIZE), attrs.evolve(scene, players=players))
    texts = {key[0] for key in renderer._text_cache}
    assert "you  (you)" not in texts
    assert (f"{name}  (you)" in texts) == marked
