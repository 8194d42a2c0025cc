"""Bit packing: numpy on the write side, a bit-string reader on the read side.

The encoder describes a payload as *segments*: parallel arrays of values and bit widths
(width 0 segments are skipped), written most significant bit first, one after the other,
padded with zero bits to a whole byte. Building the segment arrays column by column for all
records at once is what makes the encoder fast; :func:`pack_segments` then turns them into
bytes with a handful of vectorised operations.

Variable-length integers use Exp-Golomb codes of order k (:func:`eg_segments`,
:meth:`BitReader.read_eg`): ``z`` zero bits, then ``q = (v >> k) + 1`` on ``z + 1`` bits (its
top bit is the 1 that ends the zeros), then the low ``k`` bits of ``v``. Small values cost
``k + 1`` bits, and the cost grows by 2 bits per doubling.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from netcode.errors import ProtocolError

__all__ = [
    "BitReader",
    "BitWriter",
    "bit_length",
    "eg_bits",
    "eg_segments",
    "pack_segments",
]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

#: Exp-Golomb codes longer than this many leading zeros are refused (values < 2**40 << k).
MAX_EG_ZEROS = 40


def bit_length(a: I64) -> I64:
    """Element-wise ``int.bit_length`` of non-negative int64 values below 2**53."""
    # frexp gives a = m * 2**e with 0.5 <= m < 1: e is the bit length, exactly, because
    # int64 values below 2**53 convert to float64 exactly.
    return np.frexp(a.astype(np.float64))[1].astype(np.int64)


def eg_segments(v: I64, k: int) -> tuple[I64, I64, I64, I64, I64, I64]:
    """Exp-Golomb order ``k`` of each value: three (value, width) segment columns."""
    q = (v >> k) + 1
    nq = bit_length(q)
    zeros_w = nq - 1
    low_w = np.full_like(v, k)
    return (np.zeros_like(v), zeros_w, q, nq, v & ((1 << k) - 1), low_w)


def eg_bits(v: I64, k: int) -> I64:
    """Bits that Exp-Golomb order ``k`` takes for each value."""
    return 2 * bit_length((v >> k) + 1) - 1 + k


def eg_bits_int(v: int, k: int) -> int:
    """Bits that Exp-Golomb order ``k`` takes for one value."""
    return 2 * ((v >> k) + 1).bit_length() - 1 + k


def pack_segments(values: npt.NDArray[np.integer], widths: I64) -> bytes:
    """Concatenate ``values[i]`` on ``widths[i]`` bits (MSB first), zero-padded to bytes.

    Values must already fit their widths.
    """
    widths = widths.astype(np.int64, copy=False)
    total = int(widths.sum())
    if total == 0:
        return b""
    keep = widths > 0
    w = widths[keep]
    v = values[keep].astype(np.uint64, copy=False)
    ends = np.cumsum(w)
    # bit i of the output belongs to segment s = repeat(index, w); its shift inside the
    # value counts down from w - 1 to 0
    shift = np.repeat(ends, w) - np.arange(1, total + 1, dtype=np.int64)
    bits = (np.repeat(v, w) >> shift.astype(np.uint64)) & np.uint64(1)
    return np.packbits(bits.astype(np.uint8)).tobytes()


class BitWriter:
    """A simple scalar bit writer (tests, headers and rarely used paths)."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self.widths: list[int] = []

    def write(self, value: int, width: int) -> None:
        if value < 0 or value >> width:
            raise ValueError(f"{value} does not fit in {width} bits")
        self.values.append(value)
        self.widths.append(width)

    def write_eg(self, value: int, k: int) -> None:
        q = (value >> k) + 1
        n = q.bit_length()
        self.write(0, n - 1)
        self.write(q, n)
        self.write(value & ((1 << k) - 1), k)

    @property
    def bit_count(self) -> int:
        return sum(self.widths)

    def segments(self) -> tuple[I64, I64]:
        return (np.array(self.values, dtype=np.int64), np.array(self.widths, dtype=np.int64))

    def to_bytes(self) -> bytes:
        """The bits, padded with zeros to whole bytes."""
        acc = 0
        for value, width in zip(self.values, self.widths, strict=True):
            acc = (acc << width) | value
        total = self.bit_count
        pad = -total % 8
        return (acc << pad).to_bytes((total + pad) // 8, "big")


class BitReader:
    """Reads a payload as bits. Running past the end raises ProtocolError (truncation)."""

    __slots__ = ("bits", "end", "pos")

    def __init__(self, data: bytes, start_byte: int = 0) -> None:
        n = len(data) - start_byte
        # One '0'/'1' character per bit: slicing plus int(s, 2) is the fastest bit read
        # pure Python has, and str.find locates Exp-Golomb prefixes in one call.
        self.bits = format(int.from_bytes(data[start_byte:], "big"), f"0{n * 8}b") if n > 0 else ""
        self.pos = 0
        self.end = len(self.bits)

    def read(self, width: int) -> int:
        p = self.pos
        e = p + width
        if e > self.end:
            raise ProtocolError("snapshot part truncated")
        self.pos = e
        return int(self.bits[p:e], 2) if width else 0

    def read_eg(self, k: int) -> int:
        p = self.pos
        i = self.bits.find("1", p, p + MAX_EG_ZEROS + 1)
        if i < 0:
            if self.bits.find("1", p) < 0:
                raise ProtocolError("snapshot part truncated")
            raise ProtocolError("variable-length integer too long")
        e = i + (i - p) + 1 + k
        if e > self.end:
            raise ProtocolError("snapshot part truncated")
        self.pos = e
        return ((int(self.bits[i : e - k], 2) - 1) << k) | (
            int(self.bits[e - k : e], 2) if k else 0
        )

    def check_padding(self) -> None:
        """The rest must be fewer than 8 zero bits (canonical padding)."""
        rest = self.end - self.pos
        if rest >= 8 or "1" in self.bits[self.pos :]:
            raise ProtocolError("snapshot part has trailing data")
