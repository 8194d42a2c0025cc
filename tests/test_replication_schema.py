"""Quantization, schemas and bit packing of netcode.replication."""

from __future__ import annotations

import enum
import math

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from netcode.errors import ProtocolError
from netcode.replication import (
    QuantizationError,
    SchemaRegistry,
    World,
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
from netcode.replication.bits import BitReader, BitWriter, eg_bits, eg_segments, pack_segments
from netcode.replication.schema import CODEC_KEY, GroupKind

REG = SchemaRegistry()


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


@entity(type_id=7, registry=REG)
class Thing:
    x: float = qfloat(-10.0, 10.0, 0.01, group="pos")
    y: float = qfloat(-10.0, 10.0, 0.01, group="pos")
    strict: float = qfloat(0.0, 1.0, 0.1, on_out_of_range="raise")
    hp: int = qint(0, 100)
    big: int = qint(-1000, 1000, on_out_of_range="raise")
    flag: bool = qbool()
    colour: Colour = qenum(Colour)
    heading: float = qangle(bits=12)
    rot: tuple[float, float, float, float] = qquat(bits=11)
    name: str = qstring(max_bytes=8)
    strict_name: str = qstring(max_bytes=4, on_out_of_range="raise")
    tint: tuple[int, int, int] = qcolor()


def codec(name: str):  # type: ignore[no-untyped-def]
    return attrs.fields_dict(Thing)[name].metadata[CODEC_KEY]


def test_bit_widths_follow_the_declaration() -> None:
    assert codec("x").slot_bits == (11,)  # 2000 steps
    assert codec("hp").slot_bits == (7,)
    assert codec("big").slot_bits == (11,)
    assert codec("colour").slot_bits == (2,)
    assert codec("heading").slot_bits == (12,)
    assert codec("rot").slot_bits == (2, 11, 11, 11)
    assert codec("tint").slot_bits == (24,)
    schema = REG.of(Thing)
    kinds = [g.kind for g in schema.groups]
    assert kinds[0] == GroupKind.DELTA and schema.groups[0].slots == (0, 1)  # x and y together
    assert GroupKind.QUAT in kinds and GroupKind.STRING in kinds and GroupKind.FLIP in kinds


@given(st.floats(-10.0, 10.0))
def test_float_round_trip_within_precision(v: float) -> None:
    c = codec("x")
    assert abs(c.from_slots(c.to_slots(v)) - v) <= 0.005 + 1e-12


@given(st.floats(-1e6, 1e6, allow_nan=False))
def test_angle_round_trip_modulo_two_pi(v: float) -> None:
    c = codec("heading")
    back = c.from_slots(c.to_slots(v))
    assert -math.pi <= back < math.pi
    diff = (back - v + math.pi) % math.tau - math.pi
    assert abs(diff) <= math.pi / 4096 + 1e-6 * max(1.0, abs(v) / 1000)


@given(
    st.tuples(*[st.floats(-1.0, 1.0) for _ in range(4)]).filter(
        lambda q: sum(c * c for c in q) > 0.01
    )
)
def test_quaternion_smallest_three_round_trip(q: tuple[float, float, float, float]) -> None:
    c = codec("rot")
    n = math.sqrt(sum(v * v for v in q))
    unit = tuple(v / n for v in q)
    back = c.from_slots(c.to_slots(unit))
    dot = abs(sum(a * b for a, b in zip(unit, back, strict=True)))
    assert dot > 1 - 1e-5  # same rotation (q and -q are the same one)
    assert abs(sum(v * v for v in back) - 1) < 1e-9


@given(st.integers(-100, 200), st.integers(-5000, 5000))
def test_int_clamp_and_raise(hp: int, big: int) -> None:
    assert codec("hp").from_slots(codec("hp").to_slots(hp)) == min(max(hp, 0), 100)
    if -1000 <= big <= 1000:
        assert codec("big").from_slots(codec("big").to_slots(big)) == big
    else:
        with pytest.raises(QuantizationError):
            codec("big").to_slots(big)


@given(st.text(max_size=12))
def test_string_clamps_on_a_character_boundary(s: str) -> None:
    data = codec("name").normalize(s)
    assert len(data) <= 8
    assert s.encode("utf-8").startswith(data)
    data.decode("utf-8")


def test_out_of_range_raise_leaves_the_whole_entity_untouched() -> None:
    world = World(REG)
    eid = world.spawn(Thing(x=1.0, hp=50, name="abc"))
    before = world.quantized(eid)
    with pytest.raises(QuantizationError):
        world.update(eid, x=2.0, hp=60, strict=1.5)
    with pytest.raises(QuantizationError):
        world.update(eid, x=2.0, strict_name="too long")
    with pytest.raises(QuantizationError):
        world.update(eid, x=2.0, big=10**6)
    assert world.quantized(eid) == before
    world.update(eid, x=99.0, hp=-3, tint=(300, -1, 7), colour="green", name="€€€€")
    t = world.get(eid)
    assert (t.x, t.hp, t.tint, t.colour, t.name) == (10.0, 0, (255, 0, 7), Colour.GREEN, "€€")


def test_nan_always_raises() -> None:
    with pytest.raises(QuantizationError):
        codec("x").to_slots(float("nan"))


def test_registry_refuses_unquantized_fields_and_duplicate_ids() -> None:
    reg = SchemaRegistry()
    with pytest.raises(TypeError):

        @entity(type_id=1, registry=reg)
        class Bad:
            x: float = 0.0

    @entity(type_id=2, registry=reg)
    class Good:
        x: float = qfloat(0, 1, 0.1)

    with pytest.raises(ValueError):

        @entity(type_id=2, registry=reg)
        class Other:
            x: float = qfloat(0, 1, 0.1)


@given(st.lists(st.tuples(st.integers(0, 2**40), st.integers(0, 41)), max_size=60))
def test_pack_segments_matches_scalar_writer(segs: list[tuple[int, int]]) -> None:
    w = BitWriter()
    for v, n in segs:
        w.write(v & ((1 << n) - 1), n)
    values, widths = w.segments()
    assert pack_segments(values, widths) == w.to_bytes()
    r = BitReader(w.to_bytes())
    for v, n in segs:
        assert r.read(n) == v & ((1 << n) - 1)
    r.check_padding()


@given(st.lists(st.integers(0, 2**30), max_size=40), st.integers(0, 7))
def test_exp_golomb_round_trip(values: list[int], k: int) -> None:
    arr = np.array(values, dtype=np.int64)
    zv, zw, qv, qw, lv, lw = eg_segments(arr, k)
    v = np.column_stack((zv, qv, lv)).ravel()
    w = np.column_stack((zw, qw, lw)).ravel()
    data = pack_segments(v, w)
    assert int(eg_bits(arr, k).sum()) == int(w.sum())
    r = BitReader(data)
    assert [r.read_eg(k) for _ in values] == values
    r.check_padding()


def test_bit_reader_refuses_truncation_and_garbage() -> None:
    r = BitReader(b"\x00")
    with pytest.raises(ProtocolError):
        r.read(9)
    with pytest.raises(ProtocolError):
        BitReader(b"\x00\x00").read_eg(0)
    r = BitReader(b"\x81")
    r.read(1)
    with pytest.raises(ProtocolError):
        r.check_padding()
