"""``netcode-load``: N headless bot clients against a server over real WebRTC.

::

    netcode-load --clients 32 --duration 20            # embedded server, table
    netcode-load --clients 32 --duration 20 --json     # one JSON object
    netcode-load --find-max                            # raise clients until ticks slip
    netcode-load --url http://host:7880 --api-key K --api-secret S --clients 8
    netcode-load --impair latency=50,loss=5%,seed=1   # every bot's UDP path, both ways
    netcode-load --clients 64 --bot-processes 2       # the bots spread over two processes

The embedded server (``netcode_tools.load_server``) runs in its own process with a
GameHost replicating ``--entities`` moving entities (64 by default) plus one player per
client at ``--tick-rate`` (30 Hz). Every bot sends an input each tick (on the lossy
channel, redundantly) and a timestamped chat event every ``--event-interval`` seconds to
everyone. Measured over the run, after every client has joined:

- server: tick duration p50/p99, the tick's own CPU, whether it held its tick rate (no
  tick skipped, at most 1% late, p99 within the tick interval); and the server process's
  whole CPU (user + system from ``/proc/<pid>/stat``: the tick, aiortc's DTLS and SCTP,
  the relay, everything), per tick, per client per tick, and the clients one core would
  hold at that cost per client;
- clients: kbps per client (both directions, data-channel payload) and on the wire (UDP
  payload with DTLS, SCTP and its acknowledgements, and UDP datagrams per second, both
  directions, counted at each bot's socket), event latency (sender's ``send_event`` to
  each receiver's handler: client -> server -> client), and snapshot age (a snapshot's
  arrival on the client's estimate of the server clock minus its tick's time: the one-way
  delay plus time spent waiting to be sent);
- the load generator's own CPU (all bot processes), so a run limited by the bots rather
  than the server shows it.

Bots run in this process, or spread over ``--bot-processes`` child processes; every clock
read is the system's monotonic clock, shared by all processes, so event latency is exact.
``--impair`` acts at each bot's UDP socket (both ways), so the server's process does only
a server's work, as behind a kernel-level impaired path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from netcode.cli import (
    add_client_network_arguments,
    check_secret_argument,
    client_network_options,
    configure_logging,
    make_token,
)
from netcode.replication.clock import ServerClock, TickTimeline
from netcode.replication.inputs import InputSender, decode_input_ack_untrusted
from netcode.replication.wire import (
    DEFAULT_HISTORY_DEPTH,
    DEFAULT_MAX_ENTITIES,
    DEFAULT_MAX_ENTITY_ID,
    Receipt,
    decode_part_header_untrusted,
)
from netcode.rooms import Room
from netcode.rooms.events import Chat
from netcode.rooms.host import decode_hello_untrusted, encode_receipt_frame, piggyback_acks
from netcode.rooms.protocol import ExtensionChannel, decode_lossy_down_untrusted
from netcode.rooms.replica import Replica
from netcode.transport.impair import ImpairedPath, Impairment
from netcode.wire import FrameType

from .hostile import Scenario, add_arguments, check_arguments, run_scenario
from .load_server import KEY as LOAD_KEY
from .load_server import LOAD_REGISTRY
from .load_server import SECRET as LOAD_SECRET

__all__ = ["connect_bots", "drive_bots", "main", "measure"]


def machine_steal_s() -> float | None:
    """CPU time the hypervisor took from this machine so far (all CPUs, seconds; Linux)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


class Bot:
    """One headless client: inputs every tick, a chat event now and then.

    A full bot decodes every snapshot with a Replica, as a game client does. A light bot
    receives the same snapshots but reads only each part's header, and answers with the
    RECEIPT a decoder would send (every part of its 4 newest ticks applied, the decoder's
    default limits), riding its next input: the server's work is the same as for a game
    client (deltas against receipted baselines), while the load generator stays fast enough
    that the latencies it measures are the network's, not its own backlog.
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
            #: snapshot topic id -> (epoch, the newest ticks' part indices, oldest first)
            self._applied: dict[int, tuple[int, deque[tuple[int, list[int]]]]] = {}
            self._receipts_due: set[int] = set()

    def send_input(self, tick: int, data: bytes) -> None:
        if self.replica is not None:
            self.replica.send_input(tick, data)
        else:
            payload = self.inputs.add(tick, data)
            self.room.send_frame(FrameType.INPUT, payload, supersede_key="input")
            self._send_receipts()

    def _send_receipts(self) -> None:
        due, self._receipts_due = self._receipts_due, set()
        for topic_id in due:
            epoch, ticks = self._applied[topic_id]
            newest = ticks[-1][0]  # a receipt names ticks within 255 of its newest (a stall
            # or a resume can leave an older one in the deque)
            applied = tuple(
                (t, i) for t, indices in reversed(ticks) if newest - t <= 255 for i in indices
            )
            receipt = Receipt(
                epoch,
                False,
                DEFAULT_MAX_ENTITIES,
                DEFAULT_MAX_ENTITY_ID,
                DEFAULT_HISTORY_DEPTH,
                applied,
            )
            self.room.send_frame(
                FrameType.RECEIPT,
                encode_receipt_frame(topic_id, receipt),
                supersede_key=("receipt", topic_id),
            )

    def _on_chat(self, event: Chat, participant: Any, topic: str) -> None:
        if self.measuring and event.text.startswith("t="):
            sent = float(event.text[2:])
            self.event_latencies_ms.append((time.monotonic() - sent) * 1e3)

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
        _, topic_id, _, _, part = decode_lossy_down_untrusted(payload)
        header = decode_part_header_untrusted(part)
        tick = header.tick
        stream = self._applied.get(topic_id)
        if stream is None or stream[0] != header.epoch:
            stream = self._applied[topic_id] = (header.epoch, deque(maxlen=4))
        ticks = stream[1]
        if ticks and ticks[-1][0] == tick:
            ticks[-1][1].append(header.part_index)
        elif not ticks or tick > ticks[-1][0]:
            ticks.append((tick, [header.part_index]))
        self._receipts_due.add(topic_id)
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
        """Data-channel payload bytes, both directions (the name is older than the wire
        counters: see :meth:`udp`)."""
        link = self.room.link
        if link is None:
            return 0
        return sum(s.bytes_sent + s.bytes_received for s in link.stats().values())

    def udp(self) -> tuple[int, int, int, int]:
        """UDP payload bytes and datagrams at this bot's socket: (bytes up, bytes down,
        datagrams up, datagrams down), counted by the bot's (possibly zero) impairment."""
        path = self.room.impairment
        if path is None:
            return (0, 0, 0, 0)
        up, down = path.outgoing.stats, path.incoming.stats
        return (up.bytes_seen, down.bytes_seen, up.datagrams_seen, down.datagrams_seen)


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
    first: int = 0,
    **connect_options: Any,
) -> tuple[list[Bot], float]:
    """Connect ``clients`` bots, numbered from ``first`` (in small batches: each DTLS
    handshake costs CPU).

    Every ``full_every``-th bot decodes its snapshots fully (see :class:`Bot`).
    ``impairment`` impairs each bot's own connection, both ways (each its own random path);
    without one, each bot's path is a zero impairment, which only counts the UDP datagrams.
    ``connect_options`` go to ``Room.connect`` (``ca_file``, ``ice_servers``...).
    """
    bots = [Bot(i, LOAD_REGISTRY, full=i % full_every == 0) for i in range(first, first + clients)]
    started = time.perf_counter()
    for first in range(0, clients, 4):
        batch = bots[first : first + 4]
        await asyncio.gather(
            *(
                b.room.connect(
                    url,
                    _token(key, secret, room_name, f"bot{b.index}"),
                    impairment=ImpairedPath(impairment or Impairment(), salt=f"bot{b.index}"),
                    **connect_options,
                )
                for b in batch
            )
        )
    return bots, time.perf_counter() - started


def _counters(bots: list[Bot]) -> list[int]:
    """Payload bytes, netcode datagrams, then UDP bytes up/down and datagrams up/down."""
    out = [0] * 6
    for bot in bots:
        out[0] += bot.wire_bytes()
        out[1] += bot.datagrams()
        for i, value in enumerate(bot.udp()):
            out[2 + i] += value
    return out


async def run_bots(
    bots: list[Bot],
    *,
    duration: float,
    tick_rate: float,
    event_interval: float,
    clients: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Inputs every tick and an event every ``event_interval`` s; returns what these bots
    saw (raw, for :func:`summarize`). ``clients``: bots in all processes (spreads the
    events of bot ``index`` over the interval)."""
    clients = clients or len(bots)
    for bot in bots:
        bot.measuring = True
    before = _counters(bots)
    cpu_before = time.process_time()
    interval = 1.0 / tick_rate
    loop = asyncio.get_running_loop()
    started = loop.time()
    tick = 0
    # spread the bots' events over the interval instead of sending them all at once
    next_event = {b.index: started + (b.index / clients) * event_interval for b in bots}
    while (now := loop.time()) < started + duration:
        for bot in bots:
            if bot.room.isconnected():
                dx, dy = (tick + bot.index) % 7 - 3, (tick // 3 + bot.index) % 5 - 2
                bot.send_input(tick, bytes((dx & 0xFF, dy & 0xFF)))
                if now >= next_event[bot.index]:
                    next_event[bot.index] += event_interval
                    bot.room.send_event(Chat(f"t={time.monotonic():.6f}"))
        tick += 1
        if progress is not None:
            progress(min(now - started, duration))
        await asyncio.sleep(max(0.0, started + tick * interval - loop.time()))
    elapsed = loop.time() - started
    after = _counters(bots)
    cpu_s = time.process_time() - cpu_before
    for bot in bots:
        bot.measuring = False
    return {
        "bots": len(bots),
        "connected": sum(b.room.isconnected() for b in bots),
        "full": sum(b.full for b in bots),
        "elapsed_s": elapsed,
        "cpu_s": cpu_s,
        "counters": [a - b for a, b in zip(after, before, strict=True)],
        "latencies_ms": [round(v, 3) for b in bots for v in b.event_latencies_ms],
        "ages_ms": [round(v, 3) for b in bots for v in b.snapshot_ages_ms],
    }


def summarize(windows: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """The client figures of one run from the windows of every bot process."""
    elapsed = float(max(w["elapsed_s"] for w in windows))
    totals = [sum(c) for c in zip(*(w["counters"] for w in windows), strict=True)]
    payload, datagrams, up_b, down_b, up_d, down_d = totals

    def per_client_s(value: float) -> float:
        return round(float(value) / elapsed / clients, 1)

    return {
        "clients_connected_at_end": sum(w["connected"] for w in windows),
        "duration_s": round(elapsed, 2),
        "kbps_per_client": per_client_s(payload * 8 / 1000),
        "datagrams_per_client_s": per_client_s(datagrams),
        "wire_kbps_per_client": per_client_s((up_b + down_b) * 8 / 1000),
        "wire_kbps_down_per_client": per_client_s(down_b * 8 / 1000),
        "wire_datagrams_per_client_s": per_client_s(up_d + down_d),
        "wire_datagrams_down_per_client_s": per_client_s(down_d),
        "full_decoding_clients": sum(w["full"] for w in windows),
        "bot_processes": len(windows),
        # the load generator's CPU, in cores (all bot processes): near 1 per process, the
        # bots, not the server, are the limit
        "bots_cpu_cores": round(sum(w["cpu_s"] for w in windows) / elapsed, 2),
        **latency_figures(windows),
    }


def latency_figures(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Event latency and snapshot age percentiles over ``windows`` (one run's bot
    processes, or the windows of several runs pooled)."""
    latencies = [v for w in windows for v in w["latencies_ms"]]
    ages = [v for w in windows for v in w["ages_ms"]]
    return {
        "events_received": len(latencies),
        "event_p50_ms": _round(_percentile(latencies, 0.5)),
        "event_p99_ms": _round(_percentile(latencies, 0.99)),
        "snapshot_age_p50_ms": _round(_percentile(ages, 0.5)),
        "snapshot_age_p99_ms": _round(_percentile(ages, 0.99)),
    }


async def drive_bots(
    bots: list[Bot],
    *,
    duration: float,
    tick_rate: float,
    event_interval: float,
    progress: Any = None,
) -> dict[str, Any]:
    """Inputs every tick and an event every ``event_interval`` s; returns client figures."""
    window = await run_bots(
        bots,
        duration=duration,
        tick_rate=tick_rate,
        event_interval=event_interval,
        progress=progress,
    )
    return summarize([window], len(bots))


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


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after the command's ")": state is field 3, utime 14 and stime 15 (proc(5))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BotProcess:
    """``count`` bots numbered from ``first`` in a child process (``--bot-worker``)."""

    def __init__(self, args: argparse.Namespace, url: str, key: str, secret: str) -> None:
        self.args = args
        self.url, self.key, self.secret = url, key, secret

    async def start(self, first: int, count: int, clients: int) -> None:
        args = self.args
        command = [
            sys.executable,
            "-m",
            "netcode_tools.load",
            "--bot-worker",
            f"{first}:{count}",
            "--clients",
            str(clients),
            "--url",
            self.url,
            "--room",
            args.room,
            "--duration",
            str(args.duration),
            "--tick-rate",
            str(args.tick_rate),
            "--event-interval",
            str(args.event_interval),
            "--full-every",
            str(args.full_every),
            *args.forward,
        ]
        if args.impairment is not None:
            command += ["--impair", str(args.impairment)]
        self.process = await asyncio.create_subprocess_exec(
            *command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "NETCODE_API_KEY": self.key,
                "NETCODE_API_SECRET": self.secret,
            },
        )

    async def read(self, prefix: str, timeout: float) -> str:
        assert self.process.stdout is not None
        while True:
            line = (await asyncio.wait_for(self.process.stdout.readline(), timeout)).decode()
            if not line:
                raise RuntimeError(f"bot process exited (waiting for {prefix})")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((line + "\n").encode())

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def _bot_worker(args: argparse.Namespace) -> int:
    """A child of ``--bot-processes``: connect, say READY, run on GO, print RESULT."""
    first, count = (int(v) for v in args.bot_worker.split(":"))
    bots, connect_s = await connect_bots(
        count,
        args.url,
        args.api_key,
        args.api_secret,
        args.room,
        full_every=args.full_every,
        impairment=args.impairment,
        first=first,
        **args.network,
    )
    try:
        print(f"READY {connect_s:.3f}", flush=True)
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.startswith("GO"):
            return 1
        window = await run_bots(
            bots,
            duration=args.duration,
            tick_rate=args.tick_rate,
            event_interval=args.event_interval,
            clients=args.clients,
        )
        print("RESULT " + json.dumps(window), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "QUIT"
    finally:
        for bot in bots:
            await bot.room.disconnect()
    return 0


async def _drive_in_processes(
    args: argparse.Namespace,
    clients: int,
    url: str,
    key: str,
    secret: str,
    server: EmbeddedServer | None,
    pid: int | None,
) -> tuple[list[dict[str, Any]], float, tuple[float | None, float, float | None]]:
    """Spread the bots over ``args.bot_processes`` children; returns their windows, the
    connect time and the server's CPU over the window (see :class:`ServerCpu`)."""
    n = max(1, min(args.bot_processes, clients))
    shares = [clients // n + (1 if i < clients % n else 0) for i in range(n)]
    procs = [BotProcess(args, url, key, secret) for _ in range(n)]
    try:
        first = 0
        for proc, share in zip(procs, shares, strict=True):
            await proc.start(first, share, clients)
            first += share
        connects = [float(await p.read("READY ", 30 + clients)) for p in procs]
        await asyncio.sleep(0.5)  # let every client receive its first snapshots
        if server is not None:
            await server.command("reset", "RESET")  # the server measures from now on
        cpu = ServerCpu(pid)
        for proc in procs:
            proc.send("GO")
        windows = [json.loads(await p.read("RESULT ", args.duration + 60)) for p in procs]
        return windows, max(connects), cpu.stop()
    finally:
        for proc in procs:
            if proc.process.returncode is None:
                proc.send("QUIT")
        for proc in procs:
            try:
                await asyncio.wait_for(proc.process.wait(), 10)
            except TimeoutError:
                proc.kill()


class ServerCpu:
    """The server process's whole CPU from outside, and the machine's CPU steal, from now to
    :meth:`stop`."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.cpu = process_cpu_s(pid) if pid is not None else None
        self.steal = machine_steal_s()
        self.wall = time.monotonic()

    def stop(self) -> tuple[float | None, float, float | None]:
        """(server CPU seconds or None, wall seconds, steal seconds or None)."""
        wall = time.monotonic() - self.wall
        end_steal = machine_steal_s()
        steal = None if self.steal is None or end_steal is None else end_steal - self.steal
        if self.pid is None or self.cpu is None:
            return None, wall, steal
        end = process_cpu_s(self.pid)
        return (None if end is None else end - self.cpu), wall, steal


async def measure(
    args: argparse.Namespace,
    clients: int,
    progress: Any = None,
    samples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One run: an embedded server (unless --url) and ``clients`` bots.

    With ``samples``, the run's windows (each bot process's event latencies and snapshot
    ages) are appended to it: what ``--compare --pairs`` pools over its runs.
    """
    impairment: Impairment | None = getattr(args, "impairment", None)
    spec = str(impairment) if impairment is not None else ""
    profile = getattr(args, "profile_server", None)
    extra = ["--profile", profile] if profile else []
    server = None if args.url else EmbeddedServer(args.entities, args.tick_rate, extra=extra)
    bots: list[Bot] = []
    scenario = Scenario(args)  # --hostile, --soak (netcode_tools.hostile)
    try:
        if server is not None:
            url, key, secret = await server.url(), LOAD_KEY, LOAD_SECRET
            pid: int | None = server.process.pid
        else:
            url, key, secret = args.url, args.api_key, args.api_secret
            pid = getattr(args, "server_pid", None)
        processes = getattr(args, "bot_processes", 1)
        if processes > 1:
            windows, connect_s, (cpu_s, wall, steal_s) = await _drive_in_processes(
                args, clients, url, key, secret, server, pid
            )
        else:
            bots, connect_s = await connect_bots(
                clients,
                url,
                key,
                secret,
                args.room,
                full_every=args.full_every,
                impairment=impairment,
                **(getattr(args, "network", {}) if server is None else {}),
            )
            await asyncio.sleep(0.5)  # let every client receive its first snapshots
            await scenario.start(url, key, secret, pid, bots)
            if server is not None:
                await server.command("reset", "RESET")  # the server measures from now on
            cpu = ServerCpu(pid)
            window = await run_bots(
                bots,
                duration=args.duration,
                tick_rate=args.tick_rate,
                event_interval=args.event_interval,
                progress=progress,
            )
            windows = [window]
            await scenario.stop()
            cpu_s, wall, steal_s = cpu.stop()
        figures = summarize(windows, clients)
        if samples is not None:
            samples.extend(windows)
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
            # CPU time the hypervisor took from the machine during the run (all CPUs): a
            # run with much of it measured a slower machine than one without
            "steal_s": None if steal_s is None else round(steal_s, 2),
        }
        if cpu_s is not None and wall > 0:
            per_tick = cpu_s * 1000 / (wall * args.tick_rate)
            per_client = per_tick / clients
            result.update(
                server_cpu_cores=round(cpu_s / wall, 3),
                server_cpu_ms_per_tick=round(per_tick, 2),
                server_cpu_ms_per_client_tick=round(per_client, 3),
                # one core's tick interval divided by what each client costs (the fixed
                # cost of the tick and of the room shared out over these clients)
                clients_per_core=int(1000 / args.tick_rate / per_client),
            )
        if server is not None:
            stats = await server.stats()
            scenario.server_stats = stats
            result.update(
                tick_p50_ms=_round(stats["tick_p50_ms"]),
                tick_p99_ms=_round(stats["tick_p99_ms"]),
                cpu_per_tick_ms=_round(stats["cpu_per_tick_ms"]),
                ticks=stats["ticks"],
                ticks_late=stats["ticks_late"],
                ticks_skipped=stats["ticks_skipped"],
                tick_rate_held=stats["tick_rate_held"],
            )
            counts = stats.get("server_counts") or {}
            if wall > 0 and counts:
                # what the server's netcode connections and SCTP associations sent and
                # received, per client and second: where the datagrams on the wire come from
                result["server_counts_per_client_s"] = {
                    key: round(n / (wall * clients), 1) for key, n in sorted(counts.items())
                }
        result.update(figures)
        result.update(scenario.figures())
        return result
    finally:
        scenario.kill()
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
            f"held {result['tick_rate_held']}, connected {result['clients_connected_at_end']}, "
            f"server {result.get('server_cpu_ms_per_client_tick')} ms CPU per client per tick "
            f"({result.get('server_cpu_cores')} cores), bots {result['bots_cpu_cores']} cores"
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
        help="impair every bot's connection at the bot's UDP socket, both ways "
        "(loss=5%% is 5%% each way), e.g. latency=50,loss=5%%,seed=1",
    )
    parser.add_argument(
        "--bot-processes",
        type=int,
        default=1,
        metavar="N",
        help="spread the bots over N processes, so the load generator is not the limit (1)",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        metavar="PID",
        help="with --url: the server's process on this machine, whose CPU to report",
    )
    parser.add_argument(
        "--profile-server",
        metavar="PATH",
        help="profile the embedded server's process over the measured window (cProfile "
        "stats into PATH; read them with python -m pstats PATH)",
    )
    parser.add_argument("--bot-worker", help=argparse.SUPPRESS)  # FIRST:COUNT, a child
    parser.add_argument(
        "--impair-seed", type=int, default=None, help="seed of the impairment (overrides SPEC's)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_client_network_arguments(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    level = os.environ.get("NETCODE_LOG_LEVEL")  # e.g. INFO: the bots' resumes, and why
    if level:
        configure_logging(level, timestamps=True)
    args.network = client_network_options(parser, args)
    # what a bot process needs of the network options, as given
    raw = argparse.ArgumentParser(add_help=False)
    raw.add_argument("--ca-file")
    raw.add_argument("--ice-server", action="append", default=[])
    known, _ = raw.parse_known_args(argv)
    args.forward = [f"--ice-server={v}" for v in known.ice_server]
    if known.ca_file:
        args.forward.append(f"--ca-file={known.ca_file}")
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
    if args.bot_processes < 1:
        parser.error("--bot-processes must be at least 1")
    check_arguments(parser, args)
    if args.bot_worker is not None:
        return asyncio.run(_bot_worker(args))

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
                run_scenario(args, measure, lambda s: bar.update(task, completed=s))
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
