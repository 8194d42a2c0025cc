"""The bytes on the wire: construct declarations (the single source of truth) and fast codecs.

This package does no IO and reads no clock.
"""

from netcode.wire.datagram import (
    DATAGRAM,
    FRAME,
    HEADER,
    HEADER_BYTES,
    MAX_DATAGRAM_BYTES,
    MAX_FRAME_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    DecodedDatagram,
    decode_datagram_untrusted,
    encode_datagram,
    frame_bytes,
)
from netcode.wire.events import (
    EVENT,
    EVENT_FRAME_HEADER_BYTES,
    MAX_EVENT_ID_SPAN,
    EventFrame,
    decode_event_frame_untrusted,
    encode_event_frame,
    event_entry_bytes,
)
from netcode.wire.frames import (
    FRAGMENT_HEADER_BYTES,
    FragmentHeader,
    FrameType,
    Pong,
    decode_fragment_untrusted,
    decode_ping_untrusted,
    decode_pong_untrusted,
    encode_fragment,
    encode_ping,
    encode_pong,
)

__all__ = [
    "DATAGRAM",
    "EVENT",
    "EVENT_FRAME_HEADER_BYTES",
    "FRAGMENT_HEADER_BYTES",
    "FRAME",
    "HEADER",
    "HEADER_BYTES",
    "MAX_DATAGRAM_BYTES",
    "MAX_EVENT_ID_SPAN",
    "MAX_FRAME_PAYLOAD_BYTES",
    "PROTOCOL_VERSION",
    "DecodedDatagram",
    "EventFrame",
    "FragmentHeader",
    "FrameType",
    "Pong",
    "decode_datagram_untrusted",
    "decode_event_frame_untrusted",
    "decode_fragment_untrusted",
    "decode_ping_untrusted",
    "decode_pong_untrusted",
    "encode_datagram",
    "encode_event_frame",
    "encode_fragment",
    "encode_ping",
    "encode_pong",
    "event_entry_bytes",
    "frame_bytes",
]
