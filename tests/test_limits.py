"""Every limit belongs to one peer: whoever fills a bounded resource pays for it, and the
others see no loss and no stall. End to end over real aiortc on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import eventually

from netcode import Chat
from netcode.cli import make_token
from netcode.rooms import DataPacket, Room, RoomServer
from netcode.rooms.limits import PeerBudgets

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


async def test_new_topic_names_have_a_rate_budget(server: RoomServer) -> None:
    budgets = server.budgets
    assert budgets.new_topics_burst < server.max_topics_per_participant
    # a client that binds its topics in one burst, then a few more slowly, stays
    steady, steady_reasons = await join(server, "steady")
    for n in range(budgets.new_topics_burst):
        await steady.local_participant.publish_data(b"x", topic=f"s{n}")
    for n in range(3):
        await asyncio.sleep(1.5 / budgets.new_topics_per_s)
        await steady.local_participant.publish_data(b"x", topic=f"later{n}")
    # one that invents names faster than the rate is cut off well before the table's bound
    fast, fast_reasons = await join(server, "fast")
    for n in range(budgets.new_topics_burst + 8):
        if not fast.isconnected():
            break
        await fast.local_participant.publish_data(b"x", topic=f"f{n}")
    await eventually(lambda: fast_reasons, timeout=10)
    assert fast_reasons == ["too_many_topics"]
    await asyncio.sleep(0.3)
    assert steady.isconnected() and not steady_reasons


async def test_the_fan_out_of_published_data_is_the_senders_budget() -> None:
    budgets = PeerBudgets(relay_bytes_per_s=40_000, relay_bytes_burst=40_000, burst_s=1)
    server = RoomServer(KEY, SECRET, budgets=budgets)
    await server.start("127.0.0.1", 0)
    try:
        sender, reasons = await join(server, "sender")
        receivers = [(await join(server, f"r{n}"))[0] for n in range(3)]
        got: list[int] = []
        receivers[0].on("data_received", lambda packet: got.append(len(packet.data)))
        await eventually(lambda: len(sender.remote_participants) == 3)
        # lossy: 3 copies of 4 KB a packet; past the burst the rest are dropped, not relayed
        for _ in range(10):
            await sender.local_participant.publish_data(b"l" * 4000, reliable=False)
        await asyncio.sleep(0.5)
        participant = server.rooms["arena"].participants[sender.local_participant.pid]
        assert 0 < participant.lossy_throttled < 10
        assert 0 < len(got) < 10
        assert sender.isconnected() and not reasons
        # reliable packets cannot be dropped: going on past the budget disconnects the sender
        for _ in range(20):
            if not sender.isconnected():
                break
            await sender.local_participant.publish_data(b"r" * 4000)
            await asyncio.sleep(0.01)
        await eventually(lambda: reasons, timeout=10)
        assert reasons == ["flooding"]
        assert all(r.isconnected() for r in receivers)
    finally:
        await server.stop()


@pytest.fixture
async def strict_server() -> AsyncIterator[RoomServer]:
    budgets = PeerBudgets(datagrams_per_s=200, messages_per_s=200, burst_s=1, flood_after_s=1)
    server = RoomServer(KEY, SECRET, budgets=budgets)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


async def test_a_datagram_flood_is_throttled_then_cut_off(strict_server: RoomServer) -> None:
    flooder, reasons = await join(strict_server, "flooder")
    talker, _ = await join(strict_server, "talker")
    listener, _ = await join(strict_server, "listener")
    got: list[Any] = []
    listener.on("data_received", lambda packet: got.append(packet.data))
    await eventually(lambda: len(listener.remote_participants) == 2)
    assert flooder.link is not None
    link = flooder.link
    # A real datagram of the flooder's, sent again and again: well-formed duplicates, which
    # cost the server a decode each unless they are dropped unread.
    captured: list[bytes] = []
    send_lossy = link.send_lossy
    link.send_lossy = lambda data: captured.append(data) or send_lossy(data)  # type: ignore[method-assign]
    await flooder.local_participant.publish_data(b"hello", reliable=False)
    await eventually(lambda: captured)
    sent = 0
    while not reasons and sent < 20_000:
        for _ in range(20):  # 2000 datagrams a second, ten times the budget
            with contextlib.suppress(Exception):
                link.lossy.raw.send(captured[0])  # past the client's own backpressure
            sent += 1
        await talker.local_participant.publish_data(f"m{sent}", reliable=True)
        await asyncio.sleep(0.01)
    await eventually(lambda: reasons, timeout=5)
    assert reasons == ["flooding"]
    flooder_side = [p for r in strict_server.rooms.values() for p in r.participants.values()]
    assert all(p.identity != "flooder" for p in flooder_side)
    # the others heard every message meanwhile
    heard = lambda: [g for g in got if isinstance(g, str)]  # noqa: E731
    await eventually(lambda: len(heard()) == sent // 20, timeout=5)
    assert heard() == [f"m{20 * (n + 1)}" for n in range(sent // 20)]
    assert strict_server.flood_disconnects == 1


async def test_a_reliable_flood_is_cut_off(strict_server: RoomServer) -> None:
    flooder, reasons = await join(strict_server, "flooder")
    for n in range(2000):
        if reasons:
            break
        with contextlib.suppress(Exception):
            await flooder.local_participant.publish_data(b"x" * 10, reliable=True)
        if n % 100 == 99:
            await asyncio.sleep(0.01)
    await eventually(lambda: reasons, timeout=5)
    assert reasons == ["flooding"]


async def test_messages_over_the_channel_limit_cost_their_sender(server: RoomServer) -> None:
    """Another implementation may send past 16 KiB: the server still pays to reassemble it.
    Each refused message is a protocol error and its bytes count; the room carries on."""
    sender, reasons = await join(server, "sender")
    talker, _ = await join(server, "talker")
    listener, _ = await join(server, "listener")
    got: list[Any] = []
    listener.on("data_received", lambda packet: got.append(packet.data))
    await eventually(lambda: len(listener.remote_participants) == 2)
    assert sender.link is not None
    published = 0
    while not reasons and published < server.max_protocol_errors + 5:
        with contextlib.suppress(Exception):
            sender.link.reliable.raw.send(b"o" * 20_000)  # past our own wrapper's limit
        await talker.local_participant.publish_data(f"m{published}", reliable=True)
        published += 1
        await asyncio.sleep(0.1)  # 200 kB/s: within the byte budget
    await eventually(lambda: reasons, timeout=5)
    assert reasons == ["protocol_error"]
    assert server.protocol_errors >= server.max_protocol_errors
    await eventually(lambda: len(got) == published)
    assert got == [f"m{i}" for i in range(published)]


async def test_big_messages_over_the_byte_budget_are_cut_off_before_reassembly() -> None:
    """The reliable bytes are charged as SCTP chunks arrive: a client sending a message far
    over its burst is cut off before the server has put the message together."""
    budgets = PeerBudgets(message_bytes_per_s=20_000, message_bytes_burst=20_000)
    server = RoomServer(KEY, SECRET, budgets=budgets)
    await server.start("127.0.0.1", 0)
    try:
        sender, reasons = await join(server, "sender")
        assert sender.link is not None
        link = server.rooms["arena"].participants[sender.local_participant.pid].link
        assert link is not None and link.sack_policy is not None
        sender.link.reliable.raw.send(b"o" * 64 * 1024)  # over the channel's limit, too
        await eventually(lambda: reasons, timeout=5)
        assert reasons == ["flooding"]
        # cut off on its bytes as they came: the message was never put together and refused
        assert link.sack_policy.data_throttled > 0
        assert link.reliable.stats.receive_drops == 0
        assert server.protocol_errors == 0
    finally:
        await server.stop()


async def test_honest_traffic_stays_within_the_default_budgets(server: RoomServer) -> None:
    sender, reasons = await join(server, "sender")
    receiver, _ = await join(server, "receiver")
    got: list[Any] = []
    receiver.on("data_received", lambda packet: got.append(packet.data))
    await eventually(lambda: sender.remote_participants)
    for n in range(600):  # 60 Hz of lossy and reliable data for 10 s of game, sped up
        await sender.local_participant.publish_data(b"pos", reliable=False)
        await sender.local_participant.publish_data(f"r{n}", reliable=True)
        sender.send_event(Chat(f"c{n}"))
        await asyncio.sleep(0.004)
    await eventually(lambda: sum(isinstance(g, str) for g in got) == 600, timeout=10)
    assert not reasons and server.flood_disconnects == 0


async def test_a_link_that_carries_only_one_way_is_let_go_and_the_client_resumes() -> None:
    """The client's datagrams keep arriving, it acknowledges none of ours (it does not read,
    or the path fails one way): after ``unacked_after`` the server lets the link go as a dead
    one; the client resumes on a new link, and the others never notice."""
    server = RoomServer(KEY, SECRET, unacked_after=4.0)
    await server.start("127.0.0.1", 0)
    try:
        honest, honest_reasons = await join(server, "honest")
        listener, listener_reasons = await join(server, "listener")
        deaf, deaf_reasons = await join(server, "deaf")
        states: list[str] = []
        deaf.on("reconnecting", lambda *args: states.append("reconnecting"))
        deaf.on("reconnected", lambda *args: states.append("reconnected"))
        await eventually(lambda: len(honest.remote_participants) == 2)
        assert deaf.link is not None and deaf.connection is not None
        connection = deaf.connection

        def unread(data: bytes) -> None:  # the link looks alive to it; nothing is read
            connection.last_received = connection.now()

        deaf.link.on_lossy(unread)
        started = asyncio.get_running_loop().time()
        heard: list[str] = []
        listener.on_event(Chat, lambda event, participant, topic: heard.append(event.text))
        sent = 0
        while "reconnected" not in states and sent < 300:
            honest.send_event(Chat(f"line {sent}"))
            sent += 1
            await asyncio.sleep(0.05)
        assert states == ["reconnecting", "reconnected"]
        assert asyncio.get_running_loop().time() - started >= 4.0
        assert server.one_way_links == 1 and server.slow_disconnects == 0
        await eventually(lambda: len(heard) == sent, timeout=5)
        assert heard == [f"line {n}" for n in range(sent)]
        assert honest.isconnected() and listener.isconnected() and deaf.isconnected()
        assert not honest_reasons and not listener_reasons and not deaf_reasons
        with pytest.raises(ValueError, match="unacked_after must be more than dead_after"):
            RoomServer(KEY, SECRET, dead_after=3.0, unacked_after=2.0)
    finally:
        await server.stop()


async def test_a_client_that_never_confirms_reliable_messages_is_cut_off() -> None:
    server = RoomServer(KEY, SECRET, max_replay_bytes=64 * 1024)
    await server.start("127.0.0.1", 0)
    try:
        sender, sender_reasons = await join(server, "sender")
        silent, silent_reasons = await join(server, "silent")
        silent._send_ack = lambda: None  # type: ignore[method-assign]
        await eventually(lambda: sender.remote_participants)
        for _ in range(200):  # 200 KiB towards a client that confirms nothing
            if silent_reasons:
                break
            await sender.local_participant.publish_data(b"x" * 1024, reliable=True)
            await asyncio.sleep(0.002)
        await eventually(lambda: silent_reasons, timeout=5)
        assert silent_reasons == ["slow_consumer"]
        assert sender.isconnected() and not sender_reasons
        held = [p.replay.bytes for r in server.rooms.values() for p in r.participants.values()]
        assert all(size <= 64 * 1024 for size in held)
    finally:
        await server.stop()
