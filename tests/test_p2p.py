"""Peer-to-peer rooms and listen servers end to end over real aiortc on 127.0.0.1.

In a P2P room every pair of participants has its own peer connection; the room server
admits, brokers offers and answers, and relays no data. These tests check that every kind
of data reaches exactly the intended peers with the sender's authenticated identity, that
the server carries none of it (counted), that the mesh follows participants coming and
going, and that a listen host's game replicates to its peers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from helpers import eventually

from netcode.auth import AccessToken, Grants, MissingGrant
from netcode.replication import SchemaRegistry, entity, qfloat
from netcode.rooms import (
    DataPacket,
    DataPacketKind,
    LocalDataTrack,
    RemoteDataTrack,
    Room,
    RoomServer,
    RpcError,
    RpcErrorCode,
    RpcInvocationData,
    ServerParticipant,
    StreamError,
    TextStreamReader,
)
from netcode.rooms.events import Chat, Spawn
from netcode.rooms.host import GameHost
from netcode.rooms.protocol import ExtensionChannel, Kind
from netcode.rooms.replica import Replica
from netcode.wire import FrameType

pytestmark = pytest.mark.webrtc

KEY, SECRET = "p2p-key", "p2p-secret-p2p-secret-p2p-secret-p2p!"
REGISTRY = SchemaRegistry()


@entity(type_id=1, registry=REGISTRY)
class Player:
    x: float = qfloat(0, 100, 0.01)
    y: float = qfloat(0, 100, 0.01)


def token(identity: str, room: str = "duel", **grants: Any) -> str:
    grant = Grants(**{"room_join": True, "room": room, **grants})
    return AccessToken(KEY, SECRET).with_identity(identity).with_grants(grant).to_jwt()


class Peer:
    """A connected Room in a P2P room, recording what it receives."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.packets: list[DataPacket] = []
        self.events: list[tuple[Any, str | None, str]] = []
        self.track_messages: list[tuple[str, str, bytes | str]] = []
        self.streams: list[tuple[str, str, str]] = []
        self.happenings: list[tuple[str, Any]] = []
        room.on("data_received", self.packets.append)
        for event_cls in (Chat, Spawn):
            room.on_event(event_cls, self._on_event)
        room.on("track_subscribed", self._on_track)
        for name in ("participant_connected", "participant_disconnected", "disconnected"):
            room.on(name, lambda *args, name=name: self.happenings.append((name, args)))

        async def on_text(reader: TextStreamReader, identity: str) -> None:
            self.streams.append((identity, reader.info.topic, await reader.read_all()))

        room.register_text_stream_handler("notes", on_text)

    def _on_event(self, event: Any, participant: Any, topic: str) -> None:
        self.events.append((event, participant.identity if participant else None, topic))

    def _on_track(self, track: RemoteDataTrack, participant: Any) -> None:
        track.on(
            "message",
            lambda message: self.track_messages.append((participant.identity, track.name, message)),
        )

    @property
    def identity(self) -> str:
        return self.room.local_participant.identity

    def data(self, topic: str | None = None) -> list[tuple[str, bytes | str]]:
        return [
            (p.participant.identity if p.participant else "", p.data)
            for p in self.packets
            if topic is None or p.topic == topic
        ]


class ServerTap:
    """Counts what the room server receives from its participants, by message kind and
    frame type, and the bytes on its links' channels."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kinds: Counter[str] = Counter()
        self.frames: Counter[int] = Counter()
        tap = self
        on_reliable = ServerParticipant.on_reliable
        on_event = ServerParticipant._on_event

        def tapped_reliable(participant: ServerParticipant, data: bytes | str) -> None:
            if isinstance(data, bytes) and data:
                tap.kinds[Kind(data[0]).name] += 1
            on_reliable(participant, data)

        def tapped_event(participant: ServerParticipant, event: Any) -> None:
            frame_type = getattr(event, "frame_type", None)
            if frame_type is not None:
                tap.frames[frame_type] += 1
            on_event(participant, event)

        monkeypatch.setattr(ServerParticipant, "on_reliable", tapped_reliable)
        monkeypatch.setattr(ServerParticipant, "_on_event", tapped_event)


@pytest.fixture
async def server() -> AsyncIterator[RoomServer]:
    server = RoomServer(KEY, SECRET, room_types={"duel": "p2p"})
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


@pytest.fixture
async def join(server: RoomServer) -> AsyncIterator[Callable[..., Any]]:
    rooms: list[Room] = []

    async def join(identity: str, **grants: Any) -> Peer:
        room = Room()
        peer = Peer(room)
        rooms.append(room)
        await room.connect(server.url, token(identity, **grants))
        return peer

    yield join
    for room in rooms:
        await room.disconnect()


async def mesh_up(*peers: Peer, timeout: float = 10.0) -> None:
    names = {p.identity for p in peers}
    for peer in peers:
        assert peer.room.mesh is not None
        await peer.room.mesh.wait_connected(names - {peer.identity}, timeout=timeout)


async def test_direct_links_connect_through_the_server_with_no_signaling_of_their_own() -> None:
    from netcode.transport.direct import accept_answer, answer_link, offer_link

    offerer, offer = await offer_link(include_loopback=True)
    answerer, answer = await answer_link(offer, include_loopback=True)
    await accept_answer(offerer, answer)
    try:
        await asyncio.gather(offerer.wait_open(10), answerer.wait_open(10))
        got: asyncio.Future[bytes | str] = asyncio.get_running_loop().create_future()
        answerer.on_reliable(got.set_result)
        offerer.send_reliable(b"hello")
        assert await asyncio.wait_for(got, 5) == b"hello"
    finally:
        await offerer.close()
        await answerer.close()


async def test_every_kind_of_data_reaches_exactly_the_intended_peers_and_never_the_server(
    server: RoomServer, join: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = ServerTap(monkeypatch)
    alice, bob, carol, dave = [await join(name) for name in ("alice", "bob", "carol", "dave")]
    peers = [alice, bob, carol, dave]
    await mesh_up(*peers)
    assert server.room_type("duel") == "p2p"
    for peer in peers:
        others = {p.identity for p in peers} - {peer.identity}
        assert set(peer.room.remote_participants) == others
    await dave.room.set_subscriptions(["chat", "notes"])
    await asyncio.sleep(0.2)  # the SUBSCRIBE reaches dave's peers

    # publish_data: reliable to everyone, lossy to one, topics filtered at the sender
    lp = alice.room.local_participant
    for i in range(20):
        await lp.publish_data(f"line {i}", reliable=True, topic="chat")
    await lp.publish_data(
        b"\x01" * 3000, reliable=False, topic="pos", destination_identities="carol"
    )
    await lp.publish_data(b"\x02", reliable=False, topic="pos")
    await bob.room.local_participant.publish_data(b"to-dave", destination_identities=["dave"])

    # game events: in order, exactly once, to the destinations named
    for i in range(30):
        bob.room.send_event(Chat(f"e{i}"), destination_identities=["alice", "dave"], topic="chat")
    # over a datagram (the reliable-channel fallback), on a topic dave does not take
    carol.room.send_event(Spawn(entity_id=7, kind="x" * 2000), topic="pos")

    # RPC: the callee sees the caller's authenticated identity
    async def whoami(data: RpcInvocationData) -> str:
        return f"{data.caller_identity} said {data.payload}"

    await bob.room.local_participant.register_rpc_method("whoami", whoami)
    answer = await carol.room.local_participant.perform_rpc(
        destination_identity="bob", method="whoami", payload="hi"
    )
    assert answer == "carol said hi"
    with pytest.raises(RpcError) as refused:
        await carol.room.local_participant.perform_rpc(
            destination_identity="nobody", method="whoami", payload=""
        )
    assert refused.value.code == RpcErrorCode.RECIPIENT_NOT_FOUND
    with pytest.raises(RpcError) as unsupported:
        await carol.room.local_participant.perform_rpc(
            destination_identity="dave", method="whoami", payload=""
        )
    assert unsupported.value.code == RpcErrorCode.UNSUPPORTED_METHOD

    # streams: every receiver has it before send_text returns
    text = "stream " * 30_000  # 210 KB, 14 chunks
    info = await alice.room.local_participant.send_text(
        text, topic="notes", destination_identities=["carol", "dave"]
    )
    assert info.size == len(text)

    # data tracks: each reliability setting, end to end on the publisher's own channels
    cursor = LocalDataTrack("cursor", ordered=False, max_retransmits=0)
    log = LocalDataTrack("log", ordered=True)
    fast = LocalDataTrack("fast", max_packet_life_time=100)
    for track in (cursor, log, fast):
        await carol.room.local_participant.publish_track(track)
    await eventually(
        lambda: all(
            len(p.room.remote_participants["carol"].tracks) == 3
            and all(t.is_subscribed for t in p.room.remote_participants["carol"].tracks.values())
            for p in (alice, bob, dave)
        )
    )
    remote_cursor = alice.room.remote_participants["carol"].tracks["cursor"]
    assert remote_cursor.channel is not None
    assert not remote_cursor.channel.ordered and remote_cursor.channel.max_retransmits == 0
    remote_fast = alice.room.remote_participants["carol"].tracks["fast"]
    assert remote_fast.channel is not None and remote_fast.channel.max_packet_life_time == 100
    for i in range(5):
        assert cursor.send(f"c{i}")
        assert log.send(f"l{i}".encode())
        assert fast.send("f")

    # everything arrived where it should, from whom it should
    await eventually(lambda: len(bob.data("chat")) == 20 and len(carol.data("chat")) == 20)
    await eventually(lambda: len(dave.data("chat")) == 20)
    lines = [("alice", f"line {i}") for i in range(20)]
    assert bob.data("chat") == carol.data("chat") == dave.data("chat") == lines
    await eventually(lambda: len(carol.data("pos")) == 2 and len(bob.data("pos")) == 1)
    assert carol.data("pos") == [("alice", b"\x01" * 3000), ("alice", b"\x02")]
    assert {p.kind for p in carol.packets if p.topic == "pos"} == {DataPacketKind.LOSSY}
    assert dave.data("pos") == []  # dave subscribes to chat and notes only
    assert dave.data("") == [("bob", b"to-dave")] and alice.data("") == carol.data("") == []
    chats = [(Chat(f"e{i}"), "bob", "chat") for i in range(30)]
    await eventually(lambda: len(alice.events) >= 31 and len(dave.events) >= 30)
    assert [e for e in alice.events if e[1] == "bob"] == chats
    assert [e for e in dave.events if e[1] == "bob"] == chats
    assert [e for e in bob.events if e[1] == "bob"] == carol.events[:0] == []
    spawn = (Spawn(entity_id=7, kind="x" * 2000), "carol", "pos")
    assert spawn in alice.events and spawn in bob.events and spawn not in dave.events
    await eventually(lambda: len(carol.streams) == 1 and len(dave.streams) == 1)
    assert carol.streams == dave.streams == [("alice", "notes", text)]
    assert bob.streams == []
    await eventually(lambda: all(len(p.track_messages) >= 15 for p in (alice, bob, dave)))
    for peer in (alice, bob, dave):
        by_track: dict[str, list[bytes | str]] = {}
        for who, name, message in peer.track_messages:
            assert who == "carol"
            by_track.setdefault(name, []).append(message)
        assert by_track["log"] == [f"l{i}".encode() for i in range(5)]
        assert sorted(by_track["cursor"]) == [f"c{i}" for i in range(5)]  # type: ignore[type-var]
    assert carol.track_messages == []

    # the room server relayed none of it
    for participant in server.rooms["duel"].participants.values():
        assert participant.packets_relayed == 0
        assert all(
            track.relayed == 0 and not track.outbound for track in participant.tracks.values()
        )
        assert participant.link is not None
        stats = participant.link.stats()
        assert set(stats) == {"reliable", "lossy"}  # no track channel reached the server
        assert stats["reliable"].bytes_received < 20_000  # signaling and control only
    assert server.rpc.relayed == 0 and server.streams.relayed == 0
    data_kinds = {"DATA", "TOPIC", "EXTENSION"}
    assert not data_kinds & set(tap.kinds), tap.kinds
    assert tap.kinds["PEER_OFFER"] == tap.kinds["PEER_ANSWER"] == 6  # one per pair
    assert not {FrameType.DATA, FrameType.EVENT} & set(tap.frames), tap.frames
    assert server.rooms["duel"].signals_relayed == 12
    sent = sum(
        link_stats.bytes_sent
        for peer in peers
        for pair in peer.room.mesh.pairs.values()  # type: ignore[union-attr]
        if pair.link is not None
        for link_stats in pair.link.stats().values()
    )
    assert sent > 400_000  # what went peer to peer instead


async def test_a_peer_cannot_pose_as_another(join: Callable[..., Any]) -> None:
    alice, bob, carol = [await join(name) for name in ("alice", "bob", "carol")]
    await mesh_up(alice, bob, carol)
    mesh = bob.room.mesh
    assert mesh is not None
    alice_pid = alice.room.local_participant.pid
    carol_pid = carol.room.local_participant.pid
    pair = mesh.pairs[alice_pid]
    # bob writes carol's pid, then the game host's pid 0, into what he sends alice
    pair.send_data(carol_pid, "", False, b"forged", lossy=False)
    pair.send_data(0, "", False, b"forged-lossy", lossy=True)
    pair.events.send_down(1, carol_pid, "", b"\x06forged")  # Chat("forged")
    pair.connection.schedule_flush()
    # an RPC request naming carol as the caller
    from netcode.rooms.rpc import RPC_VERSION, RpcMessageType, encode_rpc

    async def whoami(data: RpcInvocationData) -> str:
        return data.caller_identity

    await alice.room.local_participant.register_rpc_method("whoami", whoami)
    pair.send_extension(
        ExtensionChannel.RPC,
        encode_rpc(
            RpcMessageType.REQUEST,
            request_id=99,
            version=RPC_VERSION,
            identity="carol",
            method="whoami",
            response_timeout_ms=1000,
            payload=b"",
        ),
        pid=carol_pid,
    )
    # a channel of carol's track, opened by bob
    track = LocalDataTrack("pen")
    await carol.room.local_participant.publish_track(track)
    await eventually(lambda: "pen" in alice.room.remote_participants["carol"].tracks)
    assert pair.link is not None
    pair.link.create_channel(f"track/{track.sid}")
    await eventually(lambda: len(alice.packets) == 2 and len(alice.events) == 1)
    # (lossy and reliable data keep no order between them)
    assert sorted(alice.data()) == [("bob", b"forged"), ("bob", b"forged-lossy")]
    assert alice.events == [(Chat("forged"), "bob", "")]
    alice_pair = alice.room.mesh.pairs[bob.room.local_participant.pid]  # type: ignore[union-attr]
    await eventually(lambda: alice_pair.protocol_errors >= 1)
    remote = alice.room.remote_participants["carol"].tracks["pen"]
    await eventually(lambda: remote.is_subscribed)
    track.send("from carol")
    await eventually(lambda: alice.track_messages == [("carol", "pen", "from carol")])


async def test_lossy_data_goes_straight_on_the_pair_once_its_topic_is_known(
    join: Callable[..., Any],
) -> None:
    alice, bob = await join("alice"), await join("bob")
    await mesh_up(alice, bob)
    assert alice.room.mesh is not None and bob.room.mesh is not None
    pair = alice.room.mesh.pairs[bob.room.local_participant.pid]
    frames = pair.connection.endpoint.counters.frames_sent
    # the first packet on a topic names it inline, through the endpoint (it wants an ack)
    alice.room.publish_data(b"first", False, [], "pos")
    await eventually(lambda: bob.data("pos") == [("alice", b"first")])
    assert frames[FrameType.DATA] == 1
    await eventually(lambda: pair.topics_out.lossy_ref("pos")[1] is None)
    # then packets that fit one datagram skip the endpoint; big ones are still fragments
    for i in range(20):
        alice.room.publish_data(b"p%d" % i, False, [], "pos")
    alice.room.publish_data(b"x" * 4000, False, [], "pos")
    await eventually(lambda: len(bob.data("pos")) == 22)
    assert frames[FrameType.DATA] == 1
    assert frames[FrameType.FRAGMENT] >= 4
    assert sorted(data for _, data in bob.data("pos")[1:21]) == sorted(
        b"p%d" % i for i in range(20)
    )
    # hostile bytes on the lossy channel are counted as protocol errors and change nothing
    bob_pair = bob.room.mesh.pairs[alice.room.local_participant.pid]
    assert pair.link is not None
    for junk in (b"\x00", b"\x00\x00\x01\x00\x07\x00", b"\x2a" * 30, b"\x00" + b"\xff" * 40):
        pair.link.send_lossy(junk)
    await eventually(lambda: bob_pair.protocol_errors >= 4)
    assert bob_pair.state == "open"
    alice.room.publish_data(b"after", False, [], "pos")
    await eventually(lambda: bob.data("pos")[-1] == ("alice", b"after"))


async def test_the_mesh_follows_participants_who_join_late_and_leave(
    server: RoomServer, join: Callable[..., Any]
) -> None:
    alice, bob, carol = [await join(name) for name in ("alice", "bob", "carol")]
    await mesh_up(alice, bob, carol)
    track = LocalDataTrack("cursor")
    await alice.room.local_participant.publish_track(track)
    dave = await join("dave")
    await mesh_up(alice, bob, carol, dave)
    for peer in (alice, bob, carol):
        assert ("participant_connected", (peer.room.remote_participants["dave"],)) in (
            peer.happenings
        )
    await eventually(
        lambda: (
            dave.room.remote_participants["alice"].tracks.get("cursor") is not None
            and dave.room.remote_participants["alice"].tracks["cursor"].is_subscribed
        )
    )
    # (as from a group room's server, a track reaches a subscriber once its channel is open)
    fanout = alice.room.mesh.local_tracks[track.sid]  # type: ignore[union-attr,index]
    dave_pid = dave.room.local_participant.pid
    await eventually(lambda: fanout.channels[dave_pid].ready_state == "open")
    track.send("hi dave")
    await carol.room.local_participant.publish_data("welcome", destination_identities="dave")
    await eventually(lambda: dave.track_messages == [("alice", "cursor", "hi dave")])
    await eventually(lambda: dave.data() == [("carol", "welcome")])

    bob_pid = bob.room.local_participant.pid
    bob_links = [pair.link for pair in bob.room.mesh.pairs.values()]  # type: ignore[union-attr]
    await bob.room.disconnect()
    for peer in (alice, carol, dave):
        await eventually(lambda peer=peer: "bob" not in peer.room.remote_participants)
        assert bob_pid not in peer.room.mesh.pairs  # type: ignore[union-attr]
        assert peer.happenings[-1][0] == "participant_disconnected"
    for link in bob_links:
        assert link is not None
        await eventually(link.closed.is_set)
    await alice.room.local_participant.publish_data("after", topic="chat")
    await eventually(lambda: dave.data("chat") == [("alice", "after")])
    assert len(server.rooms["duel"].participants) == 3


async def test_a_dead_pair_is_rebuilt_through_the_server(join: Callable[..., Any]) -> None:
    alice, bob = await join("alice"), await join("bob")
    await mesh_up(alice, bob)
    mesh = alice.room.mesh
    assert mesh is not None
    pair = mesh.pairs[bob.room.local_participant.pid]
    old = pair.link
    assert old is not None
    await old.pc.close()  # the path dies under the pair
    await eventually(lambda: pair.links_used == 2 and pair.is_open, timeout=8)
    await mesh_up(alice, bob)
    bob.room.send_event(Chat("again"))
    await eventually(lambda: alice.events == [(Chat("again"), "bob", "")])


async def test_grants_hold_on_the_mesh(server: RoomServer, join: Callable[..., Any]) -> None:
    alice = await join("alice")
    mute = await join("mute", can_publish_data=False)
    deaf = await join("deaf", can_subscribe=False)
    await mesh_up(alice, mute, deaf)
    await mute.room.local_participant.publish_data("hello")
    await alice.room.local_participant.publish_data("to all")
    with pytest.raises(StreamError, match="permission denied"):
        await mute.room.local_participant.send_text("note", topic="notes")
    # a client that skips its own checks: the receiver refuses what the token does not allow
    mute_mesh, alice_mesh = mute.room.mesh, alice.room.mesh
    assert mute_mesh is not None and alice_mesh is not None
    alice_pid, mute_pid = alice.room.local_participant.pid, mute.room.local_participant.pid
    mute_mesh.pairs[alice_pid].send_data(mute_pid, "", False, b"sneaky", lossy=False)
    await eventually(lambda: mute.data() == [("alice", "to all")])
    await eventually(lambda: alice_mesh.pairs[mute_pid].dropped == 1)
    assert alice.data() == [] and deaf.data() == []  # deaf subscribes to nothing


async def test_one_host_per_room(server: RoomServer, join: Callable[..., Any]) -> None:
    host = await join("host", room_host=True)
    assert host.room.mesh is not None and host.room.mesh.is_host
    with pytest.raises(MissingGrant, match="already has a host"):
        await join("usurper", room_host=True)
    client = await join("client")
    assert client.room.mesh is not None
    assert client.room.mesh.host_pid == host.room.local_participant.pid


async def test_group_rooms_refuse_p2p_hosting(server: RoomServer) -> None:
    room = Room()
    await room.connect(server.url, token("solo", room="lobby"))
    try:
        assert room.mesh is None and server.room_type("lobby") == "group"
        with pytest.raises(Exception, match="peer-to-peer"):
            room.host_game(GameHost())
    finally:
        await room.disconnect()


async def test_a_listen_server_game_replicates_to_three_clients(
    server: RoomServer, join: Callable[..., Any]
) -> None:
    host_peer = await join("host", room_host=True)
    game = GameHost(tick_rate=30, registry=REGISTRY)
    players: dict[int, int] = {}
    inputs: list[tuple[str, int]] = []
    left: list[str] = []

    def on_join(participant: Any) -> None:
        players[participant.pid] = eid = game.world.spawn(Player(x=10, y=10))
        game.assign_entity(participant, eid)

    def on_input(participant: Any, tick: int, data: bytes) -> None:
        inputs.append((participant.identity, tick))
        eid = players[participant.pid]
        game.world.update(eid, x=min(99.0, game.world.get(eid).x + data[0] / 10))

    def on_tick(tick: int, dt: float) -> None:
        for i, eid in enumerate(players.values()):
            game.world.update(eid, y=50 + 20 * math.sin(tick / 10 + i))

    game.on_join, game.on_input, game.on_tick = on_join, on_input, on_tick
    game.on_leave = lambda participant: left.append(participant.identity)
    listen = host_peer.room.host_game(game)
    clients: list[tuple[Peer, Replica]] = []
    for name in ("ann", "ben", "cat"):
        room = Room()
        replica = Replica(room, registry=REGISTRY)
        peer = Peer(room)
        await room.connect(server.url, token(name))
        clients.append((peer, replica))
    try:
        await eventually(lambda: len(players) == 3, timeout=10)
        await eventually(
            lambda: all(len(replica.entities()) == 3 for _, replica in clients), timeout=5
        )
        for tick in range(1, 16):
            for _, replica in clients:
                replica.send_input(tick, bytes([10]))
            await asyncio.sleep(1 / 30)
        await eventually(lambda: len(inputs) >= 45, timeout=5)
        for peer, replica in clients:
            own = replica.own_entity_id
            assert own is not None and own == players[peer.room.local_participant.pid]
            await eventually(lambda replica=replica, own=own: replica.get(own).x > 20)
            assert replica.hub.timeline is not None and replica.hub.timeline.tick_rate == 30
            assert replica.server_time() is not None
            ticks = replica.latest_tick
            await asyncio.sleep(0.2)
            assert replica.latest_tick is not None and ticks is not None
            assert replica.latest_tick > ticks  # still replicating
        game.send_event(Chat("from the host"))
        await eventually(lambda: all(p.events for p, _ in clients))
        for peer, _ in clients:
            assert peer.events == [(Chat("from the host"), None, "")]  # the game host: None
        assert set(listen.participants) == set(players)
        # the room server carried none of the game
        for participant in server.rooms["duel"].participants.values():
            assert participant.packets_relayed == 0
        # the host leaves: the game is over for everyone, and they are told why
        started = time.monotonic()
        await host_peer.room.disconnect()
        for peer, _ in clients:
            await eventually(lambda peer=peer: peer.happenings[-1][0] == "disconnected")
            assert peer.happenings[-1] == ("disconnected", ("host_left",))
        assert time.monotonic() - started < 3
        await game.stop()
    finally:
        for peer, _ in clients:
            await peer.room.disconnect()


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("payload", [b"", b"x", bytes(range(256)) * 60])
def test_the_fast_data_codec_matches_the_declaration(text: bool, payload: bytes) -> None:
    from netcode.rooms.p2p import decode_peer_data_untrusted, encode_peer_data
    from netcode.rooms.protocol import decode_message_untrusted, encode_message

    fast = encode_peer_data(513, 7, text, payload)
    declared = encode_message(
        Kind.DATA, pid=513, topic_id=7, text=text, destinations=[], payload=payload
    )
    assert fast == declared
    assert decode_peer_data_untrusted(declared) == (513, 7, text, payload)
    kind, body = decode_message_untrusted(fast)
    assert (kind, body.pid, body.topic_id, body.text, body.payload) == (
        Kind.DATA,
        513,
        7,
        text,
        payload,
    )
    # anything else goes to the declared parser
    with_destinations = encode_message(
        Kind.DATA, pid=1, topic_id=0, text=False, destinations=[2], payload=b""
    )
    assert decode_peer_data_untrusted(with_destinations) is None
    assert decode_peer_data_untrusted(encode_message(Kind.TOPIC, topic_id=1, name="x")) is None
    assert decode_peer_data_untrusted(fast[:5]) is None
    assert decode_peer_data_untrusted("text") is None


async def test_an_idle_room_keeps_its_links() -> None:
    """Server links and direct links PING every second even when nothing is sent, so a
    quiet room outlives ``dead_after``."""
    server = RoomServer(KEY, SECRET, room_types={"duel": "p2p"}, dead_after=1.5)
    await server.start("127.0.0.1", 0)
    rooms = [Room(), Room()]
    try:
        for room, name in zip(rooms, ("alice", "bob"), strict=True):
            await room.connect(server.url, token(name))
        for room in rooms:
            assert room.mesh is not None
            await room.mesh.wait_connected()
        await asyncio.sleep(3.0)
        for room in rooms:
            assert room.reconnects == 0 and room.isconnected()
            assert room.mesh is not None
            assert [pair.links_used for pair in room.mesh.pairs.values()] == [1]
    finally:
        for room in rooms:
            await room.disconnect()
        await server.stop()


def test_netcode_demo_listen_arguments() -> None:
    from demo_game.main import _parse_args

    args = _parse_args(["--listen"])
    assert (args.listen_host, args.listen_port) == ("127.0.0.1", 0)
    args = _parse_args(["--listen", "0.0.0.0:7880", "--guests", "1"])
    assert (args.listen_host, args.listen_port, args.guests) == ("0.0.0.0", 7880, 1)
    for bad in (["--listen", "nowhere"], ["--listen", "--connect", "http://x:1", "--token", "t"]):
        with pytest.raises(SystemExit):
            _parse_args(bad)


@pytest.mark.slow
def test_netcode_demo_listen_server_and_a_player_joining_it() -> None:
    """``netcode-demo --listen`` hosts the arena peer to peer; a second process joins with
    ``--connect URL --token T`` (a token the first one printed) and plays."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    demo = (sys.executable, "-m", "demo_game", "--headless")
    host = subprocess.Popen(
        [*demo, "--listen", "--bots", "1", "--guests", "1", "--duration", "14"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )
    try:
        assert host.stdout is not None
        line = ""
        while "--connect" not in line:
            line = host.stdout.readline()
            assert line, host.stderr.read() if host.stderr else ""
        command = line.split("netcode-demo ", 1)[1].split()
        guest = subprocess.run(
            [*demo, *command, "--duration", "6"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=root,
        )
        assert guest.returncode == 0, guest.stderr
        assert "joined room 'arena'" in guest.stdout
        moving = guest.stdout.split("players seen moving: ")[1].splitlines()[0]
        assert moving != "none", guest.stdout  # the host's game replicates to the guest
        _, errors = host.communicate(timeout=60)
        assert host.returncode == 0, errors
    finally:
        host.kill()


async def test_netcode_server_p2p_room_and_a_room_host_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``netcode-server --p2p-room NAME`` makes NAME peer to peer; ``netcode-token
    --room-host`` grants hosting it."""
    import re
    import subprocess
    import sys

    from netcode.cli import token_main

    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from netcode.cli import server_main; server_main()",
            "--dev",
            "--port",
            "0",
            "--p2p-room",
            "duel",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    rooms = [Room(), Room()]
    try:
        assert process.stdout is not None
        text = "".join([process.stdout.readline() for _ in range(5)])
        url = re.search(r"listening on (http://\S+)", text)
        key = re.search(r"development key:\s+(\S+)", text)
        secret = re.search(r"development secret:\s+(\S+)", text)
        assert url and key and secret
        argv = ["--api-key", key.group(1), "--api-secret", secret.group(1), "--room", "duel"]
        tokens = []
        for extra in (["--identity", "host", "--room-host"], ["--identity", "guest"]):
            assert token_main([*argv, *extra]) == 0
            tokens.append(capsys.readouterr().out.strip())
        for room, room_token in zip(rooms, tokens, strict=True):
            await room.connect(url.group(1), room_token)
        host, guest = rooms
        assert host.mesh is not None and host.mesh.is_host
        assert guest.mesh is not None
        mesh = guest.mesh
        # the host's PEER_INFO follows the guest's JOINED: it may not have arrived yet
        await eventually(lambda: mesh.host_pid == host.local_participant.pid)
        await mesh.wait_connected(["host"])
    finally:
        for room in rooms:
            await room.disconnect()
        process.terminate()
        process.wait(10)


async def test_a_peer_that_floods_its_direct_link_is_refused(server: RoomServer) -> None:
    """Each peer has inbound budgets on its direct link, as on the server's: over them, the
    receiver drops the pair and does not rebuild it while the flooder stays."""
    from netcode.rooms.limits import PeerBudgets

    budgets = PeerBudgets(datagrams_per_s=50, flood_after_s=0.5, burst_s=1.0)
    alice, bob, carol = Room(peer_budgets=budgets), Room(), Room()
    rooms = [alice, bob, carol]
    try:
        for room, name in zip(rooms, ("alice", "bob", "carol"), strict=True):
            await room.connect(server.url, token(name))
        for room in rooms:
            assert room.mesh is not None
            await room.mesh.wait_connected()
        assert alice.mesh is not None and bob.mesh is not None
        for _ in range(400):  # well-formed, but far more than 50 datagrams a second
            bob.publish_data(b"x", False, ["alice"], "")
            await asyncio.sleep(0.0005)
        pair = alice.mesh.pairs[bob.local_participant.pid]
        await eventually(lambda: pair.state == "refused", timeout=5)
        assert "flooding" in pair.refused and alice.mesh.refusals == 1
        await asyncio.sleep(1.5)  # bob's side sees the link die and offers again: ignored
        assert pair.state == "refused" and pair.links_used == 1
        got: list[DataPacket] = []
        alice.on("data_received", got.append)
        await carol.local_participant.publish_data("still here", destination_identities="alice")
        await eventually(lambda: [p.data for p in got] == ["still here"])
    finally:
        for room in rooms:
            await room.disconnect()
