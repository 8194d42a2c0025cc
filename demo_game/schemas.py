"""What the arena replicates: entity schemas for netcode's snapshot replication.

Players and NPCs go out on the ``position`` topic every tick; the environment (light,
weather, the storm) on the ``environment`` topic at a lower rate. Each schema mirrors a
replicated record of :mod:`demo_game.sim` and declares the same quantization the simulation
already rounds to (1 cm positions, 1/1024-turn headings), so what a client decodes is what
the server holds. Pickups do not move: they travel as reliable spawn and despawn events
(:mod:`demo_game.messages`), not in every snapshot.

The ``to_*``/``from_*`` helpers convert between simulation records and entities.
"""

from __future__ import annotations

import attrs

from demo_game.sim import (
    ARENA_SIZE_M,
    MAX_HEALTH,
    Colour,
    EnvironmentState,
    NpcState,
    PlayerState,
    Weather,
    quantize_heading,
    quantize_m,
)
from netcode.replication import (
    SchemaRegistry,
    entity,
    qangle,
    qbool,
    qcolor,
    qenum,
    qfloat,
    qint,
    qstring,
)

__all__ = [
    "DEMO_REGISTRY",
    "EnvironmentEntity",
    "NpcEntity",
    "PlayerEntity",
    "environment_entity",
    "environment_state",
    "npc_entity",
    "npc_state",
    "player_entity",
    "player_state",
]

#: The demo's entity types (kept apart from netcode's default registry).
DEMO_REGISTRY = SchemaRegistry()

MAX_SCORE = 65535
#: The environment clock wraps after this long (about 11.5 days); only its phase matters.
MAX_TIME_S = 1_000_000.0


@entity(type_id=1, registry=DEMO_REGISTRY, priority=4.0)
class PlayerEntity:
    """A player: its owner is the participant pid that controls it."""

    owner: int = qint(0, 0xFFFF)
    name: str = qstring(max_bytes=16)
    colour: Colour = qcolor()
    x: float = qfloat(0.0, ARENA_SIZE_M, 0.01, group="pos")
    y: float = qfloat(0.0, ARENA_SIZE_M, 0.01, group="pos")
    heading: float = qangle(bits=10)
    health: int = qint(0, MAX_HEALTH)
    score: int = qint(0, MAX_SCORE)


@entity(type_id=2, registry=DEMO_REGISTRY, priority=1.0)
class NpcEntity:
    """A wandering critter."""

    x: float = qfloat(0.0, ARENA_SIZE_M, 0.01, group="pos")
    y: float = qfloat(0.0, ARENA_SIZE_M, 0.01, group="pos")
    heading: float = qangle(bits=10)
    moving: bool = qbool()


@entity(type_id=3, registry=DEMO_REGISTRY)
class EnvironmentEntity:
    """The slow state: time of day, light, weather and the storm."""

    time_s: float = qfloat(0.0, MAX_TIME_S, 0.01)
    light: float = qfloat(0.0, 1.0, 0.001)
    weather: Weather = qenum(Weather)
    hazard_x: float = qfloat(0.0, ARENA_SIZE_M, 0.01, group="hazard")
    hazard_y: float = qfloat(0.0, ARENA_SIZE_M, 0.01, group="hazard")
    hazard_radius: float = qfloat(0.0, 64.0, 0.01)


def player_entity(player: PlayerState, owner: int) -> PlayerEntity:
    """The entity of a simulated player controlled by participant ``owner``."""
    return PlayerEntity(
        owner=owner,
        name=player.name,
        colour=player.colour,
        x=player.x,
        y=player.y,
        heading=player.heading,
        health=player.health,
        score=min(player.score, MAX_SCORE),
    )


def player_state(entity_id: int, e: PlayerEntity) -> PlayerState:
    """The simulation record of a received player (positions re-rounded to exact cm).

    The decoder computes ``lo + k * step``, which can differ from the simulation's
    ``k / 100`` in the last bit; rounding again makes prediction replay bit-exact.
    """
    return PlayerState(
        id=entity_id,
        name=e.name,
        colour=e.colour,
        x=quantize_m(e.x),
        y=quantize_m(e.y),
        heading=quantize_heading(e.heading),
        health=e.health,
        score=e.score,
    )


def npc_entity(npc: NpcState) -> NpcEntity:
    """The entity of a simulated NPC."""
    return NpcEntity(x=npc.x, y=npc.y, heading=npc.heading, moving=npc.moving)


def npc_state(entity_id: int, e: NpcEntity) -> NpcState:
    """The simulation record of a received NPC."""
    return NpcState(id=entity_id, x=e.x, y=e.y, heading=e.heading, moving=e.moving)


def environment_entity(env: EnvironmentState) -> EnvironmentEntity:
    """The entity of the simulation's environment."""
    return EnvironmentEntity(
        time_s=env.time_s % MAX_TIME_S,
        light=env.light,
        weather=env.weather,
        hazard_x=env.hazard_x,
        hazard_y=env.hazard_y,
        hazard_radius=env.hazard_radius,
    )


def environment_state(e: EnvironmentEntity) -> EnvironmentState:
    """The simulation record of a received environment."""
    return EnvironmentState(
        time_s=e.time_s,
        light=e.light,
        weather=e.weather,
        hazard_x=e.hazard_x,
        hazard_y=e.hazard_y,
        hazard_radius=e.hazard_radius,
    )


def entity_fields(obj: object) -> dict[str, object]:
    """An entity's fields by name (for ``World.update``)."""
    return attrs.asdict(obj, recurse=False)  # type: ignore[arg-type]
