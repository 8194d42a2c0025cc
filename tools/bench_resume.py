"""``netcode-bench resume``: how long a join and a resume take on an impaired path.

A room server and one client run in this process on 127.0.0.1; the client's peer
connections are impaired at the UDP datagrams (``--impair``, default 50 ms one way, so a
100 ms round trip, with ``--loss`` each way), so ICE, DTLS and SCTP see the delay and the
loss. HTTP signaling runs over loopback TCP, unimpaired: on a real path add one round trip
for the POST (two with a new TCP connection).

Per run:

- **join**: ``Room.connect`` from the call to JOINED;
- **resume**: the client abandons its link as on an address change (the old path is dead
  for good) and resumes on a new one: from the drop being noticed to RESUMED;
- **blackout**: every datagram is dropped for ``--blackout`` seconds; the figure is from the
  path's return to ``reconnected`` (the drop was noticed ``dead_after`` into the blackout and
  attempts were already under way).

Times are also given in round trips of the configured latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from typing import Any

from netcode.cli import make_token, percent
from netcode.rooms import Room, RoomServer
from netcode.transport.impair import ImpairedPath, Impairment

_KEY = "bench"
_SECRET = "bench-secret-bench-secret-bench-secret"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=10, help="joins and resumes to time (10)")
    parser.add_argument(
        "--latency", type=float, default=50.0, metavar="MS", help="one-way latency (50 ms)"
    )
    parser.add_argument(
        "--loss",
        type=percent(),
        default=0.0,
        metavar="PERCENT",
        help="loss each way, percent (0; 5 or 5%%)",
    )
    parser.add_argument(
        "--blackout", type=float, default=2.0, metavar="S", help="blackout length (2 s)"
    )
    parser.add_argument("--seed", type=int, default=1, help="impairment seed (1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _summary(samples: list[float], rtt_s: float) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "runs": len(samples),
        "median_ms": round(statistics.median(ordered) * 1e3, 1),
        "max_ms": round(ordered[-1] * 1e3, 1),
        "median_rtts": round(statistics.median(ordered) / rtt_s, 2) if rtt_s else None,
    }


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    server = RoomServer(_KEY, _SECRET, dead_after=1.0)
    await server.start("127.0.0.1", 0)
    joins: list[float] = []
    resumes: list[float] = []
    blackouts: list[float] = []
    try:
        for run in range(args.runs):
            impairment = Impairment(
                latency_ms=args.latency, loss=args.loss / 100, seed=args.seed + run
            )
            path = ImpairedPath(impairment)
            room = Room()
            started = time.perf_counter()
            await room.connect(
                server.url,
                make_token(_KEY, _SECRET, f"p{run}", "bench"),
                impairment=path,
                timeout=30,
            )
            joins.append(time.perf_counter() - started)
            back = asyncio.Event()
            room.on("reconnected", back.set)
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            room._link_lost("benchmark: the old path is dead")
            await asyncio.wait_for(back.wait(), 30)
            resumes.append(time.perf_counter() - started)
            back.clear()
            await asyncio.sleep(0.2)
            path.blackout(args.blackout)
            path_back = time.perf_counter() + args.blackout
            await asyncio.wait_for(back.wait(), 30 + args.blackout)
            blackouts.append(max(time.perf_counter() - path_back, 0.0))
            await room.disconnect()
    finally:
        await server.stop()
    rtt = 2 * args.latency / 1e3
    return {
        "latency_ms": args.latency,
        "loss_percent": args.loss,
        "join": _summary(joins, rtt),
        "resume": _summary(resumes, rtt),
        "after_blackout": _summary(blackouts, rtt),
    }


def run(args: argparse.Namespace) -> int:
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    result = asyncio.run(_measure(args))
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{args.runs} runs, {args.latency:g} ms one way, {args.loss:g}% loss each way "
        "(UDP impaired, HTTP signaling on loopback)"
    )
    for key, label in (
        ("join", "join (connect to JOINED)"),
        ("resume", "resume (new link, drop to RESUMED)"),
        ("after_blackout", f"reconnected after a {args.blackout:g} s blackout, from path back"),
    ):
        row = result[key]
        print(
            f"  {label:<58} median {row['median_ms']:7.1f} ms "
            f"({row['median_rtts']} RTT), max {row['max_ms']:7.1f} ms"
        )
    return 0
