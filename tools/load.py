"""``netcode-load``: N headless bot clients against a server over real WebRTC.

::

    netcode-load --clients 32 --duration 20            # embedded server, table
    netcode-load --clients 32 --duration 20 --json     # one JSON object
    netcode-load --find-max                            # raise clients until ticks slip
    netcode-load --url http://host:7880 --api-key K --api-secret S --clients 8
    netcode-load --impair latency=50,loss=5%,seed=1   # every bot's UDP path, both ways

The embedded server (``netcode_tools.load_server``) runs in its own process with a
GameHost replicating ``--entities`` moving entities (64 by default) plus one player per
client at ``--tick-rate`` (30 Hz). Every bot sends an input each tick (on the lossy
channel, redundantly) and a timestamped chat event every ``--event-interval`` seconds to
everyone. Measured over the run, after every client has joined:

- server: tick duration p50/p99, CPU per tick, whether it held its tick rate (no tick
  skipped, at most 1% late, p99 within the tick interval);
- clients: kbps per client (both directions, everything on the wire at the data-channel
  level), event latency (sender's ``send_event`` to each receiver's handler: client ->
  server -> client), and snapshot age (a snapshot's arrival on the client's estimate of
  the server clock minus its tick's time: the one-way delay plus time spent waiting to be
  sent).

Clients and the tool share one process and one clock, so event latency is exact.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from netcode.cli import (
    add_client_network_arguments,
    check_secret_argument,
    client_network_options,
    make_token,
)
from netcode.replication.clock import ServerClock, TickTimeline
from netcode.replication.inputs import InputSender, decode_input_ack_untrusted
from netcode.replication.wire import decode_part_header_untrusted
from netcode.rooms import Room
from netcode.rooms.events import Chat
from netcode.rooms.host import decode_hello_untrusted, piggyback_acks
from netcode.rooms.protocol import ExtensionChannel, decode_lossy_down_untrusted
from netcode.rooms.replica import Replica
from netcode.transport.impair import ImpairedPath, Impairment
from netcode.wire import FrameType

from .load_server import KEY as LOAD_KEY
from .load_server import LOAD_REGISTRY
from .load_server import SECRET as LOAD_SECRET

__all__ = ["connect_bots", "drive_bots", "main", "measure"]


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


class Bot:
    """One headless client: inputs every tick, a chat event now and then.

    A full bot decodes every snapshot with a Replica, as a game client does. A light bot
    receives and acknowledges the same snapshots but reads only each part's tick: the
    server's work is the same, while the load generator (all bots share one Python
    process) stays fast enough that the latencies it measures are the network's, not its
    own backlog.
    """

    def __init__(self, index: int, registry: Any, *, full: bool) -> None:
        self.index = index
        self.full = full
        self.room = Room()
        self.event_latencies_ms: list[float] = []
        self.snapshot_ages_ms: list[float] = []
        self.measuring = False
        self.room.on_event(Chat, self._on_chat)
        self.clock = ServerClock()
        self.timeline: TickTimeline | None = None
        self.inputs = InputSender()
        self.replica: Replica | None = None
        if full:
            self.replica = Replica(self.room, registry=registry)
            self.replica.on("snapshot", self._on_snapshot)
        else:
            self.room.frame_handlers[FrameType.SNAPSHOT] = self._on_light_snapshot
            self.room.frame_handlers[FrameType.INPUT_ACK] = self._on_input_ack
            self.room.extension_handlers[ExtensionChannel.HOST] = self._on_hello
            self._newest_tick = -1

    def send_input(self, tick: int, data: bytes) -> None:
        if self.replica is not None:
            self.replica.send_input(tick, data)
        else:
            payload = self.inputs.add(tick, data)
            self.room.send_frame(FrameType.INPUT, payload, supersede_key="input")

    def _on_chat(self, event: Chat, participant: Any, topic: str) -> None:
        if self.measuring and event.text.startswith("t="):
            sent = float(event.text[2:])
            self.event_latencies_ms.append((time.perf_counter() - sent) * 1e3)

    def _on_snapshot(self, tick: int) -> None:
        assert self.replica is not None
        self._record_age(tick, self.replica.hub.timeline, self.replica.server_time())

    def _on_hello(self, sender_pid: int, body: bytes) -> None:
        tick_rate, epoch, _ = decode_hello_untrusted(body)
        self.timeline = TickTimeline(tick_rate, epoch)
        if self.room.connection is not None:
            piggyback_acks(self.room.connection.endpoint, tick_rate)

    def _on_input_ack(self, payload: bytes) -> None:
        _, last = decode_input_ack_untrusted(payload)
        if last is not None:
            self.inputs.acknowledge(last)

    def _on_light_snapshot(self, payload: bytes) -> None:
        _, _, _, _, part = decode_lossy_down_untrusted(payload)
        tick = decode_part_header_untrusted(part).tick
        if tick > self._newest_tick:
            self._newest_tick = tick
            connection = self.room.connection
            if connection is not None:
                now = connection.now()
                self.clock.update(now, connection.endpoint.clock.offset)
                self._record_age(tick, self.timeline, self.clock.server_time(now))

    def _record_age(self, tick: int, timeline: TickTimeline | None, now: float | None) -> None:
        if self.measuring and timeline is not None and now is not None:
            self.snapshot_ages_ms.append((now - timeline.time_of(tick)) * 1e3)

    def datagrams(self) -> int:
        connection = self.room.connection
        if connection is None:
            return 0
        counters = connection.endpoint.counters
        return counters.datagrams_sent + counters.datagrams_received

    def wire_bytes(self) -> int:
        link = self.room.link
        if link is None:
            return 0
        return sum(s.bytes_sent + s.bytes_received for s in link.stats().values())


def _token(key: str, secret: str, room: str, identity: str) -> str:
    return make_token(key, secret, identity, room)


async def connect_bots(
    clients: int,
    url: str,
    key: str,
    secret: str,
    room_name: str,
    full_every: int = 4,
    impairment: Impairment | None = None,
    **connect_options: Any,
) -> tuple[list[Bot], float]:
    """Connect ``clients`` bots (in small batches: each DTLS handshake costs CPU).

    Every ``full_every``-th bot decodes its snapshots fully (see :class:`Bot`).
    ``impairment`` impairs each bot's own connection, both ways (each its own random path).
    ``connect_options`` go to ``Room.connect`` (``ca_file``, ``ice_servers``...).
    """
    bots = [Bot(i, LOAD_REGISTRY, full=i % full_every == 0) for i in range(clients)]
    started = time.perf_counter()
    for first in range(0, clients, 4):
        batch = bots[first : first + 4]
        await asyncio.gather(
            *(
                b.room.connect(
                    url,
                    _token(key, secret, room_name, f"bot{b.index}"),
                    impairment=None
                    if impairment is None
                    else ImpairedPath(impairment, salt=f"bot{b.index}"),
                    **connect_options,
                )
                for b in batch
            )
        )
    return bots, time.perf_counter() - started


async def drive_bots(
    bots: list[Bot],
    *,
    duration: float,
    tick_rate: float,
    event_interval: float,
    progress: Any = None,
) -> dict[str, Any]:
    """Inputs every tick and an event every ``event_interval`` s; returns client figures."""
    clients = len(bots)
    for bot in bots:
        bot.measuring = True
    bytes_before = sum(b.wire_bytes() for b in bots)
    datagrams_before = sum(b.datagrams() for b in bots)
    interval = 1.0 / tick_rate
    loop = asyncio.get_running_loop()
    started = loop.time()
    tick = 0
    # spread the bots' events over the interval instead of sending them all at once
    next_event = [started + (i / clients) * event_interval for i in range(clients)]
    while (now := loop.time()) < started + duration:
        for bot in bots:
            if bot.room.isconnected():
                dx, dy = (tick + bot.index) % 7 - 3, (tick // 3 + bot.index) % 5 - 2
                bot.send_input(tick, bytes((dx & 0xFF, dy & 0xFF)))
                if now >= next_event[bot.index]:
                    next_event[bot.index] += event_interval
                    bot.room.send_event(Chat(f"t={time.perf_counter():.6f}"))
        tick += 1
        if progress is not None:
            progress(min(now - started, duration))
        await asyncio.sleep(max(0.0, started + tick * interval - loop.time()))
    elapsed = loop.time() - started
    bytes_after = sum(b.wire_bytes() for b in bots)
    datagrams_after = sum(b.datagrams() for b in bots)
    for bot in bots:
        bot.measuring = False
    latencies = [v for b in bots for v in b.event_latencies_ms]
    ages = [v for b in bots for v in b.snapshot_ages_ms]
    return {
        "clients_connected_at_end": sum(b.room.isconnected() for b in bots),
        "duration_s": round(elapsed, 2),
        "kbps_per_client": round((bytes_after - bytes_before) * 8 / elapsed / 1000 / clients, 1),
        "full_decoding_clients": sum(b.full for b in bots),
        "datagrams_per_client_s": round(
            (datagrams_after - datagrams_before) / elapsed / clients, 1
        ),
        "events_received": len(latencies),
        "event_p50_ms": _round(_percentile(latencies, 0.5)),
        "event_p99_ms": _round(_percentile(latencies, 0.99)),
        "snapshot_age_p50_ms": _round(_percentile(ages, 0.5)),
        "snapshot_age_p99_ms": _round(_percentile(ages, 0.99)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class EmbeddedServer:
    """``netcode_tools.load_server`` in a child process."""

    def __init__(
        self, entities: int, tick_rate: float, impair: str = "", extra: Sequence[str] = ()
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "netcode_tools.load_server",
            "--entities",
            str(entities),
            "--tick-rate",
            str(tick_rate),
        ]
        if impair:
            command += ["--impair", impair]
        command += extra
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def _read(self, prefix: str) -> str:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"load server exited (waiting for {prefix})")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    async def url(self) -> str:
        return await asyncio.wait_for(asyncio.to_thread(self._read, "URL "), 30)

    async def command(self, command: str, reply: str | None = None) -> str | None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        if reply is None:
            return None
        return await asyncio.wait_for(asyncio.to_thread(self._read, reply), 30)

    async def stats(self) -> dict[str, Any]:
        await self.command("stop")
        stats: dict[str, Any] = json.loads(
            await asyncio.wait_for(asyncio.to_thread(self._read, "STATS "), 30)
        )
        self.process.wait(10)
        return stats

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


async def measure(args: argparse.Namespace, clients: int, progress: Any = None) -> dict[str, Any]:
    """One run: an embedded server (unless --url) and ``clients`` bots."""
    impairment: Impairment | None = getattr(args, "impairment", None)
    spec = str(impairment) if impairment is not None else ""
    server = None if args.url else EmbeddedServer(args.entities, args.tick_rate, spec)
    bots: list[Bot] = []
    try:
        if server is not None:
            url, key, secret = await server.url(), LOAD_KEY, LOAD_SECRET
        else:
            url, key, secret = args.url, args.api_key, args.api_secret
        bots, connect_s = await connect_bots(
            clients,
            url,
            key,
            secret,
            args.room,
            full_every=args.full_every,
            # against a server of our own, the server impairs; else each bot its own path
            impairment=impairment if server is None else None,
            **(getattr(args, "network", {}) if server is None else {}),
        )
        await asyncio.sleep(0.5)  # let every client receive its first snapshots
        if server is not None:
            await server.command("reset", "RESET")  # the server measures from now on
        figures = await drive_bots(
            bots,
            duration=args.duration,
            tick_rate=args.tick_rate,
            event_interval=args.event_interval,
            progress=progress,
        )
        result: dict[str, Any] = {
            "clients": clients,
            "tick_rate_hz": args.tick_rate,
            "entities": args.entities + clients,
            "impairment": spec or None,
            "connect_s": round(connect_s, 2),
            "tick_p50_ms": None,
            "tick_p99_ms": None,
            "cpu_per_tick_ms": None,
            "tick_rate_held": None,
        }
        if server is not None:
            stats = await server.stats()
            result.update(
                tick_p50_ms=_round(stats["tick_p50_ms"]),
                tick_p99_ms=_round(stats["tick_p99_ms"]),
                cpu_per_tick_ms=_round(stats["cpu_per_tick_ms"]),
                ticks=stats["ticks"],
                ticks_late=stats["ticks_late"],
                ticks_skipped=stats["ticks_skipped"],
                tick_rate_held=stats["tick_rate_held"],
            )
        result.update(figures)
        return result
    finally:
        for bot in bots:
            await bot.room.disconnect()
        if server is not None:
            server.kill()


async def find_max(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    """Raise the client count until the server no longer holds its tick rate."""
    counts = [8, 16, 24, 32, 40, 48, 64, 80, 96, 128]
    held: dict[str, Any] | None = None
    runs = []
    for count in counts:
        if count > args.max_clients:
            break
        result = await measure(args, count)
        runs.append(result)
        say(
            f"{count:4d} clients: tick p99 {result['tick_p99_ms']} ms, "
            f"held {result['tick_rate_held']}, connected {result['clients_connected_at_end']}"
        )
        if not result["tick_rate_held"] or result["clients_connected_at_end"] < count:
            break
        held = result
    return {
        "find_max": True,
        "max_clients_held": held["clients"] if held else 0,
        "tick_rate_hz": args.tick_rate,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netcode-load",
        description="N headless bot clients against a server over real WebRTC.",
    )
    parser.add_argument("--clients", type=int, default=8, help="bot clients (8)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured (20)")
    parser.add_argument("--tick-rate", type=float, default=30.0, help="server tick rate (30)")
    parser.add_argument("--entities", type=int, default=64, help="replicated movers (64)")
    parser.add_argument("--event-interval", type=float, default=1.0, help="s between events")
    parser.add_argument(
        "--full-every",
        type=int,
        default=4,
        help="every Nth bot decodes snapshots fully; the others only read their tick (4)",
    )
    parser.add_argument("--url", help="a running server instead of the embedded one")
    parser.add_argument("--api-key", default=os.environ.get("NETCODE_API_KEY"))
    parser.add_argument("--api-secret", default=os.environ.get("NETCODE_API_SECRET"))
    parser.add_argument("--room", default="load", help="room to join (load)")
    parser.add_argument("--find-max", action="store_true", help="raise clients until ticks slip")
    parser.add_argument("--max-clients", type=int, default=128, help="--find-max stops here")
    parser.add_argument(
        "--impair",
        metavar="SPEC",
        help="impair every bot's connection at the server, both ways, at the UDP datagrams "
        "(loss=5%% is 5%% each way), e.g. latency=50,loss=5%%,seed=1; with --url, at each bot",
    )
    parser.add_argument(
        "--impair-seed", type=int, default=None, help="seed of the impairment (overrides SPEC's)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_client_network_arguments(parser)
    args = parser.parse_args(argv)
    args.network = client_network_options(parser, args)
    args.impairment = None
    if args.impair is not None or args.impair_seed is not None:
        try:
            impairment = Impairment.from_spec(args.impair or "")
        except ValueError as exc:
            parser.error(f"--impair: {exc}")
        if args.impair_seed is not None:
            impairment = impairment.replace(seed=args.impair_seed)
        args.impairment = impairment
    if args.url and not (args.api_key and args.api_secret):
        parser.error("--url needs --api-key and --api-secret (or NETCODE_API_KEY/SECRET)")
    if args.url:
        check_secret_argument(parser, args.api_secret)
    if args.clients < 1 or args.duration <= 0:
        parser.error("--clients must be at least 1 and --duration positive")

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if args.find_max:
        result = asyncio.run(find_max(args, console.print))
    else:
        with Progress(
            TextColumn(f"{args.clients} clients"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=args.json and not console.is_terminal,
        ) as bar:
            task = bar.add_task("load", total=args.duration)
            result = asyncio.run(
                measure(args, args.clients, lambda s: bar.update(task, completed=s))
            )
    if args.json:
        print(json.dumps(result))
        return 0
    if args.find_max:
        console.print(f"max clients with the tick rate held: {result['max_clients_held']}")
        return 0
    from rich.table import Table

    table = Table(title=f"netcode-load: {args.clients} clients, {args.duration:g} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
