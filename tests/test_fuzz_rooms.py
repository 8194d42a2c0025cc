"""Property tests of the rooms layer's parsers and handler tables, and the signaling parser.

Valid encodings of every message round-trip; arbitrary bytes and mutated valid encodings
decode or raise ProtocolError. The real handler tables are fed too: a real ServerParticipant
(on the fuzz tool's FakeLink) through ``on_reliable`` and its datagram path, and a Room
through ``_on_reliable``, and nothing but ProtocolError (which they count) may come out.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netcode_tools.fuzz import (
    KEY,
    ROOM,
    SECRET,
    ClientSide,
    ExceptionMonitor,
    FakeLink,
    Generators,
    RoomView,
    _peer_link,
)

from netcode.cli import make_token
from netcode.core import FrameReceived
from netcode.errors import ProtocolError
from netcode.rooms import Room, RoomServer, ServerParticipant
from netcode.rooms.events import DEFAULT_EVENT_TYPES, Chat, Despawn, EventLink, Spawn
from netcode.rooms.protocol import (
    MESSAGE,
    Kind,
    decode_lossy_down_untrusted,
    decode_lossy_up_untrusted,
    decode_message_untrusted,
    encode_lossy_down,
    encode_lossy_up,
    encode_message,
    track_options,
)
from netcode.rooms.rpc import RPC_MESSAGE, RpcMessageType, decode_rpc_untrusted, encode_rpc
from netcode.rooms.streams import (
    STREAM_MESSAGE,
    StreamMessageType,
    decode_stream_untrusted,
    encode_stream,
)
from netcode.transport.signaling import _BadRequest, _parse_offer_untrusted
from netcode.wire import FrameType
from tests.test_fuzz import arbitrary_or_mutated, decodes_or_refuses, fuzz_settings, mutated

# --- strategies for valid encodings --------------------------------------------------------------

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
small = st.binary(max_size=40)
pids = st.lists(u16, max_size=4)
options = st.builds(track_options, st.booleans(), st.none() | u16, st.none() | u16)
participant = st.fixed_dictionaries({"pid": u16, "identity": text, "name": text, "metadata": text})
track = st.fixed_dictionaries({"pid": u16, "sid": u16, "name": text, "options": options})

FIELDS: dict[Kind, Any] = {
    Kind.JOINED: st.fixed_dictionaries(
        {
            "pid": u16,
            "room": text,
            "participants": st.lists(participant, max_size=3),
            "tracks": st.lists(track, max_size=2),
            "session": text,
            "resume_secret": text,
            "grace_ms": u32,
            "dead_after_ms": u32,
            "message_bytes_per_s": u32,
        }
    ),
    Kind.PARTICIPANT_JOINED: participant,
    Kind.PARTICIPANT_LEFT: st.fixed_dictionaries({"pid": u16}),
    Kind.TOPIC: st.fixed_dictionaries({"topic_id": u16, "name": text}),
    Kind.SUBSCRIBE: st.fixed_dictionaries({"all": st.booleans(), "topics": st.lists(text)}),
    Kind.DATA: st.fixed_dictionaries(
        {"pid": u16, "topic_id": u16, "text": st.booleans(), "destinations": pids, "payload": small}
    ),
    Kind.PUBLISH_TRACK: st.fixed_dictionaries(
        {"request_id": u16, "name": text, "options": options}
    ),
    Kind.TRACK_ACCEPTED: st.fixed_dictionaries({"request_id": u16, "sid": u16}),
    Kind.TRACK_REFUSED: st.fixed_dictionaries({"request_id": u16, "reason": text}),
    Kind.TRACK_PUBLISHED: track,
    Kind.TRACK_UNPUBLISHED: st.fixed_dictionaries({"pid": u16, "sid": u16}),
    Kind.ERROR: st.fixed_dictionaries({"code": text, "message": text}),
    Kind.EXTENSION: st.fixed_dictionaries({"channel": u8, "pid": u16, "body": small}),
    Kind.ACK: st.fixed_dictionaries({"received": u64}),
    Kind.RESUMED: st.fixed_dictionaries({"received": u64}),
    Kind.LEAVE: st.just({}),
    Kind.PARTICIPANT_RECONNECTING: st.fixed_dictionaries({"pid": u16}),
    Kind.PARTICIPANT_RECONNECTED: st.fixed_dictionaries({"pid": u16}),
}
#: kinds with a field strategy (new kinds still meet the arbitrary and mutated inputs)
KINDS = tuple(k for k in Kind if k in FIELDS)


@st.composite
def messages(draw: st.DrawFn, kinds: tuple[Kind, ...] = KINDS) -> bytes:
    kind = draw(st.sampled_from(kinds))
    return encode_message(kind, **draw(FIELDS[kind]))


CLIENT_KINDS = (
    Kind.TOPIC,
    Kind.SUBSCRIBE,
    Kind.DATA,
    Kind.PUBLISH_TRACK,
    Kind.TRACK_UNPUBLISHED,
    Kind.EXTENSION,
    Kind.ACK,
    Kind.LEAVE,
)
SERVER_KINDS = tuple(k for k in KINDS if k not in (Kind.LEAVE, Kind.SUBSCRIBE, Kind.PUBLISH_TRACK))

RPC_FIELDS: dict[RpcMessageType, Any] = {
    RpcMessageType.REQUEST: st.fixed_dictionaries(
        {
            "request_id": u32,
            "version": u8,
            "identity": text,
            "method": text,
            "response_timeout_ms": u32,
            "payload": text.map(str.encode),
        }
    ),
    RpcMessageType.ACK: st.fixed_dictionaries({"request_id": u32, "peer": u16}),
    RpcMessageType.RESPONSE: st.fixed_dictionaries(
        {"request_id": u32, "peer": u16, "payload": text.map(str.encode)}
    ),
    RpcMessageType.ERROR: st.fixed_dictionaries(
        {"request_id": u32, "peer": u16, "code": u16, "message": text, "data": text}
    ),
}
STREAM_FIELDS: dict[StreamMessageType, Any] = {
    StreamMessageType.HEADER: st.fixed_dictionaries(
        {
            "stream_id": u32,
            "text": st.booleans(),
            "size": u64,
            "topic": text,
            "name": text,
            "mime_type": text,
            "destinations": pids,
        }
    ),
    StreamMessageType.CHUNK: st.fixed_dictionaries({"stream_id": u32, "data": small}),
    StreamMessageType.TRAILER: st.fixed_dictionaries({"stream_id": u32, "reason": text}),
    StreamMessageType.RECEIPT: st.fixed_dictionaries(
        {"stream_id": u32, "peer": u16, "reason": text}
    ),
    StreamMessageType.RESULT: st.fixed_dictionaries({"stream_id": u32, "reason": text}),
}


@st.composite
def rpc_messages(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(list(RpcMessageType)))
    return encode_rpc(kind, **draw(RPC_FIELDS[kind]))


@st.composite
def stream_messages(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(list(StreamMessageType)))
    return encode_stream(kind, **draw(STREAM_FIELDS[kind]))


# --- decoders ---------------------------------------------------------------------------------


@fuzz_settings
@given(messages())
def test_every_message_kind_round_trips(data: bytes) -> None:
    kind, body = decode_message_untrusted(data)
    assert bytes(MESSAGE.build({"kind": kind, "body": body})) == data


@fuzz_settings
@given(arbitrary_or_mutated(messages(), 200) | st.text(max_size=20))
def test_messages_decode_or_are_refused(data: bytes | str) -> None:
    decodes_or_refuses(decode_message_untrusted, data)  # type: ignore[arg-type]


@fuzz_settings
@given(rpc_messages(), stream_messages())
def test_rpc_and_stream_messages_round_trip(rpc: bytes, stream: bytes) -> None:
    kind, body = decode_rpc_untrusted(rpc)
    if "payload" in body:
        body.payload = body.payload.encode()
    assert bytes(RPC_MESSAGE.build({"type": kind, "body": body})) == rpc
    stream_kind, message = decode_stream_untrusted(stream)
    if stream_kind is StreamMessageType.CHUNK:
        assert encode_stream(stream_kind, stream_id=message.stream_id, data=message.data) == stream
    else:
        assert bytes(STREAM_MESSAGE.build({"type": stream_kind, "body": message})) == stream


@fuzz_settings
@given(arbitrary_or_mutated(rpc_messages(), 120), arbitrary_or_mutated(stream_messages(), 120))
def test_rpc_and_stream_messages_decode_or_are_refused(rpc: bytes, stream: bytes) -> None:
    decodes_or_refuses(decode_rpc_untrusted, rpc)
    decodes_or_refuses(decode_stream_untrusted, stream)


_names = st.none() | text.filter(lambda t: len(t.encode()) <= 255)


@fuzz_settings
@given(u16, _names, st.booleans(), st.lists(u16, max_size=255), small, u16)
def test_lossy_data_frames_round_trip(
    topic_id: int, name: str | None, flag: bool, dests: list[int], payload: bytes, pid: int
) -> None:
    up = encode_lossy_up(topic_id, name, flag, dests, payload)
    assert decode_lossy_up_untrusted(up) == (topic_id, name, flag, dests, payload)
    down = encode_lossy_down(pid, topic_id, name, flag, payload)
    assert decode_lossy_down_untrusted(down) == (pid, topic_id, name, flag, payload)


@fuzz_settings
@given(
    arbitrary_or_mutated(
        st.builds(encode_lossy_up, u16, _names, st.booleans(), st.lists(u16, max_size=8), small),
        100,
    ),
    arbitrary_or_mutated(st.builds(encode_lossy_down, u16, u16, _names, st.booleans(), small), 100),
)
def test_lossy_data_frames_decode_or_are_refused(up: bytes, down: bytes) -> None:
    decodes_or_refuses(decode_lossy_up_untrusted, up)
    decodes_or_refuses(decode_lossy_down_untrusted, down)


events = st.one_of(
    st.builds(Chat, text),
    st.builds(Spawn, st.integers(-(2**70), 2**70), text, st.floats(allow_nan=False)),
    st.builds(Despawn, st.integers(-(2**40), 2**40), text),
)


@fuzz_settings
@given(events, st.integers(1, 3), st.binary(max_size=60))
def test_event_bodies_round_trip_or_are_refused(event: Any, type_id: int, junk: bytes) -> None:
    codec = DEFAULT_EVENT_TYPES.of(event)
    assert codec.decode_untrusted(codec.encode(event)) == event
    other = DEFAULT_EVENT_TYPES.by_id[type_id]
    decodes_or_refuses(other.decode_untrusted, junk)
    decodes_or_refuses(other.decode_untrusted, codec.encode(event) + junk[:3])


@fuzz_settings
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_event_links_skip_malformed_events_in_both_directions(bodies: list[bytes]) -> None:
    from netcode.core import Endpoint

    errors: list[str] = []
    for receive in ("receive_up", "receive_down"):
        link = EventLink(Endpoint(), lambda i, m: None)
        for message_id, body in enumerate(bodies):
            link.receive_fallback(message_id.to_bytes(2, "big") + body)
        out = getattr(link, receive)(errors.append)
        assert len(out) + link.malformed == len(bodies)


# --- the real handler tables --------------------------------------------------------------------


class ServerUnderFuzz:
    """A RoomServer (not listening) with two participants on FakeLinks; fed in a loop of its
    own, so that hypothesis can drive it from synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.monitor = ExceptionMonitor()
        self.server = RoomServer(KEY, SECRET)
        self.view = RoomView()
        self.gen = Generators(random.Random(0), self.view)
        self.links: dict[str, FakeLink] = {}
        self.clients: dict[str, ClientSide] = {}
        self.joined = 0

    def participant(self, name: str) -> ServerParticipant:
        room = self.server.room(ROOM)
        current = room.by_identity(name)
        link = self.links.get(name)
        if current is not None and link is not None and current.link is _peer_link(link):
            return current
        self.joined += 1
        link = self.links[name] = FakeLink(f"server:{name}", self.monitor)
        client = self.clients[name] = ClientSide(self.gen, name)
        link.on_lossy_sent = lambda data: client.on_datagram(data, self.loop.time())
        link.on_reliable_sent = client.on_reliable
        claims = self.server.verifier.verify(make_token(KEY, SECRET, name, ROOM), room=ROOM)
        joined = room.join(claims, _peer_link(link))
        self.server.sessions[joined.session_id] = joined
        self.view.refresh(self.server, None)
        return joined

    def feed(self, reliable: list[bytes | str], datagrams: list[bytes]) -> None:
        async def run() -> None:
            self.participant("other")
            self.participant("fuzzer")
            link = self.links["fuzzer"]
            for data in reliable:
                link.deliver_reliable(data)
            for data in datagrams:
                link.deliver_lossy(data)
            await asyncio.sleep(0)

        self.loop.run_until_complete(run())

    def close(self) -> None:
        async def stop() -> None:
            for name in list(self.links):
                participant = self.server.room(ROOM).by_identity(name)
                if participant is not None:
                    participant.disconnect()
            await asyncio.sleep(0.01)

        self.loop.run_until_complete(stop())
        self.loop.close()


@pytest.fixture(scope="module")
def under_fuzz() -> Iterator[ServerUnderFuzz]:
    harness = ServerUnderFuzz()
    yield harness
    harness.close()


def _valid_client_message(seed: int, harness: ServerUnderFuzz) -> bytes:
    client = harness.clients.get("fuzzer")
    state = client.state if client is not None else ClientSide(harness.gen, "x").state
    harness.gen.rng.seed(seed)
    return harness.gen.reliable(state)


@fuzz_settings
@given(
    st.lists(
        st.one_of(
            st.integers(0, 2**32).map(lambda seed: ("valid", seed)),
            messages(CLIENT_KINDS).map(lambda m: ("raw", m)),
            mutated(messages(CLIENT_KINDS)).map(lambda m: ("raw", m)),
            messages(SERVER_KINDS).map(lambda m: ("raw", m)),
            st.binary(max_size=100).map(lambda m: ("raw", m)),
            st.text(max_size=10).map(lambda m: ("raw", m)),
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, 2**32),
)
def test_the_server_handles_any_reliable_message_and_datagram(
    under_fuzz: ServerUnderFuzz, inputs: list[tuple[str, Any]], seed: int
) -> None:
    reliable: list[bytes | str] = [
        _valid_client_message(value, under_fuzz) if kind == "valid" else value
        for kind, value in inputs
    ]
    client = under_fuzz.clients.get("fuzzer")
    datagrams: list[bytes] = []
    if client is not None:
        client.rng.seed(seed)
        datagrams = client.datagram_inputs(under_fuzz.loop.time())
    under_fuzz.feed(reliable, datagrams)
    assert under_fuzz.monitor.unhandled == 0, under_fuzz.monitor.samples


@pytest.fixture(scope="module")
def client_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@fuzz_settings
@given(
    st.lists(
        st.one_of(messages(SERVER_KINDS), mutated(messages(SERVER_KINDS)), st.binary(max_size=80)),
        max_size=8,
    ),
    st.lists(
        arbitrary_or_mutated(
            st.builds(encode_lossy_down, u16, u16, _names, st.booleans(), small), 80
        ),
        max_size=4,
    ),
)
def test_a_room_handles_any_server_message(
    client_loop: asyncio.AbstractEventLoop, reliable: list[bytes], lossy: list[bytes]
) -> None:
    async def run() -> None:
        room = Room()
        for data in reliable:
            room._on_reliable(data)  # ProtocolError is counted inside, nothing else escapes
        for payload in lossy:
            room._on_event(FrameReceived(FrameType.DATA, payload, 0))
        room.rpc.close()
        room.streams.close()

    client_loop.run_until_complete(run())


# --- signaling ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def offer_bodies(draw: st.DrawFn) -> bytes:
    request: dict[str, Any] = {"sdp": "v=0\r\n", "type": "offer", "token": "a.b.c"}
    if draw(st.booleans()):
        request["resume"] = {
            "session": draw(text),
            "secret": draw(text),
            "received": draw(st.integers(-1, 2**64)),
            "episode": draw(st.integers(-1, 2**32)),
        }
    for key in draw(st.lists(st.sampled_from(("sdp", "type", "token", "room", "resume")))):
        if draw(st.booleans()):
            request.pop(key, None)
        else:
            request[key] = draw(json_values)
    return json.dumps(request, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


def _parses_or_bad_request(body: bytes) -> Any:
    try:
        return _parse_offer_untrusted(body)
    except _BadRequest:
        return None


@fuzz_settings
@given(st.one_of(offer_bodies(), mutated(offer_bodies()), st.binary(max_size=200)))
def test_offer_bodies_parse_or_are_bad_requests(body: bytes) -> None:
    parsed = _parses_or_bad_request(body)
    if parsed is not None:
        sdp, token, room, resume = parsed
        assert isinstance(sdp, str) and sdp and isinstance(token, str) and isinstance(room, str)
        assert resume is None or 0 <= resume["received"] < 2**63


def test_a_valid_offer_body_parses() -> None:
    body = json.dumps({"sdp": "v=0", "type": "offer", "token": "t", "room": "r"}).encode()
    assert _parse_offer_untrusted(body) == ("v=0", "t", "r", None)


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b'{"sdp": ' + b"1" * 5000 + b"}"], ids=["nesting", "digits"]
)
def test_json_the_parser_cannot_take_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(_BadRequest):
        _parse_offer_untrusted(body)


def test_harness_reaches_the_handlers(under_fuzz: ServerUnderFuzz) -> None:
    # the property above is only worth something if its inputs reach real state
    topic = encode_message(Kind.TOPIC, topic_id=1, name="x")
    data = encode_message(Kind.DATA, pid=0, topic_id=1, text=False, destinations=[], payload=b"p")
    before = under_fuzz.links.get("other")
    sent_before = before.reliable_sent if before is not None else 0
    under_fuzz.feed([topic, data], [])
    other = under_fuzz.links["other"]
    assert other.reliable_sent > sent_before  # relayed
    with pytest.raises(ProtocolError):
        decode_message_untrusted(b"\xff")


# --- regressions found by netcode-fuzz -------------------------------------------------------


def test_a_topic_first_sent_lossy_is_still_named_before_reliable_data_uses_it() -> None:
    # The honest clients of netcode-fuzz logged "topic id N was never bound": a topic bound
    # by the lossy path (its name inline, in a datagram that may be lost or overtaken) was
    # then used on the reliable path without a TOPIC message, and the receiver dropped the
    # reliable packet.
    from netcode.core import Endpoint
    from netcode.rooms.topics import OutgoingTopics

    table = OutgoingTopics()
    assert table.lossy_ref("x") == (1, "x")
    assert table.bind("x") == (1, True)  # named on the reliable channel all the same
    assert table.bind("x") == (1, False)

    async def run() -> list[tuple[Kind, Any]]:
        server = RoomServer(KEY, SECRET)
        room = server.room(ROOM)
        links = {}
        for name in ("a", "b"):
            link = links[name] = FakeLink(name, ExceptionMonitor())
            claims = server.verifier.verify(make_token(KEY, SECRET, name, ROOM), room=ROOM)
            room.join(claims, _peer_link(link))
        got: list[tuple[Kind, Any]] = []
        links["b"].on_reliable_sent = lambda data: got.append(decode_message_untrusted(data))
        links["b"].on_lossy_sent = lambda data: None  # b's datagrams are all lost
        a = Endpoint()
        a.send_frame(FrameType.DATA, encode_lossy_up(1, "x", False, [], b"lossy"))
        for datagram in a.datagrams_to_send(0.0):
            links["a"].deliver_lossy(datagram)
        links["a"].deliver_reliable(encode_message(Kind.TOPIC, topic_id=1, name="x"))
        data = encode_message(
            Kind.DATA, pid=0, topic_id=1, text=False, destinations=[], payload=b"reliable"
        )
        links["a"].deliver_reliable(data)
        for participant in list(room.participants.values()):
            participant.disconnect()
        await asyncio.sleep(0)
        return got

    got = asyncio.run(run())
    named = {body.topic_id for kind, body in got if kind is Kind.TOPIC}
    relayed = [body for kind, body in got if kind is Kind.DATA]
    assert relayed and all(body.topic_id in named for body in relayed)


def test_a_topic_name_over_255_bytes_is_refused_where_it_is_learnt() -> None:
    """Found by netcode-fuzz: a TOPIC message may name 128 characters of 4-byte UTF-8, which
    a lossy frame relaying it inline cannot carry (a 1-byte length). The name is refused
    where it arrives, as check_topic refuses it for our own."""
    from netcode.rooms.topics import IncomingTopics, check_topic

    name = "\U0001f3ae" * 91  # 91 characters, 364 bytes
    with pytest.raises(ValueError):
        check_topic(name)
    topics = IncomingTopics()
    with pytest.raises(ProtocolError):
        topics.learn(1, name)
    topics.learn(2, "\U0001f3ae" * 63)  # 252 bytes: fine
    assert topics.resolve(2) == "\U0001f3ae" * 63
