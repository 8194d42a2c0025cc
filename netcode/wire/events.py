"""The EVENT frame: reliable-ordered game events riding the lossy channel.

``EVENT`` (construct) is the declaration and the single source of truth; the channel uses
:func:`encode_event_frame` and :func:`decode_event_frame_untrusted`, derived from it by hand
and checked against it by tests/test_reliable.py. docs/PROTOCOL.md ("EVENT") has the bytes.

A frame names a ``base_id`` and carries zero or more messages in increasing id order. Each
message says how many ids it skips (the ids already acknowledged, or not due for a resend,
or sent over the fallback path), so a run of consecutive ids costs one byte of id each::

    id[0] = base_id + skip[0]
    id[i] = id[i-1] + 1 + skip[i]

The encoder always writes ``skip[0] = 0`` for a frame with messages. A frame without
messages is a *fallback acknowledgement*: its sender has received every message before
``base_id`` (the owner of a :class:`~netcode.core.ReliableChannel` needs it only to keep
its send window honest when messages went over the reliable fallback path).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from construct import Bytes, GreedyRange, Int16ub, Struct, VarInt, this

from netcode.errors import ProtocolError

__all__ = [
    "EVENT",
    "EVENT_FRAME_HEADER_BYTES",
    "EVENT_MESSAGE",
    "MAX_EVENT_ID_SPAN",
    "EventFrame",
    "decode_event_frame_untrusted",
    "encode_event_frame",
    "event_entry_bytes",
]

EVENT_MESSAGE = Struct(
    "skip" / VarInt,  # ids between the previous message (or base_id - 1) and this one, minus 1
    "length" / VarInt,
    "data" / Bytes(this.length),
)

EVENT = Struct(
    "base_id" / Int16ub,
    "messages" / GreedyRange(EVENT_MESSAGE),
)

_BASE = struct.Struct("!H")
EVENT_FRAME_HEADER_BYTES = _BASE.size

#: Ids in one frame span at most this much (last id - base_id), half the 16-bit id space, so
#: that every id in a frame compares unambiguously with the others.
MAX_EVENT_ID_SPAN = 0x7FFF

#: Varints here are LEB128 of at most two bytes, as the frame length in the datagram.
_MAX_VARINT2 = 0x3FFF


class EventFrame(NamedTuple):
    """An EVENT frame as read off the wire."""

    base_id: int
    #: (message id, message bytes) in increasing id order; empty for a fallback acknowledgement
    messages: list[tuple[int, bytes]]


def _varint_bytes(value: int) -> int:
    return 1 if value < 0x80 else 2


def event_entry_bytes(skip: int, length: int) -> int:
    """Bytes one message takes in an EVENT frame (skip and length varints, then the data)."""
    return _varint_bytes(skip) + _varint_bytes(length) + length


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    if value <= _MAX_VARINT2:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    raise ValueError(f"{value} does not fit a two-byte varint (max {_MAX_VARINT2})")


def encode_event_frame(base_id: int, messages: Sequence[tuple[int, bytes]]) -> bytes:
    """Build an EVENT frame payload. Ids must increase and lie within MAX_EVENT_ID_SPAN."""
    parts = [_BASE.pack(base_id)]
    previous = (base_id - 1) & 0xFFFF
    span = -1
    for message_id, data in messages:
        skip = (message_id - previous - 1) & 0xFFFF
        span += skip + 1
        if span > MAX_EVENT_ID_SPAN:
            raise ValueError(
                f"message id {message_id} is not in increasing order within "
                f"{MAX_EVENT_ID_SPAN} of base id {base_id}"
            )
        parts.append(_varint(skip))
        parts.append(_varint(len(data)))
        parts.append(data)
        previous = message_id
    return b"".join(parts)


def decode_event_frame_untrusted(payload: bytes) -> EventFrame:
    """Parse an EVENT frame from a peer. Raises ProtocolError and nothing else on bad input.

    Stricter than ``EVENT.parse``: varints must be canonical and at most two bytes, and ids
    must stay within MAX_EVENT_ID_SPAN of ``base_id``, so that a frame that decodes always
    re-encodes to the same bytes.
    """
    n = len(payload)
    if n < EVENT_FRAME_HEADER_BYTES:
        raise ProtocolError(f"EVENT frame of {n} bytes is shorter than its 2-byte base id")
    (base_id,) = _BASE.unpack_from(payload)
    messages: list[tuple[int, bytes]] = []
    i = EVENT_FRAME_HEADER_BYTES
    span = -1
    while i < n:
        fields = []
        for name in ("skip", "length"):
            if i >= n:
                raise ProtocolError(f"EVENT message truncated before its {name}")
            value = payload[i]
            i += 1
            if value & 0x80:
                if i >= n:
                    raise ProtocolError(f"EVENT message truncated inside its {name}")
                high = payload[i]
                i += 1
                if high == 0 or high & 0x80:
                    raise ProtocolError(f"EVENT {name} is not a canonical 1- or 2-byte varint")
                value = (value & 0x7F) | (high << 7)
            fields.append(value)
        skip, length = fields
        span += skip + 1
        if span > MAX_EVENT_ID_SPAN:
            raise ProtocolError(f"EVENT message ids span more than {MAX_EVENT_ID_SPAN}")
        end = i + length
        if end > n:
            raise ProtocolError(f"EVENT message of {length} bytes runs past the frame's end")
        messages.append(((base_id + span) & 0xFFFF, bytes(payload[i:end])))
        i = end
    return EventFrame(base_id, messages)
