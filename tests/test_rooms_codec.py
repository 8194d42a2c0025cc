"""The rooms messages built and parsed without construct match the construct declaration.

``encode_message`` and ``decode_message_untrusted`` take a struct fast path for the hot
kinds (DATA, TOPIC, ACK, EXTENSION). Both ways must agree with ``MESSAGE`` exactly: the same
bytes for the same fields, the same fields for valid bytes, and a ProtocolError for every
input the declaration refuses.
"""

from __future__ import annotations

from typing import Any

import pytest
from construct import ConstructError
from hypothesis import given, settings
from hypothesis import strategies as st

from netcode.errors import ProtocolError
from netcode.rooms.protocol import MESSAGE, Kind, decode_message_untrusted, encode_message

u16 = st.integers(0, 0xFFFF)
FIELDS = {
    Kind.DATA: st.fixed_dictionaries(
        {
            "pid": u16,
            "topic_id": u16,
            "text": st.booleans(),
            "destinations": st.lists(u16, max_size=200),
            "payload": st.binary(max_size=300),
        }
    ),
    Kind.TOPIC: st.fixed_dictionaries({"topic_id": u16, "name": st.text(max_size=200)}),
    Kind.ACK: st.fixed_dictionaries({"received": st.integers(0, 2**64 - 1)}),
    Kind.EXTENSION: st.fixed_dictionaries(
        {"channel": st.integers(0, 255), "pid": u16, "body": st.binary(max_size=300)}
    ),
}


def _plain(body: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in body.items() if k[0] != "_"}


def _slow_parse(data: bytes) -> tuple[Kind, dict[str, Any]] | None:
    try:
        parsed = MESSAGE.parse(data)
    except (ConstructError, UnicodeDecodeError, ValueError):
        return None
    return Kind(parsed.kind), _plain(parsed.body)


def _fast_parse(data: bytes) -> tuple[Kind, dict[str, Any]] | None:
    try:
        kind, body = decode_message_untrusted(data)
    except ProtocolError:
        return None
    return kind, _plain(body)


@pytest.mark.parametrize("kind", list(FIELDS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_fast_encoder_builds_what_the_declaration_builds(kind: Kind, data: Any) -> None:
    fields = data.draw(FIELDS[kind])
    built = encode_message(kind, **fields)
    assert built == bytes(MESSAGE.build({"kind": kind, "body": fields}))
    parsed = _fast_parse(built)
    assert parsed is not None
    assert parsed == _slow_parse(built)
    assert parsed[1] == fields


@pytest.mark.parametrize("kind", list(FIELDS))
@settings(max_examples=300, deadline=None)
@given(rest=st.binary(max_size=40))
def test_the_fast_decoder_refuses_what_the_declaration_refuses(kind: Kind, rest: bytes) -> None:
    data = bytes((kind,)) + rest
    assert _fast_parse(data) == _slow_parse(data)


@pytest.mark.parametrize(
    "data",
    [
        bytes((Kind.DATA,)) + b"\x00\x01\x00\x02\x01" + b"\x80\x80\x01" + b"\x00" * 3,  # 16384 pids
        bytes((Kind.DATA,)) + b"\x00\x01\x00\x02\x01" + b"\x80\x00" + b"ok",  # long zero VarInt
        bytes((Kind.TOPIC,)) + b"\x00\x07\x02\xc3\x28",  # not UTF-8
        bytes((Kind.TOPIC,)) + b"\x00\x07\x01ab",  # trailing byte
        bytes((Kind.ACK,)) + b"\x00" * 9,  # trailing byte
        bytes((Kind.EXTENSION,)) + b"\x05\x00",  # short
    ],
)
def test_edge_cases_agree(data: bytes) -> None:
    assert _fast_parse(data) == _slow_parse(data)
