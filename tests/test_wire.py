"""The datagram wire format: fixtures, agreement with the construct declaration, bad input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netcode.errors import ProtocolError
from netcode.wire import (
    DATAGRAM,
    FRAGMENT_HEADER_BYTES,
    HEADER,
    HEADER_BYTES,
    MAX_DATAGRAM_BYTES,
    MAX_FRAME_PAYLOAD_BYTES,
    FragmentHeader,
    FrameType,
    decode_datagram_untrusted,
    decode_fragment_untrusted,
    decode_ping_untrusted,
    decode_pong_untrusted,
    encode_datagram,
    encode_fragment,
    encode_ping,
    encode_pong,
)
from netcode.wire.frames import FRAGMENT, PING, PONG

# Hand-assembled datagrams, byte for byte as docs/PROTOCOL.md describes them.
FIXTURES = {
    "first datagram, acknowledges nothing, one PING": bytes.fromhex("10000000000000000001020007"),
    "acks 0x1234 and 0x1232, two DATA frames": bytes.fromhex("11004212340000000210036162631000"),
    "a 200-byte frame uses a two-byte length": bytes.fromhex("11ffff0001ffffffff10c801")
    + b"x" * 200,
}


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_parse_then_build_gives_the_same_bytes(name: str) -> None:
    data = FIXTURES[name]
    parsed = DATAGRAM.parse(data)
    assert DATAGRAM.build(parsed) == data
    fast = decode_datagram_untrusted(data)
    assert encode_datagram(*fast) == data
    assert fast.sequence == parsed.header.sequence
    assert [(f.type, f.payload) for f in parsed.frames] == fast.frames


def test_fixture_fields() -> None:
    d = decode_datagram_untrusted(FIXTURES["acks 0x1234 and 0x1232, two DATA frames"])
    assert (d.sequence, d.ack, d.ack_bits) == (0x42, 0x1234, 0b10)
    assert d.frames == [(FrameType.DATA, b"abc"), (FrameType.DATA, b"")]
    first = decode_datagram_untrusted(FIXTURES["first datagram, acknowledges nothing, one PING"])
    assert first.ack is None
    assert decode_ping_untrusted(first.frames[0][1]) == 7


def test_header_size_matches_the_declaration() -> None:
    assert HEADER_BYTES == HEADER.sizeof() == 9


frames_strategy = st.lists(
    st.tuples(st.integers(1, 255), st.binary(max_size=300)), max_size=6
).filter(lambda fs: HEADER_BYTES + sum(len(p) + 3 for _, p in fs) <= MAX_DATAGRAM_BYTES)


@given(
    sequence=st.integers(0, 0xFFFF),
    ack=st.none() | st.integers(0, 0xFFFF),
    ack_bits=st.integers(0, 0xFFFFFFFF),
    frames=frames_strategy,
)
def test_fast_codec_agrees_with_the_declaration(
    sequence: int, ack: int | None, ack_bits: int, frames: list[tuple[int, bytes]]
) -> None:
    bits = 0 if ack is None else ack_bits
    data = encode_datagram(sequence, ack, bits, frames)
    declared = DATAGRAM.build(
        {
            "header": {
                "prefix": {"has_ack": ack is not None},
                "sequence": sequence,
                "ack": ack or 0,
                "ack_bits": bits,
            },
            "frames": [{"type": t, "length": len(p), "payload": p} for t, p in frames],
        }
    )
    assert data == declared
    assert decode_datagram_untrusted(data) == (sequence, ack, bits, frames)


@given(st.binary(max_size=1300))
def test_random_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    try:
        decoded = decode_datagram_untrusted(data)
    except ProtocolError:
        return
    assert encode_datagram(*decoded) == data  # canonical: decoding is injective


@given(frames=frames_strategy, cut=st.integers(0, 2000), flip=st.integers(0, 2000))
def test_mutated_datagrams_decode_or_raise_protocol_error(
    frames: list[tuple[int, bytes]], cut: int, flip: int
) -> None:
    data = bytearray(encode_datagram(1, 2, 3, frames))
    data[flip % len(data)] ^= 0xFF
    for candidate in (bytes(data), bytes(data[: cut % (len(data) + 1)])):
        with contextlib.suppress(ProtocolError):
            decode_datagram_untrusted(candidate)


def test_nothing_builds_a_datagram_over_the_limit() -> None:
    encode_datagram(0, None, 0, [(FrameType.DATA, b"x" * MAX_FRAME_PAYLOAD_BYTES)])
    with pytest.raises(ValueError, match="1160"):
        encode_datagram(0, None, 0, [(FrameType.DATA, b"x" * (MAX_FRAME_PAYLOAD_BYTES + 1))])
    with pytest.raises(ValueError, match="1160"):
        encode_datagram(0, None, 0, [(FrameType.DATA, b"x" * 600)] * 2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x10\x00", "shorter"),
        (b"\x20" + bytes(8), "version"),
        (b"\x12" + bytes(8), "reserved"),
        (b"\x10\x00\x00\x00\x01" + bytes(4), "ack fields"),
        (b"\x11" + bytes(8) + b"\x00\x00", "reserved"),
        (b"\x11" + bytes(8) + b"\x10", "truncated"),
        (b"\x11" + bytes(8) + b"\x10\x05ab", "past"),
        (b"\x11" + bytes(8) + b"\x10\x80\x00", "canonical"),
        (b"\x11" + bytes(8) + b"\x10\x81", "truncated"),
        (b"\x11" + bytes(MAX_DATAGRAM_BYTES), "exceeds"),
    ],
)
def test_specific_bad_datagrams_name_their_fault(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_datagram_untrusted(data)


def test_core_frame_payloads_agree_with_their_declarations() -> None:
    assert PING.build({"ping_id": 513}) == encode_ping(513)
    pong = encode_pong(9, 1500, 12.25)
    assert PONG.build({"ping_id": 9, "hold_us": 1500, "responder_time": 12.25}) == pong
    assert decode_pong_untrusted(pong) == (9, 1500, 12.25)
    header = FragmentHeader(FrameType.DATA, 77, 1, 3)
    fragment = encode_fragment(header, b"piece")
    assert FRAGMENT.build({**header._asdict(), "data": b"piece"}) == fragment
    assert decode_fragment_untrusted(fragment) == (header, b"piece")
    assert len(fragment) == FRAGMENT_HEADER_BYTES + 5


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        encode_fragment(FragmentHeader(FrameType.DATA, 1, 0, 3), b""),
        encode_fragment(FragmentHeader(FrameType.DATA, 1, 3, 3), b"x"),
        encode_fragment(FragmentHeader(FrameType.DATA, 1, 0, 1), b"x"),
        encode_fragment(FragmentHeader(FrameType.FRAGMENT, 1, 0, 2), b"x"),
    ],
)
def test_bad_fragments_raise_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_fragment_untrusted(payload)


@given(st.binary(max_size=40))
def test_core_frame_decoders_raise_only_protocol_error(payload: bytes) -> None:
    for decode in (decode_ping_untrusted, decode_pong_untrusted, decode_fragment_untrusted):
        with contextlib.suppress(ProtocolError):
            decode(payload)
