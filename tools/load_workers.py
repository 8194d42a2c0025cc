"""The load test against a worker pool: how many clients ``--workers N`` holds at 30 Hz.

::

    python -m netcode_tools.load_workers --workers 1 --rooms 4 --find-max
    python -m netcode_tools.load_workers --workers 2 --rooms 4 --find-max
    python -m netcode_tools.load_workers --workers 2 --rooms 4 --clients 48 --json

A :class:`~netcode.cluster.WorkerPool` of ``--workers`` processes, each a RoomServer whose
rooms get a GameHost with ``--entities`` moving entities (the scene of ``netcode-load``:
:mod:`netcode_tools.load_server`) when they are created, behind one address. The bots
(:mod:`netcode_tools.load`'s, light: they read each snapshot's tick, every ``--full-every``-th
decodes fully) join ``--rooms`` rooms evenly through that address; the pool places the rooms
on the least-loaded workers. Every bot sends an input each tick and a chat event every
``--event-interval`` seconds.

Measured over ``--duration`` seconds after every bot joined: whether *every* room's host held
its tick rate (no tick skipped, at most 1% late, p99 within the interval), each worker
process's whole CPU (user + system, from ``getrusage`` in the worker: aiortc, DTLS, SCTP and
the tick alike) per tick and per client per tick, and the bots' own CPU (the load generator
shares the machine: when it runs out of CPU, it is what limits the count, and the figures
say so).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import sys
import time
from typing import Any

from netcode.cluster import WorkerPool
from netcode.rooms import RoomServer
from netcode.rooms.host import GameHost
from netcode.rooms.server import ServerRoom

from .hostile import with_steal_retries
from .load import Bot, ServerCpu, connect_bots, drive_bots
from .load_server import KEY, LOAD_REGISTRY, SECRET, LoadGame

__all__ = ["LoadRoomServer", "main", "measure"]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoadRoomServer(RoomServer):
    """A RoomServer whose every room gets the load scene's GameHost when it is created."""

    def __init__(self, entities: int, tick_rate: float) -> None:
        super().__init__(KEY, SECRET, max_participants=1000)
        self.entities = entities
        self.tick_rate = tick_rate
        self.hosts: dict[str, GameHost] = {}
        self._reset_at = (time.perf_counter(), _cpu_s())

    def room(self, name: str, *args: Any, **kwargs: Any) -> ServerRoom:
        room = super().room(name, *args, **kwargs)
        if name not in self.hosts:
            host = self.hosts[name] = GameHost(tick_rate=self.tick_rate, registry=LOAD_REGISTRY)
            LoadGame(host, self.entities)
            host.attach(room)
        return room

    def worker_query(self, name: str) -> object:
        """``reset``: a new measurement window; ``stats``: the window's figures."""
        if name == "reset":
            for host in self.hosts.values():
                host.tick_durations_ms.clear()
                host.tick_cpu_ms.clear()
                host.ticks_late = host.ticks_skipped = host.ticks_run = 0
            self._reset_at = (time.perf_counter(), _cpu_s())
            return None
        if name == "stats":
            wall_at, cpu_at = self._reset_at
            rooms = {}
            for room_name, host in self.hosts.items():
                stats = host.tick_stats()
                stats["clients"] = len(host.clients)
                rooms[room_name] = stats
            return {
                "pid": os.getpid(),
                "rooms": rooms,
                "wall_s": time.perf_counter() - wall_at,
                "cpu_s": _cpu_s() - cpu_at,
            }
        raise ValueError(f"unknown query {name!r}")


async def measure(pool: WorkerPool, args: argparse.Namespace, clients: int) -> dict[str, Any]:
    """One run of ``clients`` bots spread over ``args.rooms`` rooms of ``pool``."""
    rooms = [f"load{i}" for i in range(args.rooms)]
    bots: list[Bot] = []
    try:
        started = time.perf_counter()
        for index, room in enumerate(rooms):
            count = clients // len(rooms) + (index < clients % len(rooms))
            if count:
                joined, _ = await connect_bots(
                    count, pool.url, KEY, SECRET, room, full_every=args.full_every
                )
                bots += joined
        connect_s = time.perf_counter() - started
        await asyncio.sleep(0.5)  # every bot receives its first snapshots
        await pool.query("reset")
        cpu_before, wall_before = _cpu_s(), time.perf_counter()
        machine = ServerCpu(None)  # the machine's steal over the window
        figures = await drive_bots(
            bots,
            duration=args.duration,
            tick_rate=args.tick_rate,
            event_interval=args.event_interval,
        )
        bots_cpu = (_cpu_s() - cpu_before) / (time.perf_counter() - wall_before)
        _, _, steal_s = machine.stop()
        stats = [s for s in await pool.query("stats") if s is not None]
    finally:
        await asyncio.gather(*(b.room.disconnect() for b in bots), return_exceptions=True)
    workers = []
    held = kept = True
    ticks_per_s = args.tick_rate
    for worker in stats:
        hosted = {n: r for n, r in worker["rooms"].items() if r["clients"]}
        worker_clients = sum(r["clients"] for r in hosted.values())
        held = held and all(r["tick_rate_held"] for r in hosted.values())
        ticks = sum(r["ticks"] for r in hosted.values())
        late = sum(r["ticks_late"] for r in hosted.values())
        skipped = sum(r["ticks_skipped"] for r in hosted.values())
        kept = kept and skipped == 0 and late <= 0.01 * ticks
        cpu_per_tick_ms = worker["cpu_s"] * 1000 / (worker["wall_s"] * ticks_per_s)
        workers.append(
            {
                "rooms": sorted(hosted),
                "clients": worker_clients,
                "cpu_percent": round(100 * worker["cpu_s"] / worker["wall_s"], 1),
                "cpu_per_tick_ms": round(cpu_per_tick_ms, 2),
                "cpu_per_client_per_tick_ms": round(cpu_per_tick_ms / worker_clients, 3)
                if worker_clients
                else None,
                "tick_p99_ms": max((r["tick_p99_ms"] or 0.0) for r in hosted.values())
                if hosted
                else None,
                "tick_rate_held": all(r["tick_rate_held"] for r in hosted.values()),
                "ticks": ticks,
                "ticks_late": late,
                "ticks_skipped": skipped,
            }
        )
    return {
        "workers": args.workers,
        "rooms": args.rooms,
        "clients": clients,
        "entities_per_room": args.entities,
        "tick_rate_hz": args.tick_rate,
        "connect_s": round(connect_s, 1),
        "tick_rate_held": held and figures["clients_connected_at_end"] == clients,
        # on time: no tick skipped, at most 1% late (p99 of the tick's duration aside, which
        # a machine shared with other work stretches)
        "ticks_on_time": kept and figures["clients_connected_at_end"] == clients,
        "bots_cpu_percent": round(100 * bots_cpu, 1),
        # CPU the hypervisor took from the machine during the run (all CPUs, seconds)
        "steal_s": None if steal_s is None else round(steal_s, 2),
        "per_worker": workers,
        **figures,
    }


def _say_count(say: Any, count: int, line: str) -> None:
    say(f"{count:4d} clients: {line}")


async def run(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    factory = functools.partial(LoadRoomServer, args.entities, args.tick_rate)
    async with WorkerPool(factory, args.workers) as pool:
        await pool.start("127.0.0.1", 0)
        if not args.find_max:
            return await measure(pool, args, args.clients)
        counts = range(args.start, args.max_clients + 1, args.step)
        runs, best = [], 0
        for count in counts:
            result, again = await with_steal_retries(
                functools.partial(measure, pool, args, count),
                args.max_steal,
                functools.partial(_say_count, say, count),
            )
            result["runs_repeated_for_steal"] = again
            runs.append(result)
            say(
                f"{count:4d} clients: held {result['tick_rate_held']}, "
                + ", ".join(
                    f"worker {i}: {w['clients']} clients {w['cpu_percent']}% CPU "
                    f"{w['cpu_per_client_per_tick_ms']} ms/client/tick p99 {w['tick_p99_ms']}"
                    for i, w in enumerate(result["per_worker"])
                )
                + f"; on time {result['ticks_on_time']}; bots {result['bots_cpu_percent']}% CPU"
            )
            if not result[args.until]:
                break
            best = count
        return {"workers": args.workers, "max_clients_held": best, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m netcode_tools.load_workers",
        description="netcode-load's bots against a WorkerPool: clients held at the tick rate.",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--rooms", type=int, default=4, help="rooms the bots join evenly (4)")
    parser.add_argument("--clients", type=int, default=32, help="bots (32)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured (10)")
    parser.add_argument("--tick-rate", type=float, default=30.0, help="server tick rate (30)")
    parser.add_argument("--entities", type=int, default=64, help="moving entities per room")
    parser.add_argument("--event-interval", type=float, default=1.0, help="s between events")
    parser.add_argument("--full-every", type=int, default=8, help="every Nth bot decodes fully")
    parser.add_argument("--find-max", action="store_true", help="raise clients until ticks slip")
    parser.add_argument("--max-clients", type=int, default=128, help="--find-max stops here")
    parser.add_argument("--start", type=int, default=8, help="--find-max starts here (8)")
    parser.add_argument("--step", type=int, default=8, help="--find-max raises by this (8)")
    parser.add_argument(
        "--until",
        choices=("tick_rate_held", "ticks_on_time"),
        default="tick_rate_held",
        help="--find-max stops when this fails: tick_rate_held (netcode-load's: no tick "
        "skipped, at most 1%% late, p99 within the interval) or ticks_on_time (the first two)",
    )
    parser.add_argument(
        "--max-steal",
        type=float,
        metavar="PCT",
        help="--find-max: run a count again (up to 3 times) when the hypervisor took more "
        "than PCT%% of the machine's CPU during it (steal in /proc/stat)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.rooms < 1 or args.clients < 1 or args.duration <= 0:
        parser.error("--workers, --rooms and --clients must be at least 1, --duration positive")
    if args.start < 1 or args.step < 1:
        parser.error("--start and --step must be at least 1")
    if args.max_steal is not None and not 0 < args.max_steal < 100:
        parser.error("--max-steal PCT: 0 < PCT < 100")
    result = asyncio.run(run(args, lambda line: print(line, file=sys.stderr, flush=True)))
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
