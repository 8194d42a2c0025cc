"""Self-describing schemas: the description's bytes, and a client refusing a mismatch."""

from __future__ import annotations

import enum
import struct

import pytest
from helpers import eventually

from demo_game.schemas import DEMO_REGISTRY
from netcode.cli import make_token
from netcode.errors import ProtocolError
from netcode.replication import (
    SchemaRegistry,
    entity,
    qangle,
    qbool,
    qcolor,
    qenum,
    qfloat,
    qint,
    qquat,
    qstring,
)
from netcode.replication.describe import (
    EventFieldKind,
    FieldKind,
    SchemaDescription,
    SchemaMismatch,
    decode_description_untrusted,
    describe_registry,
    encode_description,
    entity_mismatches,
)
from netcode.rooms import Room, RoomServer
from netcode.rooms.describe import describe_events, describe_game, raise_on_mismatch
from netcode.rooms.events import EventRegistry, event_type
from netcode.rooms.host import (
    HELLO,
    GameHost,
    decode_hello_untrusted,
    hello_description_untrusted,
)
from netcode.rooms.replica import Replica


class Mood(enum.Enum):
    CALM = 1
    ANGRY = 2
    SLEEPY = 3


EVERY_KIND = SchemaRegistry()


@entity(type_id=7, registry=EVERY_KIND)
class Everything:
    x: float = qfloat(-10.0, 10.0, 0.001, group="pos")
    y: float = qfloat(-10.0, 10.0, 0.001, group="pos")
    level: int = qint(-5, 3000)
    small: int = qint(0, 7)
    alive: bool = qbool()
    mood: Mood = qenum(Mood)
    heading: float = qangle(bits=12)
    rotation: tuple[float, float, float, float] = qquat(bits=11)
    label: str = qstring(max_bytes=20)
    tint: tuple[int, int, int] = qcolor()


def test_description_round_trips_every_field_kind() -> None:
    description = describe_registry(EVERY_KIND)
    data = encode_description(description)
    assert decode_description_untrusted(data) == description
    (everything,) = description.entities
    kinds = [f.kind for f in everything.fields]
    assert kinds == [
        FieldKind.FLOAT,
        FieldKind.FLOAT,
        FieldKind.INT,
        FieldKind.INT,
        FieldKind.BOOL,
        FieldKind.ENUM,
        FieldKind.ANGLE,
        FieldKind.QUAT,
        FieldKind.STRING,
        FieldKind.COLOR,
    ]
    x = everything.fields[0]
    assert (x.lo, x.hi, x.precision, x.steps, x.bits) == (-10.0, 10.0, 0.001, 20000.0, 15)
    assert everything.fields[0].group == everything.fields[1].group == 0  # x, y share a group
    assert everything.fields[5].members == ("CALM", "ANGRY", "SLEEPY")
    assert everything.fields[7].bits == 11 and everything.fields[8].max_bytes == 20
    assert len(everything.groups) == 9  # one per field, x and y together
    assert entity_mismatches(description, EVERY_KIND) == []


def test_demo_description_is_compact_and_describes_the_events() -> None:
    description = describe_game(DEMO_REGISTRY)
    data = encode_description(description)
    assert len(data) < 1024
    assert [e.name for e in description.entities] == [
        "PlayerEntity",
        "NpcEntity",
        "EnvironmentEntity",
    ]
    chat = next(e for e in description.events if e.type_id == 1)
    assert chat.name == "Chat" and chat.fields == (("text", EventFieldKind.STRING),)
    spawn = next(e for e in description.events if e.type_id == 2)
    assert spawn.fields == (
        ("entity_id", EventFieldKind.INT),
        ("kind", EventFieldKind.STRING),
        ("x", EventFieldKind.FLOAT),
        ("y", EventFieldKind.FLOAT),
    )


def test_hello_carries_the_description_after_the_clock() -> None:
    data = encode_description(describe_game(DEMO_REGISTRY))
    body = HELLO.pack(30.0, 12.5, 99) + data
    assert decode_hello_untrusted(body) == (30.0, 12.5, 99)
    assert hello_description_untrusted(body) == describe_game(DEMO_REGISTRY)
    assert hello_description_untrusted(HELLO.pack(30.0, 12.5, 99)) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02\x00\x00",  # another version
        b"\x01\x00",  # truncated
        b"\x01\x00\x00\x00",  # trailing byte
        b"\x01\x01\x01\x01a\x01\x01x\x09\x00\x01\x01\x00\x00\x00\x00",  # unknown field kind
        b"\x01\x01\x01\x01a\x01\x01x\x03\x05\x01\x01\x00\x00\x00\x00",  # group out of range
        b"\x01\x00\x02\x01\x01a\x00\x01\x01b\x00",  # an event type id twice
    ],
)
def test_malformed_descriptions_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_description_untrusted(data)


def _registry_with_x(precision: float, *, group: str | None = "pos") -> SchemaRegistry:
    registry = SchemaRegistry()

    @entity(type_id=1, registry=registry)
    class Ball:
        x: float = qfloat(0.0, 100.0, precision, group=group)
        y: float = qfloat(0.0, 100.0, 0.01, group=group)

    return registry


def test_a_mismatch_names_the_type_and_the_field() -> None:
    server = describe_registry(_registry_with_x(0.05))
    (problem,) = entity_mismatches(server, _registry_with_x(0.01))
    assert problem == (
        "entity type 1 (Ball): field 'x' differs: server qfloat(0.0, 100.0, 0.05), "
        "this client qfloat(0.0, 100.0, 0.01)"
    )
    (grouping,) = entity_mismatches(server, _registry_with_x(0.05, group=None))
    assert "field 'y'" in grouping and "group" in grouping
    unknown = entity_mismatches(server, SchemaRegistry())
    assert unknown == ["entity type 1 (Ball) is not registered in this client"]
    assert entity_mismatches(SchemaDescription(), SchemaRegistry()) == []


def test_event_mismatches_name_the_field() -> None:
    theirs = EventRegistry()
    mine = EventRegistry()

    @event_type(type_id=40, registry=theirs)
    class Shot:
        power: float
        target: int

    @event_type(type_id=40, registry=mine)
    class Shot2:
        power: int
        target: int

    description = describe_game(SchemaRegistry(), theirs)
    with pytest.raises(SchemaMismatch, match=r"event type 40 \(Shot\): field 'power' is FLOAT"):
        raise_on_mismatch(description, SchemaRegistry(), mine)
    raise_on_mismatch(description, SchemaRegistry(), theirs)
    assert describe_events(theirs)[0].fields == (
        ("power", EventFieldKind.FLOAT),
        ("target", EventFieldKind.INT),
    )


def test_the_description_layout_is_as_documented() -> None:
    registry = SchemaRegistry()

    @entity(type_id=9, registry=registry)
    class Dot:
        on: bool = qbool()

    data = encode_description(describe_registry(registry))
    # version, 1 type: id 9, "Dot", 1 field: "on" BOOL group 0, 1 bit; 1 group: FLIP (its
    # length_bits 1 and max_delta_bits 0 mean nothing); no event types
    assert data == b"\x01\x01\x09\x03Dot\x01\x02on\x03\x00\x01\x01\x02\x01\x00\x00"
    x = describe_registry(_registry_with_x(0.05)).entities[0].fields[0]
    raw = encode_description(describe_registry(_registry_with_x(0.05)))
    assert struct.pack("!dddd", 0.0, 100.0, 0.05, 2000.0) in raw and x.bits == 11


KEY, SECRET = "describe-key", "describe-secret-describe-secret-1234"


@pytest.mark.webrtc
async def test_a_client_with_other_classes_refuses_the_servers_schema() -> None:
    """A Python client whose Ball.x is declared with another precision decodes nothing and
    says which field differs; one with the same classes decodes as usual."""
    server = RoomServer(KEY, SECRET)
    await server.start("127.0.0.1", 0)
    host = GameHost(tick_rate=30, registry=_registry_with_x(0.05))
    ball = host.world.spawn(host.world.registry.by_id[1].cls(x=10.0, y=20.0))
    host.attach(server.room("game"))
    rooms = []
    try:
        wrong_room, right_room = Room(), Room()
        rooms = [wrong_room, right_room]
        wrong = Replica(wrong_room, registry=_registry_with_x(0.01))
        right = Replica(right_room, registry=host.world.registry)
        mismatches: list[SchemaMismatch] = []
        wrong.on("schema_mismatch", mismatches.append)
        await wrong_room.connect(server.url, make_token(KEY, SECRET, "wrong", "game"))
        await right_room.connect(server.url, make_token(KEY, SECRET, "right", "game"))
        await eventually(lambda: ball in right.entity_ids() and mismatches)
        assert right.schema_error is None
        assert wrong.schema_error is mismatches[0]
        assert "field 'x' differs" in str(wrong.schema_error)
        assert "qfloat(0.0, 100.0, 0.05)" in str(wrong.schema_error)
        await eventually(lambda: right.latest_tick is not None and right.latest_tick > 3)
        assert wrong.entity_ids() == [] and wrong.latest_tick is None
    finally:
        for room in rooms:
            await room.disconnect()
        await host.stop()
        await server.stop()
