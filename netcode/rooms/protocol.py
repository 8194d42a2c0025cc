"""Messages of the rooms layer: the reliable channel's control messages and lossy DATA frames.

Every message on the ``reliable`` data channel is one ``MESSAGE``: a kind byte and its body.
Lossy ``publish_data`` payloads ride netcode datagrams as ``FrameType.DATA`` frames whose
payload is ``LOSSY_DATA_UP`` (client to server) or ``LOSSY_DATA_DOWN`` (server to client).

Participants are named on the wire by a small per-room number (``pid``), topics by a small
per-connection, per-direction number (``topic_id``, 0 meaning no topic): a topic's name
crosses the wire once, in a ``TOPIC`` message, before the first message that uses its id.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from construct import (
    Byte,
    ConstructError,
    Container,
    Flag,
    GreedyBytes,
    If,
    Int16ub,
    Int32ub,
    Int64ub,
    PascalString,
    PrefixedArray,
    Struct,
    Switch,
    Terminated,
    VarInt,
    this,
)

from netcode.errors import ProtocolError

__all__ = [
    "FLAG_TEXT",
    "FLAG_TOPIC_NAME",
    "LOSSY_DATA_MAX_AGE_S",
    "LOSSY_DOWN",
    "LOSSY_UP",
    "MAX_IDENTITY_CHARS",
    "MAX_TOPIC_CHARS",
    "MAX_TRACK_NAME_CHARS",
    "MESSAGE",
    "PEER_HOST",
    "PEER_PUBLISH",
    "PEER_SUBSCRIBE",
    "UNCOUNTED_KINDS",
    "ExtensionChannel",
    "Kind",
    "decode_lossy_down_untrusted",
    "decode_lossy_up_untrusted",
    "decode_message_untrusted",
    "decode_own_entity_untrusted",
    "dispatch_message_untrusted",
    "encode_lossy_down",
    "encode_lossy_up",
    "encode_message",
    "encode_own_entity",
    "identity_list",
    "lossy_down_header_bytes",
    "lossy_up_header_bytes",
    "track_options",
]

#: Lossy data not sent within this many seconds (the link backed up) is dropped unsent.
LOSSY_DATA_MAX_AGE_S = 0.25

MAX_IDENTITY_CHARS = 256
MAX_TOPIC_CHARS = 128
MAX_TRACK_NAME_CHARS = 256


class Kind(enum.IntEnum):
    """Kinds of reliable-channel messages. C: sent by clients, S: sent by the server."""

    JOINED = 1  #: S: the room as it is when you join
    PARTICIPANT_JOINED = 2  #: S
    PARTICIPANT_LEFT = 3  #: S
    TOPIC = 4  #: C and S: a topic id now stands for this name, in this direction
    SUBSCRIBE = 5  #: C: forward me only these topics (or all)
    DATA = 6  #: C and S: a reliable data packet
    PUBLISH_TRACK = 7  #: C: I want to publish a data track
    TRACK_ACCEPTED = 8  #: S: your track got this sid; open its channel
    TRACK_REFUSED = 9  #: S: your track was refused, and why
    TRACK_PUBLISHED = 10  #: S: a participant published a track
    TRACK_UNPUBLISHED = 11  #: S and C (C: unpublish my track)
    ERROR = 12  #: S: you did something wrong (and may be disconnected)
    EXTENSION = 13  #: C and S: messages of higher layers (events fallback, RPC, streams)
    ACK = 14  #: C and S: I received this many of your counted messages (not itself counted)
    RESUMED = 15  #: S: first message on a resumed session's new link (not counted)
    LEAVE = 16  #: C: I am leaving on purpose (do not hold my session)
    PARTICIPANT_RECONNECTING = 17  #: S: a participant's link dropped; its session is held
    PARTICIPANT_RECONNECTED = 18  #: S: that participant is back
    PEER_INFO = 19  #: S: P2P rooms: a participant's rights and role on the mesh
    PEER_OFFER = 20  #: C and S: P2P rooms: an SDP offer for a direct link (S: pid stamped)
    PEER_ANSWER = 21  #: C and S: P2P rooms: the SDP answer to a PEER_OFFER (S: pid stamped)


#: Kinds that are not numbered for replay (see netcode.core.replay): they concern the link.
UNCOUNTED_KINDS = frozenset({Kind.ACK, Kind.RESUMED})

#: PEER_INFO flags: the participant may publish, may subscribe, is the room's listen host.
PEER_PUBLISH = 0x01
PEER_SUBSCRIBE = 0x02
PEER_HOST = 0x04


class ExtensionChannel(enum.IntEnum):
    """EXTENSION channels of netcode's own layers (applications may use 64-255)."""

    EVENTS = 1  #: game events too large for a datagram (sent reliably, in order)
    RPC = 2
    STREAMS = 3
    HOST = 4  #: the game host's announcements (tick rate and clock)
    HOST_ENTITY = 5  #: the game host's "this entity is yours" (GameHost.assign_entity)


_String = PascalString(VarInt, "utf8")

PARTICIPANT = Struct(
    "pid" / Int16ub,
    "identity" / _String,
    "name" / _String,
    "metadata" / _String,
)

TRACK_OPTIONS = Struct(
    "ordered" / Flag,
    "has_max_packet_life_time" / Flag,
    "max_packet_life_time" / If(this.has_max_packet_life_time, Int16ub),  # milliseconds
    "has_max_retransmits" / Flag,
    "max_retransmits" / If(this.has_max_retransmits, Int16ub),
)


#: HOST_ENTITY body: flags (bit 0: the participant has an entity), the entity id, then the
#: name of the topic whose world holds it (UTF-8, to the end).
OWN_ENTITY = struct.Struct("!BI")


def encode_own_entity(topic: str, entity_id: int | None) -> bytes:
    """A HOST_ENTITY message: entity ``entity_id`` (None: none) of ``topic`` is yours."""
    flags, eid = (0, 0) if entity_id is None else (1, entity_id)
    return OWN_ENTITY.pack(flags, eid) + topic.encode()


def decode_own_entity_untrusted(body: bytes) -> tuple[str, int | None]:
    """(topic, entity id or None) of a HOST_ENTITY message."""
    if not OWN_ENTITY.size < len(body) <= OWN_ENTITY.size + 4 * MAX_TOPIC_CHARS:
        raise ProtocolError(f"HOST_ENTITY of {len(body)} bytes")
    flags, eid = OWN_ENTITY.unpack_from(body)
    if flags & ~1:
        raise ProtocolError(f"HOST_ENTITY with unknown flags {flags:#x}")
    try:
        topic = body[OWN_ENTITY.size :].decode()
    except UnicodeDecodeError:
        raise ProtocolError("HOST_ENTITY topic is not UTF-8") from None
    return topic, eid if flags & 1 else None


def identity_list(identities: str | Iterable[str]) -> list[str]:
    """``destination_identities`` as a list; a single str is one identity.

    LiveKit takes a list; a str passed alone would otherwise be read as its letters, each
    an identity nobody has, and the packet would silently go nowhere.
    """
    if isinstance(identities, str):
        return [identities]
    named = list(identities)  # once: a generator would be empty on a second pass
    for identity in named:
        if not isinstance(identity, str):
            raise TypeError(
                f"destination_identities holds identities (str), not {type(identity).__name__}"
            )
    return named


def wanted_pids(
    participants: Iterable[Any], pids: int | Iterable[int], identities: str | Iterable[str]
) -> set[int] | None:
    """The pids a send names, from ``pids`` and the ``identities`` of ``participants``
    (objects with ``pid`` and ``identity``); empty: everyone. None if only identities not
    present were named (the send goes nowhere)."""
    wanted = {pids} if isinstance(pids, int) else set(pids)
    named = identity_list(identities)
    if named:
        present = {p.pid for p in participants if p.identity in named}
        if not present and not wanted:
            return None
        wanted |= present
    return wanted


def subscription_topics(body: Any) -> frozenset[str] | None:
    """The topics a SUBSCRIBE message names (None: all). Raises ProtocolError past 1024."""
    if len(body.topics) > 1024:
        raise ProtocolError("subscription to more than 1024 topics")
    return None if body.all else frozenset(body.topics)


def track_options(
    ordered: bool, max_packet_life_time: int | None, max_retransmits: int | None
) -> dict[str, Any]:
    """The TRACK_OPTIONS fields for a data track's reliability settings."""
    return {
        "ordered": ordered,
        "has_max_packet_life_time": max_packet_life_time is not None,
        "max_packet_life_time": max_packet_life_time,
        "has_max_retransmits": max_retransmits is not None,
        "max_retransmits": max_retransmits,
    }


TRACK = Struct(
    "pid" / Int16ub,
    "sid" / Int16ub,
    "name" / _String,
    "options" / TRACK_OPTIONS,
)

_BODIES = {
    Kind.JOINED: Struct(
        "pid" / Int16ub,
        "room" / _String,
        "participants" / PrefixedArray(VarInt, PARTICIPANT),
        "tracks" / PrefixedArray(VarInt, TRACK),
        "session" / _String,  # the session id, to resume it after a drop
        "resume_secret" / _String,  # proves the session is ours (hex); keep it secret
        "grace_ms" / Int32ub,  # how long the server holds the session after a drop
        "dead_after_ms" / Int32ub,  # silence after which either end declares the link dead
        # the reliable bytes a second the server takes from you (PeerBudgets); streams pace
        # themselves under it
        "message_bytes_per_s" / Int32ub,
    ),
    Kind.PARTICIPANT_JOINED: PARTICIPANT,
    Kind.PARTICIPANT_LEFT: Struct("pid" / Int16ub),
    Kind.TOPIC: Struct("topic_id" / Int16ub, "name" / _String),
    Kind.SUBSCRIBE: Struct("all" / Flag, "topics" / PrefixedArray(VarInt, _String)),
    Kind.DATA: Struct(
        "pid" / Int16ub,  # C: ignored (0); S: the sender, stamped by the server
        "topic_id" / Int16ub,
        "text" / Flag,  # the payload was a str (UTF-8)
        "destinations" / PrefixedArray(VarInt, Int16ub),  # C: pids; S: empty
        "payload" / GreedyBytes,
    ),
    Kind.PUBLISH_TRACK: Struct("request_id" / Int16ub, "name" / _String, "options" / TRACK_OPTIONS),
    Kind.TRACK_ACCEPTED: Struct("request_id" / Int16ub, "sid" / Int16ub),
    Kind.TRACK_REFUSED: Struct("request_id" / Int16ub, "reason" / _String),
    Kind.TRACK_PUBLISHED: TRACK,
    Kind.TRACK_UNPUBLISHED: Struct("pid" / Int16ub, "sid" / Int16ub),
    Kind.ERROR: Struct("code" / _String, "message" / _String),
    Kind.EXTENSION: Struct("channel" / Byte, "pid" / Int16ub, "body" / GreedyBytes),
    Kind.ACK: Struct("received" / Int64ub),
    Kind.RESUMED: Struct("received" / Int64ub),
    Kind.LEAVE: Struct(),
    Kind.PARTICIPANT_RECONNECTING: Struct("pid" / Int16ub),
    Kind.PARTICIPANT_RECONNECTED: Struct("pid" / Int16ub),
    Kind.PEER_INFO: Struct("pid" / Int16ub, "flags" / Byte),  # PEER_* flags below
    # C: pid is the participant the SDP is for; S: the one it came from (stamped)
    Kind.PEER_OFFER: Struct("pid" / Int16ub, "attempt" / Int16ub, "sdp" / _String),
    Kind.PEER_ANSWER: Struct("pid" / Int16ub, "attempt" / Int16ub, "sdp" / _String),
}

MESSAGE = Struct(
    "kind" / Byte,
    "body" / Switch(lambda ctx: ctx.kind, _BODIES),
    Terminated,  # a message is exactly one datagram-channel message: no trailing bytes
)

_KINDS = frozenset(int(k) for k in Kind)


def encode_message(kind: Kind, **fields: Any) -> bytes:
    """Build one reliable-channel message."""
    fast = _FAST_ENCODERS.get(kind)
    if fast is not None:
        return fast(**fields)
    return bytes(MESSAGE.build({"kind": kind, "body": fields}))


# --- the hot messages without construct ------------------------------------------------------
#
# DATA, TOPIC, ACK and EXTENSION are most of what a room relays (a relayed packet is one DATA
# per receiver, a stream or RPC is EXTENSIONs): building or parsing them with construct costs
# 40-70 us each, with struct under 2. These functions give the same bytes and the same
# results as MESSAGE, and refuse what it refuses (tests/test_rooms_codec.py checks both ways).

_DATA_HEAD = struct.Struct("!BHHB")  # kind, pid, topic_id, text
_TOPIC_HEAD = struct.Struct("!BH")  # kind, topic_id
_ACK = struct.Struct("!BQ")  # kind, received
_EXTENSION_HEAD = struct.Struct("!BBH")  # kind, channel, pid
_EMPTY_DESTINATIONS = b"\x00"  # a VarInt count of 0


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return bytes((value,))
    if value < 0:
        raise ValueError(f"VarInt cannot hold {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, offset: int, what: str) -> tuple[int, int]:
    value = shift = 0
    n = len(data)
    while True:
        if offset >= n:
            raise ProtocolError(f"malformed {what} message: truncated VarInt")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def _encode_data(
    *, pid: int, topic_id: int, text: bool, destinations: Iterable[int], payload: bytes
) -> bytes:
    head = _DATA_HEAD.pack(_DATA, pid, topic_id, 1 if text else 0)
    pids = list(destinations)
    if not pids:
        return head + _EMPTY_DESTINATIONS + payload
    return head + _varint(len(pids)) + struct.pack(f"!{len(pids)}H", *pids) + payload


def _decode_data(data: bytes) -> Any:
    if len(data) < _DATA_HEAD.size + 1:
        raise ProtocolError("malformed DATA message: shorter than its header")
    _, pid, topic_id, text = _DATA_HEAD.unpack_from(data)
    count, offset = _read_varint(data, _DATA_HEAD.size, "DATA")
    end = offset + 2 * count
    if end > len(data):
        raise ProtocolError(f"malformed DATA message: {count} destinations do not fit")
    destinations = list(struct.unpack_from(f"!{count}H", data, offset)) if count else []
    return Container(
        pid=pid, topic_id=topic_id, text=text != 0, destinations=destinations, payload=data[end:]
    )


def _encode_topic(*, topic_id: int, name: str) -> bytes:
    raw = name.encode()
    return _TOPIC_HEAD.pack(_TOPIC, topic_id) + _varint(len(raw)) + raw


def _decode_topic(data: bytes) -> Any:
    if len(data) < _TOPIC_HEAD.size + 1:
        raise ProtocolError("malformed TOPIC message: shorter than its header")
    _, topic_id = _TOPIC_HEAD.unpack_from(data)
    size, offset = _read_varint(data, _TOPIC_HEAD.size, "TOPIC")
    if offset + size != len(data):
        raise ProtocolError("malformed TOPIC message: the name's length does not match")
    try:
        name = data[offset:].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"malformed TOPIC message: {exc}") from None
    return Container(topic_id=topic_id, name=name)


def _encode_ack(*, received: int) -> bytes:
    return _ACK.pack(_ACK_KIND, received)


def _decode_ack(data: bytes) -> Any:
    if len(data) != _ACK.size:
        raise ProtocolError(f"malformed ACK message: {len(data)} bytes, not {_ACK.size}")
    return Container(received=_ACK.unpack(data)[1])


def _encode_extension(*, channel: int, pid: int, body: bytes) -> bytes:
    return _EXTENSION_HEAD.pack(_EXTENSION, channel, pid) + body


def _decode_extension(data: bytes) -> Any:
    if len(data) < _EXTENSION_HEAD.size:
        raise ProtocolError("malformed EXTENSION message: shorter than its header")
    _, channel, pid = _EXTENSION_HEAD.unpack_from(data)
    return Container(channel=channel, pid=pid, body=data[_EXTENSION_HEAD.size :])


_DATA, _TOPIC, _ACK_KIND, _EXTENSION = (
    int(Kind.DATA),
    int(Kind.TOPIC),
    int(Kind.ACK),
    int(Kind.EXTENSION),
)
_FAST_ENCODERS: dict[int, Callable[..., bytes]] = {
    Kind.DATA: _encode_data,
    Kind.TOPIC: _encode_topic,
    Kind.ACK: _encode_ack,
    Kind.EXTENSION: _encode_extension,
}
_FAST_DECODERS: dict[int, Callable[[bytes], Any]] = {
    _DATA: _decode_data,
    _TOPIC: _decode_topic,
    _ACK_KIND: _decode_ack,
    _EXTENSION: _decode_extension,
}
_KIND_OF = {int(k): k for k in Kind}


T = TypeVar("T")


def dispatch_message_untrusted(
    data: bytes | str, handlers: Mapping[Kind, Callable[[T, Any], None]], target: T
) -> None:
    """Parse a reliable-channel message and call its handler with ``(target, body)``.

    Raises ProtocolError for a malformed message or a kind ``handlers`` does not take (a
    server message sent by a client, say).
    """
    kind, body = decode_message_untrusted(data)
    handler = handlers.get(kind)
    if handler is None:
        raise ProtocolError(f"{kind.name} is not expected from this peer")
    handler(target, body)


def decode_message_untrusted(data: bytes | str) -> tuple[Kind, Any]:
    """Parse a reliable-channel message from a peer; raises ProtocolError on bad input."""
    if isinstance(data, str):
        raise ProtocolError("control message arrived as text")
    if not data or data[0] not in _KINDS:
        raise ProtocolError(f"unknown message kind {data[0] if data else None}")
    fast = _FAST_DECODERS.get(data[0])
    if fast is not None:
        return _KIND_OF[data[0]], fast(bytes(data))
    try:
        parsed = MESSAGE.parse(data)
    except (ConstructError, UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed {Kind(data[0]).name} message: {exc}") from None
    return Kind(parsed.kind), parsed.body


# --- lossy DATA frames (FrameType.DATA payloads) --------------------------------------------
#
# Reliable messages name a topic by an id bound by an earlier TOPIC message on the same
# ordered channel. A lossy frame may overtake that message, so until a datagram carrying the
# topic's name inline has been acknowledged, lossy frames carry the name (FLAG_TOPIC_NAME).

FLAG_TEXT = 0x01  #: the payload was a str (UTF-8)
FLAG_TOPIC_NAME = 0x02  #: the topic's name follows the flags (binds topic_id to it)

LOSSY_UP = Struct(
    "topic_id" / Int16ub,
    "flags" / Byte,
    "topic" / If(this.flags & FLAG_TOPIC_NAME, PascalString(Byte, "utf8")),
    "destinations" / PrefixedArray(Byte, Int16ub),
    "payload" / GreedyBytes,
)
LOSSY_DOWN = Struct(
    "pid" / Int16ub,  # the sender, stamped by the server (0: the server itself)
    "topic_id" / Int16ub,
    "flags" / Byte,
    "topic" / If(this.flags & FLAG_TOPIC_NAME, PascalString(Byte, "utf8")),
    "payload" / GreedyBytes,
)

_UP_HEAD = struct.Struct("!HB")
_DOWN_HEAD = struct.Struct("!HHB")


def lossy_up_header_bytes(destinations: int, topic: str | None) -> int:
    """Bytes a LOSSY_UP frame adds to the payload."""
    name = 0 if topic is None else 1 + len(topic.encode())
    return _UP_HEAD.size + name + 1 + 2 * destinations


def lossy_down_header_bytes(topic: str | None) -> int:
    name = 0 if topic is None else 1 + len(topic.encode())
    return _DOWN_HEAD.size + name


def _name_bytes(topic: str | None) -> bytes:
    if topic is None:
        return b""
    raw = topic.encode()
    if len(raw) > 255:
        raise ValueError(f"topic name of {len(raw)} bytes exceeds {MAX_TOPIC_CHARS} characters")
    return bytes((len(raw),)) + raw


def _flags(text: bool, topic: str | None) -> int:
    return (FLAG_TEXT if text else 0) | (FLAG_TOPIC_NAME if topic is not None else 0)


def encode_lossy_up(
    topic_id: int, topic: str | None, text: bool, destinations: list[int], payload: bytes
) -> bytes:
    """A client's lossy packet; ``topic`` is the name to bind inline, or None."""
    if len(destinations) > 255:
        raise ValueError("at most 255 destination identities per lossy packet")
    return b"".join(
        (
            _UP_HEAD.pack(topic_id, _flags(text, topic)),
            _name_bytes(topic),
            bytes((len(destinations),)),
            struct.pack(f"!{len(destinations)}H", *destinations),
            payload,
        )
    )


def _read_name(data: bytes, offset: int, flags: int) -> tuple[str | None, int]:
    if not flags & FLAG_TOPIC_NAME:
        return None, offset
    if offset >= len(data):
        raise ProtocolError("lossy DATA frame truncated in its topic name")
    end = offset + 1 + data[offset]
    if end > len(data):
        raise ProtocolError("lossy DATA frame truncated in its topic name")
    try:
        return data[offset + 1 : end].decode(), end
    except UnicodeDecodeError:
        raise ProtocolError("lossy DATA frame topic name is not UTF-8") from None


def decode_lossy_up_untrusted(data: bytes) -> tuple[int, str | None, bool, list[int], bytes]:
    """(topic_id, inline topic name or None, text, destination pids, payload)."""
    if len(data) < _UP_HEAD.size:
        raise ProtocolError("lossy DATA frame shorter than its header")
    topic_id, flags = _UP_HEAD.unpack_from(data)
    if flags & ~(FLAG_TEXT | FLAG_TOPIC_NAME):
        raise ProtocolError(f"lossy DATA frame has unknown flags {flags:#x}")
    topic, offset = _read_name(data, _UP_HEAD.size, flags)
    if offset >= len(data):
        raise ProtocolError("lossy DATA frame truncated before its destinations")
    count = data[offset]
    end = offset + 1 + 2 * count
    if len(data) < end:
        raise ProtocolError("lossy DATA frame truncated in its destinations")
    destinations = list(struct.unpack_from(f"!{count}H", data, offset + 1))
    return topic_id, topic, bool(flags & FLAG_TEXT), destinations, data[end:]


def encode_lossy_down(
    pid: int, topic_id: int, topic: str | None, text: bool, payload: bytes
) -> bytes:
    """A lossy packet relayed to a client; ``topic`` is the name to bind inline, or None."""
    return _DOWN_HEAD.pack(pid, topic_id, _flags(text, topic)) + _name_bytes(topic) + payload


def decode_lossy_down_untrusted(data: bytes) -> tuple[int, int, str | None, bool, bytes]:
    """(sender pid, topic_id, inline topic name or None, text, payload)."""
    if len(data) < _DOWN_HEAD.size:
        raise ProtocolError("lossy DATA frame shorter than its header")
    pid, topic_id, flags = _DOWN_HEAD.unpack_from(data)
    if flags & ~(FLAG_TEXT | FLAG_TOPIC_NAME):
        raise ProtocolError(f"lossy DATA frame has unknown flags {flags:#x}")
    topic, offset = _read_name(data, _DOWN_HEAD.size, flags)
    return pid, topic_id, topic, bool(flags & FLAG_TEXT), data[offset:]
