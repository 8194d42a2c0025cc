"""The load-test server: a RoomServer with a GameHost replicating a moving crowd.

Run by ``netcode-load`` in its own process (so the server's tick loop has a core to itself,
as it would in production)::

    python -m netcode_tools.load_server --port 0 --entities 64 --tick-rate 30

It prints ``URL <url>`` once listening and, when it receives SIGTERM or SIGINT (or after
``--duration``), one line ``STATS <json>`` with the host's tick statistics, then exits.

The world holds ``--entities`` wanderers that move every tick (the replicated load) and one
player per connected client, moved by that client's inputs (two signed bytes: dx, dy).
Every game event a client sends is relayed to the others by the room server. ``--impair
SPEC`` impairs every client's peer connection at the server, both ways (every UDP datagram:
see :mod:`netcode.transport.impair`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import random
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import attrs

from netcode.cli import configure_logging
from netcode.replication import SchemaRegistry, entity, qangle, qfloat, qint
from netcode.rooms import RoomServer, ServerParticipant
from netcode.rooms.host import GameHost
from netcode.rooms.server import ServerRoom
from netcode.transport.impair import Impairment
from netcode.transport.peerlink import PeerLink
from netcode.wire import FrameType

__all__ = ["LOAD_REGISTRY", "Mover", "Player", "main"]

LOAD_REGISTRY = SchemaRegistry()
KEY = "load-key"
SECRET = "load-secret-load-secret-load-secret-0"
ROOM = "load"
ARENA_M = 200.0


@entity(type_id=1, registry=LOAD_REGISTRY)
class Mover:
    x: float = qfloat(0, ARENA_M, 0.01, group="pos")
    y: float = qfloat(0, ARENA_M, 0.01, group="pos")
    heading: float = qangle(bits=10)


@entity(type_id=2, registry=LOAD_REGISTRY)
class Player:
    owner: int = qint(0, 65535)
    x: float = qfloat(0, ARENA_M, 0.01, group="pos")
    y: float = qfloat(0, ARENA_M, 0.01, group="pos")


class LoadGame:
    """Wanderers turning now and then at 2-6 m/s; players moved by inputs."""

    def __init__(self, host: GameHost, entities: int, seed: int = 1) -> None:
        self.host = host
        self.rng = random.Random(seed)
        self.movers: list[list[float]] = []  # eid, x, y, heading, speed
        for _ in range(entities):
            state = [self.rng.uniform(0, ARENA_M) for _ in range(2)]
            heading = self.rng.uniform(-math.pi, math.pi)
            eid = host.world.spawn(Mover(x=state[0], y=state[1], heading=heading))
            self.movers.append([eid, state[0], state[1], heading, self.rng.uniform(2, 6)])
        self.players: dict[int, int] = {}  # pid -> eid
        host.on_tick = self.tick
        host.on_join = self.join
        host.on_leave = self.leave
        host.on_input = self.input

    def tick(self, tick: int, dt: float) -> None:
        world, rng = self.host.world, self.rng
        for mover in self.movers:
            eid, x, y, heading, speed = mover
            if rng.random() < 0.02:
                heading += rng.uniform(-1.5, 1.5)
            x += math.cos(heading) * speed * dt
            y += math.sin(heading) * speed * dt
            if not 0 <= x <= ARENA_M or not 0 <= y <= ARENA_M:
                heading += math.pi
                x, y = min(max(x, 0.0), ARENA_M), min(max(y, 0.0), ARENA_M)
            mover[1:4] = [x, y, heading]
            world.update(int(eid), x=x, y=y, heading=heading)

    def join(self, participant: ServerParticipant) -> None:
        eid = self.host.world.spawn(Player(owner=participant.pid, x=100.0, y=100.0))
        self.players[participant.pid] = eid

    def leave(self, participant: ServerParticipant) -> None:
        eid = self.players.pop(participant.pid, None)
        if eid is not None:
            self.host.world.despawn(eid)

    def input(self, participant: ServerParticipant, tick: int, data: bytes) -> None:
        eid = self.players.get(participant.pid)
        if eid is None or len(data) != 2:
            return
        dx, dy = (b - 256 if b > 127 else b for b in data)
        player = self.host.world.get(eid)
        self.host.world.update(
            eid,
            x=min(max(player.x + dx * 0.01, 0.0), ARENA_M),
            y=min(max(player.y + dy * 0.01, 0.0), ARENA_M),
        )


def sctp_state(link: PeerLink) -> tuple[int, int, int, int]:
    """The server's SCTP state towards one client: congestion window, bytes in flight,
    chunks waiting behind the window, bytes waiting in the data channels (aiortc's private
    fields, read only; zeros if they moved)."""
    sctp = getattr(getattr(link, "_pc", None), "sctp", None)
    cwnd = int(getattr(sctp, "_cwnd", 0))
    flight = int(getattr(sctp, "_flight_size", 0))
    queued = len(getattr(sctp, "_outbound_queue", ()))
    return cwnd, flight, queued, link.send_backlog()


class ServerProbe:
    """The server side of a measurement window (``reset`` to ``stop``): what the event
    channels towards the clients sent, the SCTP state sampled every tick, and the UDP bytes
    the impairment saw (the wire, both ways)."""

    #: SCTP samples kept (the newest): a long run must not grow the server it measures
    MAX_SAMPLES = 100_000

    def __init__(self, room: ServerRoom, tick_rate: float, *, sample_sctp: bool = True) -> None:
        self.room = room
        self.interval = 1.0 / tick_rate
        self.sample_sctp = sample_sctp
        self.samples: deque[tuple[int, int, int, int]] = deque(maxlen=self.MAX_SAMPLES)
        self.wire_at_reset = 0
        self.counts_at_reset: Counter[str] = Counter()
        self.reset_at = time.perf_counter()
        self._task: asyncio.Task[None] | None = None

    def links(self) -> list[PeerLink]:
        return [p.link for p in self.room.participants.values() if p.link is not None]

    def wire_bytes(self) -> int:
        total = 0
        for link in self.links():
            if link.impairment is not None:
                total += sum(s.bytes_seen for s in link.impairment.stats().values())
        return total

    def datagram_counts(self) -> Counter[str]:
        """What the server's connections and SCTP associations sent and received, summed
        over the participants (monotonic; :meth:`stats` gives the window's difference)."""
        out: Counter[str] = Counter()
        for participant in self.room.participants.values():
            c = participant.connection.endpoint.counters
            out["datagrams_sent"] += c.datagrams_sent
            out["datagrams_received"] += c.datagrams_received
            for frame_type, n in c.frames_sent.items():
                out[f"frames_sent.{FrameType(frame_type).name}"] += n
            for frame_type, n in c.frames_received.items():
                out[f"frames_received.{FrameType(frame_type).name}"] += n
            link = participant.link
            policy = getattr(link, "sack_policy", None)
            if policy is not None:
                out["sacks_alone"] += policy.sacks_alone
                out["sacks_bundled"] += policy.sacks_bundled
                out["data_bundled"] += policy.data_bundled
        return out

    def reset(self) -> None:
        self.samples.clear()
        self.counts_at_reset = self.datagram_counts()
        self.wire_at_reset = self.wire_bytes()
        self.reset_at = time.perf_counter()
        if self._task is None and self.sample_sctp:
            self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.samples.extend(sctp_state(link) for link in self.links())

    def stats(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
        counters: dict[str, int] = {}
        for participant in self.room.participants.values():
            for key, value in attrs.asdict(participant.events.channel.counters).items():
                counters[key] = counters.get(key, 0) + value
        return {
            "events_down": counters,
            "sctp_samples": list(self.samples),
            "wire_bytes": self.wire_bytes() - self.wire_at_reset,
            "window_s": time.perf_counter() - self.reset_at,
            "lossy_send_drops": sum(link.lossy.stats.send_drops for link in self.links()),
        }


async def serve(args: argparse.Namespace) -> dict[str, object]:
    impairment = Impairment.from_spec(args.impair) if args.impair else None
    server = RoomServer(KEY, SECRET, max_participants=1000, impairment=impairment)
    await server.start(args.host, args.port)
    host = GameHost(tick_rate=args.tick_rate, registry=LOAD_REGISTRY)
    if args.relay_at_once:
        host.sends_every_tick = False
    LoadGame(host, args.entities)
    from .hostile import ServerReport  # here: hostile imports this module

    report = ServerReport(server, host)  # why each session ended (netcode-load --hostile)
    room = server.room(ROOM)
    host.attach(room)
    probe = ServerProbe(room, args.tick_rate, sample_sctp=args.probe)
    if args.redundancy is not None:
        redundancy = args.redundancy

        def set_redundancy(participant: ServerParticipant) -> None:
            channel = participant.events.channel
            channel.config = attrs.evolve(channel.config, redundant_copies=redundancy)

        host.on_join = _chain(host.on_join, set_redundancy)
    print(f"URL {server.url}", flush=True)
    profiler = cProfile.Profile() if args.profile else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    slow_ms = os.environ.get("NETCODE_SLOW_CALLBACK_MS")  # log every callback that takes longer
    if slow_ms:
        loop.set_debug(True)
        loop.slow_callback_duration = float(slow_ms) / 1000
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if sys.stdin is not None and not sys.stdin.isatty():
        # "reset" on stdin starts a new measurement window (after the clients connected)
        loop.add_reader(sys.stdin.fileno(), lambda: _on_command(host, probe, stop, profiler))
    try:
        await asyncio.wait_for(stop.wait(), args.duration)
    except TimeoutError:
        pass
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    stats = host.tick_stats()
    stats["clients"] = len(host.clients)
    stats["entities"] = len(host.world)
    stats["server_report"] = report.summary()
    stats["server_counts"] = dict(probe.datagram_counts() - probe.counts_at_reset)
    if args.probe:
        stats["probe"] = probe.stats()
    await host.stop()
    await server.stop()
    return stats


def _chain(
    first: Callable[[ServerParticipant], None], then: Callable[[ServerParticipant], None]
) -> Callable[[ServerParticipant], None]:
    def both(participant: ServerParticipant) -> None:
        then(participant)
        first(participant)

    return both


def _on_command(
    host: GameHost, probe: ServerProbe, stop: asyncio.Event, profiler: cProfile.Profile | None
) -> None:
    line = sys.stdin.readline()
    if not line:
        asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
        return
    if line.strip() == "reset":
        host.tick_durations_ms.clear()
        host.tick_cpu_ms.clear()
        host.ticks_late = host.ticks_skipped = host.ticks_run = 0
        probe.reset()
        if profiler is not None:
            profiler.enable()  # the measured window only: not the joins
        print("RESET", flush=True)
    elif line.strip() == "stop":
        stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netcode_tools.load_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--entities", type=int, default=64)
    parser.add_argument("--tick-rate", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=3600.0)
    parser.add_argument(
        "--impair", metavar="SPEC", help="impair every client's UDP datagrams, both ways"
    )
    parser.add_argument(
        "--relay-at-once",
        action="store_true",
        help="relay events at once, not with the next tick (RoomHost.sends_every_tick)",
    )
    parser.add_argument("--redundancy", type=int, default=None, help="early copies per event")
    parser.add_argument(
        "--probe", action="store_true", help="STATS include event, SCTP and wire figures"
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="profile the process (cProfile) from 'reset' to the end, into PATH (pstats)",
    )
    args = parser.parse_args(argv)
    level = os.environ.get("NETCODE_LOG_LEVEL")  # e.g. INFO: every protocol error, every resume
    if level:
        configure_logging(level, timestamps=True)
    if args.impair:
        try:
            Impairment.from_spec(args.impair)
        except ValueError as exc:
            parser.error(f"--impair: {exc}")
    stats = asyncio.run(serve(args))
    print("STATS " + json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
