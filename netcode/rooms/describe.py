"""The game host's schema description: its entity types and the room's game-event types.

:mod:`netcode.replication.describe` lays out the bytes; this module describes an
:class:`~netcode.rooms.events.EventRegistry` with it (each event field's wire kind, from its
annotation as :class:`~netcode.rooms.events.EventCodec` derives it) and checks a received
description against a client's own registries.
"""

from __future__ import annotations

import typing

import attrs

from netcode.replication import SchemaRegistry
from netcode.replication.describe import (
    EventFieldKind,
    EventTypeDescription,
    SchemaDescription,
    SchemaMismatch,
    describe_registry,
    entity_mismatches,
    event_mismatches,
)
from netcode.rooms.events import DEFAULT_EVENT_TYPES, EventRegistry

__all__ = ["describe_events", "describe_game", "game_mismatches", "raise_on_mismatch"]

_EVENT_KINDS: dict[object, EventFieldKind] = {
    int: EventFieldKind.INT,
    float: EventFieldKind.FLOAT,
    bool: EventFieldKind.BOOL,
    str: EventFieldKind.STRING,
    bytes: EventFieldKind.BYTES,
}


def describe_events(registry: EventRegistry | None = None) -> tuple[EventTypeDescription, ...]:
    """Every event type of ``registry`` (default: the built-in and @event_type ones)."""
    registry = registry or DEFAULT_EVENT_TYPES
    out = []
    for type_id in sorted(registry.by_id):
        cls = registry.by_id[type_id].cls
        hints = typing.get_type_hints(cls)
        fields = tuple(
            (
                field.name,
                EventFieldKind.OPAQUE
                if "netcode.wire" in field.metadata
                else _EVENT_KINDS.get(hints[field.name], EventFieldKind.OPAQUE),
            )
            for field in attrs.fields(cls)
        )
        out.append(EventTypeDescription(type_id, cls.__name__, fields))
    return tuple(out)


def describe_game(
    registry: SchemaRegistry | None = None, events: EventRegistry | None = None
) -> SchemaDescription:
    """What a game host tells a participant: its entity types and the room's event types."""
    return describe_registry(registry, describe_events(events))


def game_mismatches(
    description: SchemaDescription,
    registry: SchemaRegistry | None = None,
    events: EventRegistry | None = None,
) -> tuple[list[str], list[str]]:
    """(entity mismatches, event mismatches) of ``description`` against our registries."""
    return (
        entity_mismatches(description, registry),
        event_mismatches(description, describe_events(events)),
    )


def raise_on_mismatch(
    description: SchemaDescription,
    registry: SchemaRegistry | None = None,
    events: EventRegistry | None = None,
) -> None:
    """Raise SchemaMismatch naming every type and field that differs."""
    entities, event_problems = game_mismatches(description, registry, events)
    problems = entities + event_problems
    if problems:
        raise SchemaMismatch("; ".join(problems))
