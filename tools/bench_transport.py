"""``netcode-bench transport``: connect time and latency of the WebRTC transport on loopback.

Every path runs in this one process on 127.0.0.1, so both ends read the same
``time.perf_counter`` clock and latency is measured **one way**: each message carries its
send time and the receiver subtracts it on arrival. Messages go one at a time (the receiver
echoes each one back and the sender waits for the echo before the next), so the figures are
per-message latency without queueing; the round trip is reported beside them. Both ends
share one event loop and so one core: a figure includes the sender's and the receiver's
Python work, which is what a game pays.

Paths measured in the same run:

- ``peerlink``: :func:`~netcode.transport.webrtc.connect_peer` to a
  :class:`~netcode.transport.webrtc.SignalingServer` that echoes, on ``reliable`` and
  ``lossy``; connect time is from creating the offer (including HTTP signaling) to both
  channels open;
- ``aiortc``: a bare ``RTCPeerConnection`` pair with plain data channels (reliable, and
  unordered with ``maxRetransmits=0``), offer and answer exchanged in memory; connect time
  from creating the offer to the channel open.

- ``room relay``: two :class:`~netcode.rooms.Room` clients of a group room, alice ->
  server -> bob (two hops and the server's relay, every layer of netcode on the way);
- ``p2p``: two Room clients of a peer-to-peer room, alice -> bob on their direct link
  (one hop, every layer of netcode at both ends, nothing through the server); connect
  time is ``Room.connect`` of the second participant until the direct link is open.

More paths register in ``PATHS``: a coroutine taking the parsed arguments and returning
:class:`Row` objects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection

from netcode.auth import Claims, TokenVerifier
from netcode.cli import make_token
from netcode.transport.webrtc import (
    PeerLink,
    SignalingServer,
    connect_peer,
    loopback_candidates,
    make_peer_connection,
)

_KEY = "bench"
_SECRET = "bench-secret-bench-secret-bench-secret"
# Each message starts with its sequence number and send time; the rest is padding.
_STAMP = struct.Struct("!Id")
_LOSS_WAIT_S = 1.0


@dataclass
class Row:
    """One line of the report: a path and channel with its samples."""

    path: str
    channel: str
    connect_ms: list[float] = field(default_factory=list)
    one_way_us: list[float] = field(default_factory=list)
    round_trip_us: list[float] = field(default_factory=list)
    sent: int = 0
    lost: int = 0

    def summary(self) -> dict[str, Any]:
        """Medians and percentiles (the JSON form of the row)."""
        return {
            "path": self.path,
            "channel": self.channel,
            "connect_ms_median": _median(self.connect_ms),
            "connects": len(self.connect_ms),
            "one_way_us_p50": _percentile(self.one_way_us, 50),
            "one_way_us_p99": _percentile(self.one_way_us, 99),
            "round_trip_us_p50": _percentile(self.round_trip_us, 50),
            "sent": self.sent,
            "lost": self.lost,
        }


def _median(samples: list[float]) -> float | None:
    return round(statistics.median(samples), 2) if samples else None


def _percentile(samples: list[float], pct: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))], 1)


class _PingPong:
    """Sends stamped messages one at a time and collects one-way and round-trip times.

    ``send`` transmits a message; the far end calls :meth:`arrived` when it receives it
    (recording the one-way time) and echoes it; the echo is fed to :meth:`echoed`.
    """

    def __init__(self, row: Row, size: int) -> None:
        self.row = row
        self.padding = b"\x00" * max(0, size - _STAMP.size)
        self._waiting: tuple[int, asyncio.Future[None]] | None = None

    def arrived(self, message: bytes | str) -> None:
        if isinstance(message, bytes) and len(message) >= _STAMP.size:
            _, sent_at = _STAMP.unpack_from(message)
            self.row.one_way_us.append((time.perf_counter() - sent_at) * 1e6)

    def echoed(self, message: bytes | str) -> None:
        if not isinstance(message, bytes) or len(message) < _STAMP.size:
            return
        sequence, sent_at = _STAMP.unpack_from(message)
        if self._waiting is not None and self._waiting[0] == sequence:
            self.row.round_trip_us.append((time.perf_counter() - sent_at) * 1e6)
            if not self._waiting[1].done():
                self._waiting[1].set_result(None)

    async def run(self, send: Callable[[bytes], object], count: int) -> None:
        loop = asyncio.get_running_loop()
        for sequence in range(count):
            done = loop.create_future()
            self._waiting = (sequence, done)
            send(_STAMP.pack(sequence, time.perf_counter()) + self.padding)
            self.row.sent += 1
            try:
                await asyncio.wait_for(done, _LOSS_WAIT_S)
            except TimeoutError:
                self.row.lost += 1


# --- PeerLink through SignalingServer -----------------------------------------------------------


async def measure_peerlink(args: argparse.Namespace) -> list[Row]:
    """``connect_peer`` to an echoing ``SignalingServer``: connect time, reliable, lossy."""
    verifier = TokenVerifier(_KEY, _SECRET)
    reliable = Row("peerlink", "reliable")
    lossy = Row("peerlink", "lossy")
    probes = {"reliable": _PingPong(reliable, args.size), "lossy": _PingPong(lossy, args.size)}

    async def authorize(token: str, room: str = "") -> Claims:
        return verifier.verify(token)

    async def on_peer(link: PeerLink, claims: Claims) -> None:
        def on_reliable(message: bytes | str) -> None:
            probes["reliable"].arrived(message)
            link.send_reliable(message)

        def on_lossy(message: bytes) -> None:
            probes["lossy"].arrived(message)
            link.send_lossy(message)

        link.on_reliable(on_reliable)
        link.on_lossy(on_lossy)

    token = make_token(_KEY, _SECRET, "bench", "bench")
    server = SignalingServer(authorize, on_peer)
    await server.start("127.0.0.1", 0)
    try:
        for _ in range(args.connects - 1):
            started = time.perf_counter()
            link = await connect_peer(server.url, token)
            reliable.connect_ms.append((time.perf_counter() - started) * 1e3)
            await link.close()
        started = time.perf_counter()
        link = await connect_peer(server.url, token)
        reliable.connect_ms.append((time.perf_counter() - started) * 1e3)
        lossy.connect_ms = reliable.connect_ms
        try:
            link.on_reliable(probes["reliable"].echoed)
            link.on_lossy(probes["lossy"].echoed)
            await probes["reliable"].run(link.send_reliable, args.messages)
            await probes["lossy"].run(link.send_lossy, args.messages)
        finally:
            await link.close()
    finally:
        await server.stop()
    return [reliable, lossy]


# --- bare aiortc pair ----------------------------------------------------------------------------


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


async def _bare_pair(
    **channel_options: Any,
) -> tuple[
    RTCPeerConnection, RTCPeerConnection, RTCDataChannel, asyncio.Future[RTCDataChannel], float
]:
    """Two connected RTCPeerConnections and a plain channel; returns the connect time (ms)."""
    loop = asyncio.get_running_loop()
    offerer, answerer = make_peer_connection(), make_peer_connection()
    remote: asyncio.Future[RTCDataChannel] = loop.create_future()
    answerer.on("datachannel", lambda channel: _resolve(remote, channel))
    started = time.perf_counter()
    channel = offerer.createDataChannel("bench", **channel_options)
    opened: asyncio.Future[None] = loop.create_future()
    channel.on("open", lambda: _resolve(opened, None))
    # Both ends on this machine: offer the loopback candidate, as connect_peer does.
    with loopback_candidates():
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    await asyncio.wait_for(opened, 10)
    connect_ms = (time.perf_counter() - started) * 1e3
    return offerer, answerer, channel, remote, connect_ms


async def measure_bare_aiortc(args: argparse.Namespace) -> list[Row]:
    """A bare RTCPeerConnection pair with plain channels, reliable and unreliable."""
    rows = []
    for name, options in (
        ("reliable", {}),
        ("unreliable", {"ordered": False, "maxRetransmits": 0}),
    ):
        row = Row("aiortc", name)
        for attempt in range(args.connects):
            offerer, answerer, channel, remote_future, connect_ms = await _bare_pair(**options)
            row.connect_ms.append(connect_ms)
            try:
                if attempt == args.connects - 1:
                    remote = await asyncio.wait_for(remote_future, 10)
                    probe = _PingPong(row, args.size)

                    def echo(
                        message: bytes | str,
                        probe: _PingPong = probe,
                        remote: RTCDataChannel = remote,
                    ) -> None:
                        probe.arrived(message)
                        remote.send(message)

                    remote.on("message", echo)
                    channel.on("message", probe.echoed)
                    await probe.run(channel.send, args.messages)
            finally:
                await offerer.close()
                await answerer.close()
        rows.append(row)
    return rows


# --- rooms: client -> server -> client --------------------------------------------------------


async def measure_room(args: argparse.Namespace) -> list[Row]:
    """Two Room clients through a RoomServer: alice -> server -> bob, bob echoes back.

    Connect time is ``Room.connect`` (signaling, ICE/DTLS/SCTP, and the JOINED message).
    One-way latency is alice's ``publish_data`` to bob's ``data_received``: two hops and
    the server's relay, with every layer of netcode on the way.
    """
    from netcode.rooms import DataPacket, Room, RoomServer

    reliable = Row("room relay", "reliable")
    lossy = Row("room relay", "lossy")
    probes = {True: _PingPong(reliable, args.size), False: _PingPong(lossy, args.size)}
    server = RoomServer(_KEY, _SECRET)
    await server.start("127.0.0.1", 0)

    def token(identity: str) -> str:
        return make_token(_KEY, _SECRET, identity, "bench")

    alice, bob = Room(), Room()
    try:
        for _ in range(args.connects - 1):
            room = Room()
            started = time.perf_counter()
            await room.connect(server.url, token("probe"))
            reliable.connect_ms.append((time.perf_counter() - started) * 1e3)
            await room.disconnect()
        started = time.perf_counter()
        await alice.connect(server.url, token("alice"))
        reliable.connect_ms.append((time.perf_counter() - started) * 1e3)
        lossy.connect_ms = reliable.connect_ms
        await bob.connect(server.url, token("bob"))
        while "bob" not in alice.remote_participants:
            await asyncio.sleep(0.01)

        def bob_received(packet: DataPacket) -> None:
            reliable_kind = packet.kind.value == "reliable"
            probes[reliable_kind].arrived(packet.data)
            bob.publish_data(packet.data, reliable_kind, ["alice"], "")

        bob.on("data_received", bob_received)
        alice.on(
            "data_received",
            lambda packet: probes[packet.kind.value == "reliable"].echoed(packet.data),
        )
        for reliable_kind in (True, False):

            def send(data: bytes, reliable: bool = reliable_kind) -> None:
                alice.publish_data(data, reliable, ["bob"], "bench")

            await probes[reliable_kind].run(send, args.messages)
    finally:
        await alice.disconnect()
        await bob.disconnect()
        await server.stop()
    return [reliable, lossy]


# --- rooms: peer to peer -------------------------------------------------------------------------


async def measure_p2p(args: argparse.Namespace) -> list[Row]:
    """Two Room clients of a P2P room: alice -> bob on their direct link, bob echoes back.

    Connect time is bob's ``Room.connect`` (signaling, ICE/DTLS/SCTP to the server, JOINED)
    until the direct link between the two is open (PEER_OFFER/PEER_ANSWER through the
    server, then ICE/DTLS/SCTP between them). One-way latency is alice's ``publish_data``
    to bob's ``data_received``: one hop, with every layer of netcode at both ends.
    """
    from netcode.rooms import DataPacket, Room, RoomServer

    reliable = Row("p2p", "reliable")
    lossy = Row("p2p", "lossy")
    probes = {True: _PingPong(reliable, args.size), False: _PingPong(lossy, args.size)}
    server = RoomServer(_KEY, _SECRET, room_types={"bench": "p2p"})
    await server.start("127.0.0.1", 0)

    def token(identity: str) -> str:
        return make_token(_KEY, _SECRET, identity, "bench")

    alice = Room()
    await alice.connect(server.url, token("alice"))
    bob = Room()
    try:
        for attempt in range(args.connects):
            bob = Room()
            started = time.perf_counter()
            await bob.connect(server.url, token("bob"))
            assert bob.mesh is not None
            await bob.mesh.wait_connected(["alice"])
            reliable.connect_ms.append((time.perf_counter() - started) * 1e3)
            if attempt < args.connects - 1:
                await bob.disconnect()
                while "bob" in alice.remote_participants:
                    await asyncio.sleep(0.01)
        lossy.connect_ms = reliable.connect_ms
        assert alice.mesh is not None
        await alice.mesh.wait_connected(["bob"])

        def bob_received(packet: DataPacket) -> None:
            reliable_kind = packet.kind.value == "reliable"
            probes[reliable_kind].arrived(packet.data)
            bob.publish_data(packet.data, reliable_kind, ["alice"], "")

        bob.on("data_received", bob_received)
        alice.on(
            "data_received",
            lambda packet: probes[packet.kind.value == "reliable"].echoed(packet.data),
        )
        for reliable_kind in (True, False):

            def send(data: bytes, reliable: bool = reliable_kind) -> None:
                alice.publish_data(data, reliable, ["bob"], "bench")

            await probes[reliable_kind].run(send, args.messages)
    finally:
        await alice.disconnect()
        await bob.disconnect()
        await server.stop()
    return [reliable, lossy]


#: name -> coroutine measuring that path.
PATHS: dict[str, Callable[[argparse.Namespace], Awaitable[list[Row]]]] = {
    "aiortc": measure_bare_aiortc,
    "peerlink": measure_peerlink,
    "room": measure_room,
    "p2p": measure_p2p,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=1000, help="messages per channel")
    parser.add_argument("--size", type=int, default=100, help="message size in bytes")
    parser.add_argument("--connects", type=int, default=10, help="connections per path")
    parser.add_argument(
        "--paths", nargs="+", choices=sorted(PATHS), default=list(PATHS), help="paths to measure"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the paths this many times in turn and pool each path's samples (on a "
        "busy machine the load then weighs on every path alike)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


async def _run_all(args: argparse.Namespace) -> list[Row]:
    pooled: dict[tuple[str, str], Row] = {}
    for _ in range(max(1, args.repeat)):
        for name in args.paths:
            rows = await PATHS[name](args)
            merged: dict[int, list[float]] = {}  # a path's channels may share connect_ms
            for row in rows:
                into = pooled.get((row.path, row.channel))
                if into is None:
                    pooled[(row.path, row.channel)] = row
                    continue
                if id(row.connect_ms) in merged:
                    into.connect_ms = merged[id(row.connect_ms)]
                else:
                    into.connect_ms += row.connect_ms
                    merged[id(row.connect_ms)] = into.connect_ms
                into.one_way_us += row.one_way_us
                into.round_trip_us += row.round_trip_us
                into.sent += row.sent
                into.lost += row.lost
    return list(pooled.values())


def run(args: argparse.Namespace) -> int:
    if args.size < _STAMP.size:
        raise SystemExit(f"--size must be at least {_STAMP.size} bytes")
    rows = asyncio.run(_run_all(args))
    summaries = [row.summary() for row in rows]
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "transport",
                    "latency": "one-way, same-process perf_counter; one message in flight",
                    "messages": args.messages,
                    "size": args.size,
                    "rows": summaries,
                }
            )
        )
        return 0
    print(
        f"loopback, {args.messages} x {args.size}-byte messages one at a time; "
        "one-way latency (same-process clock) and round trip"
    )
    header = ("path", "channel", "connect ms", "1-way p50 us", "1-way p99 us", "rtt p50 us", "lost")
    lines = [header] + [
        (
            s["path"],
            s["channel"],
            _fmt(s["connect_ms_median"]),
            _fmt(s["one_way_us_p50"]),
            _fmt(s["one_way_us_p99"]),
            _fmt(s["round_trip_us_p50"]),
            f"{s['lost']}/{s['sent']}",
        )
        for s in summaries
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


__all__ = [
    "PATHS",
    "Row",
    "add_arguments",
    "measure_bare_aiortc",
    "measure_p2p",
    "measure_peerlink",
    "measure_room",
    "run",
]
