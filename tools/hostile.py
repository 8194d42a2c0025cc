"""Hostile clients for ``netcode-load --hostile KIND:N`` (repeatable), and what became of them.

::

    netcode-load --clients 8 --duration 20 --compare \\
        --hostile non_acker:4 --hostile flooder:4 --hostile topic_spammer:4 \\
        --hostile garbage:4 --hostile oversized:4 --hostile fast_input:4 --hostile signaling:4

The kinds (each client paced, so that the generator itself does not melt):

``non_acker``
    joins, then never reads its lossy channel and never sends an ACK, so it acknowledges
    nothing the server sends (snapshots, relayed game events, reliable messages), while
    keeping its link alive with a PING-only datagram every 50 ms (what a 20 Hz client
    sends): its queues on the server fill. (The other kinds acknowledge, as clients do.)
``flooder``
    datagrams at ``FLOOD_RATE`` a second: empty (a bare header), duplicates of one
    datagram, and garbage, a third each.
``topic_spammer``
    binds thousands of topic names (TOPIC messages with ids 1, 2, 3...) and publishes a
    reliable and a lossy packet to the room on each, 200 new topics a second.
``garbage``
    reliable messages of random bytes (up to 16 KiB) and random datagrams, 100 a second.
``oversized``
    game events too large for a datagram, sent the fallback way with ids 1..1023 and never
    id 0 (each up to 15 KiB: the reorder buffer would hold them all), 16 KiB reliable data
    packets to the room, and messages over the channel's 16 KiB limit, 50 a second.
``fast_input``
    an otherwise honest client (it acknowledges) that sends 8 new inputs each 1/30 s, four
    times what a tick allows.
``signaling``
    POSTs to ``/rtc/connect``, 50 a second, from 127.0.0.2 (a loopback address of its own:
    the server's limits are per address): malformed and oversized bodies, refused tokens,
    and valid offers (each of which would cost the server a peer connection).

Hostile clients run in a child process of their own (``python -m netcode_tools.hostile``),
so that the honest bots' latencies are not the generator's. Each reports what it sent and
what the server told it (the code of its ERROR, when its link closed); the load server adds
what it decided about each participant (:class:`ServerReport`: why its session ended, its
protocol errors, the budgets it went over, the inputs it had dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from netcode.cli import make_token
from netcode.core import Endpoint
from netcode.errors import NetcodeError
from netcode.replication.inputs import encode_inputs
from netcode.rooms import RoomServer, ServerParticipant
from netcode.rooms.events import encode_fallback
from netcode.rooms.host import GameHost, HostedClient
from netcode.rooms.protocol import (
    ExtensionChannel,
    Kind,
    decode_message_untrusted,
    encode_lossy_up,
    encode_message,
)
from netcode.transport.peerlink import MAX_RELIABLE_MESSAGE_BYTES, ChannelNotOpen
from netcode.transport.signaling import SIGNALING_PATH
from netcode.transport.webrtc import PeerLink, connect_peer
from netcode.wire import FrameType, encode_datagram, encode_ping

from .fuzz import http_post, make_offer, random_bytes

__all__ = [
    "KINDS",
    "HostileProcess",
    "Scenario",
    "ServerReport",
    "add_arguments",
    "check_arguments",
    "main",
    "parse_spec",
    "run_hostiles",
    "run_scenario",
    "summarize",
]

_UNCOUNTED = (bytes((Kind.ACK,)), bytes((Kind.RESUMED,)))

#: Seconds the hostile clients have to join before they say READY all the same.
READY_TIMEOUT_S = 30.0
#: Datagrams a second one flooder sends (the server's default budget is 1000).
FLOOD_RATE = 1500.0


async def first_of(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


def parse_spec(text: str) -> tuple[str, int]:
    """``KIND:N`` (N defaults to 1) -> (kind, count); raises ValueError."""
    kind, _, count = text.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown hostile kind {kind!r} (one of {', '.join(KINDS)})")
    n = int(count) if count else 1
    if not 1 <= n <= 64:
        raise ValueError(f"hostile count {n} is not within 1..64")
    return kind, n


class Hostile:
    """One hostile client: ``run`` until ``stop``, then ``report``."""

    kind = ""

    def __init__(self, index: int, url: str, key: str, secret: str, room: str) -> None:
        self.index = index
        self.url = url
        self.room = room
        self.identity = f"hostile-{self.kind}-{index}"
        self.token = make_token(key, secret, self.identity, room)
        self.rng = random.Random(f"{self.kind}{index}")
        self.sent = 0
        self.started = 0.0
        self.error_code: str | None = None
        self.error_message = ""
        self.closed_after_s: float | None = None
        self.connect_failed = ""
        self.extra: dict[str, Any] = {}
        #: set once joined (or failed to): the run measures from the attack, not the join
        self.ready = asyncio.Event()
        #: the attack starts when this is set (run_hostiles gives them all one)
        self.go = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        raise NotImplementedError

    async def wait_go(self, stop: asyncio.Event) -> None:
        """Say ready, then wait for the word to attack (or for the end)."""
        self.ready.set()
        await first_of(self.go, stop)

    def report(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "identity": self.identity,
            "sent": self.sent,
            "server_error": self.error_code,
            "server_message": self.error_message[:160],
            "cut_off_after_s": None
            if self.closed_after_s is None
            else round(self.closed_after_s, 2),
            "connect_failed": self.connect_failed or None,
            **self.extra,
        }


class LinkHostile(Hostile):
    """A hostile client on a raw PeerLink: it speaks the protocol by hand.

    With ``acks`` its endpoint reads the server's datagrams (so it acknowledges them, as a
    client does); without, it never reads its lossy channel.
    """

    acks = True
    #: seconds between the link-keeping datagrams (PINGs, and acks if ``acks``)
    keepalive_s = 0.05

    def __init__(self, index: int, url: str, key: str, secret: str, room: str) -> None:
        super().__init__(index, url, key, secret, room)
        self.link: PeerLink | None = None
        self.endpoint = Endpoint(name=self.identity)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: counted reliable messages received (what an ACK reports)
        self.received = 0

    async def run(self, stop: asyncio.Event) -> None:
        loop = self._loop = asyncio.get_running_loop()
        try:
            link = self.link = await connect_peer(self.url, self.token, room=self.room, timeout=15)
        except (NetcodeError, OSError) as exc:
            self.connect_failed = f"{type(exc).__name__}: {exc}"[:160]
            self.ready.set()
            return
        link.on_reliable(self._on_reliable)
        if self.acks:
            link.on_lossy(lambda data: self.endpoint.receive_datagram(data, loop.time()))
        keepalive = loop.create_task(self._keep_alive(stop))
        try:
            await self.wait_go(stop)
            self.started = loop.time()
            await self.attack(stop)
        finally:
            keepalive.cancel()
            if not link.closed.is_set():
                await link.close()
            elif self.closed_after_s is None:
                self.closed_after_s = loop.time() - self.started

    async def attack(self, stop: asyncio.Event) -> None:
        await self.until(stop)

    async def until(self, stop: asyncio.Event, delay: float | None = None) -> bool:
        """Wait ``delay`` (or until stopped or cut off); False once it should end."""
        link = self.link
        if link is None or link.closed.is_set() or stop.is_set():
            return False
        if delay is None:
            await first_of(stop, link.closed)
            return False
        await asyncio.sleep(delay)
        return not (link.closed.is_set() or stop.is_set())

    def _on_reliable(self, data: bytes | str) -> None:
        if self.acks and isinstance(data, bytes) and data[:1] not in _UNCOUNTED:
            # acknowledge the reliable messages, as a client does (every 32)
            self.received += 1
            if self.received % 32 == 0:
                self.send_reliable(encode_message(Kind.ACK, received=self.received))
                self.sent -= 1  # not part of the attack
        if isinstance(data, bytes) and data[:1] == bytes((Kind.ERROR,)):
            try:
                _, body = decode_message_untrusted(data)
            except NetcodeError:
                return
            self.error_code = str(body.code)
            self.error_message = str(body.message)
            if self.closed_after_s is None and self._loop is not None:
                self.closed_after_s = self._loop.time() - self.started

    async def _keep_alive(self, stop: asyncio.Event) -> None:
        assert self._loop is not None and self.link is not None
        endpoint, link = self.endpoint, self.link
        while await self.until(stop, self.keepalive_s):
            now = self._loop.time()
            endpoint.send_frame(FrameType.PING, encode_ping(0))
            for data in endpoint.datagrams_to_send(now, max_datagrams=4):
                self.send_lossy(data)
            if link.closed.is_set() and self.closed_after_s is None:
                self.closed_after_s = self._loop.time() - self.started

    def send_lossy(self, data: bytes) -> bool:
        link = self.link
        if link is None:
            return False
        try:
            return link.send_lossy(data)
        except (ChannelNotOpen, ValueError):
            return False

    def send_reliable(self, data: bytes | str) -> bool:
        link = self.link
        if link is None:
            return False
        try:
            link.send_reliable(data)
        except (ChannelNotOpen, ValueError):
            return False
        self.sent += 1
        return True


class NonAcker(LinkHostile):
    kind = "non_acker"
    acks = False


class Flooder(LinkHostile):
    kind = "flooder"

    async def attack(self, stop: asyncio.Event) -> None:
        assert self._loop is not None
        batch = 30
        duplicate = encode_datagram(7, None, 0, [(FrameType.PING, encode_ping(1))])
        refused = 0
        sequence = 0
        while await self.until(stop, batch / FLOOD_RATE):
            for i in range(batch):
                roll = i % 3
                if roll == 0:
                    sequence = (sequence + 1) & 0xFFFF
                    data = encode_datagram(sequence, None, 0, [])  # empty
                elif roll == 1:
                    data = duplicate
                else:
                    data = random_bytes(self.rng, 1160)
                if self.send_lossy(data):
                    self.sent += 1
                else:
                    refused += 1
        self.extra["refused_locally"] = refused


class TopicSpammer(LinkHostile):
    kind = "topic_spammer"

    async def attack(self, stop: asyncio.Event) -> None:
        topic_id = 0
        while await self.until(stop, 0.05):
            for _ in range(10):
                topic_id += 1
                name = f"spam-{self.index}-{topic_id}"
                self.send_reliable(encode_message(Kind.TOPIC, topic_id=topic_id, name=name))
                self.send_reliable(
                    encode_message(
                        Kind.DATA,
                        pid=0,
                        topic_id=topic_id,
                        text=False,
                        destinations=[],
                        payload=b"x",
                    )
                )
                self.endpoint.send_frame(
                    FrameType.DATA,
                    encode_lossy_up((topic_id + 100_000) & 0xFFFF, name, False, [], b"y"),
                )
        self.extra["topics_bound"] = topic_id


class Garbage(LinkHostile):
    kind = "garbage"

    async def attack(self, stop: asyncio.Event) -> None:
        while await self.until(stop, 0.01):
            if self.rng.random() < 0.5:
                size = self.rng.choice((1, 10, 100, 1000, MAX_RELIABLE_MESSAGE_BYTES))
                self.send_reliable(self.rng.randbytes(size))
            elif self.send_lossy(random_bytes(self.rng, 1160)):
                self.sent += 1


class Oversized(LinkHostile):
    kind = "oversized"

    async def attack(self, stop: asyncio.Event) -> None:
        message_id = 0
        while await self.until(stop, 0.02):
            roll = self.rng.random()
            if roll < 0.6:
                # an event over a datagram's size takes the fallback way; id 0 never comes
                message_id = message_id % 1023 + 1
                event = b"\x01\x00\x00\x00" + b"e" * (15 * 1024)
                body = encode_fallback(message_id, event)
                self.send_reliable(
                    encode_message(
                        Kind.EXTENSION, channel=ExtensionChannel.EVENTS, pid=0, body=body
                    )
                )
            elif roll < 0.9:
                payload = b"d" * (MAX_RELIABLE_MESSAGE_BYTES - 16)
                self.send_reliable(
                    encode_message(
                        Kind.DATA, pid=0, topic_id=0, text=False, destinations=[], payload=payload
                    )
                )
            elif self.link is not None and self.link.reliable.ready_state == "open":
                # past our own wrapper's limit, as another implementation could send it
                self.link.reliable.raw.send(b"o" * (64 * 1024))
                self.sent += 1


class FastInput(LinkHostile):
    kind = "fast_input"

    async def attack(self, stop: asyncio.Event) -> None:
        assert self._loop is not None
        tick = 0
        per_frame = 8
        while await self.until(stop, 1 / 30):
            first = tick
            tick += per_frame
            inputs = [bytes((3, 3)) for _ in range(per_frame)]  # dx, dy: +3, +3
            self.endpoint.send_frame(FrameType.INPUT, encode_inputs(first, inputs))
            for data in self.endpoint.datagrams_to_send(self._loop.time(), max_datagrams=4):
                if self.send_lossy(data):
                    self.sent += 1
        self.extra["inputs_sent"] = tick


#: The signaling flood comes from an address of its own (still loopback): the server's limits
#: are per client address, and on one machine every other client is 127.0.0.1.
SOURCE = "127.0.0.2"


class SignalingFlood(Hostile):
    kind = "signaling"
    rate = 50.0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        sdp = await make_offer()
        await self.wait_go(stop)
        self.started = loop.time()
        valid = json.dumps({"sdp": sdp, "type": "offer", "token": self.token}).encode()
        refused = json.dumps({"sdp": sdp, "type": "offer", "token": "a.b.c"}).encode()
        bodies = (valid, refused, b"{", b'{"sdp": 1}', b"x" * 70_000)
        statuses: Counter[str] = Counter()
        in_flight: set[asyncio.Task[None]] = set()
        url = self.url.rstrip("/") + SIGNALING_PATH

        async def post(body: bytes) -> None:
            try:
                status = await asyncio.wait_for(http_post(url, body, source=SOURCE), 20)
                statuses[str(status)] += 1
            except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
                statuses[type(exc).__name__] += 1

        while not stop.is_set():
            await asyncio.sleep(1 / self.rate)
            if len(in_flight) >= 16:
                statuses["not_sent_16_in_flight"] += 1
                continue
            body = self.rng.choice(bodies)
            self.sent += 1
            task = loop.create_task(post(body))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight, return_exceptions=True)
        self.extra["status"] = dict(statuses)


KINDS: dict[str, type[Hostile]] = {
    cls.kind: cls
    for cls in (NonAcker, Flooder, TopicSpammer, Garbage, Oversized, FastInput, SignalingFlood)
}


async def run_hostiles(
    url: str,
    key: str,
    secret: str,
    room: str,
    specs: list[tuple[str, int]],
    stop: asyncio.Event,
    go: asyncio.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the hostile clients until ``stop``; returns each one's report.

    They join, then ``on_ready()`` is called, and they attack once ``go`` is set (at once
    without ``go``): a run measures the attack, not the joins (honest joins cost the same).
    """
    hostiles = [
        KINDS[kind](index, url, key, secret, room)
        for kind, count in specs
        for index in range(count)
    ]
    if go is None:
        go = asyncio.Event()
        go.set()
    for hostile in hostiles:
        hostile.go = go
    # connect a few at a time, as each DTLS handshake costs CPU
    tasks = []
    for hostile in hostiles:
        tasks.append(asyncio.get_running_loop().create_task(hostile.run(stop)))
        await asyncio.sleep(0.05)
    with contextlib.suppress(TimeoutError):  # past it, READY all the same
        await asyncio.wait_for(
            asyncio.gather(*(hostile.ready.wait() for hostile in hostiles)), READY_TIMEOUT_S
        )
    if on_ready is not None:
        on_ready()
    await asyncio.gather(*tasks, return_exceptions=True)
    await stop.wait()  # every one cut off early: report when asked, as the others would
    return [hostile.report() for hostile in hostiles]


# --- the child process, and the parent's handle on it ------------------------------------------


class HostileProcess:
    """``python -m netcode_tools.hostile`` in a child process: started, then stopped."""

    def __init__(self, url: str, key: str, secret: str, room: str, specs: list[tuple[str, int]]):
        command = [
            sys.executable,
            "-m",
            "netcode_tools.hostile",
            "--url",
            url,
            "--room",
            room,
        ]
        for kind, count in specs:
            command += ["--hostile", f"{kind}:{count}"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NETCODE_HOSTILE_KEY": key}
        env["NETCODE_HOSTILE_SECRET"] = secret
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    async def ready(self) -> None:
        """Wait until the hostile clients have joined (the child says READY)."""
        stdout = self.process.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                if line.strip() == "READY":
                    return
            raise RuntimeError("the hostile clients' process ended before it was ready")

        await asyncio.wait_for(asyncio.to_thread(read), READY_TIMEOUT_S + 30)

    def go(self) -> None:
        """Tell the hostile clients to attack."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    async def stop(self) -> list[dict[str, Any]]:
        """Stop the hostile clients; their reports."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
        except BrokenPipeError:  # the child ended on its own; its report is in stdout
            pass
        stdout = self.process.stdout

        def read() -> list[dict[str, Any]]:
            for line in stdout:
                if line.startswith("HOSTILE "):
                    reports: list[dict[str, Any]] = json.loads(line[8:])
                    return reports
            return []

        try:
            return await asyncio.wait_for(asyncio.to_thread(read), 60)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netcode_tools.hostile", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", default="load")
    parser.add_argument("--hostile", action="append", default=[], metavar="KIND:N")
    parser.add_argument("--duration", type=float, default=3600.0)
    args = parser.parse_args(argv)
    specs = [parse_spec(spec) for spec in args.hostile]
    # Hostile clients run on machines of their own in the wild: here they share the honest
    # bots' core, and a generator pushing megabytes a second through aiortc would slow the
    # bots themselves and show in their latencies. At a lower priority it takes the CPU
    # the bots and the server leave (most of a core on this machine).
    os.nice(10)
    key = os.environ.get("NETCODE_HOSTILE_KEY", "")
    secret = os.environ.get("NETCODE_HOSTILE_SECRET", "")

    async def run() -> list[dict[str, Any]]:
        stop, go = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        if sys.stdin is not None and not sys.stdin.isatty():
            loop.add_reader(sys.stdin.fileno(), lambda: _on_stdin(stop, go))
        else:
            go.set()
        loop.call_later(args.duration, stop.set)
        return await run_hostiles(
            args.url, key, secret, args.room, specs, stop, go, lambda: print("READY", flush=True)
        )

    reports = asyncio.run(run())
    print("HOSTILE " + json.dumps(reports), flush=True)
    return 0


def _on_stdin(stop: asyncio.Event, go: asyncio.Event) -> None:
    line = sys.stdin.readline()
    if line.strip() == "go":
        go.set()
    elif not line or line.strip() == "stop":
        asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
        stop.set()


# --- the server's side ----------------------------------------------------------------------


class ServerReport:
    """What the server decided about each participant: kept by the load server (it chains
    the host's ``on_join`` / ``on_leave``) and printed with its STATS."""

    def __init__(self, server: RoomServer, host: GameHost) -> None:
        self.server = server
        self.host = host
        self.participants: dict[str, dict[str, Any]] = {}
        self._joined_at: dict[str, float] = {}
        #: each participant's HostedClient (the host forgets it before on_leave)
        self._clients: dict[str, HostedClient] = {}
        on_join, on_leave = host.on_join, host.on_leave

        def joined(participant: ServerParticipant) -> None:
            self.participants[participant.identity] = {}
            self._joined_at[participant.identity] = time.monotonic()
            client = host.clients.get(participant.pid)
            if client is not None:
                self._clients[participant.identity] = client
            on_join(participant)

        def left(participant: ServerParticipant) -> None:
            self._note(participant, ended=True)
            self._clients.pop(participant.identity, None)
            on_leave(participant)

        host.on_join = joined
        host.on_leave = left

    def _note(self, participant: ServerParticipant, *, ended: bool) -> None:
        entry = self.participants.setdefault(participant.identity, {})
        entry["end_reason"] = (participant.end_reason or "left") if ended else None
        joined = self._joined_at.get(participant.identity)
        if ended and joined is not None:
            entry["after_s"] = round(time.monotonic() - joined, 2)
        entry["protocol_errors"] = participant.protocol_errors
        meter = getattr(participant, "meter", None)
        exceeded = getattr(meter, "exceeded", None)
        if exceeded:
            entry["over_budget"] = dict(exceeded)
        events = getattr(participant, "events", None)
        if events is not None:
            channel = events.channel.stats()
            entry["events_unacked"] = channel.unacked_messages
            entry["events_reorder_buffered"] = channel.reorder_buffered
            dropped = {
                name: getattr(channel.counters, name, 0)
                for name in ("reorder_overflow", "out_of_window", "fallback_oversized")
            }
            entry["events_dropped"] = {k: v for k, v in dropped.items() if v}
        client = self._clients.get(participant.identity)
        if client is not None:
            entry["inputs_dropped"] = client.inputs_dropped
            entry["ticks_held_back"] = client.ticks_held_back
        entry["lossy_dropped"] = participant.lossy_dropped

    def summary(self) -> dict[str, Any]:
        room = self.host.room
        for participant in list(room.participants.values()) if room is not None else []:
            self._note(participant, ended=False)
        server = self.server
        counters = {
            name: getattr(server, name)
            for name in ("protocol_errors", "slow_disconnects", "flood_disconnects")
            if hasattr(server, name)
        }
        signaling = getattr(server, "_signaling", None)
        for name in ("rate_limited", "pending_refused", "requests"):
            value = getattr(signaling, name, None)
            if isinstance(value, int):
                counters[f"signaling_{name}"] = value
        participants = {name: dict(entry) for name, entry in self.participants.items()}
        return {"counters": counters, "participants": participants}


def summarize(reports: list[dict[str, Any]], server: dict[str, Any] | None) -> dict[str, Any]:
    """Per kind: how many, how many the server cut off and why, what it throttled."""
    participants = (server or {}).get("participants", {})
    kinds: dict[str, dict[str, Any]] = {}
    for report in reports:
        entry = kinds.setdefault(
            report["kind"],
            {"clients": 0, "cut_off": 0, "reasons": Counter(), "throttled": Counter()},
        )
        entry["clients"] += 1
        seen = participants.get(report["identity"], {})
        reason = seen.get("end_reason") or report.get("server_error")
        if reason:
            entry["cut_off"] += 1
            entry["reasons"][reason] += 1
        for budget, count in seen.get("over_budget", {}).items():
            entry["throttled"][f"{budget} over budget"] += count
        if seen.get("inputs_dropped"):
            entry["throttled"]["inputs dropped"] += seen["inputs_dropped"]
        if seen.get("ticks_held_back"):
            entry["throttled"]["ticks held back (unacknowledged)"] += seen["ticks_held_back"]
        for what, count in seen.get("events_dropped", {}).items():
            entry["throttled"][f"events dropped ({what})"] += count
        if report["kind"] == "signaling":
            for status, count in report.get("status", {}).items():
                entry["throttled"][f"HTTP {status}"] += count
        if report.get("connect_failed"):
            entry["reasons"]["could not join: " + report["connect_failed"][:60]] += 1
    return {
        kind: {**entry, "reasons": dict(entry["reasons"]), "throttled": dict(entry["throttled"])}
        for kind, entry in kinds.items()
    }


if __name__ == "__main__":
    sys.exit(main())


# --- the hooks netcode-load calls ----------------------------------------------------------------

#: Seconds between the hostile clients' joins and their attack (and the measurement): the
#: joins' aftermath (announcements, first snapshots) settles.
SETTLE_S = 1.0

#: The honest figures a --compare run shows beside the run without hostile clients.
HONEST_KEYS = (
    "clients_connected_at_end",
    "events_received",
    "event_p50_ms",
    "event_p99_ms",
    "snapshot_age_p50_ms",
    "snapshot_age_p99_ms",
    "tick_p99_ms",
    "ticks_late",
    "ticks_skipped",
    "tick_rate_held",
    "server_cpu_cores",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """netcode-load's options for hostile clients and soaks."""
    parser.add_argument(
        "--hostile",
        action="append",
        default=[],
        type=_spec_argument,
        metavar="KIND:N",
        help=f"add N hostile clients of KIND ({', '.join(KINDS)}); repeatable",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="with --hostile: the same run without them first, honest figures side by side",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=1,
        metavar="N",
        help="with --compare: N runs of each, alternating; percentiles over all of them (1)",
    )
    parser.add_argument(
        "--max-steal",
        type=float,
        default=None,
        metavar="PCT",
        help="with --compare: run again (up to 3 times) a run in which the hypervisor took "
        "more than PCT%% of the machine's CPU (steal in /proc/stat)",
    )
    parser.add_argument(
        "--soak",
        action="store_true",
        help="report the server's RSS over time and every event sent against those arrived",
    )
    parser.add_argument(
        "--rss-every", type=float, default=5.0, metavar="S", help="--soak: RSS sample period (5)"
    )


def _spec_argument(text: str) -> tuple[str, int]:
    try:
        return parse_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.hostile or args.soak) and args.bot_processes != 1:
        parser.error(
            "--hostile and --soak count the bots' events in this process: no --bot-processes"
        )
    if args.compare and not args.hostile:
        parser.error("--compare needs --hostile")
    if args.max_steal is not None and not (args.compare and 0 < args.max_steal < 100):
        parser.error("--max-steal PCT: only with --compare, and 0 < PCT < 100")
    if args.pairs < 1 or (args.pairs > 1 and not args.compare):
        parser.error("--pairs N: N >= 1, and more than 1 only with --compare")
    if args.hostile and args.url:
        parser.error("--hostile reads the embedded server's report: no --url")


class Scenario:
    """The hostile clients and the soak monitor of one netcode-load run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.specs: list[tuple[str, int]] = list(getattr(args, "hostile", []) or [])
        self.soak = bool(getattr(args, "soak", False))
        self.rss_every = float(getattr(args, "rss_every", 5.0))
        self.room = str(getattr(args, "room", "load"))
        self.process: HostileProcess | None = None
        self.monitor: Any = None
        self.reports: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        #: the embedded server's STATS (set by netcode-load once it has them)
        self.server_stats: dict[str, Any] | None = None

    async def start(
        self, url: str, key: str, secret: str, pid: int | None, bots: list[Any]
    ) -> None:
        """Once the bots joined: the hostile clients join, the soak monitor starts."""
        if self.specs:
            self.process = HostileProcess(url, key, secret, self.room, self.specs)
            await self.process.ready()  # joined: their joins are not what is measured
            await asyncio.sleep(SETTLE_S)
            self.process.go()  # the attack starts as the measurement does
        if self.specs or self.soak:
            from .soak import SoakMonitor

            self.monitor = SoakMonitor(pid if self.soak else None, bots, self.rss_every)

    async def stop(self) -> None:
        """After the run: the hostile clients stop (reporting), the events in flight land."""
        if self.process is not None:
            self.reports = await self.process.stop()
        if self.monitor is not None:
            self.extra = await self.monitor.finish()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.soak:
            out.update(self.extra)
        elif self.extra:
            # without --soak, the honest events' ledger still says whether any was lost
            soak = self.extra["soak"]
            out["honest_events"] = {k: v for k, v in soak.items() if k.startswith("events_")}
        if self.specs:
            server = (self.server_stats or {}).get("server_report")
            out["hostile"] = {
                "clients": sum(n for _, n in self.specs),
                "kinds": summarize(self.reports, server),
                "server_counters": (server or {}).get("counters"),
                "each": self.reports,
            }
        return out


async def run_scenario(
    args: argparse.Namespace, measure: Any, progress: Any = None
) -> dict[str, Any]:
    """One netcode-load run; with --compare, first the same without the hostile clients.

    With ``--pairs N``, N such pairs, one after the other (without, with, without, with...):
    the percentiles compared are those of every pair's samples pooled, so that a burst of
    CPU steal or a slow second lands in both sides or weighs little, and each pair's own
    figures are listed.
    """
    if not (getattr(args, "compare", False) and args.hostile):
        result: dict[str, Any] = await measure(args, args.clients, progress)
        return result
    quiet = argparse.Namespace(**vars(args))
    quiet.hostile, quiet.soak = [], False
    from .load import latency_figures  # here: netcode-load imports this module

    quiet_samples: list[dict[str, Any]] = []
    hostile_samples: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    max_steal = getattr(args, "max_steal", None)
    repeated = 0

    async def run(run_args: argparse.Namespace, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """One run (with --max-steal, measured again while the hypervisor took the machine)."""
        nonlocal repeated
        mine: list[dict[str, Any]] = []  # the windows of the run kept

        async def once() -> dict[str, Any]:
            mine.clear()
            figures: dict[str, Any] = await measure(run_args, args.clients, progress, mine)
            return figures

        figures, again = await with_steal_retries(once, max_steal)
        repeated += again
        samples.extend(mine)
        return figures

    for _ in range(max(1, int(getattr(args, "pairs", 1)))):
        baseline = await run(quiet, quiet_samples)
        result = await run(args, hostile_samples)
        pairs.append(
            {
                "event_p99_ms": [result.get("event_p99_ms"), baseline.get("event_p99_ms")],
                "event_p99_ratio": _ratio(result.get("event_p99_ms"), baseline.get("event_p99_ms")),
                "tick_rate_held": [result.get("tick_rate_held"), baseline.get("tick_rate_held")],
                "steal_s": [result.get("steal_s"), baseline.get("steal_s")],
            }
        )
    if max_steal is not None:
        result["runs_repeated_for_steal"] = repeated
    # the percentiles of every run of each side together (of one run, its own)
    result.update(latency_figures(hostile_samples))
    without = result["without_hostiles"] = {key: baseline.get(key) for key in HONEST_KEYS}
    without.update(latency_figures(quiet_samples))
    if len(pairs) > 1:
        result["pairs"] = pairs
    result["with_vs_without"] = {
        "event_p99_ratio": _ratio(result.get("event_p99_ms"), without.get("event_p99_ms")),
        "event_p50_ratio": _ratio(result.get("event_p50_ms"), without.get("event_p50_ms")),
        "snapshot_age_p99_ratio": _ratio(
            result.get("snapshot_age_p99_ms"), without.get("snapshot_age_p99_ms")
        ),
        "tick_rate_held": [all(p["tick_rate_held"][i] for p in pairs) for i in (1, 0)],
    }
    return result


#: times --max-steal runs a run again before it takes it as it is
STEAL_RETRIES = 3


async def with_steal_retries(
    measure_once: Callable[[], Awaitable[dict[str, Any]]],
    max_steal: float | None,
    say: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], int]:
    """A run's figures, and how many times it was measured again (up to STEAL_RETRIES)
    because the hypervisor took more than ``max_steal`` percent of the machine during it:
    such a run measured another machine. ``None`` takes the first run as it is."""
    for attempt in range(STEAL_RETRIES + 1):
        figures = await measure_once()
        share = steal_share(figures)
        if max_steal is None or share is None or share <= max_steal / 100:
            break
        if attempt < STEAL_RETRIES and say is not None:
            say(f"{100 * share:.0f}% of the machine stolen during the run: measuring again")
    return figures, attempt


def steal_share(figures: dict[str, Any]) -> float | None:
    """The share of the machine's CPU the hypervisor took during a run, if known."""
    steal, duration = figures.get("steal_s"), figures.get("duration_s")
    if not isinstance(steal, int | float) or not isinstance(duration, int | float) or not duration:
        return None
    return float(steal) / (float(duration) * (os.cpu_count() or 1))


def _ratio(a: Any, b: Any) -> float | None:
    numbers = isinstance(a, int | float) and isinstance(b, int | float)
    return round(a / b, 2) if numbers and b else None
