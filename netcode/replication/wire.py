"""The payload of a SNAPSHOT frame (``FrameType.SNAPSHOT`` = 17): one self-contained part.

A part is a 7-byte aligned header (declared below with construct) and a bit-packed body
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

from construct import GreedyBytes, Int8ub, Int32ub, Struct

from netcode.errors import ProtocolError

__all__ = [
    "PART_HEADER_BYTES",
    "SNAPSHOT_PART",
    "SNAPSHOT_PART_HEADER",
    "PartHeader",
    "decode_part_header_untrusted",
    "encode_part_header",
]

SNAPSHOT_PART_HEADER = Struct(
    "tick" / Int32ub,  # server tick of the state this part carries
    "part_index" / Int8ub,  # index of this part among the parts of the tick
    "part_count" / Int8ub,  # parts of this tick (a client knows when a snapshot is whole)
    "baseline_offset" / Int8ub,  # common baseline = tick - offset; 0: no common baseline
)

#: A whole part: the header then the bit-packed body described in the module docstring.
SNAPSHOT_PART = Struct(
    "header" / SNAPSHOT_PART_HEADER,
    "body" / GreedyBytes,
)

_HEADER = struct.Struct("!IBBB")
PART_HEADER_BYTES = _HEADER.size
assert SNAPSHOT_PART_HEADER.sizeof() == PART_HEADER_BYTES


class PartHeader(NamedTuple):
    tick: int
    part_index: int
    part_count: int
    baseline_offset: int


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
    return header
