"""Drawing one client's view of the arena with pygame.

``Renderer.draw(surface, scene)`` paints a whole frame from a :class:`~demo_game.scene.Scene`
(world, then light and weather, then HUD, chat and the net graph); the caller flips the
display once per frame, so nothing flickers. The camera is centred on the local player, whose
screen position therefore never moves: the fog and the local light are prebuilt once.

Only text surfaces are cached (names change rarely); everything else is drawn each frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pygame

from demo_game.netstats import NetHistory, NetStats
from demo_game.scene import Scene
from demo_game.sim import (
    ARENA_SIZE_M,
    MAX_HEALTH,
    NPC_RADIUS_M,
    PICKUP_RADIUS_M,
    PLAYER_RADIUS_M,
    NpcState,
    PickupKind,
    PickupState,
    PlayerState,
    Weather,
)

__all__ = ["DEFAULT_SIZE", "HELP_TEXT", "Renderer"]

DEFAULT_SIZE = (960, 640)
PIXELS_PER_METRE = 16.0
CHAT_LINES_SHOWN = 6
#: Below this light level the night overlay starts; at full night it reaches the max alpha.
NIGHT_FROM_LIGHT = 0.62
NIGHT_MAX_ALPHA = 200
HELP_TEXT = "WASD move · Enter chat · F3 net graph · F5-F8 lag/loss · Esc quit"

Rgb = tuple[int, int, int]

VOID: Rgb = (18, 22, 30)
GROUND: Rgb = (52, 104, 78)
GRID_MINOR: Rgb = (60, 116, 88)
GRID_MAJOR: Rgb = (74, 134, 102)
BORDER: Rgb = (230, 220, 170)
TEXT: Rgb = (240, 242, 245)
TEXT_DIM: Rgb = (170, 178, 190)
SHADOW: Rgb = (0, 0, 0)
PANEL = (12, 16, 24, 170)
NIGHT: Rgb = (10, 14, 48)
STORM = (150, 70, 230)
FOG: Rgb = (196, 204, 214)
COIN: Rgb = (255, 204, 40)
GEM: Rgb = (80, 230, 255)
HEART: Rgb = (240, 60, 80)
NPC_BODY: Rgb = (214, 190, 150)
GOOD: Rgb = (110, 230, 120)
WARN: Rgb = (255, 200, 80)
BAD: Rgb = (255, 90, 90)
KBPS_IN: Rgb = (110, 230, 120)
KBPS_OUT: Rgb = (255, 170, 60)
RTT: Rgb = (90, 200, 255)


def _darker(colour: Rgb, factor: float = 0.55) -> Rgb:
    r, g, b = colour
    return (int(r * factor), int(g * factor), int(b * factor))


class Renderer:
    """Draws scenes onto a surface of a fixed size (the window's, by default 960 x 640)."""

    def __init__(
        self, size: tuple[int, int] = DEFAULT_SIZE, pixels_per_metre: float = PIXELS_PER_METRE
    ) -> None:
        if not pygame.font.get_init():
            pygame.font.init()
        self.size = size
        self.ppm = pixels_per_metre
        self.fonts = {
            "small": pygame.font.Font(None, 18),
            "body": pygame.font.Font(None, 22),
            "name": pygame.font.Font(None, 20),
            "big": pygame.font.Font(None, 30),
        }
        self._text_cache: dict[tuple[str, str, Rgb], pygame.Surface] = {}
        self._overlay = pygame.Surface(size, pygame.SRCALPHA)
        #: this frame's HUD panels, so that name labels keep clear of them
        self._hud: list[pygame.Rect] = []
        self._fog = self._build_fog(size)

    # -- coordinates ----------------------------------------------------------------------

    def camera_centre(self, scene: Scene) -> tuple[float, float]:
        """World point (metres) at the centre of the screen: the local player, if any."""
        me = scene.local_player
        if me is None:
            return ARENA_SIZE_M / 2, ARENA_SIZE_M / 2
        return me.x, me.y

    def project(self, scene: Scene, x: float, y: float) -> tuple[int, int]:
        """Screen pixel of the world point (x, y) metres in this scene's camera."""
        cx, cy = self.camera_centre(scene)
        w, h = self.size
        return round(w / 2 + (x - cx) * self.ppm), round(h / 2 + (y - cy) * self.ppm)

    def _visible(self, px: int, py: int, margin: int = 60) -> bool:
        w, h = self.size
        return -margin <= px <= w + margin and -margin <= py <= h + margin

    # -- the frame ------------------------------------------------------------------------

    def draw(self, surface: pygame.Surface, scene: Scene) -> None:
        """Paint a whole frame of ``scene`` onto ``surface``."""
        surface.fill(VOID)
        self._hud = []
        self._draw_ground(surface, scene)
        self._draw_storm(surface, scene)
        for pickup in scene.pickups:
            self._draw_pickup(surface, scene, pickup)
        for npc in scene.npcs:
            self._draw_npc(surface, scene, npc)
        for player in sorted(scene.players, key=lambda p: p.id == scene.local_player_id):
            self._draw_player(surface, scene, player)
        self._draw_night(surface, scene)
        self._draw_weather(surface, scene)
        self._draw_scoreboard(surface, scene)
        self._draw_status(surface, scene)
        self._draw_chat(surface, scene)
        self._draw_minimap(surface, scene)
        if scene.show_net_graph:
            self._draw_net_graph(surface, scene.net_stats, scene.net_history)
        # Names last, placed clear of the panels just drawn (see _draw_name).
        for player in scene.players:
            self._draw_name(surface, scene, player)

    # -- world ----------------------------------------------------------------------------

    def _draw_ground(self, surface: pygame.Surface, scene: Scene) -> None:
        x0, y0 = self.project(scene, 0.0, 0.0)
        size_px = round(ARENA_SIZE_M * self.ppm)
        arena = pygame.Rect(x0, y0, size_px, size_px)
        surface.fill(GROUND, arena.clip(surface.get_rect()))
        w, h = self.size
        cx, cy = self.camera_centre(scene)
        half_w, half_h = w / 2 / self.ppm, h / 2 / self.ppm
        for axis in (0, 1):
            lo = max(0, math.floor((cx if axis == 0 else cy) - (half_w if axis == 0 else half_h)))
            hi = min(
                int(ARENA_SIZE_M),
                math.ceil((cx if axis == 0 else cy) + (half_w if axis == 0 else half_h)),
            )
            for m in range(lo - lo % 5, hi + 1, 5):
                if not 0 <= m <= ARENA_SIZE_M:
                    continue
                colour = GRID_MAJOR if m % 25 == 0 else GRID_MINOR
                if axis == 0:
                    px = self.project(scene, m, 0.0)[0]
                    pygame.draw.line(surface, colour, (px, max(0, y0)), (px, min(h, y0 + size_px)))
                else:
                    py = self.project(scene, 0.0, m)[1]
                    pygame.draw.line(surface, colour, (max(0, x0), py), (min(w, x0 + size_px), py))
        pygame.draw.rect(surface, BORDER, arena.inflate(8, 8), width=4, border_radius=4)

    def _draw_storm(self, surface: pygame.Surface, scene: Scene) -> None:
        env = scene.environment
        px, py = self.project(scene, env.hazard_x, env.hazard_y)
        r = round(env.hazard_radius * self.ppm)
        w, h = self.size
        if px + r < 0 or px - r > w or py + r < 0 or py - r > h:
            return
        overlay = self._overlay
        overlay.fill((0, 0, 0, 0))
        # A soft rim: rings of rising opacity towards the edge, then a bright edge.
        # Outermost first: pygame.draw replaces pixels, so each smaller ring overwrites the middle.
        for i in range(6):
            pygame.draw.circle(overlay, (*STORM, 96 - 10 * i), (px, py), max(1, r - 5 * i))
        pygame.draw.circle(overlay, (*STORM, 34), (px, py), max(1, r - 30))
        surface.blit(overlay, (0, 0))
        # Dashes on the edge that crawl round, so the storm reads as moving and dangerous.
        dashes = max(12, r // 14)
        turn = scene.clock_s * 0.15
        for i in range(dashes):
            a0 = 2 * math.pi * i / dashes + turn
            rect = pygame.Rect(px - r, py - r, 2 * r, 2 * r)
            pygame.draw.arc(surface, (214, 160, 255), rect, a0, a0 + math.pi / dashes, 3)

    def _draw_pickup(self, surface: pygame.Surface, scene: Scene, pickup: PickupState) -> None:
        px, py = self.project(scene, pickup.x, pickup.y)
        if not self._visible(px, py):
            return
        bob = math.sin(scene.clock_s * 3.0 + pickup.id * 1.7) * 3.0
        r = max(4, round(PICKUP_RADIUS_M * self.ppm))
        pygame.draw.ellipse(surface, _darker(GROUND, 0.6), (px - r, py + r - 2, 2 * r, r))
        cy = round(py - 4 + bob)
        if pickup.kind == PickupKind.COIN:
            pygame.draw.circle(surface, _darker(COIN, 0.7), (px, cy), r + 1)
            pygame.draw.circle(surface, COIN, (px, cy), r - 1)
            pygame.draw.circle(surface, (255, 240, 160), (px - 2, cy - 2), max(1, r // 3))
        elif pickup.kind == PickupKind.GEM:
            s = r + 2
            points = [(px, cy - s), (px + s, cy), (px, cy + s), (px - s, cy)]
            pygame.draw.polygon(surface, GEM, points)
            pygame.draw.polygon(surface, (220, 250, 255), points, 2)
        else:
            lobe = max(2, r // 2 + 1)
            pygame.draw.circle(surface, HEART, (px - lobe + 1, cy - 2), lobe + 1)
            pygame.draw.circle(surface, HEART, (px + lobe - 1, cy - 2), lobe + 1)
            pygame.draw.polygon(
                surface, HEART, [(px - 2 * lobe, cy - 1), (px + 2 * lobe, cy - 1), (px, cy + r + 3)]
            )

    def _draw_npc(self, surface: pygame.Surface, scene: Scene, npc: NpcState) -> None:
        px, py = self.project(scene, npc.x, npc.y)
        if not self._visible(px, py):
            return
        r = round(NPC_RADIUS_M * self.ppm)
        hop = abs(math.sin(scene.clock_s * 9.0 + npc.id)) * 3.0 if npc.moving else 0.0
        pygame.draw.ellipse(surface, _darker(GROUND, 0.6), (px - r, py + r // 2, 2 * r, r))
        cy = round(py - hop)
        pygame.draw.circle(surface, _darker(NPC_BODY, 0.7), (px, cy), r + 1)
        pygame.draw.circle(surface, NPC_BODY, (px, cy), r - 1)
        # Two eyes looking where it goes.
        dx, dy = math.cos(npc.heading), math.sin(npc.heading)
        for side in (-1, 1):
            ex = px + dx * r * 0.45 - dy * side * r * 0.35
            ey = cy + dy * r * 0.45 + dx * side * r * 0.35
            pygame.draw.circle(surface, (30, 30, 30), (round(ex), round(ey)), 2)

    def _draw_player(self, surface: pygame.Surface, scene: Scene, player: PlayerState) -> None:
        px, py = self.project(scene, player.x, player.y)
        if not self._visible(px, py):
            return
        r = round(PLAYER_RADIUS_M * self.ppm)
        pygame.draw.ellipse(surface, _darker(GROUND, 0.55), (px - r, py + r // 2, 2 * r, r))
        if player.id == scene.local_player_id:
            pulse = 3 + round(2 * (1 + math.sin(scene.clock_s * 4.0)))
            pygame.draw.circle(surface, (255, 255, 255), (px, py), r + pulse, 2)
        pygame.draw.circle(surface, _darker(player.colour), (px, py), r + 2)
        pygame.draw.circle(surface, player.colour, (px, py), r)
        dx, dy = math.cos(player.heading), math.sin(player.heading)
        tip = (round(px + dx * (r + 7)), round(py + dy * (r + 7)))
        pygame.draw.line(surface, (255, 255, 255), (px, py), tip, 3)
        pygame.draw.circle(surface, (255, 255, 255), tip, 2)

    def _draw_name(self, surface: pygame.Surface, scene: Scene, player: PlayerState) -> None:
        px, py = self.project(scene, player.x, player.y)
        if not self._visible(px, py):
            return
        r = round(PLAYER_RADIUS_M * self.ppm)
        colour = (255, 255, 255) if player.id == scene.local_player_id else TEXT
        label = self._text(player.name, "name", colour)
        shadow = self._text(player.name, "name", SHADOW)
        # Above the player; below it if a panel covers that spot; not at all if both are
        # covered (then the player is under the panel too).
        left = px - label.get_width() // 2
        for top in (py - r - 12 - label.get_height(), py + r + 8):
            spot = pygame.Rect(left, top, label.get_width() + 1, label.get_height() + 1)
            if spot.collidelist(self._hud) == -1:
                surface.blit(shadow, (left + 1, top + 1))
                surface.blit(label, (left, top))
                break
        if player.health < MAX_HEALTH:
            bar = pygame.Rect(px - 16, py - r - 10, 32, 4)
            if bar.collidelist(self._hud) != -1:
                return
            pygame.draw.rect(surface, (40, 0, 0), bar)
            fill = bar.copy()
            fill.width = max(1, round(32 * player.health / MAX_HEALTH))
            pygame.draw.rect(surface, _health_colour(player.health), fill)

    # -- light and weather ----------------------------------------------------------------

    def _draw_night(self, surface: pygame.Surface, scene: Scene) -> None:
        darkness = (NIGHT_FROM_LIGHT - scene.environment.light) / NIGHT_FROM_LIGHT
        alpha = round(min(1.0, max(0.0, darkness)) * NIGHT_MAX_ALPHA)
        if alpha < 4:
            return
        overlay = self._overlay
        overlay.fill((*NIGHT, alpha))
        # Each player carries a lantern: rings of falling darkness cut into the night.
        # pygame.draw writes RGBA as is (no blending), so the last ring drawn wins: draw ring
        # by ring across all players, outermost first, so overlapping lights merge.
        centres = [self.project(scene, p.x, p.y) for p in scene.players]
        centres = [c for c in centres if self._visible(*c, margin=200)]
        steps = 10
        for i in range(steps):
            radius = round(self.ppm * (7.5 - i * 0.6))
            colour = (*NIGHT, round(alpha * (steps - 1 - i) / steps))
            for centre in centres:
                pygame.draw.circle(overlay, colour, centre, radius)
        surface.blit(overlay, (0, 0))

    def _draw_weather(self, surface: pygame.Surface, scene: Scene) -> None:
        weather = scene.environment.weather
        if weather == Weather.FOG:
            surface.blit(self._fog, (0, 0))
        elif weather == Weather.RAIN:
            w, h = self.size
            overlay = self._overlay
            overlay.fill((30, 40, 70, 40))
            t = scene.clock_s
            for i in range(160):
                # A fixed pseudo-random layout per drop, scrolled by time: smooth, no flicker.
                speed = 500 + (i * 37) % 300
                x = (i * 7919 + round(t * speed * 0.25)) % (w + 40) - 20
                y = ((i * 104729) % (h + 40) + t * speed) % (h + 40) - 20
                pygame.draw.line(overlay, (190, 210, 255, 110), (x, y), (x - 4, y - 14), 1)
            surface.blit(overlay, (0, 0))

    def _build_fog(self, size: tuple[int, int]) -> pygame.Surface:
        w, h = size
        fog = pygame.Surface(size, pygame.SRCALPHA)
        fog.fill((*FOG, 200))
        steps = 32
        for i in range(steps):
            radius = round(self.ppm * (16.0 - i * 0.45))
            pygame.draw.circle(
                fog, (*FOG, round(200 * (steps - 1 - i) / steps)), (w // 2, h // 2), radius
            )
        return fog

    # -- HUD ------------------------------------------------------------------------------

    def _panel(self, surface: pygame.Surface, rect: pygame.Rect) -> None:
        self._hud.append(rect)
        panel = pygame.Surface(rect.size, pygame.SRCALPHA)
        pygame.draw.rect(panel, PANEL, panel.get_rect(), border_radius=8)
        surface.blit(panel, rect.topleft)

    def _draw_scoreboard(self, surface: pygame.Surface, scene: Scene) -> None:
        players = sorted(scene.players, key=lambda p: (-p.score, p.id))[:8]
        rect = pygame.Rect(10, 10, 200, 34 + 22 * len(players))
        self._panel(surface, rect)
        surface.blit(self._text("SCORES", "small", TEXT_DIM), (22, 18))
        for i, p in enumerate(players):
            y = 38 + 22 * i
            pygame.draw.circle(surface, p.colour, (28, y + 7), 6)
            me = p.id == scene.local_player_id
            colour = (255, 255, 255) if me else TEXT
            # the local player is marked, unless its name already says it ("you")
            marked = me and p.name.casefold() != "you"
            name = self._text(p.name + ("  (you)" if marked else ""), "body", colour)
            surface.blit(name, (42, y))
            score = self._text(str(p.score), "body", colour)
            surface.blit(score, (rect.right - 14 - score.get_width(), y))

    def _draw_status(self, surface: pygame.Surface, scene: Scene) -> None:
        env = scene.environment
        w, h = self.size
        hour = (6.0 + 24.0 * (env.time_s % 120.0) / 120.0) % 24.0
        sky = {Weather.CLEAR: "clear", Weather.RAIN: "rain", Weather.FOG: "fog"}[env.weather]
        text = self._text(f"{int(hour):02d}:{int(hour % 1 * 60):02d}  ·  {sky}", "body", TEXT)
        rect = pygame.Rect(0, 10, text.get_width() + 56, 30)
        rect.centerx = w // 2
        self._panel(surface, rect)
        icon = (rect.x + 18, rect.centery)
        if env.light > 0.45:
            pygame.draw.circle(surface, (255, 214, 80), icon, 8)
        else:
            pygame.draw.circle(surface, (220, 226, 255), icon, 8)
            pygame.draw.circle(surface, (12, 16, 24), (icon[0] + 4, icon[1] - 3), 7)
        surface.blit(text, (rect.x + 36, rect.centery - text.get_height() // 2))
        me = scene.local_player
        if me is not None:
            bar = pygame.Rect(0, h - 30, 220, 12)
            bar.centerx = w // 2
            self._panel(surface, bar.inflate(12, 12))
            fill = bar.copy()
            fill.width = max(0, round(bar.width * me.health / MAX_HEALTH))
            pygame.draw.rect(surface, _health_colour(me.health), fill, border_radius=3)
            pygame.draw.rect(surface, (255, 255, 255), bar, 1, border_radius=3)
            label = self._text(f"{me.health} HP", "small", TEXT)
            surface.blit(label, (bar.right + 12, bar.centery - label.get_height() // 2))
        hint = self._text(HELP_TEXT, "small", TEXT_DIM)
        hint_shadow = self._text(HELP_TEXT, "small", SHADOW)
        hx = w // 2 - hint.get_width() // 2
        surface.blit(hint_shadow, (hx + 1, rect.bottom + 7))
        surface.blit(hint, (hx, rect.bottom + 6))

    def _draw_chat(self, surface: pygame.Surface, scene: Scene) -> None:
        h = self.size[1]
        lines = list(scene.chat_lines)[-CHAT_LINES_SHOWN:]
        rows = len(lines) + (1 if scene.chat_input is not None else 0)
        if rows == 0:
            return
        width = 330
        rect = pygame.Rect(10, h - 16 - 22 * rows, width, 22 * rows + 8)
        self._panel(surface, rect)
        colours = {p.id: p.colour for p in scene.players}
        y = rect.y + 5
        for line in lines:
            name = self._text(line.name + ":", "body", colours.get(line.player_id, TEXT_DIM))
            surface.blit(name, (rect.x + 8, y))
            body = self._text(_fit(line.text, 40), "body", TEXT)
            surface.blit(body, (rect.x + 14 + name.get_width(), y))
            y += 22
        if scene.chat_input is not None:
            caret = "|" if int(scene.clock_s * 2) % 2 == 0 else " "
            typed = self._text(
                "> " + scene.chat_input[-44:] + caret, "body", (255, 240, 140), cache=False
            )
            pygame.draw.line(surface, TEXT_DIM, (rect.x + 6, y - 2), (rect.right - 6, y - 2))
            surface.blit(typed, (rect.x + 8, y))

    def _draw_minimap(self, surface: pygame.Surface, scene: Scene) -> None:
        w, h = self.size
        side = 132
        rect = pygame.Rect(w - side - 12, h - side - 12, side, side)
        self._panel(surface, rect.inflate(8, 8))
        k = side / ARENA_SIZE_M
        pygame.draw.rect(surface, _darker(GROUND, 0.8), rect)

        def mm(x: float, y: float) -> tuple[int, int]:
            return rect.x + round(x * k), rect.y + round(y * k)

        env = scene.environment
        pygame.draw.circle(
            surface, STORM, mm(env.hazard_x, env.hazard_y), max(2, round(env.hazard_radius * k)), 2
        )
        for pickup in scene.pickups:
            colour = {PickupKind.COIN: COIN, PickupKind.GEM: GEM, PickupKind.HEART: HEART}
            surface.set_at(mm(pickup.x, pickup.y), colour[pickup.kind])
        for p in scene.players:
            pygame.draw.circle(surface, p.colour, mm(p.x, p.y), 3)
        me = scene.local_player
        if me is not None:
            cam_w, cam_h = w / self.ppm * k, h / self.ppm * k
            view = pygame.Rect(0, 0, round(cam_w), round(cam_h))
            view.center = mm(me.x, me.y)
            pygame.draw.rect(surface, (255, 255, 255), view.clip(rect), 1)
        pygame.draw.rect(surface, BORDER, rect, 1)

    # -- net graph ------------------------------------------------------------------------

    def _draw_net_graph(
        self, surface: pygame.Surface, stats: NetStats, history: NetHistory
    ) -> None:
        w, _ = self.size
        offline = stats.mode == "offline"
        # Offline there is nothing to graph: a short panel with the simulated settings only.
        rect = pygame.Rect(w - 292, 10, 282, 80 if offline else 268)
        self._panel(surface, rect)
        x, y = rect.x + 12, rect.y + 10
        mode_colour = GOOD if stats.mode == "connected" else WARN
        surface.blit(self._text(f"NET  {stats.mode}", "body", mode_colour), (x, y))
        fps = self._text(f"{stats.fps:.0f} fps", "body", TEXT_DIM, cache=False)
        surface.blit(fps, (rect.right - 12 - fps.get_width(), y))
        y += 24
        rows: list[tuple[str, Rgb, str, Rgb]] = []
        if offline:
            rows.append(("local simulation: no network traffic", TEXT_DIM, "", TEXT_DIM))
        else:
            rows += [
                (
                    f"rtt {stats.rtt_ms:.0f} ms",
                    _level(stats.rtt_ms, 80, 200),
                    f"loss {stats.loss * 100:.1f} %",
                    _level(stats.loss, 0.02, 0.1),
                ),
                (
                    f"in {stats.kbps_in:.1f} kbps",
                    KBPS_IN,
                    f"out {stats.kbps_out:.1f} kbps",
                    KBPS_OUT,
                ),
                (
                    f"snapshot {stats.snapshot_bytes} B",
                    TEXT,
                    f"{stats.datagrams_per_snapshot:.1f} dgram/snap",
                    TEXT,
                ),
                (f"interp buffer {stats.interp_buffer_ms:.0f} ms", TEXT, "", TEXT),
            ]
        simulating = stats.sim_latency_ms > 0 or stats.sim_loss > 0
        rows.append(
            (
                f"sim +{stats.sim_latency_ms:.0f} ms",
                WARN if simulating else TEXT_DIM,
                f"sim loss {stats.sim_loss * 100:.1f} %",
                WARN if simulating else TEXT_DIM,
            )
        )
        for left, lc, right, rc in rows:
            surface.blit(self._text(left, "small", lc, cache=False), (x, y))
            surface.blit(self._text(right, "small", rc, cache=False), (x + 136, y))
            y += 18
        if offline:
            return
        y += 6
        graph = pygame.Rect(x, y, rect.width - 24, 56)
        self._draw_series(
            surface, graph, [(history.kbps_in, KBPS_IN), (history.kbps_out, KBPS_OUT)], "kbps"
        )
        graph = graph.move(0, graph.height + 10)
        self._draw_series(surface, graph, [(history.rtt_ms, RTT)], "rtt ms")

    def _draw_series(
        self,
        surface: pygame.Surface,
        rect: pygame.Rect,
        series: Sequence[tuple[Sequence[float], Rgb]],
        unit: str,
    ) -> None:
        pygame.draw.rect(surface, (0, 0, 0), rect)
        pygame.draw.rect(surface, (70, 76, 90), rect, 1)
        peak = max([1.0, *(v for values, _ in series for v in values)])
        scale = _nice_ceiling(peak)
        for frac in (0.5,):
            gy = rect.bottom - 1 - round((rect.height - 2) * frac)
            pygame.draw.line(surface, (40, 44, 56), (rect.x + 1, gy), (rect.right - 2, gy))
        for values, colour in series:
            vals = list(values)[-(rect.width - 2) :]
            if len(vals) < 2:
                continue
            x0 = rect.right - 1 - len(vals)
            points = [
                (x0 + i, rect.bottom - 2 - round((rect.height - 4) * min(v, scale) / scale))
                for i, v in enumerate(vals)
            ]
            pygame.draw.lines(surface, colour, False, points, 2)
        label = self._text(f"{unit} (max {scale:g})", "small", TEXT_DIM, cache=False)
        surface.blit(label, (rect.x + 4, rect.y + 3))

    # -- text -----------------------------------------------------------------------------

    def _text(self, text: str, font: str, colour: Rgb, *, cache: bool = True) -> pygame.Surface:
        if not cache:
            return self.fonts[font].render(text, True, colour)
        key = (text, font, colour)
        surf = self._text_cache.get(key)
        if surf is None:
            if len(self._text_cache) > 512:
                self._text_cache.clear()
            surf = self.fonts[font].render(text, True, colour)
            self._text_cache[key] = surf
        return surf


def _health_colour(health: int) -> Rgb:
    return GOOD if health > 60 else WARN if health > 30 else BAD


def _level(value: float, warn: float, bad: float) -> Rgb:
    return GOOD if value < warn else WARN if value < bad else BAD


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at or above ``value``."""
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        if m * exp >= value:
            return float(m * exp)
    return float(10 * exp)


def _fit(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
