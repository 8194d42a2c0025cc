"""Text and byte streams between participants, in the style of LiveKit's data streams.

::

    async def on_map(reader: ByteStreamReader, participant_identity: str) -> None:
        data = await reader.read_all()

    room.register_byte_stream_handler("maps", on_map)
    info = await room.local_participant.send_file("arena.map", topic="maps",
                                                  on_progress=lambda sent, total: ...)

Theory of operation
-------------------
A stream is a HEADER, CHUNKs of at most :data:`CHUNK_BYTES` (under the reliable channel's
16 KiB message limit) and a TRAILER, each the body of an EXTENSION message on
``ExtensionChannel.STREAMS`` (one :data:`STREAM_MESSAGE`: a type byte and its fields), so a
stream is ordered with everything else on the reliable channel. The sender names the stream
by a 32-bit id of its own; the server keys what it relays by (sender, id).

The server relays: it picks the receivers when the HEADER arrives (the destinations named,
or everyone else, in both cases only those subscribed to the topic), stamps the sender's pid
and forwards each message to the receivers still in the stream. It checks the declared size
against :data:`MAX_STREAM_BYTES` and the bytes sent against the declared size.

Every receiver ends its part with a RECEIPT: an empty reason once the TRAILER has arrived
and the bytes add up, or the reason it cut the stream, at any time. When every receiver has
answered (or left), the server sends the sender one RESULT: empty if everyone got the whole
stream, else the receivers' reasons. ``send_*`` returns the :class:`StreamInfo` on an empty
RESULT and raises :class:`StreamError` otherwise, so an error is seen on both sides:

- a receiver cuts a stream past its cap (``room.streams.max_stream_bytes``, checked against
  the declared size and against the bytes that arrive), when it already has
  ``max_concurrent_streams`` streams open, or when the application leaves more than
  ``reader_buffer_bytes`` unread (memory stays bounded: it does not grow the buffer). Its
  reader raises StreamError, and so does the sender's ``send_*`` (at once if no receiver is
  left, else when the stream ends);
- the server cuts a stream that sends more or fewer bytes than declared (a protocol error
  too), and cuts a receiver whose connection falls more than :data:`MAX_RELAY_BACKLOG_BYTES`
  behind (its reader raises StreamError);
- a sender that disconnects mid-stream: the server sends its receivers a TRAILER with the
  reason, and their readers raise StreamError;
- a receiver with no handler for the topic answers an empty RECEIPT at once (it does not
  want the stream, which is not an error, as in LiveKit), and the server stops sending it.

The sender paces itself: it sends a chunk only while fewer than
``room.streams.backlog_limit_bytes`` (64 KiB) wait in its connection's send queues
(``PeerLink.send_backlog()``), polling every few milliseconds otherwise. aiortc hands the
SCTP layer one message at a time, after the previous one is acknowledged, so a deeper queue
would not go faster; it would only hold back everything else sent on the connection. (While
any chunk waits there, the lossy channel's own backpressure drops datagrams: a stream and a
fast game on one connection compete, and streams are for loading screens and side data.)
It also keeps to a byte rate: the server takes only so many reliable bytes a second from a
client (``PeerBudgets.message_bytes_per_s``, 256 kB/s by default, sent in JOINED) and cuts
off one that sends more as ``flooding``, so a client's streams together send at most
:data:`STREAM_BUDGET_SHARE` of it (``room.streams.max_bytes_per_s``).
"""

from __future__ import annotations

import asyncio
import codecs
import enum
import inspect
import itertools
import logging
import mimetypes
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
from construct import (
    Byte,
    ConstructError,
    Flag,
    GreedyBytes,
    Int16ub,
    Int32ub,
    Int64ub,
    PascalString,
    PrefixedArray,
    Struct,
    Switch,
    Terminated,
    VarInt,
)

from netcode.core import TokenBucket
from netcode.errors import NetcodeError, ProtocolError
from netcode.rooms.protocol import identity_list

if TYPE_CHECKING:
    from netcode.rooms.client import Room
    from netcode.rooms.server import ServerParticipant, ServerRoom

__all__ = [
    "CHUNK_BYTES",
    "MAX_STREAM_BYTES",
    "STREAM_MESSAGE",
    "ByteStreamReader",
    "StreamError",
    "StreamInfo",
    "StreamMessageType",
    "StreamProgress",
    "StreamRouter",
    "StreamsClient",
    "TextStreamReader",
    "decode_stream_untrusted",
    "encode_stream",
]

logger = logging.getLogger(__name__)

#: Largest stream a sender may send, and the server relay (receivers may set a lower cap).
MAX_STREAM_BYTES = 64 * 1024 * 1024
#: Bytes per chunk: LiveKit's 15 KiB, leaving room for the headers in a 16 KiB message.
CHUNK_BYTES = 15 * 1024
#: A sender sends the next chunk only while fewer bytes than this wait in its send queues.
DEFAULT_BACKLOG_LIMIT_BYTES = 64 * 1024
#: Streams a receiver keeps open at once (more are refused with a RECEIPT).
DEFAULT_MAX_CONCURRENT_STREAMS = 16
#: Unread bytes a reader holds before the stream is cut.
DEFAULT_READER_BUFFER_BYTES = 8 * 1024 * 1024
#: Streams one sender may have in flight through the server.
MAX_STREAMS_IN_FLIGHT = 16
#: The server cuts a receiver whose connection has more than this waiting to be sent.
MAX_RELAY_BACKLOG_BYTES = 4 * 1024 * 1024
#: The share of the server's reliable byte budget (``JOINED.message_bytes_per_s``) that a
#: client's streams use together, leaving the rest to its other reliable messages.
STREAM_BUDGET_SHARE = 0.75
#: How long a sender waits, after its TRAILER, for the server's RESULT.
RESULT_TIMEOUT_S = 30.0
_PACING_SLEEP_S = 0.002
_MAX_NAME_BYTES = 256


class StreamError(NetcodeError):
    """A stream was cut (cap, slow reader, sender gone...); the message says why."""


@attrs.frozen
class StreamInfo:
    """What a stream is, as its header describes it."""

    id: str  #: unique in the room: ``ST_<sender pid>_<sender's stream number>``
    topic: str  #: the topic receivers' handlers are registered for
    name: str  #: a file name, or "" for text
    mime_type: str  #: ``text/plain`` for text streams
    size: int  #: total bytes (UTF-8 for text)


StreamProgress = Callable[[int, int], object]  # (sent_bytes, total_bytes)


# --- wire ---------------------------------------------------------------------------------


class StreamMessageType(enum.IntEnum):
    HEADER = 1  #: sender -> server -> receivers
    CHUNK = 2  #: sender -> server -> receivers
    TRAILER = 3  #: sender or server -> receivers: the end ("" complete, else why it was cut)
    RECEIPT = 4  #: receiver -> server: done with the stream ("" received whole, else why not)
    RESULT = 5  #: server -> sender: how it went ("" every receiver has it, else why not)


_String = PascalString(VarInt, "utf8")

_BODIES = {
    StreamMessageType.HEADER: Struct(
        "stream_id" / Int32ub,
        "text" / Flag,
        "size" / Int64ub,
        "topic" / _String,
        "name" / _String,
        "mime_type" / _String,
        "destinations" / PrefixedArray(VarInt, Int16ub),  # up: pids (none: all); down: empty
    ),
    StreamMessageType.CHUNK: Struct("stream_id" / Int32ub, "data" / GreedyBytes),
    StreamMessageType.TRAILER: Struct("stream_id" / Int32ub, "reason" / _String),
    StreamMessageType.RECEIPT: Struct(
        "stream_id" / Int32ub,
        "peer" / Int16ub,  # the stream's sender (pid)
        "reason" / _String,
    ),
    StreamMessageType.RESULT: Struct("stream_id" / Int32ub, "reason" / _String),
}

#: One stream message: the body of an EXTENSION message on ``ExtensionChannel.STREAMS``.
STREAM_MESSAGE = Struct(
    "type" / Byte,
    "body" / Switch(lambda ctx: ctx.type, _BODIES),
    Terminated,
)

_TYPES = frozenset(int(t) for t in StreamMessageType)
_CHUNK_HEAD = bytes((StreamMessageType.CHUNK,))


def encode_stream(type_: StreamMessageType, **fields: Any) -> bytes:
    """Build one stream message."""
    if type_ is StreamMessageType.CHUNK:  # the hot path: skip construct
        data: bytes = fields["data"]
        return _CHUNK_HEAD + int(fields["stream_id"]).to_bytes(4, "big") + data
    return bytes(STREAM_MESSAGE.build({"type": type_, "body": fields}))


def forwarded_header(stream_id: int, header: Any) -> bytes:
    """A stream's HEADER as relayed to its receivers (their destinations are theirs)."""
    return encode_stream(
        StreamMessageType.HEADER,
        stream_id=stream_id,
        text=header.text,
        size=header.size,
        topic=header.topic,
        name=header.name,
        mime_type=header.mime_type,
        destinations=[],
    )


def decode_stream_untrusted(data: bytes) -> tuple[StreamMessageType, Any]:
    """Parse a stream message from a peer; raises ProtocolError on bad input."""
    if not data or data[0] not in _TYPES:
        raise ProtocolError(f"unknown stream message type {data[0] if data else None}")
    type_ = StreamMessageType(data[0])
    if type_ is StreamMessageType.CHUNK:
        if len(data) < 5:
            raise ProtocolError("stream CHUNK shorter than its header")
        return type_, _Chunk(int.from_bytes(data[1:5], "big"), data[5:])
    try:
        return type_, STREAM_MESSAGE.parse(data).body
    except (ConstructError, UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed stream {type_.name}: {exc}") from None


@attrs.frozen
class _Chunk:
    stream_id: int
    data: bytes


# --- readers ------------------------------------------------------------------------------

T = TypeVar("T", str, bytes)


class _Reader(Generic[T]):
    """The receiving end of one stream: a bounded buffer the application drains."""

    def __init__(self, info: StreamInfo) -> None:
        #: the stream's header
        self.info = info
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._received = 0
        self._done = False
        self._error: StreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # fed by StreamsClient

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self._received += len(data)
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: StreamError) -> None:
        if not self._done:
            self._error = error
            self._done = True
            self._chunks.clear()  # a cut stream's data is useless: free it now
            self._buffered = 0
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # read by the application

    async def _next_bytes(self) -> bytes | None:
        while True:
            if self._error is not None:
                raise self._error
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                return data
            if self._done:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def _convert(self, data: bytes, final: bool) -> T:
        raise NotImplementedError

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while (data := await self._next_bytes()) is not None:
            chunk = self._convert(data, False)
            if chunk:
                yield chunk
        tail = self._convert(b"", True)
        if tail:
            yield tail

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.id!r}, topic={self.info.topic!r})"


class ByteStreamReader(_Reader[bytes]):
    """A byte stream as it arrives: ``async for chunk in reader`` or ``await read_all()``.

    Raises StreamError if the stream is cut.
    """

    def _convert(self, data: bytes, final: bool) -> bytes:
        return data

    async def read_all(self) -> bytes:
        """The whole stream, once it has arrived."""
        return b"".join([chunk async for chunk in self])


class TextStreamReader(_Reader[str]):
    """A text stream as it arrives: ``async for text in reader`` or ``await read_all()``.

    Raises StreamError if the stream is cut, or is not valid UTF-8.
    """

    def __init__(self, info: StreamInfo) -> None:
        super().__init__(info)
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def _convert(self, data: bytes, final: bool) -> str:
        try:
            return self._decoder.decode(data, final)
        except UnicodeDecodeError:
            raise StreamError(f"text stream {self.info.id} is not valid UTF-8") from None

    async def read_all(self) -> str:
        """The whole text, once it has arrived."""
        return "".join([text async for text in self])


TextStreamHandler = Callable[[TextStreamReader, str], "Awaitable[None] | None"]
ByteStreamHandler = Callable[[ByteStreamReader, str], "Awaitable[None] | None"]


# --- client -------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Incoming:
    sender_pid: int
    stream_id: int
    reader: TextStreamReader | ByteStreamReader


def _utf8_chunks(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in chunks of at most ``size`` bytes, never cutting a UTF-8 character."""
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        while end < len(data) and end > start + 1 and (data[end] & 0xC0) == 0x80:
            end -= 1  # a continuation byte: cut before the character it belongs to
        yield data[start:end]
        start = end


def _byte_chunks(data: bytes, size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


class StreamsClient:
    """A room's streams: the handlers it registered, the streams it sends and receives.

    Created by :class:`~netcode.rooms.client.Room` (``room.streams``); applications use
    ``room.register_*_stream_handler`` and ``room.local_participant.send_*``.
    """

    def __init__(self, room: Room, channel: int) -> None:
        self._room = room
        self._channel = channel
        #: the largest stream this client accepts, in bytes (the receiver's cap)
        self.max_stream_bytes = MAX_STREAM_BYTES
        #: streams received at once; more are refused
        self.max_concurrent_streams = DEFAULT_MAX_CONCURRENT_STREAMS
        #: unread bytes one reader may hold before its stream is cut
        self.reader_buffer_bytes = DEFAULT_READER_BUFFER_BYTES
        #: sending waits while more than this many bytes wait in the connection's queues
        self.backlog_limit_bytes = DEFAULT_BACKLOG_LIMIT_BYTES
        # the pace of all streams sent together (None: no limit), one chunk deep
        self._pace_bucket: TokenBucket | None = None
        self._text_handlers: dict[str, TextStreamHandler] = {}
        self._byte_handlers: dict[str, ByteStreamHandler] = {}
        self._incoming: dict[tuple[int, int], _Incoming] = {}
        self._results: dict[int, asyncio.Future[str]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        room.extension_handlers[channel] = self._on_message

    @property
    def max_bytes_per_s(self) -> float | None:
        """The bytes a second all streams sent together keep under (None: no limit). Set
        when the room joins to STREAM_BUDGET_SHARE of what the server takes from this
        client; a server cuts off a client that sends more as ``flooding``."""
        return None if self._pace_bucket is None else self._pace_bucket.rate

    @max_bytes_per_s.setter
    def max_bytes_per_s(self, rate: float | None) -> None:
        self._pace_bucket = TokenBucket(rate, CHUNK_BYTES) if rate else None

    def pace_to_budget(self, server_bytes_per_s: int) -> None:
        """The server takes ``server_bytes_per_s`` reliable bytes a second from this client
        (0: it did not say): streams keep to their share of it."""
        self.max_bytes_per_s = server_bytes_per_s * STREAM_BUDGET_SHARE or None

    async def _pace(self, size: int) -> None:
        """Wait until ``size`` more bytes (a chunk at most) keep to ``max_bytes_per_s``."""
        bucket = self._pace_bucket
        loop = asyncio.get_running_loop()
        while bucket is not None and not bucket.take(loop.time(), size):
            await asyncio.sleep((size - bucket.level(loop.time())) / bucket.rate)

    # registration

    def register_text_handler(self, topic: str, handler: TextStreamHandler) -> None:
        """Receive text streams on ``topic`` (one handler per topic)."""
        if topic in self._text_handlers:
            raise ValueError(f"a text stream handler for topic {topic!r} is already registered")
        self._text_handlers[topic] = handler

    def register_byte_handler(self, topic: str, handler: ByteStreamHandler) -> None:
        """Receive byte streams on ``topic`` (one handler per topic)."""
        if topic in self._byte_handlers:
            raise ValueError(f"a byte stream handler for topic {topic!r} is already registered")
        self._byte_handlers[topic] = handler

    def unregister_text_handler(self, topic: str) -> None:
        self._text_handlers.pop(topic, None)

    def unregister_byte_handler(self, topic: str) -> None:
        self._byte_handlers.pop(topic, None)

    # sending

    async def send_text(
        self,
        text: str,
        *,
        topic: str = "",
        destination_identities: str | Iterable[str] = (),
        on_progress: StreamProgress | None = None,
    ) -> StreamInfo:
        """Send ``text`` as a text stream; see LocalParticipant.send_text."""
        data = text.encode()
        return await self._send(
            _utf8_chunks(data, CHUNK_BYTES),
            size=len(data),
            text=True,
            topic=topic,
            name="",
            mime_type="text/plain",
            destination_identities=destination_identities,
            on_progress=on_progress,
        )

    async def send_bytes(
        self,
        data: bytes,
        *,
        name: str = "",
        mime_type: str = "application/octet-stream",
        topic: str = "",
        destination_identities: str | Iterable[str] = (),
        on_progress: StreamProgress | None = None,
    ) -> StreamInfo:
        """Send ``data`` as a byte stream; see LocalParticipant.send_bytes."""
        data = bytes(data)
        return await self._send(
            _byte_chunks(data, CHUNK_BYTES),
            size=len(data),
            text=False,
            topic=topic,
            name=name,
            mime_type=mime_type,
            destination_identities=destination_identities,
            on_progress=on_progress,
        )

    async def send_file(
        self,
        path: str | os.PathLike[str],
        *,
        topic: str = "",
        name: str | None = None,
        mime_type: str | None = None,
        destination_identities: str | Iterable[str] = (),
        on_progress: StreamProgress | None = None,
    ) -> StreamInfo:
        """Send a file as a byte stream (its name and guessed MIME type in the header)."""
        size = os.path.getsize(path)
        if name is None:
            name = os.path.basename(os.fspath(path))
        if mime_type is None:
            mime_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if size > MAX_STREAM_BYTES:
            raise ValueError(f"file of {size} bytes exceeds MAX_STREAM_BYTES ({MAX_STREAM_BYTES})")
        with open(path, "rb") as file:
            # Chunks of 15 KiB read from a local file: too small to be worth a thread each.
            chunks = iter(lambda: file.read(CHUNK_BYTES), b"")
            return await self._send(
                chunks,
                size=size,
                text=False,
                topic=topic,
                name=name,
                mime_type=mime_type,
                destination_identities=destination_identities,
                on_progress=on_progress,
            )

    async def _send(
        self,
        chunks: Iterable[bytes],
        *,
        size: int,
        text: bool,
        topic: str,
        name: str,
        mime_type: str,
        destination_identities: str | Iterable[str],
        on_progress: StreamProgress | None,
    ) -> StreamInfo:
        if size > MAX_STREAM_BYTES:
            raise ValueError(
                f"stream of {size} bytes exceeds MAX_STREAM_BYTES ({MAX_STREAM_BYTES} bytes)"
            )
        for label, value in (("name", name), ("mime_type", mime_type), ("topic", topic)):
            if len(value.encode()) > _MAX_NAME_BYTES:
                raise ValueError(f"stream {label} is longer than {_MAX_NAME_BYTES} bytes")
        room = self._room
        room._require_link()
        identities = identity_list(destination_identities)
        destinations = [
            room.remote_participants[i].pid for i in identities if i in room.remote_participants
        ]
        stream_id = self._next_id()
        info = StreamInfo(
            id=f"ST_{room.local_participant.pid}_{stream_id}",
            topic=topic,
            name=name,
            mime_type=mime_type,
            size=size,
        )
        if identities and not destinations:
            return info  # nobody named is in the room: nothing to send (as publish_data)
        result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._results[stream_id] = result
        finished = False
        try:
            self._send_message(
                StreamMessageType.HEADER,
                stream_id=stream_id,
                text=text,
                size=size,
                topic=topic,
                name=name,
                mime_type=mime_type,
                destinations=destinations,
            )
            sent = 0
            for chunk in chunks:
                while room.send_backlog() > self.backlog_limit_bytes and not result.done():
                    await asyncio.sleep(_PACING_SLEEP_S)
                if result.done():
                    break  # every receiver is done (or gone): stop sending
                if sent + len(chunk) > size:
                    raise ValueError("the stream's data grew while it was being sent")
                await self._pace(len(chunk))
                if result.done():
                    break
                self._send_message(StreamMessageType.CHUNK, stream_id=stream_id, data=chunk)
                sent += len(chunk)
                if on_progress is not None:
                    on_progress(sent, size)
            else:
                if sent != size:
                    raise ValueError("the stream's data shrank while it was being sent")
                if on_progress is not None and size == 0:
                    on_progress(0, 0)
                self._send_message(StreamMessageType.TRAILER, stream_id=stream_id, reason="")
            try:
                async with asyncio.timeout(RESULT_TIMEOUT_S):
                    reason = await result
            except TimeoutError:
                raise StreamError(
                    f"stream {info.id}: no word from the receivers within {RESULT_TIMEOUT_S} s"
                ) from None
            finished = True
        finally:
            self._results.pop(stream_id, None)
            if not finished:
                # Cancelled, failed, or timed out: tell the receivers (best effort).
                try:
                    self._send_message(
                        StreamMessageType.TRAILER, stream_id=stream_id, reason="sender gave up"
                    )
                except (NetcodeError, ValueError):
                    pass
        if reason:
            raise StreamError(f"stream {info.id} was cut: {reason}")
        return info

    def _next_id(self) -> int:
        while True:
            stream_id = next(self._ids) & 0xFFFFFFFF
            if stream_id and stream_id not in self._results:
                return stream_id

    def _send_message(self, type_: StreamMessageType, **fields: Any) -> None:
        try:
            self._room.send_extension(self._channel, encode_stream(type_, **fields))
        except NetcodeError as exc:  # DisconnectedError
            raise StreamError(f"cannot send: {exc}") from None

    # receiving

    def _on_message(self, sender_pid: int, body: bytes) -> None:
        type_, message = decode_stream_untrusted(body)
        if type_ is StreamMessageType.RESULT:
            result = self._results.get(message.stream_id)
            if result is not None and not result.done():
                result.set_result(message.reason)
            return
        key = (sender_pid, message.stream_id)
        if type_ is StreamMessageType.HEADER:
            self._on_header(sender_pid, message)
            return
        incoming = self._incoming.get(key)
        if incoming is None:
            return  # a stream this client refused, ignored or cut: its last messages
        reader = incoming.reader
        if type_ is StreamMessageType.CHUNK:
            data = message.data
            cap = min(self.max_stream_bytes, reader.info.size)
            if reader._received + len(data) > cap:
                self._cut(incoming, f"stream exceeded its cap of {cap} bytes")
            elif reader._buffered + len(data) > self.reader_buffer_bytes:
                self._cut(
                    incoming,
                    f"the receiver fell behind: more than {self.reader_buffer_bytes} bytes unread",
                )
            else:
                reader._feed(data)
        elif type_ is StreamMessageType.TRAILER:
            del self._incoming[key]
            if message.reason:
                reader._fail(StreamError(f"stream {reader.info.id} was cut: {message.reason}"))
            elif reader._received != reader.info.size:
                self._cut(
                    incoming, f"stream ended after {reader._received} of {reader.info.size} bytes"
                )
            else:
                reader._finish()
                self._receipt(incoming.sender_pid, incoming.stream_id, "")
        else:
            raise ProtocolError(f"stream {type_.name} is not a server message")

    def _on_header(self, sender_pid: int, header: Any) -> None:
        key = (sender_pid, header.stream_id)
        if key in self._incoming:
            raise ProtocolError(f"stream {header.stream_id} opened twice")
        handlers = self._text_handlers if header.text else self._byte_handlers
        handler = handlers.get(header.topic)
        if handler is None:
            # Nobody here wants it: not an error (as in LiveKit), and the server can stop.
            self._receipt(sender_pid, header.stream_id, "")
            return
        if len(self._incoming) >= self.max_concurrent_streams:
            self._receipt(
                sender_pid,
                header.stream_id,
                f"the receiver has {self.max_concurrent_streams} streams open already",
            )
            return
        info = StreamInfo(
            id=f"ST_{sender_pid}_{header.stream_id}",
            topic=header.topic,
            name=header.name,
            mime_type=header.mime_type,
            size=header.size,
        )
        reader: TextStreamReader | ByteStreamReader = (
            TextStreamReader(info) if header.text else ByteStreamReader(info)
        )
        incoming = _Incoming(sender_pid, header.stream_id, reader)
        self._incoming[key] = incoming
        if header.size > self.max_stream_bytes:
            self._cut(incoming, f"stream exceeded its cap of {self.max_stream_bytes} bytes")
        participant = self._room.participant_by_pid(sender_pid)
        identity = participant.identity if participant is not None else ""
        try:
            outcome = handler(reader, identity)  # type: ignore[arg-type]
        except Exception:
            logger.exception("stream handler for topic %r raised", header.topic)
            return
        if inspect.isawaitable(outcome):
            task = asyncio.ensure_future(outcome)
            self._tasks.add(task)
            task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("stream handler raised", exc_info=task.exception())

    def _cut(self, incoming: _Incoming, reason: str) -> None:
        """Cut a stream this client receives: its reader raises, and the sender is told."""
        self._incoming.pop((incoming.sender_pid, incoming.stream_id), None)
        incoming.reader._fail(StreamError(f"stream {incoming.reader.info.id}: {reason}"))
        self._receipt(incoming.sender_pid, incoming.stream_id, reason)

    def _receipt(self, sender_pid: int, stream_id: int, reason: str) -> None:
        try:
            self._room.send_extension(
                self._channel,
                encode_stream(
                    StreamMessageType.RECEIPT, stream_id=stream_id, peer=sender_pid, reason=reason
                ),
            )
        except NetcodeError:
            pass  # disconnected: the server counts this receiver out when it leaves

    def close(self) -> None:
        """The room disconnected: cut every stream received, fail every stream sent."""
        for incoming in list(self._incoming.values()):
            incoming.reader._fail(StreamError(f"stream {incoming.reader.info.id}: disconnected"))
        self._incoming.clear()
        for result in self._results.values():
            if not result.done():
                result.set_result("the room disconnected")
        for task in list(self._tasks):
            task.cancel()


# --- server -------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Relay:
    """A stream the server relays."""

    sender: ServerParticipant
    stream_id: int
    size: int
    #: receivers that have not sent their RECEIPT yet, by pid
    receivers: dict[int, ServerParticipant]
    received: int = 0
    trailer_seen: bool = False
    failures: list[str] = attrs.field(factory=list)


class StreamRouter:
    """The server side of streams: relays them and reports each one's outcome to its sender.

    Registered as the router of ``ExtensionChannel.STREAMS`` (``RoomServer.streams``); the
    room calls :meth:`participant_left` when someone leaves.
    """

    def __init__(self, channel: int) -> None:
        self._channel = channel
        self._relays: dict[tuple[ServerParticipant, int], _Relay] = {}
        self._by_sender: dict[ServerParticipant, set[int]] = {}
        #: streams relayed since start, and streams cut by the server
        self.relayed = 0
        self.cut = 0

    @property
    def streams_in_flight(self) -> int:
        return len(self._relays)

    def __call__(self, room: ServerRoom, sender: ServerParticipant, body: bytes) -> None:
        """Route one stream message from ``sender``; raises ProtocolError if malformed."""
        type_, message = decode_stream_untrusted(body)
        if type_ is StreamMessageType.HEADER:
            self._on_header(room, sender, message)
        elif type_ is StreamMessageType.RECEIPT:
            self._on_receipt(room, sender, message)
        elif type_ in (StreamMessageType.CHUNK, StreamMessageType.TRAILER):
            relay = self._relays.get((sender, message.stream_id))
            if relay is None:
                return  # a stream already ended or cut: its last messages
            if type_ is StreamMessageType.CHUNK:
                self._on_chunk(relay, message.data)
            else:
                self._on_trailer(relay, message.reason)
        else:
            raise ProtocolError(f"stream {type_.name} is not a client message")

    def _result(self, sender: ServerParticipant, stream_id: int, reason: str) -> None:
        sender.send_extension(
            self._channel,
            encode_stream(StreamMessageType.RESULT, stream_id=stream_id, reason=reason),
        )

    def _on_header(self, room: ServerRoom, sender: ServerParticipant, header: Any) -> None:
        stream_id = header.stream_id
        if (sender, stream_id) in self._relays:
            raise ProtocolError(f"stream {stream_id} opened twice")
        if not sender.can_publish:
            return self._result(
                sender, stream_id, "permission denied: token lacks can_publish_data"
            )
        if header.size > MAX_STREAM_BYTES:
            return self._result(sender, stream_id, f"stream exceeds {MAX_STREAM_BYTES} bytes")
        mine = self._by_sender.setdefault(sender, set())
        if len(mine) >= MAX_STREAMS_IN_FLIGHT:
            return self._result(
                sender, stream_id, f"over {MAX_STREAMS_IN_FLIGHT} streams in flight"
            )
        wanted = set(header.destinations)
        receivers = {
            p.pid: p
            for p in room.participants.values()
            if p is not sender and (not wanted or p.pid in wanted) and p.subscribes_to(header.topic)
        }
        if not receivers:
            return self._result(sender, stream_id, "")  # delivered to all of nobody
        relay = _Relay(sender, stream_id, header.size, receivers)
        self._relays[(sender, stream_id)] = relay
        mine.add(stream_id)
        self.relayed += 1
        forwarded = forwarded_header(stream_id, header)
        for receiver in receivers.values():
            receiver.send_extension(self._channel, forwarded, sender_pid=sender.pid)

    def _on_chunk(self, relay: _Relay, data: bytes) -> None:
        relay.received += len(data)
        if relay.received > relay.size:
            self._cut_stream(relay, f"stream sent more than its declared {relay.size} bytes")
            raise ProtocolError("stream longer than declared")
        body = encode_stream(StreamMessageType.CHUNK, stream_id=relay.stream_id, data=data)
        for pid, receiver in list(relay.receivers.items()):
            if receiver.send_backlog() > MAX_RELAY_BACKLOG_BYTES:
                # This receiver cannot keep up: memory on the server stays bounded.
                self.cut += 1
                reason = f"the receiver fell more than {MAX_RELAY_BACKLOG_BYTES} bytes behind"
                del relay.receivers[pid]
                relay.failures.append(f"{receiver.identity}: {reason}")
                self._trailer(relay, receiver, reason)
                continue
            receiver.send_extension(self._channel, body, sender_pid=relay.sender.pid)
        self._maybe_done(relay)

    def _on_trailer(self, relay: _Relay, reason: str) -> None:
        if reason:  # the sender gave up: the receivers are told, the sender knows already
            for receiver in relay.receivers.values():
                self._trailer(relay, receiver, reason)
            self._forget(relay)
            return
        if relay.received != relay.size:
            self._cut_stream(
                relay, f"stream ended after {relay.received} of its declared {relay.size} bytes"
            )
            raise ProtocolError("stream shorter than declared")
        relay.trailer_seen = True
        for receiver in relay.receivers.values():
            self._trailer(relay, receiver, "")
        self._maybe_done(relay)

    def _on_receipt(self, room: ServerRoom, receiver: ServerParticipant, receipt: Any) -> None:
        sender = room.participants.get(receipt.peer)
        relay = self._relays.get((sender, receipt.stream_id)) if sender is not None else None
        if relay is None or relay.receivers.get(receiver.pid) is not receiver:
            return  # late, or not a stream this participant receives: dropped
        del relay.receivers[receiver.pid]
        if receipt.reason:
            relay.failures.append(f"{receiver.identity}: {receipt.reason}")
        self._maybe_done(relay)

    def participant_left(self, participant: ServerParticipant) -> None:
        """Cut the streams ``participant`` was sending; count it out of those it received."""
        for stream_id in list(self._by_sender.pop(participant, ())):
            relay = self._relays.get((participant, stream_id))
            if relay is not None:
                for receiver in relay.receivers.values():
                    self._trailer(relay, receiver, "the sender disconnected")
                self._forget(relay)
        for relay in list(self._relays.values()):
            if relay.receivers.get(participant.pid) is participant:
                del relay.receivers[participant.pid]
                relay.failures.append(f"{participant.identity}: disconnected")
                self._maybe_done(relay)

    def _trailer(self, relay: _Relay, receiver: ServerParticipant, reason: str) -> None:
        receiver.send_extension(
            self._channel,
            encode_stream(StreamMessageType.TRAILER, stream_id=relay.stream_id, reason=reason),
            sender_pid=relay.sender.pid,
        )

    def _cut_stream(self, relay: _Relay, reason: str) -> None:
        self.cut += 1
        for receiver in relay.receivers.values():
            self._trailer(relay, receiver, reason)
        self._result(relay.sender, relay.stream_id, reason)
        self._forget(relay)

    def _maybe_done(self, relay: _Relay) -> None:
        # Done when nobody is left to receive (all answered, refused or gone): the sender
        # learns at once, and stops sending if it has not finished.
        if relay.receivers:
            return
        self._result(relay.sender, relay.stream_id, "; ".join(relay.failures))
        self._forget(relay)

    def _forget(self, relay: _Relay) -> None:
        self._relays.pop((relay.sender, relay.stream_id), None)
        mine = self._by_sender.get(relay.sender)
        if mine is not None:
            mine.discard(relay.stream_id)
