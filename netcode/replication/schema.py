"""Entity schemas: attrs classes whose fields declare their quantization.

An entity type is an attrs class decorated with :func:`entity`; every field is declared with
one of the field functions below, which attach a :class:`FieldCodec` to the attrs field's
metadata::

    @entity(type_id=1)
    class Player:
        x: float = qfloat(0.0, 200.0, 0.01, group="pos")
        y: float = qfloat(0.0, 200.0, 0.01, group="pos")
        heading: float = qangle(bits=10)
        health: int = qint(0, 100)
        name: str = qstring(max_bytes=16)

The codec turns a field's value into one or more small non-negative integers ("slots") and
back. Every slot has a fixed bit width derived from the declaration; the snapshot encoder
works on slots only. Strings are the exception: their slot holds a version number on the
server (so that "changed?" is an integer comparison) and the bytes travel on the side.

Quantization round-trips within the declared precision. A value outside its declared range
is clamped or rejected with :class:`QuantizationError`, as the field says
(``on_out_of_range="clamp"|"raise"``); either way no other field is touched, because the
world quantizes a whole update before writing any of it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, dataclass_transform

import attrs

__all__ = [
    "CODEC_KEY",
    "DEFAULT_REGISTRY",
    "EntitySchema",
    "FieldCodec",
    "FieldGroup",
    "GroupKind",
    "QuantizationError",
    "SchemaRegistry",
    "entity",
    "qangle",
    "qbool",
    "qcolor",
    "qenum",
    "qfloat",
    "qint",
    "qquat",
    "qstring",
    "schema_of",
]

#: attrs metadata key under which a field's codec is stored.
CODEC_KEY = "netcode.codec"

OutOfRange = Literal["clamp", "raise"]
Slot = int | str


class QuantizationError(ValueError):
    """A value cannot be quantized: outside its declared range (with ``"raise"``) or NaN."""


class GroupKind(enum.IntEnum):
    """How a group of slots is sent when it changed against the baseline."""

    DELTA = 0  #: zigzag deltas, one shared bit length for the whole group
    RAW = 1  #: the new raw value (cheaper than a delta for narrow fields)
    FLIP = 2  #: a bool: "changed" already says everything
    QUAT = 3  #: smallest-three quaternion: deltas if the largest component kept its index
    STRING = 4  #: length then UTF-8 bytes


def _check_policy(on_out_of_range: str) -> None:
    if on_out_of_range not in ("clamp", "raise"):
        raise ValueError(f"on_out_of_range must be 'clamp' or 'raise', not {on_out_of_range!r}")


class FieldCodec:
    """Quantization of one field: value <-> slots (small non-negative ints).

    Subclasses set ``slot_bits`` (width of each slot), ``slot_max`` (largest valid raw value
    of each slot, which the decoder checks), and the group kind used for deltas.
    """

    kind: GroupKind = GroupKind.RAW
    #: True if deltas wrap around (angles): the shortest way round is sent.
    wraps: bool = False

    def __init__(self, slot_bits: Sequence[int], slot_max: Sequence[int], on_out_of_range: str):
        _check_policy(on_out_of_range)
        self.slot_bits: tuple[int, ...] = tuple(slot_bits)
        self.slot_max: tuple[int, ...] = tuple(slot_max)
        self.on_out_of_range = on_out_of_range

    @property
    def slots(self) -> int:
        """Number of slots this field occupies."""
        return len(self.slot_bits)

    @property
    def bits(self) -> int:
        """Raw (full-state) width of the field in bits; strings: the longest string."""
        return sum(self.slot_bits)

    def to_slots(self, value: Any) -> tuple[int, ...]:
        """Quantize ``value``; raises QuantizationError per the out-of-range policy."""
        raise NotImplementedError

    def from_slots(self, slots: Sequence[Slot]) -> Any:
        """The value the slots stand for (what a client sees)."""
        raise NotImplementedError

    def _out_of_range(self, value: object) -> None:
        if self.on_out_of_range == "raise":
            raise QuantizationError(f"{value!r} is outside the range of {self!r}")


class FloatCodec(FieldCodec):
    """A float in [lo, hi] with a step no coarser than ``precision``."""

    kind = GroupKind.DELTA

    def __init__(self, lo: float, hi: float, precision: float, on_out_of_range: str):
        if not hi > lo or not precision > 0:
            raise ValueError(f"qfloat needs lo < hi and precision > 0, got {lo}, {hi}, {precision}")
        steps = max(1, math.ceil((hi - lo) / precision - 1e-9))
        super().__init__([steps.bit_length()], [steps], on_out_of_range)
        self.lo, self.hi, self.precision, self.steps = lo, hi, precision, steps
        self.step = (hi - lo) / steps
        # For a step like 0.01, k / 100 is the float nearest the decimal (k * 0.01 can be off
        # by one bit), so a game that rounds to the same grid gets the very same values.
        per_unit = 1.0 / self.step
        self._per_unit = round(per_unit) if abs(per_unit - round(per_unit)) < 1e-9 else None
        #: decimals that print the dequantized value to within its precision (for JSON)
        self.decimals = max(0, math.ceil(-math.log10(precision / 2)))

    def to_slots(self, value: Any) -> tuple[int, ...]:
        v = float(value)
        if v != v:
            raise QuantizationError(f"NaN for {self!r}")
        if v < self.lo or v > self.hi:
            self._out_of_range(value)
            v = min(max(v, self.lo), self.hi)
        return (round((v - self.lo) / self.step),)

    def from_slots(self, slots: Sequence[Slot]) -> float:
        if self._per_unit is not None:
            return self.lo + int(slots[0]) / self._per_unit
        return self.lo + int(slots[0]) * self.step

    def __repr__(self) -> str:
        return f"qfloat({self.lo}, {self.hi}, {self.precision})"


class IntCodec(FieldCodec):
    """An integer in [lo, hi]."""

    def __init__(self, lo: int, hi: int, on_out_of_range: str):
        if hi < lo:
            raise ValueError(f"qint needs lo <= hi, got {lo}, {hi}")
        span = hi - lo
        super().__init__([max(1, span.bit_length())], [span], on_out_of_range)
        self.lo, self.hi = lo, hi
        # Wide integers move by small steps like positions do; narrow ones are cheaper raw.
        self.kind = GroupKind.DELTA if self.bits > 8 else GroupKind.RAW

    def to_slots(self, value: Any) -> tuple[int, ...]:
        v = int(value)
        if v < self.lo or v > self.hi:
            self._out_of_range(value)
            v = min(max(v, self.lo), self.hi)
        return (v - self.lo,)

    def from_slots(self, slots: Sequence[Slot]) -> int:
        return self.lo + int(slots[0])

    def __repr__(self) -> str:
        return f"qint({self.lo}, {self.hi})"


class BoolCodec(FieldCodec):
    kind = GroupKind.FLIP

    def __init__(self) -> None:
        super().__init__([1], [1], "clamp")

    def to_slots(self, value: Any) -> tuple[int, ...]:
        return (1 if value else 0,)

    def from_slots(self, slots: Sequence[Slot]) -> bool:
        return bool(slots[0])

    def __repr__(self) -> str:
        return "qbool()"


class EnumCodec(FieldCodec):
    """A member of an enum.Enum (sent as its index in definition order)."""

    def __init__(self, enum_type: type[enum.Enum], on_out_of_range: str):
        self.members = list(enum_type)
        if not self.members:
            raise ValueError(f"{enum_type.__name__} has no members")
        self.enum_type = enum_type
        self.index = {m: i for i, m in enumerate(self.members)}
        n = len(self.members) - 1
        super().__init__([max(1, n.bit_length())], [n], on_out_of_range)

    def to_slots(self, value: Any) -> tuple[int, ...]:
        try:
            return (self.index[value],)
        except (KeyError, TypeError):
            pass
        try:
            return (self.index[self.enum_type(value)],)
        except ValueError:
            self._out_of_range(value)
            return (0,)

    def from_slots(self, slots: Sequence[Slot]) -> enum.Enum:
        return self.members[int(slots[0])]

    def __repr__(self) -> str:
        return f"qenum({self.enum_type.__name__})"


class AngleCodec(FieldCodec):
    """An angle in radians on ``bits`` bits; wraps, so it is never out of range."""

    kind = GroupKind.DELTA
    wraps = True

    def __init__(self, bits: int):
        if not 2 <= bits <= 32:
            raise ValueError(f"qangle bits must be within 2..32, got {bits}")
        super().__init__([bits], [(1 << bits) - 1], "clamp")
        self.scale = (1 << bits) / math.tau

    def to_slots(self, value: Any) -> tuple[int, ...]:
        v = float(value)
        if not math.isfinite(v):
            raise QuantizationError(f"{value!r} is not a finite angle")
        return (round(v * self.scale) & self.slot_max[0],)

    def from_slots(self, slots: Sequence[Slot]) -> float:
        """The angle in [-pi, pi)."""
        q = int(slots[0])
        half = (self.slot_max[0] + 1) >> 1
        return ((q + half) % (2 * half) - half) / self.scale

    def __repr__(self) -> str:
        return f"qangle(bits={self.slot_bits[0]})"


_SQRT1_2 = math.sqrt(0.5)


class QuatCodec(FieldCodec):
    """A unit quaternion (x, y, z, w), "smallest three": index of the largest component
    (2 bits), then the other three (each within +-1/sqrt(2)) on ``bits`` bits each. The
    largest is made positive (q and -q are the same rotation) and rebuilt from the others.
    """

    kind = GroupKind.QUAT

    def __init__(self, bits: int, on_out_of_range: str):
        if not 4 <= bits <= 24:
            raise ValueError(f"qquat bits must be within 4..24, got {bits}")
        top = (1 << bits) - 1
        super().__init__([2, bits, bits, bits], [3, top, top, top], on_out_of_range)
        self.top = top

    def to_slots(self, value: Any) -> tuple[int, ...]:
        x, y, z, w = (float(c) for c in value)
        n = math.sqrt(x * x + y * y + z * z + w * w)
        if not n > 1e-9 or not math.isfinite(n):
            raise QuantizationError(f"{value!r} is not a rotation")
        if abs(n - 1.0) > 1e-3:
            self._out_of_range(value)
        c = (x / n, y / n, z / n, w / n)
        i = max(range(4), key=lambda k: abs(c[k]))
        sign = -1.0 if c[i] < 0 else 1.0
        top = self.top
        out = [i]
        for k in range(4):
            if k != i:
                v = min(max(c[k] * sign, -_SQRT1_2), _SQRT1_2)
                out.append(round((v + _SQRT1_2) / (2 * _SQRT1_2) * top))
        return tuple(out)

    def from_slots(self, slots: Sequence[Slot]) -> tuple[float, float, float, float]:
        i = int(slots[0])
        top = self.top
        small = [int(s) / top * (2 * _SQRT1_2) - _SQRT1_2 for s in slots[1:4]]
        largest = math.sqrt(max(0.0, 1.0 - sum(v * v for v in small)))
        small.insert(i, largest)
        return (small[0], small[1], small[2], small[3])

    def __repr__(self) -> str:
        return f"qquat(bits={self.top.bit_length()})"


class StringCodec(FieldCodec):
    """A short UTF-8 string of at most ``max_bytes`` bytes (length then bytes on the wire)."""

    kind = GroupKind.STRING

    def __init__(self, max_bytes: int, on_out_of_range: str):
        if not 1 <= max_bytes <= 255:
            raise ValueError(f"qstring max_bytes must be within 1..255, got {max_bytes}")
        # the single slot is a server-side version number; its width is the length prefix
        super().__init__([max_bytes.bit_length()], [max_bytes], on_out_of_range)
        self.max_bytes = max_bytes
        self.len_bits = max_bytes.bit_length()

    @property
    def bits(self) -> int:
        return self.len_bits + 8 * self.max_bytes

    def normalize(self, value: Any) -> bytes:
        """UTF-8 bytes of ``value``, truncated on a character boundary if allowed."""
        data = str(value).encode("utf-8")
        if len(data) > self.max_bytes:
            self._out_of_range(value)
            data = data[: self.max_bytes].decode("utf-8", "ignore").encode("utf-8")
        return data

    def to_slots(self, value: Any) -> tuple[int, ...]:
        raise TypeError("strings are stored by the world, not as slots")

    def from_slots(self, slots: Sequence[Slot]) -> str:
        return str(slots[0])

    def __repr__(self) -> str:
        return f"qstring(max_bytes={self.max_bytes})"


class ColorCodec(FieldCodec):
    """An (r, g, b) colour, 8 bits per channel, sent raw (24 bits) when it changes."""

    def __init__(self, on_out_of_range: str):
        super().__init__([24], [0xFFFFFF], on_out_of_range)

    def to_slots(self, value: Any) -> tuple[int, ...]:
        r, g, b = (int(c) for c in value)
        if not (0 <= r <= 255 and 0 <= g <= 255 and 0 <= b <= 255):
            self._out_of_range(value)
            r, g, b = (min(max(c, 0), 255) for c in (r, g, b))
        return ((r << 16) | (g << 8) | b,)

    def from_slots(self, slots: Sequence[Slot]) -> tuple[int, int, int]:
        v = int(slots[0])
        return (v >> 16, (v >> 8) & 0xFF, v & 0xFF)

    def __repr__(self) -> str:
        return "qcolor()"


def _field(codec: FieldCodec, default: Any, group: str | None) -> Any:
    return attrs.field(default=default, metadata={CODEC_KEY: codec, "netcode.group": group})


def qfloat(
    lo: float,
    hi: float,
    precision: float,
    *,
    default: float | None = None,
    group: str | None = None,
    on_out_of_range: OutOfRange = "clamp",
) -> Any:
    """A float in [lo, hi] quantized to ``precision`` (round trip error <= precision / 2).

    Fields sharing a ``group`` name (say x, y, z) are delta-coded together, with one shared
    bit length: cheaper than three separate lengths when they move together.
    """
    default = lo if default is None else default
    return _field(FloatCodec(lo, hi, precision, on_out_of_range), default, group)


def qint(
    lo: int,
    hi: int,
    *,
    default: int | None = None,
    group: str | None = None,
    on_out_of_range: OutOfRange = "clamp",
) -> Any:
    """An integer in [lo, hi]."""
    return _field(IntCodec(lo, hi, on_out_of_range), lo if default is None else default, group)


def qbool(*, default: bool = False) -> Any:
    """A bool (one bit; a change costs just the "changed" bit)."""
    return _field(BoolCodec(), default, None)


def qenum(
    enum_type: type[enum.Enum], *, default: Any = None, on_out_of_range: OutOfRange = "clamp"
) -> Any:
    """A member of ``enum_type``; out of range (not a member) clamps to the first member."""
    codec = EnumCodec(enum_type, on_out_of_range)
    return _field(codec, codec.members[0] if default is None else default, None)


def qangle(*, bits: int = 10, default: float = 0.0, group: str | None = None) -> Any:
    """An angle in radians on ``bits`` bits (2 pi / 2**bits resolution); decodes in [-pi, pi)."""
    return _field(AngleCodec(bits), default, group)


def qquat(
    *,
    bits: int = 9,
    default: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0),
    on_out_of_range: OutOfRange = "clamp",
) -> Any:
    """A unit quaternion (x, y, z, w), smallest three on ``bits`` bits per component.

    "Out of range" is a norm further than 1e-3 from 1: "clamp" normalizes it.
    """
    return _field(QuatCodec(bits, on_out_of_range), default, None)


def qstring(
    *, max_bytes: int = 16, default: str = "", on_out_of_range: OutOfRange = "clamp"
) -> Any:
    """A short UTF-8 string; too long clamps (truncates on a character boundary) or raises."""
    return _field(StringCodec(max_bytes, on_out_of_range), default, None)


def qcolor(
    *, default: tuple[int, int, int] = (255, 255, 255), on_out_of_range: OutOfRange = "clamp"
) -> Any:
    """An (r, g, b) colour with 8-bit channels."""
    return _field(ColorCodec(on_out_of_range), default, None)


@attrs.frozen
class FieldGroup:
    """Slots sent together: one "changed" bit per group in a delta record."""

    kind: GroupKind
    #: schema field indices in this group
    fields: tuple[int, ...]
    #: slot indices (into the entity's slot vector)
    slots: tuple[int, ...]
    #: widest zigzag delta of any slot, in bits (DELTA and QUAT groups)
    max_delta_bits: int
    #: bits that carry (delta bit length - 1)
    length_bits: int


@attrs.frozen
class EntitySchema:
    """The derived layout of an entity type: fields, slots and their bit widths."""

    type_id: int
    cls: type
    names: tuple[str, ...]
    codecs: tuple[FieldCodec, ...]
    #: first slot of each field
    first_slot: tuple[int, ...]
    slot_bits: tuple[int, ...]
    slot_max: tuple[int, ...]
    #: slot indices whose deltas wrap around (angles)
    wrap_slots: tuple[int, ...]
    #: field indices of string fields
    string_fields: tuple[int, ...]
    groups: tuple[FieldGroup, ...]
    priority: float

    @property
    def slot_count(self) -> int:
        return len(self.slot_bits)

    @property
    def full_bits(self) -> int:
        """Largest full-state record body, in bits."""
        return sum(c.bits for c in self.codecs)

    def to_slots(self, obj: Any) -> list[Slot]:
        """All slots of ``obj`` (strings as str): the quantized state a client ends up with."""
        out: list[Slot] = []
        for name, codec in zip(self.names, self.codecs, strict=True):
            value = getattr(obj, name)
            if isinstance(codec, StringCodec):
                out.append(codec.normalize(value).decode("utf-8"))
            else:
                out.extend(codec.to_slots(value))
        return out

    def from_slots(self, slots: Sequence[Slot]) -> Any:
        """An instance of the entity class holding the dequantized values."""
        kwargs = {}
        for name, codec, first in zip(self.names, self.codecs, self.first_slot, strict=True):
            kwargs[name] = codec.from_slots(slots[first : first + codec.slots])
        return self.cls(**kwargs)


def _build_schema(cls: type, type_id: int, priority: float) -> EntitySchema:
    names: list[str] = []
    codecs: list[FieldCodec] = []
    group_names: list[str | None] = []
    for f in attrs.fields(cls):
        codec = f.metadata.get(CODEC_KEY)
        if codec is None:
            raise TypeError(
                f"{cls.__name__}.{f.name} declares no quantization "
                "(use qfloat, qint, qbool, qenum, qangle, qquat, qstring or qcolor)"
            )
        names.append(f.name)
        codecs.append(codec)
        group_names.append(f.metadata.get("netcode.group"))
    if not names:
        raise TypeError(f"{cls.__name__} has no fields")
    first_slot: list[int] = []
    slot_bits: list[int] = []
    slot_max: list[int] = []
    wrap_slots: list[int] = []
    string_fields: list[int] = []
    for i, codec in enumerate(codecs):
        first_slot.append(len(slot_bits))
        if codec.wraps:
            wrap_slots.append(len(slot_bits))
        if isinstance(codec, StringCodec):
            string_fields.append(i)
        slot_bits.extend(codec.slot_bits)
        slot_max.extend(codec.slot_max)
    groups: list[FieldGroup] = []
    placed: dict[str, list[int]] = {}
    order: list[list[int]] = []
    for i, (codec, gname) in enumerate(zip(codecs, group_names, strict=True)):
        if gname is not None:
            if codec.kind != GroupKind.DELTA:
                raise TypeError(
                    f"{cls.__name__}.{names[i]}: only delta-coded fields can be grouped"
                )
            if gname in placed:
                placed[gname].append(i)
                continue
            placed[gname] = [i]
            order.append(placed[gname])
        else:
            order.append([i])
    for members in order:
        kind = codecs[members[0]].kind
        slots = tuple(
            s for i in members for s in range(first_slot[i], first_slot[i] + codecs[i].slots)
        )
        if kind == GroupKind.QUAT:
            max_bits = codecs[members[0]].slot_bits[1] + 1
        elif kind == GroupKind.DELTA:
            # a delta spans +-(2**w - 1): its zigzag needs w + 1 bits; a wrapped one only w
            max_bits = max(slot_bits[s] + (0 if s in wrap_slots else 1) for s in slots)
        else:
            max_bits = 0
        groups.append(
            FieldGroup(kind, tuple(members), slots, max_bits, max(0, (max_bits - 1).bit_length()))
        )
    return EntitySchema(
        type_id=type_id,
        cls=cls,
        names=tuple(names),
        codecs=tuple(codecs),
        first_slot=tuple(first_slot),
        slot_bits=tuple(slot_bits),
        slot_max=tuple(slot_max),
        wrap_slots=tuple(wrap_slots),
        string_fields=tuple(string_fields),
        groups=tuple(groups),
        priority=priority,
    )


class SchemaRegistry:
    """Entity types by type id (0..255) and by class."""

    def __init__(self) -> None:
        self.by_id: dict[int, EntitySchema] = {}
        self.by_cls: dict[type, EntitySchema] = {}

    def register(self, cls: type, type_id: int, *, priority: float = 1.0) -> EntitySchema:
        """Derive ``cls``'s schema and register it under ``type_id``."""
        if not 0 <= type_id <= 255:
            raise ValueError(f"type_id must be within 0..255, got {type_id}")
        existing = self.by_id.get(type_id)
        if existing is not None and existing.cls is not cls:
            raise ValueError(f"type_id {type_id} is already {existing.cls.__name__}")
        schema = _build_schema(cls, type_id, priority)
        self.by_id[type_id] = schema
        self.by_cls[cls] = schema
        return schema

    def __getitem__(self, type_id: int) -> EntitySchema:
        return self.by_id[type_id]

    def get(self, type_id: int) -> EntitySchema | None:
        return self.by_id.get(type_id)

    def of(self, obj_or_cls: object) -> EntitySchema:
        """The schema of an entity instance or class."""
        cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
        try:
            return self.by_cls[cls]
        except KeyError:
            raise TypeError(f"{cls.__name__} is not a registered entity type") from None


#: Where :func:`entity` registers unless given another registry.
DEFAULT_REGISTRY = SchemaRegistry()

C = TypeVar("C", bound=type)


# Tells type checkers that a decorated class gets an attrs __init__ from its q* fields
# (checked as keyword arguments: name every field you set).
@dataclass_transform(
    kw_only_default=True,
    field_specifiers=(attrs.field, qfloat, qint, qbool, qenum, qangle, qquat, qstring, qcolor),
)
def entity(
    *, type_id: int, priority: float = 1.0, registry: SchemaRegistry | None = None
) -> Callable[[C], C]:
    """Class decorator: make ``cls`` an attrs class (if it is not one) and register it.

    ``priority`` is how fast the entity's share of a tight byte budget grows per tick.
    """

    def wrap(cls: C) -> C:
        if not attrs.has(cls):
            cls = attrs.define(cls)
        (registry or DEFAULT_REGISTRY).register(cls, type_id, priority=priority)
        return cls

    return wrap


def schema_of(obj_or_cls: object, registry: SchemaRegistry | None = None) -> EntitySchema:
    """The schema of an entity instance or class."""
    return (registry or DEFAULT_REGISTRY).of(obj_or_cls)
