"""Keyboard handling: events in, ClientCommands out."""

from __future__ import annotations

import math
import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import pygame

from demo_game.input import MAX_SIM_LATENCY_MS, InputHandler


def down(key: int) -> pygame.event.Event:
    return pygame.event.Event(pygame.KEYDOWN, key=key)


def up(key: int) -> pygame.event.Event:
    return pygame.event.Event(pygame.KEYUP, key=key)


def text(s: str) -> pygame.event.Event:
    return pygame.event.Event(pygame.TEXTINPUT, text=s)


def test_held_keys_move_and_diagonals_are_unit_length() -> None:
    h = InputHandler()
    c = h.handle([down(pygame.K_w)])
    assert (c.move_x, c.move_y) == (0.0, -1.0)
    c = h.handle([down(pygame.K_RIGHT)])  # still holding W
    assert abs(math.hypot(c.move_x, c.move_y) - 1.0) < 1e-12
    assert c.move_x > 0 > c.move_y
    c = h.handle([up(pygame.K_w), up(pygame.K_RIGHT)])
    assert (c.move_x, c.move_y) == (0.0, 0.0)
    assert c.to_input(7).tick == 7


def test_focus_loss_releases_keys() -> None:
    h = InputHandler()
    h.handle([down(pygame.K_a)])
    c = h.handle([pygame.event.Event(pygame.WINDOWFOCUSLOST)])
    assert (c.move_x, c.move_y) == (0.0, 0.0)


def test_enter_types_chat_and_enter_sends_it() -> None:
    h = InputHandler()
    c = h.handle([down(pygame.K_RETURN)])
    assert c.chat_input == "" and c.chat_to_send is None
    c = h.handle([down(pygame.K_w), text("h"), text("i!"), down(pygame.K_x), text("x")])
    assert c.chat_input == "hi!x"
    assert (c.move_x, c.move_y) == (0.0, 0.0)  # typing does not walk
    c = h.handle([down(pygame.K_BACKSPACE)])
    assert c.chat_input == "hi!"
    c = h.handle([down(pygame.K_RETURN)])
    assert c.chat_to_send == "hi!" and c.chat_input is None
    assert h.handle([]).chat_to_send is None  # sent once


def test_escape_cancels_typing_then_quits() -> None:
    h = InputHandler()
    h.handle([down(pygame.K_RETURN), text("oops")])
    c = h.handle([down(pygame.K_ESCAPE)])
    assert c.chat_input is None and c.chat_to_send is None and not c.quit
    assert h.handle([down(pygame.K_ESCAPE)]).quit
    assert InputHandler().handle([pygame.event.Event(pygame.QUIT)]).quit


def test_empty_chat_line_sends_nothing() -> None:
    h = InputHandler()
    h.handle([down(pygame.K_RETURN), text("   ")])
    assert h.handle([down(pygame.K_RETURN)]).chat_to_send is None


def test_function_keys_toggle_graph_and_adjust_simulated_impairment() -> None:
    h = InputHandler()
    assert h.handle([down(pygame.K_F3)]).show_net_graph
    c = h.handle([down(pygame.K_F6), down(pygame.K_F6), down(pygame.K_F8)])
    assert c.sim_latency_ms == 50 and c.sim_loss == 0.025
    c = h.handle([down(pygame.K_F5), down(pygame.K_F7), down(pygame.K_F7)])
    assert c.sim_latency_ms == 25 and c.sim_loss == 0.0
    for _ in range(40):
        c = h.handle([down(pygame.K_F6)])
    assert c.sim_latency_ms == MAX_SIM_LATENCY_MS
    assert not h.handle([down(pygame.K_F3)]).show_net_graph
    # Function keys while typing are not commands.
    h.handle([down(pygame.K_RETURN)])
    assert not h.handle([down(pygame.K_F3)]).show_net_graph
