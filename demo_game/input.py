"""Keyboard handling: pygame events in, one plain ``ClientCommands`` record out per frame.

Movement comes from the keys held (tracked from KEYDOWN/KEYUP, so it works the same under
the dummy video driver and in tests, and a lost window focus releases them). Enter starts
typing a chat line and Enter again sends it; while typing, keys type text (TEXTINPUT) and the
player stands still. Esc cancels typing, or quits when not typing. F3 toggles the net graph;
F5/F6 lower/raise the simulated latency and F7/F8 the simulated loss, which the network layer
applies (the offline mode only shows them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs
import pygame

from demo_game.sim import MAX_CHAT_CHARS, PlayerInput

__all__ = [
    "LATENCY_STEP_MS",
    "LOSS_STEP",
    "MAX_SIM_LATENCY_MS",
    "MAX_SIM_LOSS",
    "ClientCommands",
    "InputHandler",
]

LATENCY_STEP_MS = 25
MAX_SIM_LATENCY_MS = 500
LOSS_STEP = 0.025
MAX_SIM_LOSS = 0.5

_LEFT = {pygame.K_a, pygame.K_LEFT}
_RIGHT = {pygame.K_d, pygame.K_RIGHT}
_UP = {pygame.K_w, pygame.K_UP}
_DOWN = {pygame.K_s, pygame.K_DOWN}
_ENTER = {pygame.K_RETURN, pygame.K_KP_ENTER}


@attrs.frozen
class ClientCommands:
    """What the player asked for this frame."""

    move_x: float = 0.0  #: -1..1, a unit vector with move_y (diagonals are normalised)
    move_y: float = 0.0  #: -1..1
    chat_to_send: str | None = None  #: a line finished with Enter this frame
    chat_input: str | None = None  #: the line being typed, None when not typing
    show_net_graph: bool = False  #: net graph visible (F3 toggles)
    sim_latency_ms: int = 0  #: simulated extra latency to apply (F5/F6)
    sim_loss: float = 0.0  #: simulated extra loss to apply, 0..MAX_SIM_LOSS (F7/F8)
    quit: bool = False  #: window closed, or Esc while not typing

    def to_input(self, tick: int) -> PlayerInput:
        """The movement part as the simulation's input for ``tick``."""
        return PlayerInput(tick=tick, move_x=self.move_x, move_y=self.move_y)


class InputHandler:
    """Turns each frame's pygame events into ``ClientCommands``; keeps the toggles' state."""

    def __init__(self, *, show_net_graph: bool = False) -> None:
        self.held: set[int] = set()
        self.typing: str | None = None
        self.show_net_graph = show_net_graph
        self.sim_latency_ms = 0
        self.sim_loss = 0.0

    def handle(self, events: Iterable[pygame.event.Event]) -> ClientCommands:
        """Consume this frame's events; returns the commands for this frame."""
        chat_to_send: str | None = None
        quit_requested = False
        for event in events:
            if event.type == pygame.QUIT:
                quit_requested = True
            elif event.type in (pygame.WINDOWFOCUSLOST, pygame.WINDOWHIDDEN):
                self.held.clear()
            elif event.type == pygame.KEYUP:
                self.held.discard(event.key)
            elif event.type == pygame.TEXTINPUT and self.typing is not None:
                self.typing = (self.typing + event.text)[:MAX_CHAT_CHARS]
            elif event.type == pygame.KEYDOWN:
                self.held.add(event.key)
                sent, quit_now = self._key_down(event.key)
                chat_to_send = sent if sent is not None else chat_to_send
                quit_requested |= quit_now
        move_x, move_y = self._movement()
        return ClientCommands(
            move_x=move_x,
            move_y=move_y,
            chat_to_send=chat_to_send,
            chat_input=self.typing,
            show_net_graph=self.show_net_graph,
            sim_latency_ms=self.sim_latency_ms,
            sim_loss=self.sim_loss,
            quit=quit_requested,
        )

    def _key_down(self, key: int) -> tuple[str | None, bool]:
        """Handle one key press; returns (chat line sent, quit requested)."""
        if self.typing is not None:
            if key in _ENTER:
                line, self.typing = self.typing.strip(), None
                return (line or None), False
            if key == pygame.K_ESCAPE:
                self.typing = None
            elif key == pygame.K_BACKSPACE:
                self.typing = self.typing[:-1]
            return None, False
        if key in _ENTER:
            self.typing = ""
        elif key == pygame.K_ESCAPE:
            return None, True
        elif key == pygame.K_F3:
            self.show_net_graph = not self.show_net_graph
        elif key in (pygame.K_F5, pygame.K_F6):
            step = LATENCY_STEP_MS if key == pygame.K_F6 else -LATENCY_STEP_MS
            self.sim_latency_ms = min(MAX_SIM_LATENCY_MS, max(0, self.sim_latency_ms + step))
        elif key in (pygame.K_F7, pygame.K_F8):
            change = LOSS_STEP if key == pygame.K_F8 else -LOSS_STEP
            self.sim_loss = round(min(MAX_SIM_LOSS, max(0.0, self.sim_loss + change)), 4)
        return None, False

    def _movement(self) -> tuple[float, float]:
        if self.typing is not None:
            return 0.0, 0.0
        held = self.held
        mx = float(bool(held & _RIGHT)) - float(bool(held & _LEFT))
        my = float(bool(held & _DOWN)) - float(bool(held & _UP))
        if mx and my:
            mx, my = mx / math.sqrt(2.0), my / math.sqrt(2.0)
        return mx, my
