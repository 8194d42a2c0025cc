"""Rooms end to end over real aiortc connections on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from helpers import eventually

from netcode.auth import (
    AccessToken,
    Grants,
    InvalidSignature,
    MissingGrant,
    TokenExpired,
    UnknownApiKey,
    WrongRoom,
)
from netcode.rooms import (
    MAX_LOSSY_PAYLOAD_BYTES,
    MAX_RELIABLE_PAYLOAD_BYTES,
    DataPacket,
    DataPacketKind,
    LocalDataTrack,
    RemoteDataTrack,
    Room,
    RoomServer,
    TrackRefused,
)
from netcode.rooms.protocol import Kind, track_options
from netcode.wire import FrameType, encode_datagram

pytestmark = pytest.mark.webrtc

KEY = "test-key"
SECRET = "test-secret-that-is-long-enough-for-hs256!"


def token(
    identity: str,
    room: str = "arena",
    *,
    key: str = KEY,
    secret: str = SECRET,
    issued_ago: float = 0.0,
    **grants: Any,
) -> str:
    grant = Grants(**{"room_join": True, "room": room, **grants})
    builder = AccessToken(key, secret).with_identity(identity).with_grants(grant).with_ttl(600)
    return builder.to_jwt(now=time.time() - issued_ago)


class Client:
    """A connected Room that records what it receives."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.packets: list[DataPacket] = []
        self.events: list[tuple[str, Any]] = []
        room.on("data_received", self.packets.append)
        for name in (
            "participant_connected",
            "participant_disconnected",
            "track_published",
            "track_unpublished",
            "track_subscribed",
            "track_unsubscribed",
            "disconnected",
        ):
            room.on(name, lambda *args, name=name: self.events.append((name, args)))

    def data(self, topic: str | None = None) -> list[bytes | str]:
        return [p.data for p in self.packets if topic is None or p.topic == topic]

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


@pytest.fixture
async def server() -> AsyncIterator[RoomServer]:
    server = RoomServer(KEY, SECRET)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


@pytest.fixture
async def connect(server: RoomServer) -> AsyncIterator[Callable[..., Any]]:
    rooms: list[Room] = []

    async def connect(identity: str, **kwargs: Any) -> Client:
        room = Room()
        client = Client(room)
        await room.connect(server.url, token(identity, **kwargs.pop("grants", {})), **kwargs)
        rooms.append(room)
        return client

    yield connect
    for room in rooms:
        await room.disconnect()


async def test_participants_see_each_other_come_and_go(connect: Any) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    assert set(bob.room.remote_participants) == {"alice"}
    await eventually(lambda: "bob" in alice.room.remote_participants)
    assert alice.names() == ["participant_connected"]
    assert alice.room.local_participant.identity == "alice"
    assert alice.room.name == "arena"
    await bob.room.disconnect()
    await eventually(lambda: "bob" not in alice.room.remote_participants)
    assert alice.names()[-1] == "participant_disconnected"
    assert bob.names()[-1] == "disconnected"


async def test_reliable_packets_arrive_complete_and_in_order(connect: Any) -> None:
    alice, bob, carol = await connect("alice"), await connect("bob"), await connect("carol")
    await eventually(lambda: len(alice.room.remote_participants) == 2)
    sizes = [1, 100, 1200, 5000, MAX_RELIABLE_PAYLOAD_BYTES] * 5  # within the byte burst
    sent = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    for payload in sent:
        await alice.room.local_participant.publish_data(payload, topic="bulk")
    for receiver in (bob, carol):
        await eventually(lambda r=receiver: len(r.packets) == len(sent), timeout=20)
        assert receiver.data() == sent
        assert {p.participant.identity for p in receiver.packets} == {"alice"}
        assert {p.kind for p in receiver.packets} == {DataPacketKind.RELIABLE}
    assert alice.packets == []  # the sender does not hear itself


async def test_lossy_packets_arrive(connect: Any) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await eventually(lambda: alice.room.remote_participants)
    for i in range(200):
        await alice.room.local_participant.publish_data(
            i.to_bytes(2, "big"), reliable=False, topic="position"
        )
        await asyncio.sleep(0.001)
    await eventually(lambda: len(bob.packets) >= 190)
    assert {p.kind for p in bob.packets} == {DataPacketKind.LOSSY}
    assert {p.topic for p in bob.packets} == {"position"}
    assert len({p.data for p in bob.packets}) == len(bob.packets)  # no duplicates


async def test_lossy_payload_over_one_datagram_is_fragmented(connect: Any) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await eventually(lambda: alice.room.remote_participants)
    big = os.urandom(MAX_LOSSY_PAYLOAD_BYTES)
    await alice.room.local_participant.publish_data(big, reliable=False)
    await eventually(lambda: bob.packets)
    assert bob.data() == [big]


async def test_oversized_payloads_raise_naming_the_limit(connect: Any) -> None:
    alice = await connect("alice")
    publish = alice.room.local_participant.publish_data
    with pytest.raises(ValueError, match=str(MAX_RELIABLE_PAYLOAD_BYTES)):
        await publish(b"x" * (MAX_RELIABLE_PAYLOAD_BYTES + 1))
    with pytest.raises(ValueError, match=str(MAX_LOSSY_PAYLOAD_BYTES)):
        await publish(b"x" * (MAX_LOSSY_PAYLOAD_BYTES + 1), reliable=False)


async def test_destination_identities_reach_only_those_named(connect: Any) -> None:
    alice, bob, carol, dave = [await connect(n) for n in ("alice", "bob", "carol", "dave")]
    await eventually(lambda: len(alice.room.remote_participants) == 3)
    publish = alice.room.local_participant.publish_data
    await publish("for bob", destination_identities=["bob"])
    await publish(b"for carol and dave", reliable=False, destination_identities=["carol", "dave"])
    await publish("for nobody", destination_identities=["zed"])
    await publish("everyone")
    await eventually(lambda: len(dave.packets) == 2 and len(bob.packets) == 2)
    await asyncio.sleep(0.1)
    # the reliable and lossy channels are not ordered with each other: compare as sets
    assert set(bob.data()) == {"for bob", "everyone"}
    assert set(carol.data()) == {b"for carol and dave", "everyone"}
    assert set(dave.data()) == {b"for carol and dave", "everyone"}


async def test_topic_filtering(connect: Any) -> None:
    alice = await connect("alice")
    bob = await connect("bob", topics=["chat"])
    await eventually(lambda: alice.room.remote_participants)
    publish = alice.room.local_participant.publish_data
    await publish("hi", topic="chat")
    await publish(b"xy", reliable=False, topic="position")
    await publish("weather", topic="environment")
    await publish("no topic")
    await eventually(lambda: len(bob.packets) == 2)
    await asyncio.sleep(0.1)
    assert [(p.topic, p.data) for p in bob.packets] == [("chat", "hi"), ("", "no topic")]
    await bob.room.set_subscriptions(["position"])
    await asyncio.sleep(0.05)
    await publish("hi again", topic="chat")
    await publish(b"xy", reliable=False, topic="position")
    await eventually(lambda: len(bob.packets) == 3)
    assert (bob.packets[-1].topic, bob.packets[-1].data) == ("position", b"xy")


async def test_topics_outside_the_subscription_never_reach_the_app(
    server: RoomServer, connect: Any
) -> None:
    # Until a SUBSCRIBE reaches the server (it leaves after the join, and after each
    # set_subscriptions), the server forwards by the subscription it last heard of.
    alice = await connect("alice")
    bob = await connect("bob", topics=["chat"])
    await eventually(lambda: alice.room.remote_participants)
    (room,) = server.rooms.values()
    (bob_at_server,) = (p for p in room.participants.values() if p.identity == "bob")
    await eventually(lambda: bob_at_server.subscriptions == {"chat"})
    bob_at_server.subscriptions = None  # as between bob's join and his SUBSCRIBE
    publish = alice.room.local_participant.publish_data
    await publish("weather", topic="environment")
    await publish(b"xy", reliable=False, topic="position")
    await publish("hi", topic="chat")
    await eventually(lambda: bob.packets)
    await eventually(lambda: bob.room.unsubscribed_dropped == 2)
    assert [(p.topic, p.data) for p in bob.packets] == [("chat", "hi")]


async def test_topic_names_cross_the_wire_once(server: RoomServer, connect: Any) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await eventually(lambda: alice.room.remote_participants)
    for _ in range(20):
        await alice.room.local_participant.publish_data("m", topic="a-rather-long-topic-name")
    await eventually(lambda: len(bob.packets) == 20)
    link = bob.room.link
    assert link is not None
    received = link.stats()["reliable"].bytes_received
    assert received < 20 * 12 + 200  # 20 small DATA messages and the topic name once


async def test_no_client_can_pose_as_another(connect: Any) -> None:
    alice, carol = await connect("alice"), await connect("carol")
    await connect("bob")
    await eventually(lambda: len(carol.room.remote_participants) == 2)
    bob_pid = alice.room.remote_participants["bob"].pid
    # alice writes bob's pid into the sender field of a raw DATA message
    alice.room._send(
        Kind.DATA, pid=bob_pid, topic_id=0, text=True, destinations=[], payload=b"I am bob"
    )
    await eventually(lambda: carol.packets)
    (packet,) = carol.packets
    assert packet.participant is not None and packet.participant.identity == "alice"


async def test_str_arrives_as_str_and_bytes_as_bytes(connect: Any) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await eventually(lambda: alice.room.remote_participants)
    publish = alice.room.local_participant.publish_data
    await publish("text ✓")
    await publish(b"\x00\xffbytes")
    await publish("lossy text ✓", reliable=False)
    await publish(b"\x00lossy", reliable=False)
    await eventually(lambda: len(bob.packets) == 4)
    assert sorted(bob.data(), key=repr) == sorted(
        ["text ✓", b"\x00\xffbytes", "lossy text ✓", b"\x00lossy"], key=repr
    )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"ordered": False},
        {"ordered": False, "max_retransmits": 0},
        {"ordered": True, "max_retransmits": 3},
        {"ordered": False, "max_packet_life_time": 500},
    ],
    ids=["reliable-ordered", "reliable-unordered", "lossy", "retransmits-3", "lifetime-500ms"],
)
async def test_data_tracks_deliver_under_each_reliability_setting(
    connect: Any, options: dict[str, Any]
) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await eventually(lambda: alice.room.remote_participants)
    received: list[bytes | str] = []
    subscribed: list[RemoteDataTrack] = []

    def on_subscribed(track: RemoteDataTrack, participant: Any) -> None:
        subscribed.append(track)
        track.on("message", received.append)

    bob.room.on("track_subscribed", on_subscribed)
    track = LocalDataTrack("cursor", **options)
    await alice.room.local_participant.publish_track(track)
    await eventually(lambda: subscribed)
    (remote,) = subscribed
    assert (remote.name, remote.participant.identity) == ("cursor", "alice")
    assert remote.ordered == track.ordered
    assert remote.max_retransmits == track.max_retransmits
    assert remote.max_packet_life_time == track.max_packet_life_time
    messages: list[bytes | str] = [f"m{i}" if i % 2 else i.to_bytes(2, "big") for i in range(50)]
    for message in messages:
        track.send(message)
        await asyncio.sleep(0.002)
    await eventually(lambda: len(received) == len(messages))
    if track.ordered:
        assert received == messages
    else:
        assert sorted(received, key=repr) == sorted(messages, key=repr)
    await alice.room.local_participant.unpublish_track(track)
    await eventually(lambda: "track_unpublished" in bob.names())
    assert "track_unsubscribed" in bob.names()


async def test_late_joiner_subscribes_to_existing_tracks(connect: Any) -> None:
    alice = await connect("alice")
    track = LocalDataTrack("state")
    await alice.room.local_participant.publish_track(track)
    bob = await connect("bob")
    assert "state" in bob.room.remote_participants["alice"].tracks
    await eventually(lambda: "track_subscribed" in bob.names())
    received: list[bytes | str] = []
    bob.room.remote_participants["alice"].tracks["state"].on("message", received.append)
    track.send("hello late joiner")
    await eventually(lambda: received == ["hello late joiner"])


async def test_track_names_are_checked(connect: Any) -> None:
    alice = await connect("alice")
    with pytest.raises(ValueError, match="256"):
        LocalDataTrack("x" * 257)
    with pytest.raises(ValueError, match="mutually exclusive"):
        LocalDataTrack("t", max_packet_life_time=10, max_retransmits=1)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        LocalDataTrack("t", max_retransmits=70000)
    await alice.room.local_participant.publish_track(LocalDataTrack("t"))
    with pytest.raises(TrackRefused, match="already published"):
        await alice.room.local_participant.publish_track(LocalDataTrack("t"))
    # the server checks too, whatever the client does
    future = asyncio.get_running_loop().create_future()
    alice.room.local_participant._pending_tracks[999] = future
    alice.room._send(
        Kind.PUBLISH_TRACK, request_id=999, name="t", options=track_options(True, None, None)
    )
    with pytest.raises(TrackRefused, match="already published"):
        await asyncio.wait_for(future, 5)


@pytest.mark.parametrize(
    ("make_token", "error"),
    [
        (lambda: token("eve", issued_ago=3600), TokenExpired),
        (lambda: token("eve", secret="not-the-secret-but-long-enough-too"), InvalidSignature),
        (lambda: token("eve", key="other-key"), UnknownApiKey),
        (lambda: token("eve", room_join=False), MissingGrant),
    ],
    ids=["expired", "bad-signature", "unknown-key", "missing-room-join"],
)
async def test_bad_tokens_are_refused(
    server: RoomServer, make_token: Callable[[], str], error: type[Exception]
) -> None:
    room = Room()
    with pytest.raises(error):
        await room.connect(server.url, make_token())
    assert not room.isconnected()


async def test_wrong_room_is_refused(server: RoomServer) -> None:
    with pytest.raises(WrongRoom, match="lobby"):
        await Room().connect(server.url, token("eve", room="arena"), room="lobby")


async def test_publish_requires_the_grant(connect: Any) -> None:
    alice = await connect("alice", grants={"can_publish_data": False})
    bob = await connect("bob")
    await eventually(lambda: alice.room.remote_participants)
    await alice.room.local_participant.publish_data("blocked")
    await alice.room.local_participant.publish_data(b"blocked", reliable=False)
    with pytest.raises(TrackRefused, match="permission"):
        await alice.room.local_participant.publish_track(LocalDataTrack("t"))
    await bob.room.local_participant.publish_data("fine")
    await eventually(lambda: alice.packets)
    await asyncio.sleep(0.1)
    assert bob.packets == []


async def test_malformed_client_is_disconnected_and_the_room_carries_on(
    server: RoomServer, connect: Any
) -> None:
    alice, bob, mallory = await connect("alice"), await connect("bob"), await connect("mallory")
    await eventually(lambda: len(alice.room.remote_participants) == 2)
    link = mallory.room.link
    assert link is not None
    for i in range(server.max_protocol_errors):
        link.send_reliable(b"\xee garbage" if i % 3 == 0 else b"\x06\x00")
        link.send_lossy(
            b"\x11\x00"
            if i % 3 == 1
            else encode_datagram(i, None, 0, [(FrameType.DATA, b"\x00\x09\x07")])
        )
    await eventually(lambda: not mallory.room.isconnected())
    await eventually(lambda: "mallory" not in alice.room.remote_participants)
    assert server.protocol_errors >= server.max_protocol_errors
    await alice.room.local_participant.publish_data("still here")
    await eventually(lambda: bob.data() == ["still here"])


async def test_same_identity_replaces_the_older_connection(connect: Any) -> None:
    first = await connect("alice")
    await connect("alice")
    await eventually(lambda: not first.room.isconnected())


async def test_server_in_another_process() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from netcode.cli import server_main; server_main()",
            "--port",
            "0",
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20)
        url = re.search(r"listening on (\S+)", line)
        assert url, line
        alice, bob = Room(), Room()
        got: list[DataPacket] = []
        bob.on("data_received", got.append)
        await alice.connect(url.group(1), token("alice"))
        await bob.connect(url.group(1), token("bob"))
        await eventually(lambda: alice.remote_participants)
        await alice.local_participant.publish_data("over there", topic="chat")
        await alice.local_participant.publish_data(b"lossy", reliable=False)
        await eventually(lambda: len(got) == 2)
        assert {(p.participant.identity, p.data) for p in got if p.participant} == {
            ("alice", "over there"),
            ("alice", b"lossy"),
        }
        await alice.disconnect()
        await bob.disconnect()
    finally:
        process.terminate()
        process.wait(10)


async def test_a_client_that_stops_reading_is_disconnected(
    server: RoomServer, connect: Any
) -> None:
    alice, bob, carol = await connect("alice"), await connect("bob"), await connect("carol")
    await eventually(lambda: len(alice.room.remote_participants) == 2)
    room = server.rooms["arena"]
    slow = room.by_identity("bob")
    assert slow is not None
    # bob's SCTP queue fills up as if bob had stopped reading
    slow.link.send_backlog = lambda: server.max_backlog_bytes + 1  # type: ignore[method-assign]
    await alice.room.local_participant.publish_data("for everyone")
    await eventually(lambda: not bob.room.isconnected())
    assert server.slow_disconnects == 1
    await alice.room.local_participant.publish_data("still here")
    await eventually(lambda: carol.data() == ["for everyone", "still here"])


async def test_rooms_are_isolated(server: RoomServer) -> None:
    clients = {}
    for identity, room_name in (("ann", "red"), ("ben", "red"), ("cat", "blue"), ("dan", "blue")):
        room = Room()
        clients[identity] = Client(room)
        await room.connect(server.url, token(identity, room=room_name))
    await eventually(lambda: set(server.rooms) == {"red", "blue"})
    # a join is announced to the others on their own links: it may land just after the
    # joiner's connect() returned
    await eventually(lambda: set(clients["cat"].room.remote_participants) == {"dan"})
    assert set(clients["ann"].room.remote_participants) == {"ben"}
    await clients["ann"].room.local_participant.publish_data("red only")
    await clients["cat"].room.local_participant.publish_data(b"blue only", reliable=False)
    await eventually(lambda: clients["ben"].packets and clients["dan"].packets)
    await asyncio.sleep(0.1)
    assert clients["ben"].data() == ["red only"]
    assert clients["dan"].data() == [b"blue only"]
    for client in clients.values():
        await client.room.disconnect()
    await eventually(lambda: not server.rooms)  # empty rooms are closed


async def test_destinations_given_as_a_generator(connect: Any) -> None:
    alice, bob, carol = await connect("alice"), await connect("bob"), await connect("carol")
    await eventually(lambda: len(alice.room.remote_participants) == 2)
    publish = alice.room.local_participant.publish_data
    await publish("nobody here", destination_identities=(i for i in ["zed"]))
    await publish("for bob", destination_identities=(i for i in ["bob"]))
    await eventually(lambda: bob.packets)
    await asyncio.sleep(0.1)
    assert bob.data() == ["for bob"]
    assert carol.packets == []
