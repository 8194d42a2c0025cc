"""Frame types and the payloads of the frames the connection core handles itself.

Every frame type is registered here, in one table, so that two layers can never claim the
same byte. Payloads of the higher layers' frames (snapshots, inputs, events) are declared in
those layers' own ``wire`` modules.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from construct import Float64b, GreedyBytes, Int8ub, Int16ub, Int32ub, Struct

from netcode.errors import ProtocolError

__all__ = [
    "FRAGMENT",
    "FRAGMENT_HEADER_BYTES",
    "PING",
    "PONG",
    "FragmentHeader",
    "FrameType",
    "Pong",
    "decode_fragment_untrusted",
    "decode_ping_untrusted",
    "decode_pong_untrusted",
    "encode_fragment",
    "encode_ping",
    "encode_pong",
]


class FrameType(enum.IntEnum):
    """Frame types. 0 is reserved; 1-15 belong to the core, 16-63 to netcode's layers."""

    PING = 1  #: asks the peer for a PONG (round trip and clock offset)
    PONG = 2  #: answers a PING with the responder's clock
    FRAGMENT = 3  #: one piece of a message too large for a single datagram
    DATA = 16  #: an application payload (``publish_data(reliable=False)``)
    SNAPSHOT = 17  #: one self-contained part of a state snapshot
    INPUT = 18  #: a client's recent inputs, sent redundantly
    EVENT = 19  #: reliable-ordered game events riding the lossy channel
    INPUT_ACK = 21  #: the server's last applied input, per snapshot tick
    RECEIPT = 22  #: the snapshot parts a client applied, its limits, or a resync request


PING = Struct("ping_id" / Int16ub)

PONG = Struct(
    "ping_id" / Int16ub,
    "hold_us" / Int32ub,  # microseconds the PING waited at the responder before the PONG left
    "responder_time" / Float64b,  # responder's clock (seconds) when the PONG left
)

FRAGMENT = Struct(
    "inner_type" / Int8ub,  # frame type of the whole message
    "message_id" / Int16ub,
    "fragment_index" / Int8ub,
    "fragment_count" / Int8ub,
    "data" / GreedyBytes,
)

_PING = struct.Struct("!H")
_PONG = struct.Struct("!HId")
_FRAGMENT = struct.Struct("!BHBB")
FRAGMENT_HEADER_BYTES = _FRAGMENT.size
assert _PING.size == PING.sizeof() and _PONG.size == PONG.sizeof()


class Pong(NamedTuple):
    ping_id: int
    hold_us: int
    responder_time: float


class FragmentHeader(NamedTuple):
    inner_type: int
    message_id: int
    fragment_index: int
    fragment_count: int


def encode_ping(ping_id: int) -> bytes:
    return _PING.pack(ping_id)


def decode_ping_untrusted(payload: bytes) -> int:
    if len(payload) != _PING.size:
        raise ProtocolError(f"PING payload of {len(payload)} bytes, expected {_PING.size}")
    return int(_PING.unpack(payload)[0])


def encode_pong(ping_id: int, hold_us: int, responder_time: float) -> bytes:
    return _PONG.pack(ping_id, min(max(hold_us, 0), 0xFFFFFFFF), responder_time)


def decode_pong_untrusted(payload: bytes) -> Pong:
    if len(payload) != _PONG.size:
        raise ProtocolError(f"PONG payload of {len(payload)} bytes, expected {_PONG.size}")
    pong = Pong(*_PONG.unpack(payload))
    if pong.responder_time != pong.responder_time:  # NaN
        raise ProtocolError("PONG carries a NaN clock")
    return pong


def encode_fragment(header: FragmentHeader, data: bytes) -> bytes:
    return _FRAGMENT.pack(*header) + data


def decode_fragment_untrusted(payload: bytes) -> tuple[FragmentHeader, bytes]:
    if len(payload) <= FRAGMENT_HEADER_BYTES:
        raise ProtocolError(f"FRAGMENT payload of {len(payload)} bytes carries no data")
    header = FragmentHeader(*_FRAGMENT.unpack_from(payload))
    if header.fragment_count < 2 or header.fragment_index >= header.fragment_count:
        raise ProtocolError(
            f"FRAGMENT {header.fragment_index} of {header.fragment_count} is not a valid piece"
        )
    if header.inner_type in (0, FrameType.FRAGMENT):
        raise ProtocolError(f"FRAGMENT carries frame type {header.inner_type}")
    return header, payload[FRAGMENT_HEADER_BYTES:]
