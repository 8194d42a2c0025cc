"""Property tests of everything that takes peer input: decoders and the state machines that
call them. Arbitrary bytes and mutations of valid encodings (bit flips, interesting values,
truncation, extension, insertion, deletion, splices of two valid encodings) either decode or
raise ProtocolError, never anything else; valid encodings round-trip; and the state machines
stay within their bounds whatever they are fed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netcode.auth import MalformedToken, TokenError, TokenVerifier
from netcode.core import Endpoint, FrameReceived, ReliableChannel, ReliableConfig
from netcode.core.fragments import FRAGMENT_DATA_BYTES, Reassembler, split_message
from netcode.errors import ProtocolError
from netcode.replication import Receipt, SnapshotDecoder, SnapshotEncoder, World
from netcode.replication.decoder import decode_part_untrusted
from netcode.replication.inputs import (
    NO_INPUT,
    InputReceiver,
    decode_input_ack_untrusted,
    decode_inputs_untrusted,
    encode_input_ack,
    encode_inputs,
)
from netcode.replication.wire import (
    decode_part_header_untrusted,
    decode_receipt_untrusted,
    encode_receipt,
)
from netcode.rooms.host import (
    HELLO,
    decode_hello_untrusted,
    decode_receipt_frame_untrusted,
    encode_receipt_frame,
)
from netcode.rooms.topics import MAX_TOPICS, IncomingTopics
from netcode.wire import (
    MAX_DATAGRAM_BYTES,
    FragmentHeader,
    FrameType,
    decode_datagram_untrusted,
    decode_event_frame_untrusted,
    decode_fragment_untrusted,
    decode_ping_untrusted,
    decode_pong_untrusted,
    encode_datagram,
    encode_event_frame,
    encode_fragment,
    encode_ping,
    encode_pong,
)

#: Examples per property in the default run (fast); NETCODE_FUZZ_EXAMPLES=2000 for a deep one.
EXAMPLES = int(os.environ.get("NETCODE_FUZZ_EXAMPLES", "40"))
fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_INTERESTING = (b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff", b"\x00\x00", b"\xff\xff", b"\x80\x00")


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with one to four mutations: bit flips, interesting values,
    truncation, extension, insertion, deletion, or a splice with another valid encoding."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        op = draw(st.integers(0, 6))
        at = draw(st.integers(0, n))
        if op == 0 and n:
            data[min(at, n - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            value = draw(st.sampled_from(_INTERESTING))
            data[at : at + len(value)] = value
        elif op == 2:
            del data[at:]
        elif op == 3:
            data += draw(st.binary(min_size=1, max_size=16))
        elif op == 4:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == 5:
            del data[at : at + draw(st.integers(1, 8))]
        else:
            other = draw(valid)
            data = data[:at] + other[draw(st.integers(0, len(other))) :]
    return bytes(data)


def arbitrary_or_mutated(valid: st.SearchStrategy[bytes], max_size: int = 300) -> Any:
    return st.one_of(st.binary(max_size=max_size), mutated(valid), valid)


def decodes_or_refuses(decode: Callable[[bytes], Any], data: bytes) -> Any:
    """decode(data), or None if it raised ProtocolError; anything else fails the test."""
    try:
        return decode(data)
    except ProtocolError:
        return None


# --- regressions found by netcode-fuzz -------------------------------------------------------


@pytest.mark.parametrize("first", [NO_INPUT - 1, NO_INPUT, 2**32 - 2])
def test_input_ticks_past_the_input_ack_range_are_refused(first: int) -> None:
    # An INPUT frame whose ticks ran past 2**32 - 2 was accepted; the host then failed to
    # encode its INPUT_ACK every tick (struct.error), and cut the client off.
    payload = encode_inputs(first, [b"a", b"b"])
    with pytest.raises(ProtocolError):
        decode_inputs_untrusted(payload)


@fuzz_settings
@given(st.integers(0, 2**32 - 1), st.lists(st.binary(max_size=4), max_size=8))
def test_every_tick_an_accepted_input_frame_names_fits_an_input_ack(
    first: int, inputs: list[bytes]
) -> None:
    receiver = InputReceiver()
    try:
        fresh = receiver.receive(encode_inputs(first, inputs))
    except ProtocolError:
        return
    for tick, _ in fresh:
        encode_input_ack(0, tick)  # raises if the tick does not fit


@fuzz_settings
@given(st.text(max_size=40))
def test_any_token_string_is_refused_with_a_token_error(token: str) -> None:
    # A token with a lone surrogate raised UnicodeEncodeError out of verify(): the
    # signaling handler answered 500 and logged a traceback per request.
    verifier = TokenVerifier("key", "secret-secret-secret-secret-secret-00")
    with pytest.raises(TokenError):
        verifier.verify(token)


def test_a_token_that_is_not_ascii_is_malformed() -> None:
    verifier = TokenVerifier("key", "secret-secret-secret-secret-secret-00")
    with pytest.raises(MalformedToken):
        verifier.verify("\ud800.\ud800.\ud800")


# --- wire: datagrams and the core frames ------------------------------------------------------

_frames = st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=200)), max_size=5).filter(
    lambda fs: 9 + sum(len(p) + 3 for _, p in fs) <= MAX_DATAGRAM_BYTES
)


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    ack = draw(st.none() | st.integers(0, 0xFFFF))
    bits = 0 if ack is None else draw(st.integers(0, 2**32 - 1))
    return encode_datagram(draw(st.integers(0, 0xFFFF)), ack, bits, draw(_frames))


@fuzz_settings
@given(arbitrary_or_mutated(datagrams(), 1300))
def test_datagrams_decode_canonically_or_are_refused(data: bytes) -> None:
    decoded = decodes_or_refuses(decode_datagram_untrusted, data)
    if decoded is not None:  # what decodes re-encodes to the same bytes
        assert encode_datagram(*decoded) == data


@st.composite
def event_frames(draw: st.DrawFn) -> bytes:
    base = draw(st.integers(0, 0xFFFF))
    skips = draw(st.lists(st.integers(0, 300), max_size=6))
    messages, next_id = [], base
    for skip in skips:
        next_id = (next_id + skip) & 0xFFFF
        messages.append((next_id, draw(st.binary(max_size=40))))
        next_id = (next_id + 1) & 0xFFFF
    if messages:  # the encoder always writes skip 0 first
        messages[0] = (base, messages[0][1])
    return encode_event_frame(base, messages)


@fuzz_settings
@given(arbitrary_or_mutated(event_frames()))
def test_event_frames_decode_canonically_or_are_refused(data: bytes) -> None:
    frame = decodes_or_refuses(decode_event_frame_untrusted, data)
    if frame is not None:
        assert encode_event_frame(frame.base_id, frame.messages) == data


_fragments = st.builds(
    lambda t, m, c, i, d: encode_fragment(FragmentHeader(t, m, i % c, c), d),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(1, 255),
    st.integers(0, 255),
    st.binary(min_size=1, max_size=50),
)


@fuzz_settings
@given(
    arbitrary_or_mutated(st.builds(encode_ping, st.integers(0, 0xFFFF)), 40),
    arbitrary_or_mutated(
        st.builds(encode_pong, st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.floats()),
        40,
    ),
    arbitrary_or_mutated(_fragments, 80),
)
def test_core_frames_decode_or_are_refused(ping: bytes, pong: bytes, fragment: bytes) -> None:
    decodes_or_refuses(decode_ping_untrusted, ping)
    decoded = decodes_or_refuses(decode_pong_untrusted, pong)
    if decoded is not None:
        assert decoded.responder_time == decoded.responder_time  # never NaN
    piece = decodes_or_refuses(decode_fragment_untrusted, fragment)
    if piece is not None:
        header, data = piece
        assert header.fragment_count >= 2 and header.fragment_index < header.fragment_count
        assert encode_fragment(header, data) == fragment


# --- the endpoint: a stream of datagrams from a peer, some mutated ------------------------------


@st.composite
def peer_streams(draw: st.DrawFn) -> list[bytes]:
    """Datagrams a real peer endpoint sends (data, pings, fragmented messages), some mutated,
    duplicated, reordered or replaced by garbage."""
    peer = Endpoint()
    now = 0.0
    out: list[bytes] = []
    for _ in range(draw(st.integers(1, 12))):
        now += 0.01
        for _ in range(draw(st.integers(0, 3))):
            size = draw(st.sampled_from((0, 10, 500, 3000)))
            peer.send_frame(draw(st.sampled_from((FrameType.DATA, FrameType.INPUT))), bytes(size))
        out.extend(peer.datagrams_to_send(now))
    stream: list[bytes] = []
    for data in out:
        roll = draw(st.integers(0, 9))
        if roll < 6:
            stream.append(data)
        elif roll < 8:
            stream.append(draw(mutated(st.just(data))))
        elif roll == 8:
            stream.extend((data, data))
        else:
            stream.append(draw(st.binary(max_size=60)))
    if draw(st.booleans()):
        stream.reverse()
    return stream


@fuzz_settings
@given(peer_streams())
def test_an_endpoint_takes_any_stream_of_datagrams_within_its_bounds(
    stream: list[bytes],
) -> None:
    endpoint = Endpoint()
    now = 0.0
    for data in stream:
        now += 0.005
        endpoint.receive_datagram(data, now)  # never raises
        endpoint.handle_timer(now)
        endpoint.datagrams_to_send(now)
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, FrameReceived):
                assert len(event.payload) <= endpoint.config.max_message_bytes
    config = endpoint.config
    assert endpoint._reassembler.buffered_bytes <= config.max_reassembly_bytes
    assert len(endpoint._pongs_owed) <= 4
    counters = endpoint.counters
    assert counters.datagrams_received == len(stream)


# --- the reliable channel: frames and fallback messages from a peer -----------------------------


@st.composite
def channel_inputs(draw: st.DrawFn) -> tuple[list[bytes], list[tuple[str, Any]]]:
    """Messages a real sender channel sends, as the frames and fallback messages that carry
    them, lost, duplicated, reordered, mutated or replaced by garbage."""
    config = ReliableConfig(max_inline_bytes=100)
    sender_endpoint = Endpoint()
    fallbacks: list[tuple[int, bytes]] = []
    sender = ReliableChannel(
        sender_endpoint, config, fallback=lambda i, m: fallbacks.append((i, m))
    )
    sent = [
        bytes([i % 256]) * draw(st.sampled_from((1, 5, 150)))
        for i in range(draw(st.integers(1, 30)))
    ]
    for message in sent:
        sender.send(message)
    sender.flush(0.0)
    frames = [p for t, p in _frames_of(sender_endpoint, 0.0) if t == FrameType.EVENT]
    inputs: list[tuple[str, Any]] = [("frame", f) for f in frames]
    inputs += [("fallback", item) for item in fallbacks]
    out: list[tuple[str, Any]] = []
    for kind, value in draw(st.permutations(inputs)):
        roll = draw(st.integers(0, 9))
        if roll < 7:
            out.append((kind, value))
        elif roll == 7:
            out.extend(((kind, value), (kind, value)))
        elif roll == 8 and kind == "frame":
            out.append(("mutated", draw(mutated(st.just(value)))))
        else:
            out.append(("mutated", draw(st.binary(max_size=40))))
    return sent, out


def _frames_of(endpoint: Endpoint, now: float) -> list[Any]:
    out = []
    for data in endpoint.datagrams_to_send(now):
        out.extend(decode_datagram_untrusted(data).frames)
    return out


@fuzz_settings
@given(channel_inputs())
def test_a_reliable_channel_delivers_in_order_once_whatever_arrives(
    case: tuple[list[bytes], list[tuple[str, Any]]],
) -> None:
    sent, inputs = case
    config = ReliableConfig(max_inline_bytes=100)
    receiver = ReliableChannel(Endpoint(), config, fallback=lambda i, m: None)
    for kind, value in inputs:
        if kind == "fallback":
            receiver.receive_fallback(*value)
        else:
            receiver.receive_frame(value, 0.0)  # never raises
        assert len(receiver._buffer) <= config.window
    delivered = receiver.received()
    if all(kind != "mutated" for kind, _ in inputs):
        assert delivered == sent[: len(delivered)]  # a prefix, once each, in order


@fuzz_settings
@given(st.integers(-5, 0x10005), st.binary(max_size=300), st.binary(max_size=300))
def test_fallback_messages_of_any_id_are_bounded(message_id: int, a: bytes, b: bytes) -> None:
    config = ReliableConfig(max_inline_bytes=100, max_message_bytes=200)
    receiver = ReliableChannel(Endpoint(), config, fallback=lambda i, m: None)
    receiver.receive_fallback(message_id, a)
    receiver.receive_fallback(message_id + 1, b)
    receiver.receive_frame(encode_event_frame(0, []), 0.0)
    assert all(len(m) <= 200 for m, _ in receiver._buffer.values())


# --- fragments ----------------------------------------------------------------------------------


@fuzz_settings
@given(
    st.lists(
        st.tuples(
            st.integers(0, 255),
            st.integers(0, 20),
            st.integers(0, 12),
            st.integers(0, 12),
            st.integers(0, FRAGMENT_DATA_BYTES + 2),
        ),
        max_size=60,
    )
)
def test_a_reassembler_fed_anything_stays_within_its_bounds(
    pieces: list[tuple[int, int, int, int, int]],
) -> None:
    reassembler = Reassembler(max_fragments=8, max_messages=4, max_bytes=8000, timeout=1.0)
    for i, (inner, message_id, index, count, size) in enumerate(pieces):
        try:
            reassembler.add(FragmentHeader(inner, message_id, index, count), bytes(size), i * 0.1)
        except ProtocolError:
            pass
        assert reassembler.buffered_bytes <= 8000 + FRAGMENT_DATA_BYTES
        assert len(reassembler._partials) <= 4 + 1
        reassembler.expire(i * 0.1)


@fuzz_settings
@given(st.integers(FRAGMENT_DATA_BYTES + 1, 5 * FRAGMENT_DATA_BYTES), st.data())
def test_pieces_in_any_order_and_duplicated_reassemble_to_the_message(
    size: int, data: st.DataObject
) -> None:
    message = (bytes(range(256)) * (size // 256 + 1))[:size]
    pieces = split_message(FrameType.DATA, 7, message)
    order = data.draw(st.permutations(pieces + pieces[:1]))
    reassembler = Reassembler(max_fragments=8, max_messages=4, max_bytes=64 * 1024, timeout=1.0)
    results = [reassembler.add(header, piece, 0.0) for header, piece in order]
    assert [r for r in results if r is not None] == [message]
    # a duplicate of a piece of a completed message starts a partial copy, which expires
    assert reassembler.buffered_bytes <= len(order[-1][1])
    reassembler.expire(1.0)
    assert reassembler.buffered_bytes == 0


# --- snapshots, receipts, inputs and the host's small frames ------------------------------------


def _world_parts() -> list[bytes]:
    from netcode_tools.load_server import LOAD_REGISTRY, Mover, Player

    world = World(LOAD_REGISTRY)
    for i in range(12):
        world.spawn(Mover(x=float(i), y=2.0 * i, heading=0.1 * i))
    world.spawn(Player(owner=3, x=50.0, y=60.0))
    encoder = SnapshotEncoder(world, epoch=9)
    parts = []
    for tick in range(1, 6):
        for eid in range(0, 12, 3):
            world.update(eid, x=float(eid + tick))
        if tick == 3:
            world.despawn(1)
        parts.extend(part.payload for part in encoder.encode(tick))
        encoder.on_receipt(Receipt(9, False, 1024, 65535, 32, tuple((tick, i) for i in range(4))))
    return parts


_PARTS = _world_parts()


@fuzz_settings
@given(st.lists(arbitrary_or_mutated(st.sampled_from(_PARTS), 200), min_size=1, max_size=12))
def test_a_snapshot_decoder_applies_or_refuses_any_part_without_changing_state(
    parts: list[bytes],
) -> None:
    from netcode_tools.load_server import LOAD_REGISTRY

    decoder = SnapshotDecoder(LOAD_REGISTRY)
    for payload in parts:
        before = {eid: decoder.quantized(eid) for eid in decoder.entity_ids()}
        epoch = decoder.epoch
        try:
            decoder.receive_part(payload)
        except ProtocolError:
            if decoder.epoch == epoch:  # a refused part of the current epoch changes nothing
                assert {eid: decoder.quantized(eid) for eid in decoder.entity_ids()} == before
        decodes_or_refuses(lambda p: decode_part_untrusted(p, LOAD_REGISTRY), payload)
        assert len(decoder) <= decoder.max_entities
        receipt = decoder.receipt()
        if receipt is not None:
            encode_receipt(receipt)  # what the decoder reports always encodes


_receipts = st.builds(
    lambda epoch, resync, ents, max_id, depth, newest, applied: encode_receipt(
        Receipt(epoch, resync, ents, max_id, depth, tuple((newest - b, i) for b, i in applied))
    ),
    st.integers(0, 0xFFFF),
    st.booleans(),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(2, 255),
    st.integers(255, 2**32 - 1),
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=10),
)


@fuzz_settings
@given(arbitrary_or_mutated(_receipts, 80))
def test_receipts_round_trip_or_are_refused(data: bytes) -> None:
    receipt = decodes_or_refuses(decode_receipt_untrusted, data)
    if receipt is not None:
        assert receipt.history_depth >= 2
        decodes_or_refuses(decode_receipt_untrusted, encode_receipt(receipt))
    frame = decodes_or_refuses(decode_receipt_frame_untrusted, b"\x00\x01" + data)
    if frame is not None:
        assert frame[0] == 1 and encode_receipt_frame(*frame) is not None


@fuzz_settings
@given(
    arbitrary_or_mutated(
        st.builds(encode_inputs, st.integers(0, 2**32 - 1), st.lists(st.binary(max_size=64))),
        300,
    ),
    arbitrary_or_mutated(
        st.builds(HELLO.pack, st.floats(), st.floats(), st.integers(0, 2**32 - 1)), 40
    ),
)
def test_inputs_hello_and_headers_decode_or_are_refused(inputs: bytes, hello: bytes) -> None:
    decoded = decodes_or_refuses(decode_inputs_untrusted, inputs)
    if decoded is not None:
        assert encode_inputs(*decoded) == inputs
    decodes_or_refuses(decode_input_ack_untrusted, inputs[:8])
    rate = decodes_or_refuses(decode_hello_untrusted, hello)
    if rate is not None:
        assert 0 < rate[0] <= 1000 and rate[1] == rate[1]
    decodes_or_refuses(decode_part_header_untrusted, inputs)


# --- topic tables --------------------------------------------------------------------------------


@fuzz_settings
@given(
    st.lists(
        st.tuples(
            st.integers(-1, 1100),
            st.one_of(st.none(), st.text(max_size=140), st.sampled_from(("a", "b", "c"))),
        ),
        max_size=80,
    )
)
def test_an_incoming_topic_table_learns_resolves_or_refuses_within_its_bound(
    steps: list[tuple[int, str | None]],
) -> None:
    table = IncomingTopics()
    for topic_id, name in steps:
        try:
            if name is None:
                table.resolve(topic_id)
            else:
                assert table.resolve(topic_id, name) == name
        except ProtocolError:
            pass
        assert len(table._names) <= MAX_TOPICS + 1


def test_an_incoming_topic_table_holds_at_most_max_topics() -> None:
    table = IncomingTopics()
    for topic_id in range(1, MAX_TOPICS + 1):
        table.learn(topic_id, f"t{topic_id}")
    with pytest.raises(ProtocolError):
        table.learn(MAX_TOPICS + 1, "one too many")
