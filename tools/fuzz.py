"""``netcode-fuzz``: random and mutated input thrown at a real room server.

::

    netcode-fuzz --inputs 1000000 --seed 1          # the full run (a few minutes), table
    netcode-fuzz --inputs 2000 --json               # a quick one, one JSON object

A real :class:`~netcode.rooms.RoomServer` listens on 127.0.0.1 with a
:class:`~netcode.rooms.host.GameHost` ticking in its room, and real clients (aiortc) join it
as honest players. Then, in the same room:

- the bulk: in-process fuzz peers, each a real server-side participant (the server's own
  ``_on_peer``, ``ServerParticipant``, ``DatagramConnection``, endpoint and reliable channel)
  on a :class:`FakeLink` that hands the server's handlers whatever the fuzzer makes:
  datagrams for the lossy channel and messages for the reliable channel, each random bytes,
  a valid encoding, or a valid encoding mutated (bit flips, interesting values, truncation,
  extension, splices of two valid inputs, insertions, deletions, padding to the limits).
  Valid encodings come from a client-side endpoint and event channel of the fuzzer's own
  (so sequence numbers, acks and event ids are current) and from the real encoders of every
  message kind a client may send (topics, data, subscriptions, tracks, events, RPC,
  streams, inputs, snapshot receipts, pings), with fields chosen to hit real state (pids,
  topic ids, stream and request ids seen). Now and then a peer goes deaf (never reads
  what the server sends, so it never acknowledges), drops its link and resumes with
  forged counters, opens track channels, or leaves; a peer the server cut off is replaced;
- signaling bodies POSTed to the real aiohttp signaling handler (random bytes, JSON with
  wrong types, sizes and nesting, forged resume requests, mutated offers and tokens);
- a real WebRTC sample: clients that connect with aiortc and send raw random and mutated
  bytes on their reliable and lossy channels (reconnecting when the server cuts them off).

It asserts that nothing raises other than the handled :class:`~netcode.errors.ProtocolError`
(every exception escaping a handler, every traceback or ``... raised`` line logged, every
loop exception counts), that the server's long-lived tasks stay alive, that the process's
memory stays under a ceiling (RSS sampled throughout; the ceiling is the RSS after the
first tenth of the inputs plus ``--max-growth-mib``), and that the honest clients are not
affected: each keeps sending events and reliable data to the others throughout, and every
one of them arrives, once and in order. The exit status is 0 only if all of that holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import struct
import subprocess
import sys
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from netcode.cli import make_token
from netcode.core import Endpoint, FrameReceived
from netcode.errors import ProtocolError, SendQueueFull
from netcode.replication import Receipt
from netcode.replication.inputs import encode_inputs
from netcode.replication.wire import PartHeader, decode_part_header_untrusted, encode_part_header
from netcode.rooms import Room, RoomServer, ServerParticipant
from netcode.rooms.events import (
    DEFAULT_EVENT_TYPES,
    Chat,
    Despawn,
    EventLink,
    Spawn,
    encode_fallback,
)
from netcode.rooms.host import GameHost, encode_receipt_frame
from netcode.rooms.protocol import (
    ExtensionChannel,
    Kind,
    decode_lossy_down_untrusted,
    encode_lossy_up,
    encode_message,
    track_options,
)
from netcode.rooms.rpc import RpcInvocationData, RpcMessageType, encode_rpc
from netcode.rooms.streams import StreamMessageType, encode_stream
from netcode.transport import webrtc
from netcode.transport.peerlink import (
    MAX_RELIABLE_MESSAGE_BYTES,
    ChannelNotOpen,
    PeerLink,
    loopback_candidates,
    make_peer_connection,
)
from netcode.transport.signaling import SIGNALING_PATH, SignalingLimits
from netcode.wire import (
    MAX_DATAGRAM_BYTES,
    FragmentHeader,
    FrameType,
    encode_datagram,
    encode_event_frame,
    encode_fragment,
    encode_ping,
    encode_pong,
)

from .load_server import LOAD_REGISTRY, LoadGame

__all__ = [
    "ExceptionMonitor",
    "FakeChannel",
    "FakeLink",
    "FuzzPeer",
    "Generators",
    "http_post",
    "main",
    "mutate",
    "random_bytes",
    "random_text",
    "run",
]

logger = logging.getLogger(__name__)

KEY = "fuzz-key"
SECRET = "fuzz-secret-fuzz-secret-fuzz-secret-0"
ROOM = "fuzz"

#: Exceptions the server is meant to raise and catch on bad input.
HANDLED = (ProtocolError,)

_INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF)
_INTERESTING_16 = (0, 1, 0x7F, 0x80, 0xFF, 0x3FFF, 0x4000, 0x7FFF, 0x8000, 0xFFFF)
_INTERESTING_32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


# --- mutation --------------------------------------------------------------------------------


def random_bytes(rng: random.Random, max_len: int) -> bytes:
    """Random bytes, their length skewed short (most peer input is small) but up to max_len."""
    n = min(
        max_len, int(rng.expovariate(1 / 24)) if rng.random() < 0.9 else rng.randrange(max_len + 1)
    )
    return rng.randbytes(n)


_ALPHABETS = (
    "abcdefghijklmnopqrstuvwxyz0123456789-_/.",
    "\x00\x01\x7f \t\n\"'\\{}[]",
    "éßüñ€中文字🙂🎮\u200b\ufeff\U0010ffff",
)


def random_text(rng: random.Random, max_chars: int) -> str:
    """A random string: plain, control characters or wide Unicode; sometimes near a limit."""
    roll = rng.random()
    if roll < 0.05:
        n = max_chars + rng.choice((-1, 0, 1, 2))
    elif roll < 0.1:
        n = 0
    else:
        n = min(max_chars + 2, int(rng.expovariate(1 / 10)))
    alphabet = _ALPHABETS[0] if rng.random() < 0.7 else rng.choice(_ALPHABETS)
    return "".join(rng.choice(alphabet) for _ in range(max(n, 0)))


def mutate(
    data: bytes, rng: random.Random, corpus: Sequence[bytes] = (), *, limit: int | None = None
) -> bytes:
    """Apply one to four random mutations to ``data``.

    Bit flips, interesting byte and integer values written anywhere (lengths and counts
    live at small offsets, so those are favoured), truncation, extension, insertion,
    deletion, repetition, a splice with another valid input from ``corpus``, and padding
    to just under, at or over ``limit``.
    """
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        n = len(out)
        op = rng.randrange(11)
        pos = (rng.randrange(min(n, 16)) if rng.random() < 0.5 else rng.randrange(n)) if n else 0
        if op == 0 and n:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            out[pos] = rng.choice(_INTERESTING_8) if rng.random() < 0.7 else rng.randrange(256)
        elif op == 2 and n >= 2:
            value = rng.choice(_INTERESTING_16)
            pos = min(pos, n - 2)
            out[pos : pos + 2] = value.to_bytes(2, "big")
        elif op == 3 and n >= 4:
            value = rng.choice(_INTERESTING_32)
            pos = min(pos, n - 4)
            out[pos : pos + 4] = value.to_bytes(4, "big")
        elif op == 4 and n:
            del out[rng.randrange(n) :]
        elif op == 5:
            out += rng.randbytes(rng.choice((1, 2, 3, 8, 64)))
        elif op == 6:
            out[pos:pos] = rng.randbytes(rng.choice((1, 1, 2, 4, 16)))
        elif op == 7 and n:
            end = min(n, pos + rng.choice((1, 2, 4, 16)))
            del out[pos:end]
        elif op == 8 and n:
            end = min(n, pos + rng.choice((1, 2, 4, 32)))
            out[end:end] = out[pos:end] * rng.choice((1, 2, 8))
        elif op == 9 and corpus:
            other = rng.choice(corpus)
            cut = rng.randrange(n + 1)
            out = out[:cut] + other[rng.randrange(len(other) + 1) :]
        elif op == 10 and limit is not None:
            target = limit + rng.choice((-2, -1, 0, 1))
            if target > n:
                out += bytes(target - n) if rng.random() < 0.5 else rng.randbytes(target - n)
    return bytes(out)


# --- a link the fuzzer drives ------------------------------------------------------------------


class ExceptionMonitor(logging.Handler):
    """Counts exceptions that escaped into a handler, a log line or the event loop.

    Handled exceptions (ProtocolError, which the server counts against the peer) are not
    counted; any other exception, any ERROR record and any record saying something
    "raised" is, and the first few are kept with their traceback and the input that was
    being fed when it happened (hex).
    """

    def __init__(self, keep: int = 20) -> None:
        super().__init__(logging.WARNING)
        self.keep = keep
        self.unhandled = 0
        self.by_kind: Counter[str] = Counter()
        self.samples: list[dict[str, str]] = []
        #: warnings that are not exceptions (slow clients cut off, and the like), by text
        self.warnings: Counter[str] = Counter()
        #: exceptions raised and left unretrieved inside aiortc/aioice's own tasks
        self.third_party: Counter[str] = Counter()
        #: what is being fed right now (for the samples)
        self.current_input: bytes | str | None = None
        self.current_target = ""

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HANDLED):
            return
        text = record.getMessage()
        if exc is not None or record.levelno >= logging.ERROR or " raised" in text:
            tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
            self.count(f"log {record.name}: {text[:160]}", exc, tb)
        else:
            # one line per peer: keep the text without the peer's name
            _, _, rest = (
                text.partition(": ") if text.startswith(("server:", "fuzz")) else ("", "", text)
            )
            self.warnings[f"{record.name}: {rest[:120]}"] += 1

    def count(self, where: str, exc: BaseException | None, tb: str = "") -> None:
        self.unhandled += 1
        kind = f"{where.split(':')[0]}: {type(exc).__name__ if exc is not None else 'logged'}"
        self.by_kind[kind] += 1
        if len(self.samples) < self.keep and self.by_kind[kind] <= 2:  # two of each kind
            data = self.current_input
            shown = (
                data.hex()[:512]
                if isinstance(data, bytes)
                else (repr(data)[:512] if data is not None else "")
            )
            self.samples.append(
                {
                    "where": where,
                    "exception": repr(exc)[:300],
                    "target": self.current_target,
                    "input": shown,
                    "traceback": tb[-3000:],
                }
            )

    def loop_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, HANDLED):
            return
        tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
        if exc is not None and _third_party_only(exc):
            # aiortc's own tasks (an SCTP send racing the DTLS close, say): not ours to fix,
            # counted apart
            self.third_party[f"{type(exc).__name__}: {exc}"[:120]] += 1
            return
        self.count(f"loop: {context.get('message', '')[:160]}", exc, tb)


def _third_party_only(exc: BaseException) -> bool:
    """True if every frame of the traceback lies in aiortc or aioice."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and all(
        "/aiortc/" in frame.filename or "/aioice/" in frame.filename for frame in frames
    )


class FakeChannel:
    """A data-track channel of a :class:`FakeLink` (what the server uses of DataChannel)."""

    def __init__(
        self,
        link: FakeLink,
        label: str,
        *,
        ordered: bool = True,
        max_packet_life_time: int | None = None,
        max_retransmits: int | None = None,
    ) -> None:
        self.link = link
        self.label = label
        self.ordered = ordered
        self.max_packet_life_time = max_packet_life_time
        self.max_retransmits = max_retransmits
        self.ready_state = "open"
        self.handler: Callable[[bytes | str], object] | None = None
        self.sent = 0

    @property
    def reliable(self) -> bool:
        return self.max_retransmits is None and self.max_packet_life_time is None

    @property
    def max_message_bytes(self) -> int:
        return MAX_DATAGRAM_BYTES if self.max_retransmits == 0 else MAX_RELIABLE_MESSAGE_BYTES

    def send(self, data: bytes | str) -> bool:
        size = len(data.encode() if isinstance(data, str) else data)
        if size > self.max_message_bytes:
            raise ValueError(f"message of {size} bytes exceeds channel {self.label!r}'s limit")
        if self.ready_state != "open":
            raise ChannelNotOpen(f"channel {self.label!r} is {self.ready_state}")
        self.sent += 1
        return True

    def close(self) -> None:
        self.ready_state = "closed"

    def set_handler(self, handler: Callable[[bytes | str], object] | None) -> None:
        self.handler = handler

    def deliver(self, data: bytes | str) -> None:
        """A message from the fuzzer, as DataChannel delivers one: size-checked, shielded."""
        size = len(data.encode(errors="replace") if isinstance(data, str) else data)
        if size > self.max_message_bytes or self.handler is None or self.ready_state != "open":
            return
        self.link.call(self.handler, data, "track message")


def _peer_link(link: FakeLink) -> PeerLink:
    """The server takes a PeerLink; a FakeLink has every method of it the server uses."""
    return cast(PeerLink, link)


class FakeLink:
    """The part of :class:`~netcode.transport.peerlink.PeerLink` the server uses.

    What the server sends is handed to ``on_lossy_sent`` / ``on_reliable_sent``; what the
    fuzzer feeds goes to the server's handlers as the real channels deliver it (oversized
    messages dropped, non-bytes dropped on the lossy channel), with every exception that
    escapes a handler counted by the monitor instead of propagating.
    """

    def __init__(self, name: str, monitor: ExceptionMonitor) -> None:
        self.name = name
        self.monitor = monitor
        self.backlog_limit = 8 * MAX_DATAGRAM_BYTES
        self.resume_request: dict[str, Any] | None = None
        self.server_info: dict[str, Any] = {}
        self.closed = asyncio.Event()
        self.connection_state = "connected"
        self.reliable_handler: Callable[[bytes | str], object] | None = None
        self.refused_handler: Callable[[str, int], object] | None = None
        self.lossy_handler: Callable[[bytes], object] | None = None
        self.channel_handler: Callable[[Any], object] | None = None
        self.on_lossy_sent: Callable[[bytes], None] | None = None
        self.on_reliable_sent: Callable[[bytes | str], None] | None = None
        self.channels: list[FakeChannel] = []
        self.reliable_sent = 0
        self.lossy_sent = 0

    @property
    def is_open(self) -> bool:
        return not self.closed.is_set()

    # the server's side

    def send_reliable(self, data: bytes | str) -> None:
        size = len(data.encode() if isinstance(data, str) else data)
        if size > MAX_RELIABLE_MESSAGE_BYTES:
            raise ValueError(
                f"message of {size} bytes exceeds the {MAX_RELIABLE_MESSAGE_BYTES}-byte limit"
            )
        if self.closed.is_set():
            raise ChannelNotOpen(f"{self.name} is closed")
        self.reliable_sent += 1
        if self.on_reliable_sent is not None:
            self.on_reliable_sent(data)

    def send_lossy(self, data: bytes) -> bool:
        if len(data) > MAX_DATAGRAM_BYTES:
            raise ValueError(f"datagram of {len(data)} bytes exceeds MAX_DATAGRAM_BYTES")
        if self.closed.is_set():
            raise ChannelNotOpen(f"{self.name} is closed")
        self.lossy_sent += 1
        if self.on_lossy_sent is not None:
            self.on_lossy_sent(data)
        return True

    def send_backlog(self) -> int:
        return 0

    def datagram_backlog(self) -> int:
        return 0

    def create_channel(
        self,
        label: str,
        *,
        ordered: bool = True,
        max_packet_life_time: int | None = None,
        max_retransmits: int | None = None,
    ) -> FakeChannel:
        if self.closed.is_set():
            raise ChannelNotOpen(f"{self.name} is closed")
        channel = FakeChannel(
            self,
            label,
            ordered=ordered,
            max_packet_life_time=max_packet_life_time,
            max_retransmits=max_retransmits,
        )
        self.channels.append(channel)
        del self.channels[:-64]
        return channel

    def on_reliable(self, handler: Callable[[bytes | str], object] | None) -> None:
        self.reliable_handler = handler

    def on_lossy(self, handler: Callable[[bytes], object] | None) -> None:
        self.lossy_handler = handler

    def on_channel(self, handler: Callable[[Any], object] | None) -> None:
        self.channel_handler = handler

    def on_refused(self, handler: Callable[[str, int], object] | None) -> None:
        self.refused_handler = handler

    def on_inbound_bytes(self, handler: Callable[[int], bool] | None) -> bool:
        return False  # no SCTP chunks here: the server meters whole messages

    def on_state_change(self, handler: Callable[[str], object]) -> None:
        pass

    async def close(self) -> None:
        self.connection_state = "closed"
        self.closed.set()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    async def wait_open(self, timeout: float | None = None) -> None:
        return None

    # the fuzzer's side

    def call(self, handler: Callable[[Any], object], data: Any, target: str) -> None:
        monitor = self.monitor
        monitor.current_input = data if isinstance(data, bytes | str) else repr(data)
        monitor.current_target = target
        try:
            handler(data)
        except Exception as exc:
            monitor.count(f"{target} handler: {exc!r}"[:200], exc, traceback.format_exc())
        finally:
            monitor.current_input = None
            monitor.current_target = ""

    def deliver_reliable(self, data: bytes | str) -> bool:
        """Feed one reliable-channel message; False if the real channel would drop it."""
        size = len(data.encode(errors="replace") if isinstance(data, str) else data)
        if size > MAX_RELIABLE_MESSAGE_BYTES:
            refused = self.refused_handler
            if refused is not None:  # as the real channel reports it
                self.call(lambda _: refused(f"a message of {size} bytes", size), data, "refused")
            return False
        if self.reliable_handler is None:
            return False
        self.call(self.reliable_handler, data, "reliable")
        return True

    def deliver_lossy(self, data: bytes) -> bool:
        if len(data) > MAX_DATAGRAM_BYTES or self.lossy_handler is None:
            return False
        self.call(self.lossy_handler, data, "lossy")
        return True

    def open_channel(self, channel: FakeChannel) -> None:
        if self.channel_handler is not None:
            self.call(self.channel_handler, channel, "channel")


# --- valid inputs, chosen to reach real state ------------------------------------------------


class RoomView:
    """What the fuzzer may know of the room: pids, identities and the host's tick."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        #: pids of the fuzz peers (most data is addressed to them, not to honest clients)
        self.fuzz_pids: list[int] = []
        self.identities: list[str] = []
        self.tick = 0

    def refresh(self, server: RoomServer, host: GameHost | None) -> None:
        room = server.rooms.get(ROOM)
        if room is not None:
            self.pids = list(room.participants)
            self.identities = [p.identity for p in room.participants.values()]
            self.fuzz_pids = [
                p.pid for p in room.participants.values() if p.identity.startswith("fuzz")
            ]
        if host is not None:
            self.tick = host.tick


class PeerState:
    """What one fuzz client has bound and seen, so that its inputs name real things."""

    def __init__(self) -> None:
        self.next_topic_id = 1
        self.lossy_topics: dict[int, str] = {}
        self.next_stream_id = 1
        self.open_streams: dict[int, int] = {}  # stream id -> bytes declared
        self.next_request_id = 1
        self.next_track_request = 1
        #: (caller pid, request id) of RPC requests relayed to us
        self.requests_seen: deque[tuple[int, int]] = deque(maxlen=32)
        #: (sender pid, stream id) of streams relayed to us
        self.streams_seen: deque[tuple[int, int]] = deque(maxlen=32)
        #: snapshot topic id -> (epoch, recent (tick, part index))
        self.snapshots: dict[int, tuple[int, deque[tuple[int, int]]]] = {}
        #: counted reliable messages received (what an honest ACK would say)
        self.received = 0
        self.input_tick: int | None = None


class Generators:
    """Valid encodings of everything a client sends, with fields picked to hit real state."""

    def __init__(self, rng: random.Random, view: RoomView) -> None:
        self.rng = rng
        self.view = view

    # fields

    def pid(self) -> int:
        rng = self.rng
        if self.view.pids and rng.random() < 0.85:
            return rng.choice(self.view.pids)
        return rng.choice((0, 1, 0xFFFF, rng.randrange(0x10000)))

    def pids(self) -> list[int]:
        """Destinations: everyone (empty) now and then, mostly fuzz peers, some others."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            return []
        if roll < 0.90 and self.view.fuzz_pids:
            return [rng.choice(self.view.fuzz_pids) for _ in range(rng.randint(1, 3))]
        if roll < 0.97:
            return [self.pid() for _ in range(rng.randint(1, 4))]
        return [self.pid() for _ in range(rng.choice((255, 256, 1000)))]

    def identity(self) -> str:
        rng = self.rng
        if self.view.identities and rng.random() < 0.8:
            return rng.choice(self.view.identities)
        return random_text(rng, 256)

    def topic(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            return ""
        if roll < 0.7:
            return rng.choice(("chat", "position", "environment", "honest", "t"))
        return random_text(rng, 128)

    def payload(self, limit: int = 2048) -> bytes:
        rng = self.rng
        if rng.random() < 0.03:
            return rng.randbytes(rng.choice((limit - 64, limit - 16, limit)))
        return random_bytes(rng, limit)

    def text_payload(self) -> tuple[bool, bytes]:
        rng = self.rng
        if rng.random() < 0.5:
            return False, self.payload()
        if rng.random() < 0.8:
            return True, random_text(rng, 64).encode()
        return True, b"\xff\xfe" + self.payload(64)  # flagged text that is not UTF-8

    # reliable-channel messages (client to server)

    def reliable(self, st: PeerState) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.10:
            return self.topic_message(st)
        if roll < 0.30:
            return self.data_message(st)
        if roll < 0.34:
            return self.subscribe_message()
        if roll < 0.38:
            return self.track_message(st)
        if roll < 0.48:
            return self.extension(ExtensionChannel.EVENTS, self.fallback_event(st))
        if roll < 0.66:
            return self.extension(ExtensionChannel.RPC, self.rpc_body(st))
        if roll < 0.84:
            return self.extension(ExtensionChannel.STREAMS, self.stream_body(st))
        if roll < 0.88:
            channel = rng.choice((ExtensionChannel.HOST, 0, 5, 63, 64, 200, 255))
            return self.extension(channel, random_bytes(rng, 512))
        if roll < 0.94:
            received = st.received if rng.random() < 0.7 else rng.choice(_INTERESTING_32)
            return encode_message(
                Kind.ACK, received=received + rng.choice((0, 0, 0, 1, -1)) & (2**64 - 1)
            )
        if roll < 0.999:
            return self.server_message()
        return encode_message(Kind.LEAVE)

    def extension(self, channel: int, body: bytes) -> bytes:
        return encode_message(Kind.EXTENSION, channel=channel, pid=0, body=body)

    def topic_message(self, st: PeerState) -> bytes:
        rng = self.rng
        if rng.random() < 0.8:
            topic_id = st.next_topic_id
            st.next_topic_id += 1
        else:
            topic_id = rng.choice((0, 1, st.next_topic_id + 5, 1025, 0xFFFF))
        return encode_message(Kind.TOPIC, topic_id=topic_id & 0xFFFF, name=self.topic())

    def data_message(self, st: PeerState) -> bytes:
        rng = self.rng
        text, payload = self.text_payload()
        topic_id = rng.randrange(st.next_topic_id) if rng.random() < 0.9 else rng.randrange(0x10000)
        return encode_message(
            Kind.DATA,
            pid=0,
            topic_id=topic_id,
            text=text,
            destinations=self.pids(),
            payload=payload,
        )

    def subscribe_message(self) -> bytes:
        rng = self.rng
        count = rng.choice((0, 1, 3, 8)) if rng.random() < 0.97 else rng.choice((1024, 1025))
        topics = [self.topic() for _ in range(count)]
        return encode_message(Kind.SUBSCRIBE, all=rng.random() < 0.5, topics=topics)

    def track_message(self, st: PeerState) -> bytes:
        rng = self.rng
        if rng.random() < 0.3:
            return encode_message(Kind.TRACK_UNPUBLISHED, pid=0, sid=rng.randrange(1, 40))
        st.next_track_request += 1
        life = rng.choice((None, None, 0, 100, 0xFFFF))
        retransmits = rng.choice((None, None, 0, 3))
        return encode_message(
            Kind.PUBLISH_TRACK,
            request_id=st.next_track_request & 0xFFFF,
            name=random_text(rng, 256) if rng.random() < 0.3 else f"track{rng.randrange(20)}",
            options=track_options(rng.random() < 0.5, life, retransmits),
        )

    def server_message(self) -> bytes:
        rng = self.rng
        kind = rng.choice(
            (
                Kind.PARTICIPANT_LEFT,
                Kind.TRACK_ACCEPTED,
                Kind.ERROR,
                Kind.RESUMED,
                Kind.PARTICIPANT_RECONNECTING,
            )
        )
        if kind is Kind.TRACK_ACCEPTED:
            return encode_message(kind, request_id=1, sid=1)
        if kind is Kind.ERROR:
            return encode_message(kind, code="x", message="y")
        if kind is Kind.RESUMED:
            return encode_message(kind, received=rng.randrange(100))
        return encode_message(kind, pid=self.pid())

    # events

    def event(self) -> Any:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            n = rng.choice((1, 10, 100)) if rng.random() < 0.95 else rng.choice((1000, 1100, 5000))
            return Chat("".join(rng.choice("abc ") for _ in range(n)))
        if roll < 0.85:
            return Spawn(rng.randrange(-(2**40), 2**40), random_text(rng, 20), rng.random(), 1e300)
        return Despawn(rng.randrange(2**31), random_text(rng, 20))

    def up_event(self) -> bytes:
        """An event message as a client's EventLink sends it (new topics carry their name)."""
        rng = self.rng
        event = self.event()
        codec = DEFAULT_EVENT_TYPES.of(event)
        body = codec.encode(event) if rng.random() < 0.9 else random_bytes(rng, 64)
        type_id = codec.type_id if rng.random() < 0.95 else rng.choice((0, 77, 255))
        topic_id = rng.choice((0, 0, 1, 2, rng.randrange(0x10000)))
        name = b""
        if topic_id and rng.random() < 0.5:
            raw = self.topic().encode()[:255]
            name = bytes((len(raw),)) + raw
        dests = self.pids()[:255]
        return (
            struct.pack("!BH", type_id, topic_id)
            + name
            + bytes((len(dests),))
            + struct.pack(f"!{len(dests)}H", *dests)
            + body
        )

    def fallback_event(self, st: PeerState) -> bytes:
        """An EXTENSION(EVENTS) body: a message id and an event, as the fallback path has it."""
        rng = self.rng
        message_id = rng.choice((0, 1, 2, 1023, 1024, 0x7FFF, 0xFFFF, rng.randrange(0x10000)))
        message = self.up_event()
        if rng.random() < 0.05:
            message += rng.randbytes(rng.choice((1000, 8000, 16000)))
        return encode_fallback(message_id, message)

    # RPC and streams

    def rpc_body(self, st: PeerState) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5 or not st.requests_seen:
            st.next_request_id += 1
            request_id = st.next_request_id if rng.random() < 0.9 else rng.choice(_INTERESTING_32)
            method = "echo" if rng.random() < 0.6 else random_text(rng, 300)
            payload = random_text(rng, 64).encode()
            if rng.random() < 0.03:
                payload = b"x" * rng.choice((15 * 1024, 15 * 1024 + 1, 16000))
            return encode_rpc(
                RpcMessageType.REQUEST,
                request_id=request_id & 0xFFFFFFFF,
                version=rng.choice((1, 1, 1, 0, 2)),
                identity=self.identity(),
                method=method,
                response_timeout_ms=rng.choice((1, 500, 5000, 0xFFFFFFFF)),
                payload=payload,
            )
        caller, request_id = rng.choice(st.requests_seen)
        if rng.random() < 0.2:
            caller = self.pid()
        kind = rng.choice((RpcMessageType.ACK, RpcMessageType.RESPONSE, RpcMessageType.ERROR))
        if kind is RpcMessageType.ACK:
            return encode_rpc(kind, request_id=request_id, peer=caller)
        if kind is RpcMessageType.RESPONSE:
            size = 10 if rng.random() < 0.95 else rng.choice((15 * 1024, 15 * 1024 + 1))
            return encode_rpc(kind, request_id=request_id, peer=caller, payload=b"r" * size)
        big = rng.random() < 0.05
        return encode_rpc(
            kind,
            request_id=request_id,
            peer=caller,
            code=rng.choice((1500, 1401, 0, 0xFFFF)),
            message="m" * (8000 if big else 5),
            data="d" * (8000 if big else 5),
        )

    def stream_body(self, st: PeerState) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.25 or (roll < 0.7 and not st.open_streams):
            stream_id = st.next_stream_id
            st.next_stream_id += 1
            size = rng.choice((0, 10, 20_000, 64 * 1024 * 1024, 64 * 1024 * 1024 + 1, 2**64 - 1))
            st.open_streams[stream_id] = size
            if len(st.open_streams) > 32:
                del st.open_streams[next(iter(st.open_streams))]
            return encode_stream(
                StreamMessageType.HEADER,
                stream_id=stream_id,
                text=rng.random() < 0.5,
                size=size,
                topic=self.topic(),
                name=random_text(rng, 300),
                mime_type=random_text(rng, 40),
                destinations=self.pids(),
            )
        if roll < 0.7:
            stream_id = rng.choice(list(st.open_streams))
            n = rng.choice((0, 1, 10, 1000, 15 * 1024, 16 * 1024))
            return encode_stream(StreamMessageType.CHUNK, stream_id=stream_id, data=b"c" * n)
        if roll < 0.85 and st.open_streams:
            stream_id = rng.choice(list(st.open_streams))
            reason = "" if rng.random() < 0.7 else "r" * rng.choice((5, 8000, 16000))
            if not reason:
                st.open_streams.pop(stream_id, None)
            return encode_stream(StreamMessageType.TRAILER, stream_id=stream_id, reason=reason)
        if st.streams_seen and rng.random() < 0.9:
            sender, stream_id = rng.choice(st.streams_seen)
        else:
            sender, stream_id = self.pid(), rng.randrange(1, 50)
        reason = "" if rng.random() < 0.6 else "n" * rng.choice((5, 8000, 16000))
        kind = StreamMessageType.RECEIPT if rng.random() < 0.95 else StreamMessageType.RESULT
        if kind is StreamMessageType.RESULT:
            return encode_stream(kind, stream_id=stream_id, reason=reason)
        return encode_stream(kind, stream_id=stream_id, peer=sender, reason=reason)

    # lossy frames (client to server), other than EVENT

    def frame(self, st: PeerState) -> tuple[int, bytes]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.35:
            return FrameType.DATA, self.lossy_data(st)
        if roll < 0.6:
            return FrameType.INPUT, self.inputs(st)
        if roll < 0.8:
            return FrameType.RECEIPT, self.receipt(st)
        if roll < 0.9:
            return FrameType.PING, encode_ping(rng.randrange(0x10000))
        if roll < 0.95:
            return FrameType.PONG, encode_pong(
                rng.randrange(0x10000), rng.randrange(2**32), rng.uniform(-1e9, 1e9)
            )
        return FrameType.SNAPSHOT, self.snapshot_part()

    def lossy_data(self, st: PeerState) -> bytes:
        rng = self.rng
        text, payload = self.text_payload()
        if rng.random() < 0.7:
            topic_id = rng.randrange(1, 12)
            name = st.lossy_topics.setdefault(topic_id, _fit(self.topic(), 255) or "x")
            inline = name if rng.random() < 0.5 else None
        else:
            topic_id, inline = rng.randrange(0x10000), (_fit(self.topic(), 255) or None)
        dests = self.pids()[:255]
        return encode_lossy_up(topic_id, inline, text, dests, payload[:900])

    def inputs(self, st: PeerState) -> bytes:
        rng = self.rng
        if st.input_tick is None or rng.random() < 0.02:
            st.input_tick = self.view.tick + rng.choice((0, -100, 1000, 5000))
        st.input_tick = max(0, st.input_tick + rng.choice((1, 1, 1, 2, 3, 8)))
        count = rng.choice((1, 2, 3, 8)) if rng.random() < 0.97 else rng.choice((0, 64, 255))
        first = max(0, st.input_tick - count + 1)
        if rng.random() < 0.01:
            first = rng.choice(_INTERESTING_32)
        data = [
            bytes((rng.randrange(256), rng.randrange(256)))
            if rng.random() < 0.9
            else random_bytes(rng, 64)
            for _ in range(count)
        ]
        return encode_inputs(first, data)

    def receipt(self, st: PeerState) -> bytes:
        rng = self.rng
        if st.snapshots and rng.random() < 0.9:
            topic_id = rng.choice(list(st.snapshots))
            epoch, recent = st.snapshots[topic_id]
            applied = tuple(rng.sample(list(recent), min(len(recent), rng.randint(0, 8))))
        else:
            topic_id, epoch, applied = rng.randrange(6), rng.randrange(0x10000), ()
        receipt = Receipt(
            epoch=epoch if rng.random() < 0.9 else rng.randrange(0x10000),
            resync=rng.random() < 0.05,
            max_entities=rng.choice((1024, 1024, 0, 1, 16, 65535)),
            max_entity_id=rng.choice((65535, 65535, 0, 10, 1000)),
            history_depth=rng.choice((32, 32, 2, 3, 255)),
            applied=applied,
        )
        try:
            return encode_receipt_frame(topic_id, receipt)
        except ValueError:
            return encode_receipt_frame(topic_id, receipt._replace(applied=()))

    def snapshot_part(self) -> bytes:
        rng = self.rng
        header = PartHeader(rng.randrange(2**32), rng.randrange(0x10000), 0, 1, 0, 1)
        return encode_part_header(header) + random_bytes(rng, 64)


def _fit(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8."""
    return text.encode()[:max_bytes].decode(errors="ignore")


class ClientSide:
    """The client half of a fuzz connection: its own endpoint and event channel make valid
    datagrams (current sequence numbers and acks, events the server's channel expects),
    which the fuzzer sends as they are or mutated."""

    def __init__(self, gen: Generators, name: str) -> None:
        self.gen = gen
        self.rng = gen.rng
        self.name = name
        self.endpoint = Endpoint(name=name)
        self.events = EventLink(self.endpoint, self._fallback, name=name)
        self.state = PeerState()
        #: valid reliable messages made as a side effect (events over the fallback path)
        self.outbox: deque[bytes] = deque(maxlen=64)
        #: recent valid inputs, for splices and replays
        self.datagrams: deque[bytes] = deque(maxlen=64)
        self.messages: deque[bytes] = deque(maxlen=64)
        #: never reads what the server sends, so never acknowledges anything
        self.deaf = False

    def _fallback(self, message_id: int, message: bytes) -> None:
        self.outbox.append(
            encode_message(
                Kind.EXTENSION,
                channel=ExtensionChannel.EVENTS,
                pid=0,
                body=encode_fallback(message_id, message),
            )
        )

    # from the server

    def on_datagram(self, data: bytes, now: float) -> None:
        if self.deaf:
            return
        endpoint = self.endpoint
        endpoint.receive_datagram(data, now)
        while (event := endpoint.next_event()) is not None:
            if not isinstance(event, FrameReceived):
                continue
            if event.frame_type == FrameType.EVENT:
                self.events.receive_frame(event.payload, now)
                self.events.channel.received()
            elif event.frame_type == FrameType.SNAPSHOT:
                self._note_snapshot(event.payload)

    def _note_snapshot(self, payload: bytes) -> None:
        try:
            _, topic_id, _, _, part = decode_lossy_down_untrusted(payload)
            header = decode_part_header_untrusted(part)
        except ProtocolError:
            return
        known = self.state.snapshots.get(topic_id)
        if known is None or known[0] != header.epoch:
            known = (header.epoch, deque(maxlen=16))
            self.state.snapshots[topic_id] = known
        known[1].append((header.tick, header.part_index))

    def on_reliable(self, data: bytes | str) -> None:
        if not isinstance(data, bytes) or not data:
            return
        st = self.state
        if data[0] not in (Kind.ACK, Kind.RESUMED):
            st.received += 1
        if data[0] != Kind.EXTENSION or len(data) < 9:
            return
        channel, pid = data[1], int.from_bytes(data[2:4], "big")
        body = data[4:]
        if channel == ExtensionChannel.RPC and body[0] == RpcMessageType.REQUEST:
            st.requests_seen.append((pid, int.from_bytes(body[1:5], "big")))
        elif channel == ExtensionChannel.STREAMS and body[0] == StreamMessageType.HEADER:
            st.streams_seen.append((pid, int.from_bytes(body[1:5], "big")))
        elif channel == ExtensionChannel.EVENTS and not self.deaf:
            try:
                self.events.receive_fallback(body)
            except ProtocolError:
                pass
            self.events.channel.received()

    # inputs

    def valid_datagrams(self, now: float, frames: int) -> list[bytes]:
        """Queue ``frames`` valid frames and return the datagrams that carry them (and any
        ack or PONG the endpoint owes)."""
        gen, st, endpoint = self.gen, self.state, self.endpoint
        for _ in range(frames):
            try:
                if self.rng.random() < 0.3:
                    event = gen.event()
                    topic = gen.topic() if self.rng.random() < 0.3 else ""
                    self.events.send_up(event, topic, gen.pids()[:255])
                    self.events.flush(now)
                else:
                    frame_type, payload = gen.frame(st)
                    endpoint.send_frame(frame_type, payload)
            except (SendQueueFull, ValueError):
                continue
        endpoint.handle_timer(now)
        out = endpoint.datagrams_to_send(now, max_datagrams=8)
        self.datagrams.extend(out)
        return out

    def datagram_inputs(self, now: float) -> list[bytes]:
        """One fuzz input for the lossy channel (several datagrams if valid and fragmented)."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:
            return self.valid_datagrams(now, rng.randint(1, 3))
        if roll < 0.70:
            valid = self.valid_datagrams(now, rng.randint(1, 3))
            if not valid:
                return []
            return [mutate(valid[0], rng, self.datagrams, limit=MAX_DATAGRAM_BYTES), *valid[1:]]
        if roll < 0.85:
            return [self.structured_datagram()]
        if roll < 0.95:
            return [random_bytes(rng, MAX_DATAGRAM_BYTES + 40)]
        return [rng.choice(self.datagrams)] if self.datagrams else []

    def structured_datagram(self) -> bytes:
        """A well-formed datagram around frames that may be anything."""
        rng, endpoint = self.rng, self.endpoint
        frames: list[tuple[int, bytes]] = []
        size = 9
        for _ in range(rng.choice((0, 1, 1, 2, 5))):
            roll = rng.random()
            if roll < 0.4:
                frame_type, payload = self.gen.frame(self.state)
                payload = mutate(payload, rng) if rng.random() < 0.5 else payload
            elif roll < 0.6:
                frame_type, payload = FrameType.EVENT, self.event_frame()
            elif roll < 0.8:
                frame_type, payload = FrameType.FRAGMENT, self.fragment()
            else:
                frame_type, payload = rng.randrange(1, 256), random_bytes(rng, 200)
            size += len(payload) + 3
            if size > MAX_DATAGRAM_BYTES:
                break
            frames.append((frame_type, payload))
        sequence = (endpoint.next_sequence + rng.choice((0, 0, 1, 5, -1, 40, 9000))) & 0xFFFF
        ack = rng.randrange(0x10000) if rng.random() < 0.5 else None
        return encode_datagram(
            sequence, ack, rng.randrange(2**32) if ack is not None else 0, frames
        )

    def event_frame(self) -> bytes:
        rng = self.rng
        base = (self.events.channel.next_send_id + rng.choice((0, 0, 1, 1024, -1))) & 0xFFFF
        messages = []
        next_id = base
        for _ in range(rng.choice((0, 1, 2, 4))):
            next_id = (next_id + rng.choice((0, 0, 1, 100))) & 0xFFFF
            messages.append((next_id, self.gen.up_event()[:300]))
            next_id += 1
        try:
            return encode_event_frame(base, messages)
        except ValueError:
            return encode_event_frame(base, [])

    def fragment(self) -> bytes:
        rng = self.rng
        count = rng.choice((2, 2, 3, 8, 9, 255))
        header = FragmentHeader(
            rng.choice((FrameType.DATA, FrameType.INPUT, FrameType.EVENT, rng.randrange(256))),
            rng.randrange(8),
            rng.randrange(count),
            count,
        )
        return encode_fragment(
            header, random_bytes(rng, 1140) if rng.random() < 0.5 else bytes(1140)
        )

    def reliable_input(self) -> bytes | str:
        """One fuzz input for the reliable channel."""
        rng = self.rng
        if self.outbox and rng.random() < 0.5:
            return self.outbox.popleft()
        roll = rng.random()
        if roll < 0.35:
            message = self.gen.reliable(self.state)
            self.messages.append(message)
            return message
        if roll < 0.85:
            message = self.gen.reliable(self.state)
            self.messages.append(message)
            return mutate(message, rng, self.messages, limit=MAX_RELIABLE_MESSAGE_BYTES)
        if roll < 0.95:
            return random_bytes(rng, 2048)
        return random_text(rng, 64)


# --- in-process fuzz peers ------------------------------------------------------------------


class FuzzPeer:
    """One slot of the room filled by a fuzzed participant on a :class:`FakeLink`.

    The participant is made by the server's own ``_on_peer`` (as after signaling); when
    the server cuts it off (or it left), the slot joins again under a new identity.
    """

    def __init__(self, harness: Harness, slot: int) -> None:
        self.harness = harness
        self.slot = slot
        self.rng = harness.rng
        self.generation = 0
        self.link: FakeLink | None = None
        self.client: ClientSide | None = None
        self.identity = ""
        self.last_datagram_at = 0.0
        self.channels: list[FakeChannel] = []
        self.pending_since: float | None = None

    @property
    def participant(self) -> ServerParticipant | None:
        room = self.harness.server.rooms.get(ROOM)
        if room is None or self.link is None:
            return None
        participant = room.by_identity(self.identity)
        if participant is None or participant.link is not _peer_link(self.link):
            return None
        return None if participant.ending else participant

    def join(self) -> None:
        harness = self.harness
        self.generation += 1
        self.identity = f"fuzz{self.slot}-{self.generation}"
        client = ClientSide(harness.gen, self.identity)
        client.deaf = self.rng.random() < 0.02
        self.client = client
        self._attach(FakeLink(f"server:{self.identity}", harness.monitor))
        claims = harness.claims(self.identity)
        assert self.link is not None
        harness.spawn(harness.server._on_peer(_peer_link(self.link), claims))
        self.pending_since = asyncio.get_running_loop().time()
        self.channels = []
        harness.joins += 1

    def _attach(self, link: FakeLink) -> None:
        client = self.client
        assert client is not None
        loop_time = asyncio.get_running_loop().time
        link.on_lossy_sent = lambda data: client.on_datagram(data, loop_time())
        link.on_reliable_sent = client.on_reliable
        self.link = link

    def state(self, now: float) -> str:
        """``live``, ``pending`` (joining or resuming) or ``gone``."""
        if self.participant is not None:
            self.pending_since = None
            return "live"
        link = self.link
        if link is None or link.closed.is_set():
            return "gone"
        if self.pending_since is not None and now - self.pending_since < 2.0:
            return "pending"
        return "gone"

    def feed(self, now: float) -> int:
        """Feed one fuzz input; returns how many inputs (datagrams or messages) it was."""
        link, client = self.link, self.client
        assert link is not None and client is not None
        roll = self.rng.random()
        if roll < 0.52:
            datagrams = client.datagram_inputs(now)
            for data in datagrams:
                link.deliver_lossy(data)
            self.last_datagram_at = now
            self.harness.counts["datagram"] += len(datagrams)
            return len(datagrams)
        if roll < 0.985:
            message = client.reliable_input()
            link.deliver_reliable(message)
            self.harness.counts["reliable"] += 1
            return 1
        if roll < 0.997:
            self.channel_input()
            self.harness.counts["channel"] += 1
            return 1
        self.lifecycle()
        self.harness.counts["lifecycle"] += 1
        return 1

    def keep_alive(self, now: float) -> int:
        """A valid datagram (acks, PONGs) if none went for a while: the link stays alive."""
        if now - self.last_datagram_at < 0.5 or self.link is None or self.client is None:
            return 0
        self.last_datagram_at = now
        datagrams = self.client.valid_datagrams(now, 0) or self.client.valid_datagrams(now, 1)
        for data in datagrams:
            self.link.deliver_lossy(data)
        self.harness.counts["datagram"] += len(datagrams)
        return len(datagrams)

    def channel_input(self) -> None:
        rng, link = self.rng, self.link
        assert link is not None
        participant = self.participant
        if self.channels and rng.random() < 0.7:
            channel = rng.choice(self.channels)
            data: bytes | str = (
                random_bytes(rng, 1200) if rng.random() < 0.9 else random_text(rng, 100)
            )
            channel.deliver(data)
            return
        sids = list(participant.tracks) if participant is not None else []
        if sids and rng.random() < 0.8:
            label = f"track/{rng.choice(sids)}"
        else:
            label = rng.choice(("track/", "track/x", "lossy", "track/99999", random_text(rng, 20)))
        channel = FakeChannel(
            link, label, max_retransmits=rng.choice((None, 0)), ordered=rng.random() < 0.5
        )
        self.channels.append(channel)
        del self.channels[:-8]
        link.open_channel(channel)

    def lifecycle(self) -> None:
        """Leave, or drop the link and resume with forged or honest counters."""
        rng, link, participant = self.rng, self.link, self.participant
        assert link is not None and self.client is not None
        if participant is None:
            return
        if rng.random() < 0.3:
            link.deliver_reliable(encode_message(Kind.LEAVE))
            return
        # the link dies under the session; a new one comes back with a resume request
        link.connection_state = "failed"
        link.closed.set()
        client = self.client
        received = client.state.received
        request = {
            "session": participant.session_id if rng.random() < 0.9 else random_text(rng, 128),
            "secret": participant.resume_secret if rng.random() < 0.9 else "0" * 32,
            "received": rng.choice((received, received, received + 1, 0, 2**63 - 1)),
            "episode": participant.episode + rng.choice((1, 1, 1, 0, 2**30)),
        }
        new_link = FakeLink(
            f"server:{self.identity}~{participant.episode + 1}", self.harness.monitor
        )
        new_link.resume_request = request
        self._attach(new_link)
        self.harness.spawn(self.harness.server._on_peer(_peer_link(new_link), participant.claims))
        self.pending_since = asyncio.get_running_loop().time()
        self.harness.resumes += 1


class Harness:
    """The fuzz peers of one room, the inputs they are fed and what became of them."""

    def __init__(
        self, server: RoomServer, host: GameHost, rng: random.Random, monitor: ExceptionMonitor
    ) -> None:
        self.server = server
        self.host = host
        self.rng = rng
        self.monitor = monitor
        self.view = RoomView()
        self.gen = Generators(rng, self.view)
        self.peers: list[FuzzPeer] = []
        self.counts: Counter[str] = Counter()
        self.end_reasons: Counter[str] = Counter()
        #: honest participants whose session ended, and why (should stay empty until the end)
        self.honest_ends: list[str] = []
        self.joins = 0
        self.resumes = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def claims(self, identity: str) -> Any:
        return self.server.verifier.verify(make_token(KEY, SECRET, identity, ROOM), room=ROOM)

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.monitor.count(f"on_peer task: {exc!r}"[:200], exc)

    def add_peers(self, count: int) -> None:
        for slot in range(count):
            peer = FuzzPeer(self, slot)
            self.peers.append(peer)
            peer.join()

    def maintain(self, now: float) -> int:
        """Replace peers that are gone; keep the others' links alive. Returns inputs fed."""
        self.view.refresh(self.server, self.host)
        fed = 0
        for peer in self.peers:
            state = peer.state(now)
            if state == "live":
                fed += peer.keep_alive(now)
            elif state == "gone":
                peer.join()
        return fed

    def participant_left(self, participant: ServerParticipant) -> None:
        """The host's on_leave: why a fuzz participant's session ended."""
        if participant.identity.startswith("fuzz"):
            self.end_reasons[participant.end_reason or "left"] += 1
        else:
            self.honest_ends.append(f"{participant.identity}: {participant.end_reason or 'left'}")

    def feed(self, now: float) -> int:
        peer = self.rng.choice(self.peers)
        if peer.participant is None:
            return 0
        return peer.feed(now)

    async def close(self) -> None:
        for peer in self.peers:
            if peer.link is not None:
                await peer.link.close()
        await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# --- honest clients -----------------------------------------------------------------------------


class HonestClient:
    """A real client (aiortc) that keeps sending numbered events and reliable data to the
    room, and checks that what the other honest clients send arrives once and in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.room = Room()
        self.sent: Counter[str] = Counter()
        self.events: dict[str, list[int]] = {}
        self.reliable: dict[str, list[int]] = {}
        self.lossy: Counter[str] = Counter()
        self.latencies_ms: list[float] = []
        self.send_failures = 0
        #: events and reliable packets from everyone else (the fuzz peers), and their bytes
        self.others: Counter[str] = Counter()
        self.room.on_event(Chat, self._on_chat)
        self.room.on_event(Spawn, self._on_other_event)
        self.room.on_event(Despawn, self._on_other_event)
        self.room.on("data_received", self._on_data)

    async def connect(self, url: str) -> None:
        await self.room.connect(url, make_token(KEY, SECRET, self.name, ROOM))
        await self.room.local_participant.register_rpc_method("echo", self._echo)

    @staticmethod
    def _echo(data: RpcInvocationData) -> str:
        return data.payload[:100]

    def received_bytes(self) -> int:
        link = self.room.link
        return 0 if link is None else sum(s.bytes_received for s in link.stats().values())

    def _on_other_event(self, event: Any, participant: Any, topic: str) -> None:
        self.others["events"] += 1

    def _on_chat(self, event: Chat, participant: Any, topic: str) -> None:
        parts = event.text.split("|")
        if len(parts) != 4 or parts[0] != "h" or participant is None:
            self.others["events"] += 1
            return
        if participant.identity != parts[1]:
            return  # a forged copy would carry the forger's identity, stamped by the server
        self.events.setdefault(parts[1], []).append(int(parts[2]))
        self.latencies_ms.append((time.perf_counter() - float(parts[3])) * 1e3)

    def _on_data(self, packet: Any) -> None:
        if packet.topic != "honest" or not isinstance(packet.data, str):
            self.others[f"{packet.kind.value}_packets"] += 1
            return
        parts = packet.data.split("|")
        if len(parts) != 3 or packet.participant is None or packet.participant.identity != parts[1]:
            return
        if packet.kind.value == "reliable":
            self.reliable.setdefault(parts[1], []).append(int(parts[2]))
        else:
            self.lossy[parts[1]] += 1

    async def send_round(self) -> None:
        if not self.room.isconnected():
            return
        n = self.sent["rounds"] + 1
        try:
            self.room.send_event(Chat(f"h|{self.name}|{n}|{time.perf_counter():.6f}"))
            local = self.room.local_participant
            await local.publish_data(f"h|{self.name}|{n}", reliable=True, topic="honest")
            await local.publish_data(f"h|{self.name}|{n}", reliable=False, topic="honest")
        except Exception:
            self.send_failures += 1
            return
        self.sent["rounds"] = n


def honest_report(clients: list[HonestClient]) -> dict[str, Any]:
    """What the honest clients sent each other and what arrived."""
    expected = got = lost = duplicated = out_of_order = 0
    reliable_expected = reliable_lost = lossy_expected = lossy_got = 0
    for receiver in clients:
        for sender in clients:
            if sender is receiver:
                continue
            n = sender.sent["rounds"]
            for seen, kind in (
                (receiver.events.get(sender.name, []), "event"),
                (receiver.reliable.get(sender.name, []), "reliable"),
            ):
                missing = n - len(set(seen) & set(range(1, n + 1)))
                duplicated += len(seen) - len(set(seen))
                out_of_order += seen != sorted(seen)
                if kind == "event":
                    expected += n
                    got += len(seen)
                    lost += missing
                else:
                    reliable_expected += n
                    reliable_lost += missing
            lossy_expected += n
            lossy_got += receiver.lossy[sender.name]
    latencies = sorted(v for c in clients for v in c.latencies_ms)
    return {
        "clients": len(clients),
        "connected_at_end": sum(c.room.isconnected() for c in clients),
        "reconnects": sum(c.room.reconnects for c in clients),
        "events_expected": expected,
        "events_received": got,
        "events_lost": lost,
        "reliable_expected": reliable_expected,
        "reliable_lost": reliable_lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "lossy_delivered": round(lossy_got / lossy_expected, 3) if lossy_expected else None,
        "send_failures": sum(c.send_failures for c in clients),
        "received_bytes": sum(c.received_bytes() for c in clients),
        "from_fuzz_peers": dict(sum((c.others for c in clients), Counter())),
        "protocol_errors_from_server": sum(c.room.protocol_errors for c in clients),
        "event_p50_ms": _percentile(latencies, 0.5),
        "event_p99_ms": _percentile(latencies, 0.99),
    }


async def honest_worker(url: str, count: int, interval: float) -> dict[str, Any]:
    """The honest clients, in a process of their own (``--honest-worker URL``): they join,
    say READY, send until "stop" comes on stdin, let the last messages land, and report."""
    loop = asyncio.get_running_loop()
    monitor = ExceptionMonitor()
    logging.getLogger().addHandler(monitor)
    clients = [HonestClient(f"honest{i}") for i in range(count)]
    stop = asyncio.Event()
    try:
        await asyncio.gather(*(client.connect(url) for client in clients))
        print("READY", flush=True)
        if sys.stdin is not None and not sys.stdin.isatty():
            loop.add_reader(sys.stdin.fileno(), stop.set)
        else:
            loop.call_later(3600, stop.set)
        while not stop.is_set():
            for client in clients:
                await client.send_round()
            await asyncio.sleep(interval)
        report = honest_report(clients)
        deadline = loop.time() + 10
        while loop.time() < deadline and (report["events_lost"] or report["reliable_lost"]):
            await asyncio.sleep(0.1)
            report = honest_report(clients)
        report["client_exceptions"] = monitor.unhandled
        report["client_exception_samples"] = monitor.samples[:4]
        return report
    finally:
        for client in clients:
            await client.room.disconnect()


class HonestProcess:
    """The honest clients in a child process, so that their half of every WebRTC connection
    (DTLS, SCTP, the client) does not share the fuzzed server's event loop."""

    def __init__(self, url: str, count: int, interval: float) -> None:
        command = [sys.executable, "-m", "netcode_tools.fuzz", "--honest-worker", url]
        command += ["--honest", str(count), "--honest-interval", str(interval)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def _read(self, prefix: str) -> str:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise RuntimeError(f"the honest clients' process ended (waiting for {prefix})")

    async def ready(self) -> None:
        await asyncio.wait_for(asyncio.to_thread(self._read, "READY"), 60)

    async def stop(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        try:
            report: dict[str, Any] = json.loads(
                await asyncio.wait_for(asyncio.to_thread(self._read, "HONEST "), 60)
            )
            return report
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def _percentile(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))], 2)


# --- signaling ------------------------------------------------------------------------------


async def make_offer() -> str:
    """A real offer (with the netcode channels and a loopback candidate), for mutation."""
    link = PeerLink(make_peer_connection(), name="fuzz-offer")
    try:
        with loopback_candidates(True):
            await link.pc.setLocalDescription(await link.pc.createOffer())
        return str(link.pc.localDescription.sdp)
    finally:
        await link.close()


class SignalingFuzzer:
    """POSTs random, malformed and forged bodies to the real signaling handler.

    A body that could make the server create a peer connection (a valid token or a real
    resume credential, with an offer that may parse) is sent at most ``risky_budget``
    times and two at a time: each costs the server an aiortc peer connection that waits
    for its open timeout.
    """

    def __init__(
        self,
        url: str,
        rng: random.Random,
        sdp: str,
        server: RoomServer,
        *,
        risky_budget: int,
    ) -> None:
        self.url = url.rstrip("/") + SIGNALING_PATH
        self.rng = rng
        self.sdp = sdp
        self.server = server
        self.risky_budget = risky_budget
        self.risky_in_flight = 0
        self.risky_sent = 0
        self.sent = 0
        self.status: Counter[str] = Counter()
        self._valid = make_token(KEY, SECRET, "sig", ROOM)
        self._tokens = (
            make_token(KEY, SECRET, "sig", "elsewhere"),
            make_token(KEY, "wrong-secret-wrong-secret-wrong-secret", "sig", ROOM),
            make_token("no-such-key", SECRET, "sig", ROOM),
            "a.b.c",
            "",
            "x" * 9000,
            "\ud800." * 3,
        )

    def token(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            return self._valid
        if roll < 0.6:
            return rng.choice(self._tokens)
        return mutate(self._valid.encode(), rng).decode("latin-1")

    def json_value(self, depth: int = 0) -> Any:
        rng = self.rng
        roll = rng.random()
        if roll < 0.1:
            return None
        if roll < 0.2:
            return rng.random() < 0.5
        if roll < 0.35:
            return rng.choice((0, -1, 1, 2**31, 2**63, 2**64, 10**30, -(10**30)))
        if roll < 0.45:
            return rng.choice((0.5, -0.0, 1e308, 1e-308, 3.0))
        if roll < 0.75 or depth > 2:
            return random_text(rng, 300) if rng.random() < 0.9 else "\ud800\udfff\ud800"
        if roll < 0.88:
            return [self.json_value(depth + 1) for _ in range(rng.randrange(4))]
        return {random_text(rng, 10): self.json_value(depth + 1) for _ in range(rng.randrange(4))}

    def resume(self) -> tuple[Any, bool]:
        rng = self.rng
        sessions = list(self.server.sessions.values())
        risky = False
        if sessions and rng.random() < 0.6:
            participant = rng.choice(sessions)
            session: Any = participant.session_id
            roll = rng.random()
            if roll < 0.3:
                secret: Any = participant.resume_secret
                risky = True
            elif roll < 0.6:
                secret = "é" * 32  # not ASCII
            else:
                secret = random_text(rng, 130)
        else:
            session, secret = random_text(rng, 130), random_text(rng, 40)
        fields: dict[str, Any] = {"session": session, "secret": secret}
        fields["received"] = rng.choice((0, 1, 2**63 - 1, 2**63, -1, 1.5, True, "1"))
        if rng.random() < 0.5:
            fields["episode"] = rng.choice((1, 0, 2**31, -1, None))
        for _ in range(rng.choice((0, 0, 1))):
            fields[rng.choice(("session", "secret", "received", "episode"))] = self.json_value()
        if rng.random() < 0.05:
            return self.json_value(), False
        return fields, risky

    def nasty(self) -> bytes:
        rng = self.rng
        roll = rng.randrange(8)
        if roll == 0:
            return b"[" * rng.choice((100, 1000, 20000, 65000))
        if roll == 1:
            return b'{"sdp": "v=0", "type": "offer", "token": ' + b"1" * 5000 + b"}"
        if roll == 2:
            return b'{"token": "' + b"a" * rng.choice((65000, 70000)) + b'"}'
        if roll == 3:
            return b'{"sdp": NaN, "type": Infinity, "token": -Infinity}'
        if roll == 4:
            return json.dumps({"sdp": self.sdp, "type": "offer", "token": "t"}).encode("utf-16")
        if roll == 5:
            return b'{"sdp": "x", "sdp": 1, "type": "offer", "type": 2}'
        if roll == 6:
            return b"\xff\xfe\xfd" + rng.randbytes(100)
        return b'{"a":' * 3000 + b"1" + b"}" * 3000

    def body(self) -> tuple[bytes, bool]:
        """One request body and whether it may make the server create a peer connection."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.08:
            return random_bytes(rng, 4096), False
        if roll < 0.16:
            return self.nasty(), False
        request: dict[str, Any] = {"sdp": self.sdp, "type": "offer", "token": self.token()}
        if rng.random() < 0.5:
            request["sdp"] = mutate(self.sdp.encode(), rng).decode("latin-1")
        if rng.random() < 0.3:
            request["room"] = ROOM if rng.random() < 0.6 else self.json_value()
        risky_resume = False
        if rng.random() < 0.15:
            request["resume"], risky_resume = self.resume()
        for _ in range(rng.choice((0, 0, 1, 2))):
            key = rng.choice(("sdp", "type", "token", "room", "resume", "extra"))
            if rng.random() < 0.4:
                request.pop(key, None)
            else:
                request[key] = self.json_value()
        risky = (
            isinstance(request.get("sdp"), str)
            and request.get("type") == "offer"
            and (request.get("token") == self._valid or risky_resume)
        )
        if risky and (self.risky_in_flight >= 2 or self.risky_sent >= self.risky_budget):
            request["token"] = self._tokens[1]
            request.pop("resume", None)
            risky = False
        text = json.dumps(request, ensure_ascii=rng.random() < 0.7)
        data = text.encode("utf-8", "surrogatepass")
        if rng.random() < 0.1:
            data = mutate(data, rng)
        return data, risky

    async def post(self) -> None:
        body, risky = self.body()
        self.sent += 1
        if risky:
            self.risky_in_flight += 1
            self.risky_sent += 1
        try:
            status = await asyncio.wait_for(http_post(self.url, body), 20)
            self.status[str(status)] += 1
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.status[type(exc).__name__] += 1
        finally:
            if risky:
                self.risky_in_flight -= 1

    async def run(self, quota: Callable[[], float], stop: asyncio.Event, workers: int = 8) -> None:
        """Keep ``quota()`` requests sent (it grows as the bulk advances) until ``stop``."""

        async def worker() -> None:
            while not stop.is_set():
                if self.sent >= quota():
                    await asyncio.sleep(0.005)
                    continue
                await self.post()

        await asyncio.gather(*(worker() for _ in range(workers)))


async def http_post(url: str, body: bytes, *, source: str | None = None) -> int:
    """POST ``body`` (as JSON) to ``url`` (http://host:port/path) on a connection of its own;
    returns the status. A bare HTTP/1.1 client: tools leave aiohttp to the transport layer,
    and a fuzzer wants to send exactly the bytes it chose. ``source``: the local address to
    send from (another loopback address is another client to the server's limits)."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    local = None if source is None else (source, 0)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=local)
    try:
        head = (
            f"POST /{path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass  # the server answered (413) and closed before reading it all
        status_line = await reader.readline()
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"no HTTP status line: {status_line[:60]!r}")
        await reader.read()  # the rest, until the server closes
        return int(parts[1])
    finally:
        writer.close()


# --- a real WebRTC sample ------------------------------------------------------------------


async def webrtc_sample(
    url: str, inputs: int, rng: random.Random, view: RoomView, stop: asyncio.Event
) -> dict[str, Any]:
    """Real aiortc clients sending raw random and mutated bytes on both channels."""
    loop = asyncio.get_running_loop()
    gen = Generators(rng, view)
    counts: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    number = 0
    while counts["inputs"] < inputs and not stop.is_set():
        number += 1
        identity = f"fuzzrtc-{number}"
        try:
            link = await webrtc.connect_peer(
                url, make_token(KEY, SECRET, identity, ROOM), room=ROOM, timeout=10
            )
        except Exception as exc:
            counts[f"connect_failed_{type(exc).__name__}"] += 1
            if number > counts["inputs"] // 10 + 5:
                break
            await asyncio.sleep(0.2)
            continue
        counts["links"] += 1
        client = ClientSide(gen, identity)

        def on_reliable(data: bytes | str, client: ClientSide = client) -> None:
            client.on_reliable(data)
            if isinstance(data, bytes) and data[:1] == bytes((Kind.ERROR,)):
                codes[data[2 : 2 + data[1]].decode(errors="replace")] += 1

        def on_lossy(data: bytes, client: ClientSide = client) -> None:
            client.on_datagram(data, loop.time())

        link.on_reliable(on_reliable)
        link.on_lossy(on_lossy)
        while counts["inputs"] < inputs and link.is_open and not stop.is_set():
            if rng.random() < 0.5:
                message = client.reliable_input()
                try:
                    link.send_reliable(message)
                    counts["reliable"] += 1
                except (ValueError, ChannelNotOpen):
                    counts["not_sendable"] += 1
            else:
                for data in client.datagram_inputs(loop.time()):
                    try:
                        link.send_lossy(data)
                        counts["lossy"] += 1
                    except (ValueError, ChannelNotOpen):
                        counts["not_sendable"] += 1
            counts["inputs"] += 1
            await asyncio.sleep(0.01)
        await link.close()
    return {**counts, "server_error_codes": dict(codes)}


# --- the run ----------------------------------------------------------------------------------


def rss_mib() -> float:
    """This process's resident set (Linux /proc; the peak from getrusage elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(
    args: argparse.Namespace, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """One fuzz run (see the module docstring); returns the figures."""
    loop = asyncio.get_running_loop()
    monitor = ExceptionMonitor()
    root = logging.getLogger()
    root.addHandler(monitor)
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(monitor.loop_handler)
    rng = random.Random(args.seed)
    total = args.inputs
    webrtc_quota = min(args.webrtc_inputs, total // 4)
    signaling_quota = int(total * args.signaling_share)
    bulk_quota = total - webrtc_quota - signaling_quota
    rss_start = rss_mib()

    server = RoomServer(
        KEY,
        SECRET,
        max_participants=1000,
        max_protocol_errors=args.max_protocol_errors,
        # the signaling fuzz is to reach the handler's parser, not its rate limiter (which
        # `netcode-load --hostile signaling:N` meets at its defaults)
        signaling_limits=SignalingLimits(requests_per_s=1000.0, request_burst=1000.0),
    )
    await server.start("127.0.0.1", 0)
    host = GameHost(tick_rate=args.tick_rate, registry=LOAD_REGISTRY)
    LoadGame(host, args.entities)
    harness = Harness(server, host, rng, monitor)
    on_leave = host.on_leave

    def left(participant: ServerParticipant) -> None:
        harness.participant_left(participant)
        on_leave(participant)

    host.on_leave = left
    host.attach(server.room(ROOM))
    honest = HonestProcess(server.url, args.honest, args.honest_interval)
    stop = asyncio.Event()
    background: list[asyncio.Task[Any]] = []
    try:
        await honest.ready()
        long_lived = {"server watch": server._watch_task, "game host tick": host._task}

        lags_ms: list[float] = []

        async def watch_lag() -> None:
            while not stop.is_set():
                before = loop.time()
                await asyncio.sleep(0.01)
                lags_ms.append((loop.time() - before - 0.01) * 1e3)

        background.append(loop.create_task(watch_lag()))
        sdp = await make_offer()
        signaling = SignalingFuzzer(
            server.url,
            random.Random(rng.random()),
            sdp,
            server,
            risky_budget=max(4, signaling_quota // 200),
        )
        fed = 0
        background.append(
            loop.create_task(
                signaling.run(lambda: signaling_quota * min(1.0, fed / max(bulk_quota, 1)), stop)
            )
        )
        sample_task = loop.create_task(
            webrtc_sample(server.url, webrtc_quota, random.Random(rng.random()), harness.view, stop)
        )
        harness.add_peers(args.peers)
        await asyncio.sleep(0.05)

        started = time.perf_counter()
        rss_samples: list[tuple[int, float]] = [(0, rss_mib())]
        baseline: float | None = None
        fuzz_s = 0.0
        last_maintain = last_sample = 0.0
        while fed < bulk_quota:
            now = loop.time()
            if now - last_maintain >= 0.02:
                last_maintain = now
                fed += harness.maintain(now)
            if now - last_sample >= 0.25:
                last_sample = now
                rss_samples.append((fed, rss_mib()))
                if baseline is None and fed >= bulk_quota // 10:
                    baseline = rss_samples[-1][1]
                if progress is not None:
                    done = fed + signaling.sent + int(sample_task.done()) * webrtc_quota
                    progress(min(done, total), total)
            # a slice of fuzzing, then the loop is the server's again for a while: a fuzzer
            # feeding without pause would be a peer sending at an infinite rate
            slice_start = time.perf_counter()
            slice_end = slice_start + args.slice_ms / 1000
            while time.perf_counter() < slice_end and fed < bulk_quota:
                fed += harness.feed(loop.time())
            fuzz_s += time.perf_counter() - slice_start
            await asyncio.sleep(args.pause_ms / 1000)
        # the signaling and WebRTC shares finish their quotas
        while signaling.sent < signaling_quota:
            await asyncio.sleep(0.05)
        webrtc_result = await asyncio.wait_for(sample_task, 120)
        elapsed = time.perf_counter() - started
        rss_samples.append((fed, rss_mib()))
        tasks_alive = {
            name: task is not None and not task.done() for name, task in long_lived.items()
        }
        # every honest message sent must arrive: the honest process lets the last ones land
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        report = {**await honest.stop(), "sessions_ended": list(harness.honest_ends)}
        await harness.close()
    finally:
        stop.set()
        for task in background:
            task.cancel()
        honest.kill()
        await host.stop()
        await server.stop()
        root.removeHandler(monitor)
        loop.set_exception_handler(previous_handler)

    peak = max(rss for _, rss in rss_samples)
    baseline = baseline if baseline is not None else rss_samples[-1][1]
    ceiling = baseline + args.max_growth_mib
    inputs = fed + signaling.sent + webrtc_result.get("inputs", 0)
    stats = host.tick_stats()
    result: dict[str, Any] = {
        "seed": args.seed,
        "inputs": inputs,
        "inputs_by_target": {
            **dict(harness.counts),
            "signaling": signaling.sent,
            "webrtc": webrtc_result.get("inputs", 0),
        },
        "elapsed_s": round(elapsed, 1),
        "fuzz_share_of_time": round(fuzz_s / elapsed, 2),
        "loop_lag_p50_ms": _percentile(sorted(lags_ms), 0.5),
        "loop_lag_p99_ms": _percentile(sorted(lags_ms), 0.99),
        "inputs_per_s": round(inputs / elapsed),
        "unhandled_exceptions": monitor.unhandled,
        "exceptions_by_kind": dict(monitor.by_kind),
        "exception_samples": monitor.samples,
        "aiortc_internal_errors": dict(monitor.third_party),
        "protocol_errors_counted": server.protocol_errors,
        "fuzz_participants_joined": harness.joins,
        "resumes_tried": harness.resumes,
        "sessions_ended": dict(harness.end_reasons),
        "warnings": dict(monitor.warnings.most_common(20)),
        "tasks_alive": all(tasks_alive.values()),
        "tasks": tasks_alive,
        "ticks_run": stats.get("ticks"),
        "tick_rate_held": stats.get("tick_rate_held"),
        "rss_start_mib": round(rss_start, 1),
        "rss_baseline_mib": round(baseline, 1),
        "rss_peak_mib": round(peak, 1),
        "rss_end_mib": round(rss_samples[-1][1], 1),
        "rss_ceiling_mib": round(ceiling, 1),
        "memory_ok": peak <= ceiling,
        "rss_samples": [
            [n, round(r, 1)] for n, r in rss_samples[:: max(1, len(rss_samples) // 40)]
        ],
        "honest": report,
        "signaling": {
            "requests": signaling.sent,
            "risky_requests": signaling.risky_sent,
            "status": dict(signaling.status),
        },
        "webrtc": webrtc_result,
    }
    result["ok"] = bool(
        result["unhandled_exceptions"] == 0
        and result["tasks_alive"]
        and result["memory_ok"]
        and report["events_lost"] == 0
        and report["reliable_lost"] == 0
        and report["duplicated"] == 0
        and report["out_of_order"] == 0
        and report["connected_at_end"] == report["clients"]
        and report["client_exceptions"] == 0
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netcode-fuzz",
        description="Random and mutated input thrown at a real room server, beside honest clients.",
    )
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs in all (10**6)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--peers", type=int, default=4, help="in-process fuzz participants (4)")
    parser.add_argument("--honest", type=int, default=2, help="honest WebRTC clients (2)")
    parser.add_argument(
        "--honest-interval", type=float, default=0.05, help="s between honest sends (0.05)"
    )
    parser.add_argument(
        "--webrtc-inputs", type=int, default=400, help="inputs sent over real WebRTC (400)"
    )
    parser.add_argument(
        "--signaling-share", type=float, default=0.02, help="share of signaling bodies (0.02)"
    )
    parser.add_argument("--entities", type=int, default=8, help="replicated movers (8)")
    parser.add_argument("--tick-rate", type=float, default=10.0, help="host tick rate (10)")
    parser.add_argument(
        "--max-protocol-errors",
        type=int,
        default=100,
        help="the server cuts a peer off after this many (100; the server's default is 20: "
        "more lets a fuzz peer build up state before it is replaced)",
    )
    parser.add_argument(
        "--max-growth-mib",
        type=float,
        default=64.0,
        help="memory ceiling: RSS after the first tenth of the inputs plus this (64)",
    )
    parser.add_argument(
        "--slice-ms", type=float, default=10.0, help="ms of fuzzing between pauses (10)"
    )
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=5.0,
        help="ms the loop is left to the server and the honest clients after each slice (5)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--honest-worker", metavar="URL", help=argparse.SUPPRESS)  # a child
    args = parser.parse_args(argv)
    if args.honest_worker:
        report = asyncio.run(honest_worker(args.honest_worker, args.honest, args.honest_interval))
        print("HONEST " + json.dumps(report), flush=True)
        return 0
    if args.inputs < 100 or args.honest < 2 or args.peers < 1:
        parser.error("--inputs must be at least 100, --honest at least 2, --peers at least 1")

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("fuzz"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} inputs"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=args.json and not console.is_terminal,
    ) as bar:
        task = bar.add_task("fuzz", total=args.inputs)
        result = asyncio.run(run(args, lambda done, total: bar.update(task, completed=done)))
    if args.json:
        print(json.dumps(result))
    else:
        from rich.table import Table

        table = Table(title=f"netcode-fuzz: {result['inputs']:,} inputs, seed {args.seed}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in result.items():
            if key not in ("rss_samples", "exception_samples"):
                table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
        Console().print(table)
        for sample in result["exception_samples"]:
            console.print(f"[red]{sample['where']}[/red]\n{sample['traceback']}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
