"""Typed game events: declared once, sent reliably and in order, fast under loss.

Theory of operation
-------------------
An event type is an attrs class registered with a type id (:func:`event_type`); its wire
layout is derived from the same declaration (one construct field per attrs field, from its
annotation: ``int`` as a zigzag varint, ``float`` as a double, ``bool``, ``str`` and ``bytes``
with varint lengths). Chat, spawn and despawn come built in (type ids 1-3; applications use
16-255).

Each connection carries one :class:`~netcode.core.reliable.ReliableChannel` in each
direction, riding EVENT frames on the lossy channel with RTT-timed resends, so a lost
packet costs about one round trip instead of SCTP's one-second retransmission timeout. An
event too large for a datagram takes its place in the same sequence but travels over the
SCTP reliable channel (EXTENSION channel EVENTS), so order is kept.

Clients send to the server; the server stamps the sender, gives the event to its game host,
and relays it (in the order received) to the destinations (default: everyone else) that
subscribe to its topic. A topic's name travels with the first event that uses it in each
direction; the channel's order guarantees the binding arrives first.

Event message layout (inside the reliable channel), big-endian:

- client to server: ``type_id: u8, topic_id: u16, [topic name: u8 length + UTF-8 if
  topic_id is new], destinations: u8 count + u16 pids, body``
- server to client: ``type_id: u8, sender pid: u16 (0: the server), topic_id: u16,
  [topic name if new], body``

A new topic id is one greater than the highest bound so far in that direction, which is how
the receiver knows a name follows.
"""

from __future__ import annotations

import logging
import struct
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, dataclass_transform

import attrs
from construct import (
    Construct,
    ConstructError,
    Flag,
    Float64b,
    GreedyBytes,
    PascalString,
    Prefixed,
    Struct,
    Terminated,
    VarInt,
    ZigZag,
)

from netcode.core import Endpoint
from netcode.core.reliable import ReliableChannel, ReliableConfig
from netcode.errors import ProtocolError
from netcode.rooms.topics import MAX_TOPICS

__all__ = [
    "DEFAULT_EVENT_TYPES",
    "Chat",
    "Despawn",
    "EventCodec",
    "EventLink",
    "EventRegistry",
    "Spawn",
    "encode_fallback",
    "event_type",
]

logger = logging.getLogger(__name__)

_FIELD_CODECS: dict[Any, Construct] = {
    int: ZigZag,
    float: Float64b,
    bool: Flag,
    str: PascalString(VarInt, "utf8"),
    bytes: Prefixed(VarInt, GreedyBytes),
}


class EventCodec:
    """The wire layout of one event type, derived from its attrs declaration."""

    def __init__(self, cls: type, type_id: int) -> None:
        if not attrs.has(cls):
            raise TypeError(f"{cls.__name__} must be an attrs class")
        hints = typing.get_type_hints(cls)
        fields = []
        for field in attrs.fields(cls):
            codec = field.metadata.get("netcode.wire") or _FIELD_CODECS.get(hints[field.name])
            if codec is None:
                raise TypeError(
                    f"{cls.__name__}.{field.name}: no wire layout for {hints[field.name]!r} "
                    "(use int, float, bool, str, bytes, or metadata={'netcode.wire': ...})"
                )
            fields.append(field.name / codec)
        self.cls = cls
        self.type_id = type_id
        self.names = [f.name for f in attrs.fields(cls)]
        self.struct = Struct(*fields, Terminated)

    def encode(self, event: Any) -> bytes:
        return bytes(self.struct.build({name: getattr(event, name) for name in self.names}))

    def decode_untrusted(self, body: bytes) -> Any:
        try:
            parsed = self.struct.parse(body)
            return self.cls(**{name: parsed[name] for name in self.names})
        except (ConstructError, UnicodeDecodeError, ValueError, TypeError) as exc:
            raise ProtocolError(f"malformed {self.cls.__name__} event: {exc}") from None


class EventRegistry:
    """Event types by id and by class."""

    def __init__(self) -> None:
        self.by_id: dict[int, EventCodec] = {}
        self.by_cls: dict[type, EventCodec] = {}

    def register(self, cls: type, type_id: int) -> EventCodec:
        if not 1 <= type_id <= 255:
            raise ValueError(f"event type_id must be within 1..255, got {type_id}")
        existing = self.by_id.get(type_id)
        if existing is not None and existing.cls is not cls:
            raise ValueError(f"event type_id {type_id} is already {existing.cls.__name__}")
        codec = EventCodec(cls, type_id)
        self.by_id[type_id] = codec
        self.by_cls[cls] = codec
        return codec

    def of(self, event: object) -> EventCodec:
        try:
            return self.by_cls[type(event)]
        except KeyError:
            raise TypeError(f"{type(event).__name__} is not a registered event type") from None


DEFAULT_EVENT_TYPES = EventRegistry()

C = TypeVar("C", bound=type)


# Tells type checkers that a decorated class becomes a frozen attrs class.
@dataclass_transform(frozen_default=True, field_specifiers=(attrs.field,))
def event_type(*, type_id: int, registry: EventRegistry | None = None) -> Callable[[C], C]:
    """Class decorator: make ``cls`` a frozen attrs class (if needed) and register it."""

    def wrap(cls: C) -> C:
        if not attrs.has(cls):
            cls = attrs.frozen(cls)
        (registry or DEFAULT_EVENT_TYPES).register(cls, type_id)
        return cls

    return wrap


@event_type(type_id=1)
class Chat:
    """A chat line."""

    text: str


@event_type(type_id=2)
class Spawn:
    """Something appeared in the game (a pickup, a player)."""

    entity_id: int
    kind: str
    x: float = 0.0
    y: float = 0.0


@event_type(type_id=3)
class Despawn:
    """Something left the game."""

    entity_id: int
    reason: str = ""


_UP = struct.Struct("!BH")
_DOWN = struct.Struct("!BHH")


class _InOrderTopics:
    """Topic ids bound in the order of an ordered stream: a new id carries its name."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: dict[int, str] = {0: ""}

    def bind(self, topic: str) -> tuple[int, bytes]:
        if not topic:
            return 0, b""
        topic_id = self.ids.get(topic)
        if topic_id is not None:
            return topic_id, b""
        if len(self.ids) >= MAX_TOPICS:
            raise ValueError(f"more than {MAX_TOPICS} event topics on one connection")
        topic_id = self.ids[topic] = len(self.ids) + 1
        raw = topic.encode()
        return topic_id, bytes((len(raw),)) + raw

    def read(self, topic_id: int, data: bytes, offset: int) -> tuple[str, int]:
        name = self.names.get(topic_id)
        if name is not None:
            return name, offset
        if topic_id != len(self.names):  # the next new id, and only that, carries a name
            raise ProtocolError(f"event names unknown topic id {topic_id}")
        if offset >= len(data) or offset + 1 + data[offset] > len(data):
            raise ProtocolError("event truncated in its topic name")
        if len(self.names) > MAX_TOPICS:
            raise ProtocolError(f"peer bound more than {MAX_TOPICS} event topics")
        end = offset + 1 + data[offset]
        try:
            name = data[offset + 1 : end].decode()
        except UnicodeDecodeError:
            raise ProtocolError("event topic name is not UTF-8") from None
        self.names[topic_id] = name
        return name, end


class EventLink:
    """One direction pair of events on one connection: a ReliableChannel plus topic tables.

    ``fallback(message_id, message)`` sends an oversized event over the SCTP reliable
    channel; the peer's owner passes it to :meth:`receive_fallback`.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        fallback: Callable[[int, bytes], None],
        *,
        config: ReliableConfig | None = None,
        registry: EventRegistry | None = None,
        name: str = "",
    ) -> None:
        self.channel = ReliableChannel(endpoint, config, fallback=fallback, name=name)
        self.registry = registry or DEFAULT_EVENT_TYPES
        self._out_topics = _InOrderTopics()
        self._in_topics = _InOrderTopics()
        self.malformed = 0

    # the FlushHook interface of DatagramConnection
    def flush(self, now: float) -> object:
        return self.channel.flush(now)

    def get_timer(self) -> float | None:
        return self.channel.get_timer()

    def send_up(self, event: Any, topic: str, destinations: Iterable[int]) -> int:
        """Client side: queue an event for the server. Raises SendQueueFull when flooding."""
        codec = self.registry.of(event)
        dests = list(destinations)
        if len(dests) > 255:
            raise ValueError("at most 255 destination identities per event")
        topic_id, name = self._out_topics.bind(topic)
        message = b"".join(
            (
                _UP.pack(codec.type_id, topic_id),
                name,
                bytes((len(dests),)),
                struct.pack(f"!{len(dests)}H", *dests),
                codec.encode(event),
            )
        )
        return self.channel.send(message)

    def send_down(self, type_id: int, sender_pid: int, topic: str, body: bytes) -> int:
        """Server side: queue an (already encoded) event for the client."""
        topic_id, name = self._out_topics.bind(topic)
        return self.channel.send(_DOWN.pack(type_id, sender_pid, topic_id) + name + body)

    def receive_up(
        self, on_error: Callable[[str], None]
    ) -> list[tuple[int, str, list[int], bytes]]:
        """Server side: events the client sent, in order: (type_id, topic, dests, body).

        A malformed event is skipped and reported to ``on_error``.
        """
        out = []
        while (message := self.channel.next_message()) is not None:
            try:
                if len(message) < _UP.size + 1:
                    raise ProtocolError("event shorter than its header")
                type_id, topic_id = _UP.unpack_from(message)
                if type_id not in self.registry.by_id:
                    raise ProtocolError(f"unknown event type {type_id}")
                topic, offset = self._in_topics.read(topic_id, message, _UP.size)
                if offset >= len(message):
                    raise ProtocolError("event truncated before its destinations")
                count = message[offset]
                end = offset + 1 + 2 * count
                if end > len(message):
                    raise ProtocolError("event truncated in its destinations")
                dests = list(struct.unpack_from(f"!{count}H", message, offset + 1))
                out.append((type_id, topic, dests, message[end:]))
            except ProtocolError as exc:
                self.malformed += 1
                on_error(str(exc))
        return out

    def receive_down(self, on_error: Callable[[str], None]) -> list[tuple[Any, int, str]]:
        """Client side: events from the server, in order: (event, sender pid, topic)."""
        out = []
        while (message := self.channel.next_message()) is not None:
            try:
                if len(message) < _DOWN.size:
                    raise ProtocolError("event shorter than its header")
                type_id, pid, topic_id = _DOWN.unpack_from(message)
                codec = self.registry.by_id.get(type_id)
                if codec is None:
                    raise ProtocolError(f"unknown event type {type_id}")
                topic, offset = self._in_topics.read(topic_id, message, _DOWN.size)
                out.append((codec.decode_untrusted(message[offset:]), pid, topic))
            except ProtocolError as exc:
                self.malformed += 1
                on_error(str(exc))
        return out

    def receive_frame(self, payload: bytes, now: float) -> None:
        self.channel.receive_frame(payload, now)

    def receive_fallback(self, body: bytes) -> None:
        """An oversized event that came over the reliable channel: ``id: u16, message``."""
        if len(body) < 2:
            raise ProtocolError("fallback event shorter than its id")
        self.channel.receive_fallback(int.from_bytes(body[:2], "big"), body[2:])


def encode_fallback(message_id: int, message: bytes) -> bytes:
    return message_id.to_bytes(2, "big") + message
