"""The payload of a SNAPSHOT frame (``FrameType.SNAPSHOT`` = 17): one self-contained part,
and the client's RECEIPT (``FrameType.RECEIPT`` = 22) that reports which parts it applied.

A part is a 10-byte aligned header (declared below with construct) and a bit-packed body
(described here exactly; docs/REPLICATION.md has the same with the reasoning). Bits are
written most significant first; ``EG(k)`` is an Exp-Golomb code of order k (see
:mod:`netcode.replication.bits`); ``u(n)`` is an unsigned integer on n bits.

Body::

    body      := removals section* '0' padding
    removals  := EG(0) count, then count x EG(0) id gap      (ids ascending; gap = id - prev - 1,
                                                              prev = -1 at the start)
    section   := '1' u(8) type_id  u(3) k  EG(0) (count - 1)  record x count
    record    := EG(k) id gap  kind  body
    kind      := '0'                      delta against the common baseline (header)
               | '10'                     full state, no baseline
               | '11' EG(0) (offset - 1)  delta against the baseline at tick - offset
    delta body:= for each field group of the type, in declaration order:
                   '0' unchanged | '1' group change
    full body := for each field, in declaration order, its raw encoding
    padding   := 0..7 zero bits to the byte boundary

Group changes (the group layout is derived from the schema, see ``EntitySchema.groups``):

* DELTA (bounded floats, wide ints, angles; fields sharing a ``group`` name travel
  together): ``u(L) (n - 1)`` then, per slot, ``u(n) zigzag(new - baseline)`` where
  L = ``group.length_bits``. Angle deltas take the short way round (mod 2**bits).
* RAW (narrow ints, enums, colours): the new raw value on the field's width.
* FLIP (bools): nothing; the value is the negation of the baseline's.
* QUAT: ``'1'`` (largest component kept its index) then as DELTA over the three small
  components, or ``'0'`` then the raw quaternion (``u(2)`` index, 3 x ``u(bits)``).
* STRING: ``u(bit_length(max_bytes))`` length then that many UTF-8 bytes.

Raw encodings: a float is ``round((v - lo) / step)`` on bit_length(steps) bits; an int
``v - lo``; a bool one bit; an enum its member index; an angle ``round(a * 2**bits / 2pi)
mod 2**bits``; a colour ``r << 16 | g << 8 | b`` on 24 bits; a quaternion its index and
three components; a string its length and bytes. A decoder refuses raw values above the
field's maximum and deltas that land outside it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from construct import Array, GreedyBytes, Int8ub, Int16ub, Int32ub, Struct, this

from netcode.errors import ProtocolError

__all__ = [
    "DEFAULT_HISTORY_DEPTH",
    "DEFAULT_MAX_ENTITIES",
    "DEFAULT_MAX_ENTITY_ID",
    "FLAG_COMPLETE",
    "MAX_RECEIPT_PARTS",
    "PART_HEADER_BYTES",
    "RECEIPT",
    "RECEIPT_HEADER_BYTES",
    "RECEIPT_RESYNC",
    "SNAPSHOT_PART",
    "SNAPSHOT_PART_HEADER",
    "PartHeader",
    "Receipt",
    "decode_part_header_untrusted",
    "decode_receipt_untrusted",
    "encode_part_header",
    "encode_receipt",
]

#: A decoder's defaults; an encoder assumes them until the client's first receipt.
DEFAULT_HISTORY_DEPTH = 32
DEFAULT_MAX_ENTITIES = 4096
DEFAULT_MAX_ENTITY_ID = 65535

#: Part flag: this tick's parts list every entity of the stream whose state differs from
#: the newest state the client applied; an entity the client holds that none of the tick's
#: parts mentions was unchanged at that tick.
FLAG_COMPLETE = 1

SNAPSHOT_PART_HEADER = Struct(
    "tick" / Int32ub,  # server tick of the state this part carries
    "epoch" / Int16ub,  # stream epoch: one per encoder lifetime (and per resync)
    "part_index" / Int8ub,  # index of this part among the parts of the tick
    "part_count" / Int8ub,  # parts of this tick (a client knows when a snapshot is whole)
    "baseline_offset" / Int8ub,  # common baseline = tick - offset; 0: no common baseline
    "flags" / Int8ub,  # FLAG_COMPLETE; other bits 0
)

#: A whole part: the header then the bit-packed body described in the module docstring.
SNAPSHOT_PART = Struct(
    "header" / SNAPSHOT_PART_HEADER,
    "body" / GreedyBytes,
)

_HEADER = struct.Struct("!IHBBBB")
PART_HEADER_BYTES = _HEADER.size
assert SNAPSHOT_PART_HEADER.sizeof() == PART_HEADER_BYTES


class PartHeader(NamedTuple):
    tick: int
    epoch: int
    part_index: int
    part_count: int
    baseline_offset: int
    flags: int = 0


def encode_part_header(header: PartHeader) -> bytes:
    return _HEADER.pack(*header)


def decode_part_header_untrusted(payload: bytes) -> PartHeader:
    """The header of a part from a peer; ProtocolError if short or inconsistent."""
    if len(payload) < PART_HEADER_BYTES + 1:
        raise ProtocolError(f"snapshot part of {len(payload)} bytes is too short")
    header = PartHeader(*_HEADER.unpack_from(payload))
    if header.part_count == 0 or header.part_index >= header.part_count:
        raise ProtocolError(f"snapshot part {header.part_index} of {header.part_count}")
    if header.baseline_offset > header.tick:
        raise ProtocolError("snapshot part names a baseline before tick 0")
    if header.flags & ~FLAG_COMPLETE:
        raise ProtocolError(f"snapshot part sets reserved flags {header.flags:#x}")
    return header


# -- receipts ---------------------------------------------------------------------------

#: Receipt flag: the client could not apply a part of this epoch (or holds no state for
#: it); the encoder starts a new epoch from full state.
RECEIPT_RESYNC = 1

#: The body of a receipt for one snapshot stream (the rooms layer puts the topic id before
#: it). ``newest_tick`` is the newest tick the client received in ``epoch``; each applied
#: part is named by how far its tick lies behind it and its index.
RECEIPT = Struct(
    "epoch" / Int16ub,
    "flags" / Int8ub,  # RECEIPT_RESYNC; other bits 0
    "max_entities" / Int16ub,  # live entities the client may hold (65535: that many or more)
    "max_entity_id" / Int16ub,  # highest entity id the client accepts
    "history_depth" / Int8ub,  # states the client keeps per entity (at least 2)
    "newest_tick" / Int32ub,
    "count" / Int8ub,
    "applied" / Array(this.count, Struct("back" / Int8ub, "part_index" / Int8ub)),
)

_RECEIPT = struct.Struct("!HBHHBIB")
RECEIPT_HEADER_BYTES = _RECEIPT.size
#: Applied parts one receipt may list.
MAX_RECEIPT_PARTS = 255


class Receipt(NamedTuple):
    """What a client applied of one snapshot stream, and the limits it decodes under."""

    epoch: int
    resync: bool
    max_entities: int
    max_entity_id: int
    history_depth: int
    #: (tick, part_index) of parts applied, all within 255 ticks of the newest
    applied: tuple[tuple[int, int], ...]


def encode_receipt(receipt: Receipt) -> bytes:
    applied = receipt.applied[:MAX_RECEIPT_PARTS]
    newest = max((t for t, _ in applied), default=0)
    out = bytearray(
        _RECEIPT.pack(
            receipt.epoch & 0xFFFF,
            RECEIPT_RESYNC if receipt.resync else 0,
            min(receipt.max_entities, 0xFFFF),
            min(receipt.max_entity_id, 0xFFFF),
            min(receipt.history_depth, 255),
            newest,
            len(applied),
        )
    )
    for tick, index in applied:
        back = newest - tick
        if not 0 <= back <= 255:
            raise ValueError(f"applied tick {tick} is more than 255 ticks behind {newest}")
        out += bytes((back, index))
    return bytes(out)


def decode_receipt_untrusted(data: bytes) -> Receipt:
    """A receipt from a client; ProtocolError if malformed."""
    if len(data) < RECEIPT_HEADER_BYTES:
        raise ProtocolError(f"receipt of {len(data)} bytes is too short")
    epoch, flags, max_entities, max_id, depth, newest, count = _RECEIPT.unpack_from(data)
    if len(data) != RECEIPT_HEADER_BYTES + 2 * count:
        raise ProtocolError(f"receipt of {len(data)} bytes does not hold {count} parts")
    if flags & ~RECEIPT_RESYNC:
        raise ProtocolError(f"receipt sets reserved flags {flags:#x}")
    if depth < 2:
        raise ProtocolError(f"receipt announces a history depth of {depth}")
    body = data[RECEIPT_HEADER_BYTES:]
    applied = tuple(
        (newest - body[i], body[i + 1]) for i in range(0, len(body), 2) if body[i] <= newest
    )
    return Receipt(epoch, bool(flags & RECEIPT_RESYNC), max_entities, max_id, depth, applied)
