"""The netcode datagram: a fixed header followed by a list of frames.

One datagram is one message on the lossy data channel and so one UDP packet; it is never
larger than :data:`MAX_DATAGRAM_BYTES`. docs/PROTOCOL.md describes every byte.

``HEADER``, ``FRAME`` and ``DATAGRAM`` are the declarations (construct); the hot path uses
:func:`encode_datagram` and :func:`decode_datagram_untrusted`, which are derived from them by
hand and checked against them by tests/test_wire.py on every run.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from construct import (
    BitsInteger,
    BitStruct,
    Bytes,
    Const,
    Flag,
    GreedyRange,
    Int8ub,
    Int16ub,
    Int32ub,
    Nibble,
    Struct,
    VarInt,
    this,
)

from netcode.errors import ProtocolError

__all__ = [
    "DATAGRAM",
    "FRAME",
    "HEADER",
    "HEADER_BYTES",
    "MAX_DATAGRAM_BYTES",
    "MAX_FRAME_PAYLOAD_BYTES",
    "PROTOCOL_VERSION",
    "DecodedDatagram",
    "decode_datagram_untrusted",
    "encode_datagram",
    "frame_bytes",
]

#: Largest data-channel message that aiortc and browsers send as a single UDP packet
#: (../shared/PLATFORM-FACTS.md: 1160 bytes; a 1300-byte message already takes two packets).
MAX_DATAGRAM_BYTES = 1160

#: Version byte at the start of every datagram; a peer speaking another version is refused.
PROTOCOL_VERSION = 1

#: A frame length is a LEB128 varint of at most two bytes, so no frame exceeds this.
_MAX_VARINT2 = 0x3FFF

HEADER = Struct(
    "prefix"
    / BitStruct(
        "version" / Const(PROTOCOL_VERSION, Nibble),
        "reserved" / Const(0, BitsInteger(3)),
        # Clear until the sender has received a datagram: then ack and ack_bits are zero and
        # mean nothing (no sequence value can stand for "nothing received").
        "has_ack" / Flag,
    ),
    "sequence" / Int16ub,  # this datagram's sequence number, wrapping at 2**16
    "ack" / Int16ub,  # newest sequence received from the peer
    "ack_bits" / Int32ub,  # bit i set: sequence (ack - 1 - i) was received too
)

FRAME = Struct(
    "type" / Int8ub,
    "length" / VarInt,
    "payload" / Bytes(this.length),
)

DATAGRAM = Struct(
    "header" / HEADER,
    "frames" / GreedyRange(FRAME),
)

_HEADER = struct.Struct("!BHHI")
HEADER_BYTES = _HEADER.size
assert HEADER.sizeof() == HEADER_BYTES

#: The largest payload one frame can carry in one datagram (header + 1-byte type + 2-byte length).
MAX_FRAME_PAYLOAD_BYTES = MAX_DATAGRAM_BYTES - HEADER_BYTES - 3


class DecodedDatagram(NamedTuple):
    """A datagram as read off the wire."""

    sequence: int
    #: newest sequence the sender has received from us, or None if it has received nothing
    ack: int | None
    ack_bits: int
    frames: list[tuple[int, bytes]]


def frame_bytes(payload_bytes: int) -> int:
    """Bytes a frame with a payload of ``payload_bytes`` takes in a datagram."""
    return payload_bytes + (2 if payload_bytes < 0x80 else 3)


_PREFIX_NO_ACK = PROTOCOL_VERSION << 4
_PREFIX_HAS_ACK = _PREFIX_NO_ACK | 1


def encode_datagram(
    sequence: int, ack: int | None, ack_bits: int, frames: list[tuple[int, bytes]]
) -> bytes:
    """Build one datagram; raises ValueError if it would exceed MAX_DATAGRAM_BYTES.

    ``ack`` is None until we have received a datagram from the peer.
    """
    if ack is None:
        parts = [_HEADER.pack(_PREFIX_NO_ACK, sequence, 0, 0)]
    else:
        parts = [_HEADER.pack(_PREFIX_HAS_ACK, sequence, ack, ack_bits)]
    size = HEADER_BYTES
    for frame_type, payload in frames:
        n = len(payload)
        if n < 0x80:
            parts.append(bytes((frame_type, n)))
            size += 2 + n
        elif n <= _MAX_VARINT2:
            parts.append(bytes((frame_type, (n & 0x7F) | 0x80, n >> 7)))
            size += 3 + n
        else:
            raise ValueError(f"frame payload of {n} bytes exceeds {MAX_DATAGRAM_BYTES}")
        parts.append(payload)
    if size > MAX_DATAGRAM_BYTES:
        raise ValueError(
            f"datagram of {size} bytes exceeds MAX_DATAGRAM_BYTES={MAX_DATAGRAM_BYTES}"
        )
    return b"".join(parts)


def decode_datagram_untrusted(data: bytes) -> DecodedDatagram:
    """Parse a datagram from a peer. Raises ProtocolError and nothing else on bad input.

    Stricter than ``DATAGRAM.parse``: it refuses oversized datagrams, frame type 0 and
    non-canonical (padded) length varints, so that a datagram that decodes always re-encodes
    to the same bytes.
    """
    n = len(data)
    if n < HEADER_BYTES:
        raise ProtocolError(f"datagram of {n} bytes is shorter than its {HEADER_BYTES}-byte header")
    if n > MAX_DATAGRAM_BYTES:
        raise ProtocolError(
            f"datagram of {n} bytes exceeds MAX_DATAGRAM_BYTES={MAX_DATAGRAM_BYTES}"
        )
    prefix, sequence, ack, ack_bits = _HEADER.unpack_from(data)
    if prefix >> 4 != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {prefix >> 4}, expected {PROTOCOL_VERSION}")
    if prefix == _PREFIX_NO_ACK:
        if ack or ack_bits:
            raise ProtocolError("ack fields set in a datagram that acknowledges nothing")
        ack = None
    elif prefix != _PREFIX_HAS_ACK:
        raise ProtocolError(f"reserved header flags set: {prefix & 0x0F:#x}")
    frames: list[tuple[int, bytes]] = []
    i = HEADER_BYTES
    while i < n:
        frame_type = data[i]
        if frame_type == 0:
            raise ProtocolError("frame type 0 is reserved")
        if i + 1 >= n:
            raise ProtocolError("frame truncated before its length")
        length = data[i + 1]
        i += 2
        if length & 0x80:
            if i >= n:
                raise ProtocolError("frame truncated inside its length")
            high = data[i]
            i += 1
            if high == 0 or high & 0x80:
                raise ProtocolError("frame length is not a canonical 1- or 2-byte varint")
            length = (length & 0x7F) | (high << 7)
        end = i + length
        if end > n:
            raise ProtocolError(f"frame of {length} bytes runs past the datagram's end")
        frames.append((frame_type, bytes(data[i:end])))
        i = end
    return DecodedDatagram(sequence, ack, ack_bits, frames)
