"""Streams end to end over real aiortc connections on 127.0.0.1: a 1 MiB stream with progress,
text and files, caps cutting a stream on both sides, a sender leaving mid-stream, routing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pathlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from helpers import eventually

from netcode.cli import make_token
from netcode.errors import ProtocolError
from netcode.rooms import Room, RoomServer
from netcode.rooms.limits import PeerBudgets
from netcode.rooms.server import ExtensionChannel
from netcode.rooms.streams import (
    CHUNK_BYTES,
    MAX_STREAM_BYTES,
    ByteStreamReader,
    StreamError,
    StreamMessageType,
    TextStreamReader,
    decode_stream_untrusted,
    encode_stream,
)

pytestmark = pytest.mark.webrtc

KEY = "test-key"
SECRET = "test-secret-that-is-long-enough-for-hs256!"


def token(identity: str, **grants: Any) -> str:
    return make_token(KEY, SECRET, identity, "arena", **grants)


@pytest.fixture
async def server() -> AsyncIterator[RoomServer]:
    server = RoomServer(KEY, SECRET)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


@pytest.fixture
async def connect(server: RoomServer) -> AsyncIterator[Callable[..., Any]]:
    rooms: list[Room] = []

    async def connect(identity: str, **kwargs: Any) -> Room:
        room = Room()
        await room.connect(server.url, token(identity), **kwargs)
        rooms.append(room)
        return room

    yield connect
    for room in rooms:
        await room.disconnect()


class Received:
    """Collects what a room's stream handlers read (or the errors they got)."""

    def __init__(self) -> None:
        self.done: list[tuple[str, Any, bytes | str]] = []  # (sender, info, data)
        self.errors: list[StreamError] = []
        self.started = asyncio.Event()

    async def read(self, reader: ByteStreamReader | TextStreamReader, identity: str) -> None:
        self.started.set()
        try:
            data = await reader.read_all()
        except StreamError as exc:
            self.errors.append(exc)
            return
        self.done.append((identity, reader.info, data))


async def pair(connect: Callable[..., Any]) -> tuple[Room, Room, Received]:
    alice, bob = await connect("alice"), await connect("bob")
    await eventually(lambda: "bob" in alice.remote_participants)
    received = Received()
    bob.register_byte_stream_handler("files", received.read)
    bob.register_text_stream_handler("chat", received.read)
    return alice, bob, received


async def test_one_mib_arrives_intact_with_progress(server: RoomServer, connect: Any) -> None:
    alice, _bob, received = await pair(connect)
    data = os.urandom(1024 * 1024)
    progress: list[tuple[int, int]] = []
    info = await alice.local_participant.send_bytes(
        data,
        name="blob.bin",
        mime_type="application/x-test",
        topic="files",
        on_progress=lambda sent, total: progress.append((sent, total)),
    )
    # send_bytes returns once the receiver has it all
    ((sender, got_info, got),) = received.done
    assert sender == "alice"
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()  # type: ignore[arg-type]
    assert got_info == info
    assert (info.name, info.mime_type, info.size, info.topic) == (
        "blob.bin",
        "application/x-test",
        len(data),
        "files",
    )
    sent = [s for s, _ in progress]
    assert sent == sorted(sent) and len(set(sent)) == len(sent)
    assert progress[-1] == (len(data), len(data))
    assert {t for _, t in progress} == {len(data)}
    assert len(progress) == -(-len(data) // CHUNK_BYTES)
    assert server.streams.streams_in_flight == 0


async def test_a_stream_keeps_to_the_servers_byte_budget() -> None:
    # The server takes 200 kB/s of reliable bytes from a client, with a 40 kB burst, and
    # cuts off one that sends more; it says so in JOINED, and the stream paces itself.
    budgets = PeerBudgets(message_bytes_per_s=200_000, message_bytes_burst=40_000)
    server = RoomServer(KEY, SECRET, budgets=budgets)
    await server.start("127.0.0.1", 0)
    alice, bob = Room(), Room()
    try:
        await alice.connect(server.url, token("alice"))
        await bob.connect(server.url, token("bob"))
        await eventually(lambda: "bob" in alice.remote_participants)
        received = Received()
        bob.register_byte_stream_handler("files", received.read)
        assert alice.streams.max_bytes_per_s == 150_000  # STREAM_BUDGET_SHARE of it
        data = os.urandom(600_000)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await alice.local_participant.send_bytes(data, topic="files")
        elapsed = loop.time() - started
        assert elapsed >= 0.95 * (len(data) - CHUNK_BYTES) / 150_000  # about 4 s
        ((_, _, got),) = received.done
        assert got == data
        assert alice.connection_state.value == "connected"  # not cut off as flooding
    finally:
        await alice.disconnect()
        await bob.disconnect()
        await server.stop()


async def test_text_stream_and_iteration(connect: Any) -> None:
    alice, bob, received = await pair(connect)
    # multi-byte characters across chunk boundaries
    text = "é✓ snow ☃ " * 5000
    info = await alice.local_participant.send_text(text, topic="chat")
    ((sender, got_info, got),) = received.done
    assert (sender, got, got_info.mime_type) == ("alice", text, "text/plain")
    assert info.size == len(text.encode())
    # async iteration, chunk by chunk
    chunks: list[bytes] = []

    async def iterate(reader: ByteStreamReader, identity: str) -> None:
        async for chunk in reader:
            chunks.append(chunk)

    bob.register_byte_stream_handler("iter", iterate)
    payload = bytes(range(256)) * 200
    await alice.local_participant.send_bytes(payload, topic="iter")
    await eventually(lambda: b"".join(chunks) == payload)
    assert max(len(c) for c in chunks) <= CHUNK_BYTES
    # empty streams work too
    progress: list[tuple[int, int]] = []
    await alice.local_participant.send_text(
        "", topic="chat", on_progress=lambda *a: progress.append(a)
    )
    assert received.done[-1][2] == "" and progress == [(0, 0)]


async def test_file(connect: Any, tmp_path: pathlib.Path) -> None:
    alice, _bob, received = await pair(connect)
    path = tmp_path / "arena.json"
    content = os.urandom(100_000)
    path.write_bytes(content)
    info = await alice.local_participant.send_file(path, topic="files")
    ((_, got_info, got),) = received.done
    assert got == content
    assert (got_info.name, got_info.mime_type, got_info.size) == (
        "arena.json",
        "application/json",
        len(content),
    )
    assert info == got_info


async def test_stream_past_the_receivers_cap_is_cut_on_both_sides(connect: Any) -> None:
    alice, bob, received = await pair(connect)
    bob.streams.max_stream_bytes = 100_000
    with pytest.raises(StreamError, match="exceeded its cap of 100000 bytes"):
        await alice.local_participant.send_bytes(os.urandom(1024 * 1024), topic="files")
    await eventually(lambda: received.errors)
    assert "exceeded its cap of 100000 bytes" in str(received.errors[0])
    assert received.done == []
    # within the cap, all is well
    await alice.local_participant.send_bytes(b"x" * 100_000, topic="files")
    assert len(received.done) == 1


async def test_sender_cap_and_reader_that_does_not_read(connect: Any) -> None:
    alice, bob, _received = await pair(connect)
    with pytest.raises(ValueError, match="MAX_STREAM_BYTES"):
        await alice.local_participant.send_bytes(b"x" * (MAX_STREAM_BYTES + 1), topic="files")
    # a handler that never reads: its buffer is bounded, and the stream is cut
    readers: list[ByteStreamReader] = []
    bob.register_byte_stream_handler("lazy", lambda reader, identity: readers.append(reader))
    bob.streams.reader_buffer_bytes = 64 * 1024
    with pytest.raises(StreamError, match="fell behind"):
        await alice.local_participant.send_bytes(os.urandom(512 * 1024), topic="lazy")
    with pytest.raises(StreamError, match="fell behind"):
        await readers[0].read_all()


async def test_sender_disconnecting_mid_stream(server: RoomServer, connect: Any) -> None:
    alice, _bob, received = await pair(connect)
    alice.streams.backlog_limit_bytes = CHUNK_BYTES  # slow, so the stream is still going
    sending = asyncio.ensure_future(
        alice.local_participant.send_bytes(os.urandom(8 * 1024 * 1024), topic="files")
    )
    await asyncio.wait_for(received.started.wait(), 5)
    await alice.disconnect()
    with pytest.raises(StreamError):
        await sending
    await eventually(lambda: received.errors)
    assert "disconnected" in str(received.errors[0])
    assert received.done == []
    await eventually(lambda: server.streams.streams_in_flight == 0)


async def test_destinations_and_topics(connect: Any) -> None:
    alice, bob, carol = await connect("alice"), await connect("bob"), await connect("carol")
    await eventually(lambda: len(alice.remote_participants) == 2)
    got: dict[str, list[tuple[str, str]]] = {"bob": [], "carol": []}

    def collector(name: str) -> Any:
        async def read(reader: TextStreamReader, identity: str) -> None:
            got[name].append((reader.info.topic, await reader.read_all()))

        return read

    bob.register_text_stream_handler("chat", collector("bob"))
    carol.register_text_stream_handler("chat", collector("carol"))
    carol.register_text_stream_handler("lobby", collector("carol"))
    send = alice.local_participant.send_text
    await send("to bob", topic="chat", destination_identities=["bob"])
    await send("to everyone", topic="chat")
    await send("lobby only", topic="lobby")  # bob has no handler: not an error
    await send("to nobody", topic="chat", destination_identities=["zed"])
    await asyncio.sleep(0.1)
    assert got["bob"] == [("chat", "to bob"), ("chat", "to everyone")]
    assert got["carol"] == [("chat", "to everyone"), ("lobby", "lobby only")]
    # a byte stream does not reach a text handler of the same topic
    await alice.local_participant.send_bytes(b"bytes", topic="chat")
    await asyncio.sleep(0.05)
    assert len(got["bob"]) == 2


async def test_malformed_stream_messages(server: RoomServer, connect: Any) -> None:
    alice, _bob, received = await pair(connect)
    before = server.protocol_errors
    header = encode_stream(
        StreamMessageType.HEADER,
        stream_id=9,
        text=False,
        size=3,
        topic="files",
        name="",
        mime_type="",
        destinations=[],
    )
    for body in (
        b"",
        b"\x09",
        b"\x02\x00",
        header,
        encode_stream(StreamMessageType.CHUNK, stream_id=9, data=b"four"),  # over its size
    ):
        alice.send_extension(ExtensionChannel.STREAMS, body)
    await eventually(lambda: server.protocol_errors == before + 4)
    await eventually(lambda: received.errors)
    assert "more than its declared 3 bytes" in str(received.errors[0])
    with pytest.raises(ProtocolError):
        decode_stream_untrusted(header[:-1])
