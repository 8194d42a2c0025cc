"""Self-describing schemas: entity and event types as bytes a client without our classes reads.

A game host sends a :class:`SchemaDescription` to every participant that joins (after the
clock in its HELLO, see docs/PROTOCOL.md "Schema description"). It lists each entity type
the host replicates, field by field, with everything a decoder needs and nothing it has to
derive from Python declarations: the field's kind, its range and precision, the width of its
raw value in bits, and the delta group it belongs to, each group's kind and delta widths;
and each game event type with its fields' wire kinds. A browser (``netcode.js``) decodes
snapshots and events from it alone; a Python client checks it against its own classes and
names the first field that differs (:func:`entity_mismatches`, :class:`SchemaMismatch`).

Layout (big-endian; ``str8`` is a u8 length then UTF-8)::

    description := version:u8 (1)  entity_count:u8 entity_type*  event_count:u8 event_type*
    entity_type := type_id:u8 name:str8 field_count:u8 field* group_count:u8 group*
    field       := name:str8 kind:u8 group:u8 bits:u8 params
    params      := FLOAT  lo:f64 hi:f64 precision:f64 steps:f64
                 | INT    lo:i64 hi:i64
                 | ENUM   count:u16 (name:str8) x count
                 | STRING max_bytes:u8
                 | BOOL, ANGLE, QUAT, COLOR: nothing
    group       := kind:u8 (GroupKind) length_bits:u8 max_delta_bits:u8
    event_type  := type_id:u8 name:str8 field_count:u8 (name:str8 kind:u8)*

The event side is generic here (:class:`EventTypeDescription`); the rooms layer describes its
event registry with it (``netcode.rooms.describe``).
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Iterable, Sequence

import attrs

from netcode.errors import NetcodeError, ProtocolError
from netcode.replication.schema import (
    DEFAULT_REGISTRY,
    AngleCodec,
    BoolCodec,
    ColorCodec,
    EntitySchema,
    EnumCodec,
    FieldCodec,
    FloatCodec,
    GroupKind,
    IntCodec,
    QuatCodec,
    SchemaRegistry,
    StringCodec,
)

__all__ = [
    "SCHEMA_DESCRIPTION_VERSION",
    "EntityTypeDescription",
    "EventFieldKind",
    "EventTypeDescription",
    "FieldDescription",
    "FieldKind",
    "GroupDescription",
    "SchemaDescription",
    "SchemaMismatch",
    "decode_description_untrusted",
    "describe_entity",
    "describe_registry",
    "encode_description",
    "entity_mismatches",
    "event_mismatches",
]

#: Version of the description layout; a client refuses a description of another version.
SCHEMA_DESCRIPTION_VERSION = 1


class SchemaMismatch(NetcodeError):
    """The server's schema description differs from this client's own declarations."""


class FieldKind(enum.IntEnum):
    """Kinds of entity fields (one per ``q*`` declaration)."""

    FLOAT = 1  #: qfloat
    INT = 2  #: qint
    BOOL = 3  #: qbool
    ENUM = 4  #: qenum
    ANGLE = 5  #: qangle
    QUAT = 6  #: qquat
    STRING = 7  #: qstring
    COLOR = 8  #: qcolor


class EventFieldKind(enum.IntEnum):
    """Wire kinds of game-event fields (netcode/rooms/events.py)."""

    INT = 1  #: zigzag LEB128 varint
    FLOAT = 2  #: f64
    BOOL = 3  #: one byte, 0 or 1
    STRING = 4  #: LEB128 varint length, then UTF-8
    BYTES = 5  #: LEB128 varint length, then the bytes
    OPAQUE = 255  #: a custom layout the description cannot express: not decodable


@attrs.frozen
class FieldDescription:
    """One entity field, as the wire sees it."""

    name: str
    kind: FieldKind
    #: index of the field's delta group in its type's ``groups``
    group: int
    #: raw width in bits: of the value (FLOAT, INT, BOOL, ENUM, ANGLE, COLOR), of each of the
    #: three small components (QUAT; the index takes 2 more), of the length (STRING)
    bits: int
    lo: float = 0.0
    hi: float = 0.0
    precision: float = 0.0
    #: FLOAT: quantization steps between lo and hi (the largest raw value)
    steps: float = 0.0
    #: ENUM: member names, in index order
    members: tuple[str, ...] = ()
    #: STRING: longest value in bytes
    max_bytes: int = 0

    def declaration(self) -> str:
        """The field as a Python declaration would read (for error messages)."""
        kind = self.kind
        if kind is FieldKind.FLOAT:
            return f"qfloat({self.lo!r}, {self.hi!r}, {self.precision!r})"
        if kind is FieldKind.INT:
            return f"qint({int(self.lo)}, {int(self.hi)})"
        if kind is FieldKind.BOOL:
            return "qbool()"
        if kind is FieldKind.ENUM:
            return f"qenum({', '.join(self.members)})"
        if kind is FieldKind.ANGLE:
            return f"qangle(bits={self.bits})"
        if kind is FieldKind.QUAT:
            return f"qquat(bits={self.bits})"
        if kind is FieldKind.STRING:
            return f"qstring(max_bytes={self.max_bytes})"
        return "qcolor()"


@attrs.frozen
class GroupDescription:
    """A delta group: one "changed" bit covers its fields."""

    kind: GroupKind
    #: bits carrying (delta width - 1) in a DELTA or QUAT change
    length_bits: int
    #: widest zigzag delta of any slot of the group (DELTA, QUAT)
    max_delta_bits: int


@attrs.frozen
class EntityTypeDescription:
    type_id: int
    name: str
    fields: tuple[FieldDescription, ...]
    groups: tuple[GroupDescription, ...]


@attrs.frozen
class EventTypeDescription:
    type_id: int
    name: str
    fields: tuple[tuple[str, EventFieldKind], ...]


@attrs.frozen
class SchemaDescription:
    """What a game host tells its clients about the types it sends."""

    entities: tuple[EntityTypeDescription, ...] = ()
    events: tuple[EventTypeDescription, ...] = ()
    version: int = SCHEMA_DESCRIPTION_VERSION

    def entity(self, type_id: int) -> EntityTypeDescription | None:
        for description in self.entities:
            if description.type_id == type_id:
                return description
        return None


# -- describing -----------------------------------------------------------------------------


def _describe_field(name: str, codec: FieldCodec, group: int) -> FieldDescription:
    if isinstance(codec, FloatCodec):
        return FieldDescription(
            name,
            FieldKind.FLOAT,
            group,
            codec.slot_bits[0],
            lo=float(codec.lo),
            hi=float(codec.hi),
            precision=float(codec.precision),
            steps=float(codec.steps),
        )
    if isinstance(codec, IntCodec):
        return FieldDescription(
            name, FieldKind.INT, group, codec.slot_bits[0], lo=codec.lo, hi=codec.hi
        )
    if isinstance(codec, BoolCodec):
        return FieldDescription(name, FieldKind.BOOL, group, 1)
    if isinstance(codec, EnumCodec):
        members = tuple(m.name for m in codec.members)
        return FieldDescription(name, FieldKind.ENUM, group, codec.slot_bits[0], members=members)
    if isinstance(codec, AngleCodec):
        return FieldDescription(name, FieldKind.ANGLE, group, codec.slot_bits[0])
    if isinstance(codec, QuatCodec):
        return FieldDescription(name, FieldKind.QUAT, group, codec.slot_bits[1])
    if isinstance(codec, StringCodec):
        return FieldDescription(
            name, FieldKind.STRING, group, codec.len_bits, max_bytes=codec.max_bytes
        )
    if isinstance(codec, ColorCodec):
        return FieldDescription(name, FieldKind.COLOR, group, 24)
    raise TypeError(f"field {name!r}: {type(codec).__name__} cannot be described")


def describe_entity(schema: EntitySchema) -> EntityTypeDescription:
    """The description of one registered entity type."""
    group_of = {f: g for g, group in enumerate(schema.groups) for f in group.fields}
    fields = tuple(
        _describe_field(name, codec, group_of[i])
        for i, (name, codec) in enumerate(zip(schema.names, schema.codecs, strict=True))
    )
    groups = tuple(GroupDescription(g.kind, g.length_bits, g.max_delta_bits) for g in schema.groups)
    return EntityTypeDescription(schema.type_id, schema.cls.__name__, fields, groups)


def describe_registry(
    registry: SchemaRegistry | None = None, events: Iterable[EventTypeDescription] = ()
) -> SchemaDescription:
    """The description of every entity type of ``registry`` (and the event types given)."""
    registry = registry or DEFAULT_REGISTRY
    entities = tuple(describe_entity(registry.by_id[t]) for t in sorted(registry.by_id))
    return SchemaDescription(entities, tuple(sorted(events, key=lambda e: e.type_id)))


# -- bytes ----------------------------------------------------------------------------------


def _str8(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"name {text[:40]!r}... is longer than 255 bytes")
    return bytes((len(raw),)) + raw


def encode_description(description: SchemaDescription) -> bytes:
    """The description's bytes (raises ValueError for more than 255 types or fields)."""
    out = bytearray((description.version,))
    if len(description.entities) > 255 or len(description.events) > 255:
        raise ValueError("a description holds at most 255 entity and 255 event types")
    out.append(len(description.entities))
    for entity in description.entities:
        if len(entity.fields) > 255 or len(entity.groups) > 255:
            raise ValueError(f"entity type {entity.name} has more than 255 fields")
        out += bytes((entity.type_id,)) + _str8(entity.name) + bytes((len(entity.fields),))
        for field in entity.fields:
            out += _str8(field.name) + bytes((field.kind, field.group, field.bits))
            if field.kind is FieldKind.FLOAT:
                out += struct.pack("!dddd", field.lo, field.hi, field.precision, field.steps)
            elif field.kind is FieldKind.INT:
                out += struct.pack("!qq", int(field.lo), int(field.hi))
            elif field.kind is FieldKind.ENUM:
                out += struct.pack("!H", len(field.members))
                out += b"".join(_str8(m) for m in field.members)
            elif field.kind is FieldKind.STRING:
                out.append(field.max_bytes)
        out.append(len(entity.groups))
        for group in entity.groups:
            out += bytes((group.kind, group.length_bits, group.max_delta_bits))
    out.append(len(description.events))
    for event in description.events:
        if len(event.fields) > 255:
            raise ValueError(f"event type {event.name} has more than 255 fields")
        out += bytes((event.type_id,)) + _str8(event.name) + bytes((len(event.fields),))
        for name, kind in event.fields:
            out += _str8(name) + bytes((kind,))
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ProtocolError("schema description truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def unpack(self, fmt: str) -> tuple[float | int, ...]:
        layout = struct.Struct(fmt)
        return layout.unpack(self.take(layout.size))

    def str8(self) -> str:
        try:
            return self.take(self.u8()).decode()
        except UnicodeDecodeError:
            raise ProtocolError("schema description name is not UTF-8") from None


def _kind(enum_type: type[enum.IntEnum], value: int, what: str) -> enum.IntEnum:
    try:
        return enum_type(value)
    except ValueError:
        raise ProtocolError(f"schema description: unknown {what} {value}") from None


def _read_field(r: _Reader) -> FieldDescription:
    name = r.str8()
    kind = FieldKind(_kind(FieldKind, r.u8(), "field kind"))
    group, bits = r.u8(), r.u8()
    if not 1 <= bits <= 53:
        raise ProtocolError(f"schema description: field {name!r} is {bits} bits wide")
    if kind is FieldKind.FLOAT:
        lo, hi, precision, steps = (float(v) for v in r.unpack("!dddd"))
        finite = all(math.isfinite(v) for v in (lo, hi, precision, steps))
        if not finite or not hi > lo or not 1 <= steps < 2**53 or steps != int(steps):
            raise ProtocolError(f"schema description: field {name!r} has a bad float range")
        return FieldDescription(
            name, kind, group, bits, lo=lo, hi=hi, precision=precision, steps=steps
        )
    if kind is FieldKind.INT:
        lo_i, hi_i = (int(v) for v in r.unpack("!qq"))
        if hi_i < lo_i:
            raise ProtocolError(f"schema description: field {name!r} has lo > hi")
        return FieldDescription(name, kind, group, bits, lo=lo_i, hi=hi_i)
    if kind is FieldKind.ENUM:
        (count,) = r.unpack("!H")
        if count == 0:
            raise ProtocolError(f"schema description: enum field {name!r} has no members")
        members = tuple(r.str8() for _ in range(int(count)))
        return FieldDescription(name, kind, group, bits, members=members)
    if kind is FieldKind.STRING:
        return FieldDescription(name, kind, group, bits, max_bytes=r.u8())
    return FieldDescription(name, kind, group, bits)


def decode_description_untrusted(data: bytes) -> SchemaDescription:
    """Parse a description from the server; ProtocolError if malformed or of another version."""
    r = _Reader(data)
    version = r.u8()
    if version != SCHEMA_DESCRIPTION_VERSION:
        raise ProtocolError(
            f"schema description version {version}; this client reads version "
            f"{SCHEMA_DESCRIPTION_VERSION}"
        )
    entities: list[EntityTypeDescription] = []
    for _ in range(r.u8()):
        type_id, name = r.u8(), r.str8()
        fields = tuple(_read_field(r) for _ in range(r.u8()))
        groups = tuple(
            GroupDescription(GroupKind(_kind(GroupKind, r.u8(), "group kind")), r.u8(), r.u8())
            for _ in range(r.u8())
        )
        if not fields or any(f.group >= len(groups) for f in fields):
            raise ProtocolError(f"schema description: entity type {name!r} has bad groups")
        entities.append(EntityTypeDescription(type_id, name, fields, groups))
    events: list[EventTypeDescription] = []
    for _ in range(r.u8()):
        type_id, name = r.u8(), r.str8()
        event_fields = tuple(
            (r.str8(), EventFieldKind(_kind(EventFieldKind, r.u8(), "event field kind")))
            for _ in range(r.u8())
        )
        events.append(EventTypeDescription(type_id, name, event_fields))
    if r.pos != len(data):
        raise ProtocolError("schema description has trailing bytes")
    for items, what in ((entities, "entity"), (events, "event")):
        ids = [item.type_id for item in items]
        if len(set(ids)) != len(ids):
            raise ProtocolError(f"schema description names an {what} type id twice")
    return SchemaDescription(tuple(entities), tuple(events), version)


# -- checking -------------------------------------------------------------------------------


def _entity_difference(server: EntityTypeDescription, ours: EntityTypeDescription) -> str | None:
    label = f"entity type {server.type_id} ({server.name})"
    for index in range(max(len(server.fields), len(ours.fields))):
        theirs = server.fields[index] if index < len(server.fields) else None
        mine = ours.fields[index] if index < len(ours.fields) else None
        if theirs is None:
            assert mine is not None
            return f"{label}: field {mine.name!r} ({mine.declaration()}) is not on the server"
        if mine is None:
            return (
                f"{label}: field {theirs.name!r} ({theirs.declaration()}) is not in this "
                f"client's {ours.name}"
            )
        if theirs != mine:
            if theirs.name != mine.name:
                return (
                    f"{label}: field {index + 1} is {theirs.name!r} on the server, "
                    f"{mine.name!r} in this client's {ours.name}"
                )
            if theirs.declaration() != mine.declaration() or theirs.bits != mine.bits:
                return (
                    f"{label}: field {theirs.name!r} differs: server {theirs.declaration()}, "
                    f"this client {mine.declaration()}"
                )
            return (
                f"{label}: field {theirs.name!r} is delta-coded in another group than in this "
                "client's declaration (group= differs)"
            )
    if server.groups != ours.groups:
        return f"{label}: the delta groups differ (group= of some fields)"
    return None


def entity_mismatches(
    description: SchemaDescription, registry: SchemaRegistry | None = None
) -> list[str]:
    """How the server's entity types differ from ``registry``'s (empty: they agree).

    Each message names the type and the first field that differs. A type the server sends
    that the registry lacks is a mismatch too (its records could not be decoded); types
    only the client knows are not.
    """
    registry = registry or DEFAULT_REGISTRY
    problems = []
    for server in description.entities:
        schema = registry.get(server.type_id)
        if schema is None:
            problems.append(
                f"entity type {server.type_id} ({server.name}) is not registered in this client"
            )
            continue
        difference = _entity_difference(server, describe_entity(schema))
        if difference is not None:
            problems.append(difference)
    return problems


def event_mismatches(
    description: SchemaDescription, ours: Sequence[EventTypeDescription]
) -> list[str]:
    """How the server's event types differ from ours, for the type ids both know."""
    mine = {e.type_id: e for e in ours}
    problems = []
    for server in description.events:
        local = mine.get(server.type_id)
        if local is None or local.fields == server.fields:
            continue
        label = f"event type {server.type_id} ({server.name})"
        for index in range(max(len(server.fields), len(local.fields))):
            theirs = server.fields[index] if index < len(server.fields) else None
            own = local.fields[index] if index < len(local.fields) else None
            if theirs != own:
                what = (
                    f"field {theirs[0]!r} is {theirs[1].name} on the server"
                    if theirs is not None
                    else "the server has fewer fields"
                )
                mine_text = (
                    f"{own[0]!r} {own[1].name} in this client's {local.name}"
                    if own is not None
                    else f"missing in this client's {local.name}"
                )
                problems.append(f"{label}: {what}, {mine_text}")
                break
    return problems
