"""Every core of one machine: a WorkerPool (N RoomServer processes behind one address).

End to end over real aiortc on 127.0.0.1: joins and resumes through the pool's one URL reach
the worker hosting the room; a killed worker's clients are told ``node_lost`` and can join
again; the router's own answers without any WebRTC.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from helpers import eventually

from netcode.auth import AccessToken, Grants
from netcode.cluster import WorkerPool
from netcode.rooms import DataPacket, Room, RoomServer
from netcode.transport.impair import ImpairedPath, Impairment
from netcode.transport.signaling import SignalingLimits

pytestmark = pytest.mark.webrtc

KEY = "test-key"
SECRET = "test-secret-that-is-long-enough-for-hs256!"


def token(identity: str, room: str) -> str:
    grants = Grants(room_join=True, room=room)
    return AccessToken(KEY, SECRET).with_identity(identity).with_grants(grants).to_jwt()


class Client:
    def __init__(self, identity: str, room: str) -> None:
        self.identity = identity
        self.room_name = room
        self.room = Room()
        self.received: list[tuple[str, str]] = []  # (sender identity, text)
        self.seen: list[str] = []
        self.path = ImpairedPath(Impairment(seed=len(identity)))
        self.room.on("data_received", self._on_data)
        self.room.on("reconnected", lambda: self.seen.append("reconnected"))
        self.room.on("disconnected", lambda reason: self.seen.append(f"disconnected:{reason}"))

    def _on_data(self, packet: DataPacket) -> None:
        sender = packet.participant.identity if packet.participant is not None else ""
        data = packet.data
        self.received.append((sender, data if isinstance(data, str) else data.decode()))

    async def join(self, url: str) -> None:
        await self.room.connect(url, token(self.identity, self.room_name), impairment=self.path)


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    # dead_after 1 s, grace 4 s keep the drops short
    factory = functools.partial(RoomServer, KEY, SECRET, dead_after=1.0, grace_period=4.0)
    pool = WorkerPool(factory, workers=2)
    await pool.start("127.0.0.1", 0)
    yield pool
    await pool.stop()


def hosting(pool: WorkerPool, room: str) -> list[int]:
    """The workers that report ``room``."""
    return [w.index for w in pool.workers if w.alive and room in w.rooms]


async def test_rooms_live_on_one_worker_each_and_a_killed_worker_says_node_lost(
    pool: WorkerPool,
) -> None:
    rooms = [f"room{i}" for i in range(4)]
    clients = [Client(f"p{i}", rooms[i % 4]) for i in range(8)]
    await asyncio.gather(*(c.join(pool.url) for c in clients))

    # Each room lives on exactly one worker, with both its clients; the rooms are spread.
    def placed() -> bool:
        return all(
            len(hosting(pool, r)) == 1 and pool.workers[hosting(pool, r)[0]].rooms[r] == 2
            for r in rooms
        )

    await eventually(placed, timeout=5)
    where = {r: hosting(pool, r)[0] for r in rooms}
    assert sorted(where.values()) == [0, 0, 1, 1]
    assert all(pool.room_worker(r) == where[r] for r in rooms)

    # Each client reaches its room mate, and only it.
    for c in clients:
        await c.room.local_participant.publish_data(f"hi from {c.identity}", topic="chat")
    for c in clients:
        mates = {o.identity for o in clients if o.room_name == c.room_name and o is not c}
        await eventually(lambda c=c, mates=mates: {s for s, _ in c.received} == mates, 5)

    # A resume through the one URL reaches the worker holding the session.
    first = clients[0]
    first.path.blackout(2.0)
    await eventually(lambda: "reconnected" in first.seen, timeout=10)
    assert first.room.reconnects == 1

    # Kill the worker of room0: its clients are told node_lost; the others carry on.
    victim = where["room0"]
    lost = [c for c in clients if where[c.room_name] == victim]
    kept = [c for c in clients if where[c.room_name] != victim]
    os.kill(pool.workers[victim].pid, signal.SIGKILL)
    for c in lost:
        await eventually(lambda c=c: any(s.startswith("disconnected") for s in c.seen), 10)
        assert c.seen[-1] == "disconnected:node_lost"
    assert all(c.room.isconnected() for c in kept)
    before = {c.identity: len(c.received) for c in kept}
    for c in kept:
        await c.room.local_participant.publish_data("still here", topic="chat")
    for c in kept:
        await eventually(lambda c=c: len(c.received) > before[c.identity], 5)

    # Joining again works: the room is placed on a live worker (the other, or the new one).
    again = [Client(c.identity, c.room_name) for c in lost]
    await asyncio.gather(*(c.join(pool.url) for c in again))
    await eventually(lambda: all(len(hosting(pool, c.room_name)) == 1 for c in again), 5)
    back0, back4 = (c for c in again if c.room_name == "room0")  # p0 and p4
    await back0.room.local_participant.publish_data("back", topic="chat")
    await eventually(lambda: ("p0", "back") in back4.received, 5)
    await eventually(lambda: pool.restarts == 1 and all(w.alive for w in pool.workers), 30)
    for c in kept + again:
        await c.room.disconnect()


async def test_the_router_answers_bad_requests_and_unknown_sessions(pool: WorkerPool) -> None:
    endpoint = pool.url + "/rtc/connect"
    async with aiohttp.ClientSession() as http:
        async with http.post(endpoint, data=b"not json") as response:
            assert response.status == 400
            assert (await response.json())["error"] == "bad_request"
        resume = {
            "sdp": "v=0",
            "type": "offer",
            "resume": {"session": "00000000.abc", "secret": "x", "received": 0},
        }
        async with http.post(endpoint, json=resume) as response:
            assert response.status == 410
            assert (await response.json())["error"] == "server_restarted"
        join = {"sdp": "v=0", "type": "offer", "token": "not-a-token"}
        async with http.post(endpoint, json=join) as response:
            assert response.status == 401  # a worker refused it
            assert (await response.json())["error"] == "malformed_token"
        async with http.get(pool.url + "/netcode.js") as response:
            assert response.status == 200
            assert "javascript" in response.headers["Content-Type"]
    assert pool.router.joins == 1 and pool.router.resumes == 1


async def test_netcode_server_workers_option() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from netcode.cli import server_main; server_main()",
            *("--workers", "2", "--dev", "--port", "0", "--log-level", "WARNING"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while len(lines) < 5:
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
            assert line, "netcode-server exited"
            lines.append(line.strip())
        match = re.match(r"netcode-server listening on (\S+) \(2 workers\)", lines[0])
        assert match, lines[0]
        room = Room()
        await room.connect(match.group(1), lines[4])
        assert room.local_participant.identity == "dev-user"
        await room.disconnect()
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(asyncio.to_thread(process.stdout.read), 20)
        assert "netcode-server stopped" in rest
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


async def test_a_server_believes_a_forwarded_address_only_with_the_key() -> None:
    limits = SignalingLimits(requests_per_s=0.001, request_burst=1)  # one request per address
    server = RoomServer(KEY, SECRET, signaling_limits=limits)
    server.signaling.forward_key = "k" * 32
    await server.start("127.0.0.1", 0)
    host, port = server.url.removeprefix("http://").split(":")

    async def post(headers: dict[str, str], raw_key: bytes = b"") -> int:
        reader, writer = await asyncio.open_connection(host, int(port))
        lines = [b"POST /rtc/connect HTTP/1.1", b"Host: x", b"Content-Length: 3"]
        lines += [f"{k}: {v}".encode() for k, v in headers.items()]
        if raw_key:
            lines.append(b"X-Netcode-Forward-Key: " + raw_key)
        writer.write(b"\r\n".join(lines) + b"\r\n\r\nabc")
        status = int((await reader.readline()).split()[1])
        writer.close()
        return status

    try:
        forwarded = {"X-Netcode-Forwarded-For": "203.0.113.1", "X-Netcode-Forward-Key": "k" * 32}
        assert await post(forwarded) == 400  # a bad body, from 203.0.113.1
        assert await post({**forwarded, "X-Netcode-Forwarded-For": "203.0.113.2"}) == 400
        assert await post(forwarded) == 429  # 203.0.113.1 again: over its limit
        # Without the key (or with a wrong or non-ASCII one) the address is the connection's.
        wrong = {"X-Netcode-Forwarded-For": "203.0.113.3", "X-Netcode-Forward-Key": "x"}
        assert await post(wrong) == 400  # 127.0.0.1's one request
        assert await post({"X-Netcode-Forwarded-For": "203.0.113.4"}) == 429  # 127.0.0.1 again
        assert await post({}, raw_key="é".encode()) == 429  # still 127.0.0.1, and no 500
    finally:
        await server.stop()
