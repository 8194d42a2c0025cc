"""What a Redis cluster costs Redis: operations per join, per second per node, per message.

::

    redis-server --port 6390 --save "" --appendonly no &
    python -m netcode_tools.redis_ops --redis redis://127.0.0.1:6390/0 --nodes 3 --clients 24

Starts ``--nodes`` node processes (``netcode-server --redis``, one room server each), joins
``--clients`` clients into ``--rooms`` rooms through node 0's address, and reads Redis's own
counters (``INFO commandstats``, reset with ``CONFIG RESETSTAT`` before each phase):

- *join*: the commands the joins cost (the routers' scripts and what runs inside them);
- *steady*: the commands over ``--idle`` seconds with every client connected (the nodes'
  lease refreshes), per second and per node;
- *send*: ``--messages`` cross-node ``send_data`` calls (one PUBLISH each);
- *resume*: commands per resume (a link dropped and resumed through node 0).

Round trips (what the network sees) are the top-level calls: EVALSHA, GET, PUBLISH...;
commands (what Redis executes) include those the scripts run. The database is flushed first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import redis.asyncio as aioredis

from netcode.auth import AccessToken, Grants
from netcode.cluster.redis_registry import RedisRegistry
from netcode.rooms import Room
from netcode.transport.impair import ImpairedPath, Impairment

__all__ = ["main"]

KEY = "ops-key"
SECRET = "ops-secret-ops-secret-ops-secret-0"


def _token(identity: str, room: str) -> str:
    grants = Grants(room_join=True, room=room)
    return AccessToken(KEY, SECRET).with_identity(identity).with_grants(grants).to_jwt()


async def _counts(client: Any) -> dict[str, int]:
    info = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(fields["calls"])
        for name, fields in info.items()
        if not name.startswith(("cmdstat_info", "cmdstat_config"))
    }


async def _phase(client: Any) -> float:
    await client.config_resetstat()
    return time.monotonic()


def _summary(
    counts: dict[str, int], per: float, background: dict[str, float] | None = None, for_s: float = 0
) -> dict[str, Any]:
    """Commands per ``per`` (a join, a message...), less ``background`` (commands a second
    of the steady state) over ``for_s`` seconds."""
    net = {k: v - (background or {}).get(k, 0.0) * for_s for k, v in counts.items()}
    net = {k: v for k, v in net.items() if v > 0.005 * per}
    return {
        "commands": {k: round(v / per, 2) for k, v in sorted(net.items())},
        "commands_total": round(sum(net.values()) / per, 2),
    }


def _start_node(redis_url: str, lease: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from netcode.cli import server_main; server_main()",
            *("--port", "0", "--api-key", KEY, "--api-secret", SECRET, "--redis", redis_url),
            *("--lease", str(lease), "--log-level", "WARNING"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def _url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 120)
    match = re.match(r"netcode-server listening on (\S+)", line)
    if not match:
        raise RuntimeError(f"node did not start: {line!r}")
    return match.group(1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    client = aioredis.from_url(args.redis)
    await client.flushdb()
    processes = [_start_node(args.redis, args.lease) for _ in range(args.nodes)]
    rooms: list[Room] = []
    registry = RedisRegistry(args.redis, lease_s=args.lease)
    try:
        entry = (await asyncio.gather(*(_url(p) for p in processes)))[0]
        result: dict[str, Any] = {
            "nodes": args.nodes,
            "clients": args.clients,
            "lease_s": args.lease,
        }

        # the steady state first (no client yet: only the nodes' own leases)
        started = await _phase(client)
        await asyncio.sleep(args.idle / 2)
        idle = {k: v / (time.monotonic() - started) for k, v in (await _counts(client)).items()}

        started = await _phase(client)
        paths = [ImpairedPath(Impairment(seed=i)) for i in range(args.clients)]
        for first in range(0, args.clients, 4):
            batch = []
            for i in range(first, min(first + 4, args.clients)):
                room = Room()
                rooms.append(room)
                batch.append(
                    room.connect(
                        entry,
                        _token(f"c{i}", f"room{i % args.rooms}"),
                        impairment=paths[i],
                        timeout=30,
                    )
                )
            await asyncio.gather(*batch)
        counts = await _counts(client)
        result["join"] = _summary(counts, args.clients, idle, time.monotonic() - started)
        result["join"]["new_rooms"] = args.rooms

        started = await _phase(client)
        await asyncio.sleep(args.idle)
        counts = await _counts(client)
        elapsed = time.monotonic() - started
        steady = {k: v / elapsed for k, v in counts.items()}
        result["steady_per_node_per_s"] = _summary(counts, elapsed * args.nodes)
        result["steady_per_node_per_s"]["rooms_per_node"] = args.rooms / args.nodes

        started = await _phase(client)
        for n in range(args.messages):
            await registry.send_data(f"room{n % args.rooms}", b"x", topic="ops")
        counts = await _counts(client)
        result["send"] = _summary(counts, args.messages, steady, time.monotonic() - started)

        started = await _phase(client)
        resumed = rooms[: min(4, len(rooms))]
        for path in paths[: len(resumed)]:
            path.blackout(5.0)  # longer than dead_after (3 s): the link is dropped
        await asyncio.sleep(0.5)
        for _ in range(200):
            if all(r.reconnects == 1 for r in resumed):
                break
            await asyncio.sleep(0.1)
        counts = await _counts(client)
        result["resume"] = _summary(counts, len(resumed), steady, time.monotonic() - started)
        result["resume"]["resumed"] = sum(r.reconnects for r in resumed)
        return result
    finally:
        await asyncio.gather(*(r.disconnect() for r in rooms), return_exceptions=True)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        await registry.close()
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netcode_tools.redis_ops", description=__doc__)
    parser.add_argument("--redis", required=True, help="a running redis-server (it is flushed)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--rooms", type=int, default=6)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of steady state")
    parser.add_argument("--messages", type=int, default=100, help="cross-node sends")
    parser.add_argument("--lease", type=float, default=10.0, help="--lease of the nodes")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
