"""What one client's screen shows, as plain data: the seam between game state and drawing.

The offline mode builds a ``Scene`` from the local ``World``; the networked client will build
it from netcode's replica (remote entities interpolated, the local player predicted). The
renderer draws a ``Scene`` and knows nothing else. No pygame here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

from demo_game.netstats import NetHistory, NetStats
from demo_game.sim import (
    ChatPosted,
    EnvironmentState,
    NpcState,
    PickupState,
    PlayerState,
    WorldSnapshot,
)

__all__ = ["Scene", "interpolate_snapshots", "lerp_angle"]


@attrs.define
class Scene:
    """Everything the renderer needs for one frame."""

    players: Sequence[PlayerState]  #: positions to draw (interpolated or predicted)
    npcs: Sequence[NpcState]  #: wandering critters
    pickups: Sequence[PickupState]  #: pickups lying around
    environment: EnvironmentState  #: light, weather, storm
    local_player_id: int | None = None  #: highlighted, and the camera follows it
    chat_lines: Sequence[ChatPosted] = ()  #: newest last
    chat_input: str | None = None  #: the line being typed, None when not typing
    show_net_graph: bool = False  #: F3
    net_stats: NetStats = attrs.Factory(NetStats)  #: latest sample
    net_history: NetHistory = attrs.Factory(NetHistory)  #: for the graphs
    clock_s: float = 0.0  #: a steady clock for animations (bobbing, rain)

    @classmethod
    def from_snapshot(cls, snapshot: WorldSnapshot, **kwargs: object) -> Scene:
        """A scene showing ``snapshot``; other fields by keyword."""
        return cls(
            players=snapshot.players,
            npcs=snapshot.npcs,
            pickups=snapshot.pickups,
            environment=snapshot.environment,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def local_player(self) -> PlayerState | None:
        """The local player's state, if present."""
        for p in self.players:
            if p.id == self.local_player_id:
                return p
        return None


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def lerp_angle(a: float, b: float, t: float) -> float:
    """Interpolate between two angles (radians) the short way round."""
    diff = (b - a + math.pi) % (2.0 * math.pi) - math.pi
    return a + diff * t


def interpolate_snapshots(old: WorldSnapshot, new: WorldSnapshot, t: float) -> WorldSnapshot:
    """The world a fraction ``t`` (0..1) of the way from ``old`` to ``new``.

    Entities only in ``new`` appear as they are; discrete fields (health, score, weather)
    come from ``new``. Used to draw at a higher frame rate than the tick rate.
    """
    t = min(1.0, max(0.0, t))
    old_players = {p.id: p for p in old.players}
    players = []
    for p in new.players:
        o = old_players.get(p.id)
        if o is not None:
            p = attrs.evolve(
                p,
                x=_lerp(o.x, p.x, t),
                y=_lerp(o.y, p.y, t),
                heading=lerp_angle(o.heading, p.heading, t),
            )
        players.append(p)
    old_npcs = {n.id: n for n in old.npcs}
    npcs = []
    for n in new.npcs:
        o2 = old_npcs.get(n.id)
        if o2 is not None:
            n = attrs.evolve(
                n,
                x=_lerp(o2.x, n.x, t),
                y=_lerp(o2.y, n.y, t),
                heading=lerp_angle(o2.heading, n.heading, t),
            )
        npcs.append(n)
    oe, ne = old.environment, new.environment
    env = attrs.evolve(
        ne,
        time_s=_lerp(oe.time_s, ne.time_s, t),
        light=_lerp(oe.light, ne.light, t),
        hazard_x=_lerp(oe.hazard_x, ne.hazard_x, t),
        hazard_y=_lerp(oe.hazard_y, ne.hazard_y, t),
        hazard_radius=_lerp(oe.hazard_radius, ne.hazard_radius, t),
    )
    return WorldSnapshot(
        tick=new.tick,
        players=tuple(players),
        npcs=tuple(npcs),
        pickups=new.pickups,
        environment=env,
    )
