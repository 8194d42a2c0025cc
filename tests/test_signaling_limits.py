"""The signaling endpoint bounds what one address can cost it: request rate, connections
being set up, and the time a client has to send its request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from netcode.cli import make_token
from netcode.rooms import Room, RoomServer
from netcode.transport.signaling import SIGNALING_PATH, SignalingLimits

KEY, SECRET = "sig-key", "sig-secret-sig-secret-sig-secret-sig!!"


@pytest.fixture
async def server() -> AsyncIterator[RoomServer]:
    limits = SignalingLimits(requests_per_s=5, request_burst=10, body_timeout_s=0.5)
    server = RoomServer(KEY, SECRET, signaling_limits=limits)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


async def test_a_request_flood_from_one_address_is_refused(server: RoomServer) -> None:
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(40):
            async with session.post(server.url + SIGNALING_PATH, data=b"{}") as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert (await response.json())["error"] == "rate_limited"
    assert statuses[:10] == [400] * 10  # the burst: answered (a bad request)
    assert statuses.count(429) >= 25


@pytest.mark.webrtc
async def test_honest_clients_join_after_a_flood_stops(server: RoomServer) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(30):
            async with session.post(server.url + SIGNALING_PATH, data=b"junk"):
                pass
    await asyncio.sleep(0.5)  # the bucket refills at 5 a second
    room = Room()
    await room.connect(server.url, make_token(KEY, SECRET, "alice", "arena"))
    assert room.isconnected()
    await room.disconnect()


async def test_a_client_that_sends_its_body_too_slowly_is_cut_off(server: RoomServer) -> None:
    parts = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(
        f"POST {SIGNALING_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{".encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert b" 408 " in status_line
    writer.close()
    assert server._signaling.slow_bodies == 1
