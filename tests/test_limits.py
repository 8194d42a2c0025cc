"""Every limit belongs to one peer: whoever fills a bounded resource pays for it, and the
others see no loss and no stall. End to end over real aiortc on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import eventually

from netcode import Chat
from netcode.cli import make_token
from netcode.rooms import DataPacket, Room, RoomServer

pytestmark = pytest.mark.webrtc

KEY, SECRET = "limits-key", "limits-secret-limits-secret-limits!!"


@pytest.fixture
async def server() -> AsyncIterator[RoomServer]:
    server = RoomServer(KEY, SECRET)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


async def join(server: RoomServer, identity: str) -> tuple[Room, list[str]]:
    room = Room()
    reasons: list[str] = []
    room.on("disconnected", reasons.append)
    await room.connect(server.url, make_token(KEY, SECRET, identity, "arena"))
    return room, reasons


async def test_a_client_that_never_acknowledges_is_cut_off_not_the_sender(
    server: RoomServer,
) -> None:
    honest, honest_reasons = await join(server, "honest")
    listener, _ = await join(server, "listener")
    deaf, deaf_reasons = await join(server, "deaf")
    await eventually(lambda: len(honest.remote_participants) == 2)
    assert deaf.link is not None and deaf.connection is not None
    deaf.connection.detach()  # it stops reading its lossy channel: it never acknowledges
    heard: list[str] = []
    listener.on_event(Chat, lambda event, participant, topic: heard.append(event.text))
    for n in range(1500):
        honest.send_event(Chat(f"line {n}"))
        if n % 50 == 49:
            await asyncio.sleep(0.02)
    await eventually(lambda: len(heard) == 1500, timeout=20)
    assert heard == [f"line {n}" for n in range(1500)]
    await eventually(lambda: deaf_reasons, timeout=10)
    assert deaf_reasons == ["slow_consumer"]
    assert honest.isconnected() and not honest_reasons
    assert server.slow_disconnects == 1


async def test_a_topic_spammer_is_cut_off_and_the_others_keep_hearing(
    server: RoomServer,
) -> None:
    spammer, spammer_reasons = await join(server, "spammer")
    talker, _ = await join(server, "talker")
    listener, _ = await join(server, "listener")
    got: list[Any] = []

    def on_data(packet: DataPacket) -> None:
        if packet.participant is not None and packet.participant.identity == "talker":
            got.append(packet.data)

    listener.on("data_received", on_data)
    await eventually(lambda: len(listener.remote_participants) == 2)
    for n in range(300):
        if not spammer.isconnected():
            break
        await spammer.local_participant.publish_data(b"x", reliable=n % 2 == 0, topic=f"t{n}")
        await asyncio.sleep(0.002)
    await eventually(lambda: spammer_reasons, timeout=10)
    assert spammer_reasons == ["too_many_topics"]
    for n in range(20):
        await talker.local_participant.publish_data(f"after {n}", topic=f"fresh{n}")
    await eventually(lambda: len(got) == 20, timeout=5)
    assert got == [f"after {n}" for n in range(20)]
