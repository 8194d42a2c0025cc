"""Typed game events end to end over real aiortc on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
from helpers import eventually as wait_until

from netcode.cli import make_token
from netcode.errors import ProtocolError, SendQueueFull
from netcode.rooms import Room, RoomHost, RoomServer, ServerParticipant
from netcode.rooms.events import Chat, Despawn, EventCodec, EventRegistry, Spawn, event_type

pytestmark = pytest.mark.webrtc

KEY, SECRET = "events-key", "events-secret-events-secret-events!!"


@event_type(type_id=40)
class Blob:
    """A test event big enough to need the reliable-channel fallback."""

    index: int
    data: bytes


def token(identity: str) -> str:
    return make_token(KEY, SECRET, identity, "events")


async def eventually(condition: Callable[[], object], timeout: float = 8.0) -> None:
    await wait_until(condition, timeout)


class Recorder(RoomHost):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any, str]] = []

    def event_received(self, participant: ServerParticipant, event: Any, topic: str) -> None:
        self.events.append((participant.identity, event, topic))


@pytest.fixture
async def server() -> AsyncIterator[tuple[RoomServer, Recorder]]:
    server = RoomServer(KEY, SECRET)
    await server.start("127.0.0.1", 0)
    host = Recorder()
    server.room("events").attach_host(host)
    yield server, host
    await server.stop()


async def join(server: RoomServer, identity: str, **kwargs: Any) -> tuple[Room, list[Any]]:
    room = Room()
    received: list[Any] = []
    for cls in (Chat, Spawn, Despawn, Blob):
        room.on_event(
            cls,
            lambda event, who, topic: received.append(
                (who.identity if who else None, event, topic)
            ),
        )
    await room.connect(server.url, token(identity), **kwargs)
    return room, received


async def test_events_arrive_in_order_exactly_once_with_the_sender_stamped(
    server: tuple[RoomServer, Recorder],
) -> None:
    srv, host = server
    (alice, _), (bob, got_bob), (carol, got_carol) = [
        await join(srv, name) for name in ("alice", "bob", "carol")
    ]
    await eventually(lambda: len(alice.remote_participants) == 2)
    for i in range(300):
        alice.send_event(Chat(f"line {i}"), topic="chat")
    await eventually(lambda: len(got_bob) == 300 and len(got_carol) == 300)
    assert [e.text for _, e, _ in got_bob] == [f"line {i}" for i in range(300)]
    assert got_carol == got_bob
    assert {(who, topic) for who, _, topic in got_bob} == {("alice", "chat")}
    assert len(host.events) == 300 and host.events[0] == ("alice", Chat("line 0"), "chat")
    for room in (alice, bob, carol):
        await room.disconnect()


async def test_events_to_named_destinations_and_from_the_server(
    server: tuple[RoomServer, Recorder],
) -> None:
    srv, _ = server
    (alice, _), (bob, got_bob), (carol, got_carol) = [
        await join(srv, name) for name in ("alice", "bob", "carol")
    ]
    await eventually(lambda: len(alice.remote_participants) == 2)
    alice.send_event(Spawn(7, "gem", 1.5, 2.5), destination_identities=["bob"])
    srv.rooms["events"].send_event(Despawn(7, "collected"), topic="world")
    await eventually(lambda: len(got_bob) == 2 and len(got_carol) == 1)
    assert ("alice", Spawn(7, "gem", 1.5, 2.5), "") in got_bob
    assert (None, Despawn(7, "collected"), "world") in got_bob
    assert got_carol == [(None, Despawn(7, "collected"), "world")]
    for room in (alice, bob, carol):
        await room.disconnect()


async def test_large_events_fall_back_to_the_reliable_channel_in_order(
    server: tuple[RoomServer, Recorder],
) -> None:
    srv, _ = server
    (alice, _), (bob, got_bob) = [await join(srv, name) for name in ("alice", "bob")]
    await eventually(lambda: alice.remote_participants)
    for i in range(40):
        size = 5000 if i % 7 == 3 else 20  # some events exceed a datagram
        alice.send_event(Blob(i, bytes([i]) * size))
    await eventually(lambda: len(got_bob) == 40)
    assert [e.index for _, e, _ in got_bob] == list(range(40))
    assert all(e.data == bytes([e.index]) * len(e.data) for _, e, _ in got_bob)
    assert alice.events is not None and alice.events.channel.counters.messages_fallback > 0
    await alice.disconnect()
    await bob.disconnect()


async def test_topic_subscriptions_apply_to_events(server: tuple[RoomServer, Recorder]) -> None:
    srv, _ = server
    (alice, _), (bob, got_bob) = [await join(srv, "alice"), await join(srv, "bob", topics=["chat"])]
    await eventually(lambda: alice.remote_participants)
    alice.send_event(Chat("secret"), topic="staff")
    alice.send_event(Chat("hello"), topic="chat")
    await eventually(lambda: got_bob)
    await asyncio.sleep(0.1)
    assert [e.text for _, e, _ in got_bob] == ["hello"]
    await alice.disconnect()
    await bob.disconnect()


async def test_a_flooding_sender_gets_a_clear_error(server: tuple[RoomServer, Recorder]) -> None:
    srv, _ = server
    (alice, _), (bob, got_bob), (carol, got_carol) = [
        await join(srv, name) for name in ("alice", "bob", "carol")
    ]
    await eventually(lambda: all(len(r.remote_participants) == 2 for r in (alice, bob, carol)))
    with pytest.raises(SendQueueFull, match="queue"):
        for i in range(100_000):
            alice.send_event(Chat(f"spam {i}"), destination_identities=["bob"])
    # the others are unaffected: carol and bob still talk
    carol.send_event(Chat("still fine"), destination_identities=["bob"])
    bob.send_event(Chat("hi carol"), destination_identities=["carol"])
    await eventually(lambda: ("carol", Chat("still fine"), "") in got_bob, timeout=20)
    await eventually(lambda: ("bob", Chat("hi carol"), "") in got_carol)
    for room in (alice, bob, carol):
        await room.disconnect()


def test_event_layout_comes_from_the_declaration() -> None:
    registry = EventRegistry()

    @event_type(type_id=99, registry=registry)
    class Move:
        dx: int
        dy: int
        name: str
        fast: bool = False

    codec = registry.of(Move(1, -2, "x"))
    body = codec.encode(Move(1, -2, "x", True))
    assert body == bytes([2, 3, 1]) + b"x" + b"\x01"  # zigzag varints, varint-length str
    assert codec.decode_untrusted(body) == Move(1, -2, "x", True)
    with pytest.raises(ProtocolError):
        codec.decode_untrusted(body + b"\x00")
    with pytest.raises(ProtocolError):
        codec.decode_untrusted(b"\xff")
    with pytest.raises(ValueError, match="already"):
        registry.register(attrs.frozen(type("Other", (), {"__annotations__": {"a": int}})), 99)
    with pytest.raises(TypeError, match="no wire layout"):
        EventCodec(attrs.frozen(type("Bad", (), {"__annotations__": {"a": list}})), 5)
