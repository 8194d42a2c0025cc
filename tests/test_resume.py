"""Sessions outlive links: dead-peer detection, resume after a drop, and the end of a session.

End to end over real aiortc on 127.0.0.1, with the impairment *under* aiortc (every UDP
datagram of the client's peer connections), so SCTP, DTLS and ICE see the blackout too.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
from helpers import eventually

from netcode.auth import AccessToken, Grants
from netcode.rooms import ConnectionState, DataPacket, Room, RoomServer
from netcode.rooms.events import event_type
from netcode.transport.impair import ImpairedPath, Impairment

pytestmark = pytest.mark.webrtc

KEY = "test-key"
SECRET = "test-secret-that-is-long-enough-for-hs256!"


@event_type(type_id=90)
@attrs.frozen
class Counted:
    n: int


def token(identity: str, room: str = "arena", ttl: float = 600) -> str:
    grant = Grants(room_join=True, room=room)
    return (
        AccessToken(KEY, SECRET).with_identity(identity).with_grants(grant).with_ttl(ttl).to_jwt()
    )


class Peer:
    """A room that records what it receives and the session events it sees."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.data: list[str] = []
        self.events: list[int] = []
        self.seen: list[str] = []
        room.on("data_received", self._on_data)
        room.on_event(Counted, lambda event, participant, topic: self.events.append(event.n))
        for name in (
            "reconnecting",
            "reconnected",
            "disconnected",
            "participant_reconnecting",
            "participant_reconnected",
            "participant_disconnected",
        ):
            room.on(name, self._recorder(name))

    def _on_data(self, packet: DataPacket) -> None:
        if isinstance(packet.data, str):
            self.data.append(packet.data)

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.seen.append(name if name != "disconnected" else f"disconnected:{args[0]}")

        return record


@pytest.fixture
async def server() -> AsyncIterator[RoomServer]:
    # dead_after 1 s keeps the tests short; the defaults (3 s, 20 s) are tested the same
    # way in the slow suite.
    server = RoomServer(KEY, SECRET, dead_after=1.0, grace_period=4.0)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


async def pair(server: RoomServer) -> tuple[Peer, Peer, ImpairedPath]:
    path = ImpairedPath(Impairment(seed=1))
    alice, bob = Peer(Room()), Peer(Room())
    await alice.room.connect(server.url, token("alice"), impairment=path)
    await bob.room.connect(server.url, token("bob"))
    await eventually(lambda: "alice" in bob.room.remote_participants)
    return alice, bob, path


async def send_stream(sender: Peer, count: int, prefix: str, every: float = 0.05) -> None:
    """Reliable data and game events, one of each every ``every`` seconds."""
    for n in range(count):
        await sender.room.local_participant.publish_data(f"{prefix}{n}", topic="chat")
        sender.room.send_event(Counted(n))
        await asyncio.sleep(every)


async def test_a_blackout_ends_in_reconnected_with_nothing_lost_or_duplicated(
    server: RoomServer,
) -> None:
    alice, bob, path = await pair(server)
    await bob.room.local_participant.register_rpc_method("echo", _echo)

    sending = asyncio.gather(send_stream(alice, 120, "a"), send_stream(bob, 120, "b"))
    await asyncio.sleep(0.5)
    path.blackout(3.0)  # everything alice's peer connection sends or receives is dropped
    started = time.monotonic()
    await eventually(lambda: "reconnecting" in alice.seen, timeout=3)
    noticed = time.monotonic() - started
    # An RPC made during the blackout is answered once the session is back.
    call = asyncio.ensure_future(
        alice.room.local_participant.perform_rpc(
            destination_identity="bob", method="echo", payload="during", response_timeout=15
        )
    )
    await eventually(lambda: "participant_reconnecting" in bob.seen, timeout=3)
    await eventually(lambda: "reconnected" in alice.seen, timeout=10)
    assert await asyncio.wait_for(call, 10) == "echo:during"
    await sending
    expected_a = [f"a{n}" for n in range(120)]
    expected_b = [f"b{n}" for n in range(120)]
    await eventually(lambda: len(bob.data) >= 120 and len(alice.data) >= 120, timeout=10)
    await eventually(lambda: len(bob.events) >= 120 and len(alice.events) >= 120, timeout=10)
    await asyncio.sleep(0.3)  # anything duplicated would have arrived by now
    assert bob.data == expected_a
    assert alice.data == expected_b
    assert bob.events == list(range(120))
    assert alice.events == list(range(120))
    assert alice.room.reconnects == 1
    assert alice.room.local_participant.identity == "alice"
    assert "participant_reconnected" in bob.seen
    assert "participant_disconnected" not in bob.seen
    assert noticed < 1.0 + 1.0  # dead_after + 1 s
    assert alice.room.connection_state is ConnectionState.CONNECTED


async def _echo(data: Any) -> str:
    return f"echo:{data.payload}"


async def test_a_blackout_longer_than_the_grace_period_ends_the_session(
    server: RoomServer,
) -> None:
    alice, bob, path = await pair(server)
    path.blackout(9.0)  # > dead_after (1) + grace (4) + the client's margin
    await eventually(lambda: "participant_disconnected" in bob.seen, timeout=8)
    await eventually(lambda: any(s.startswith("disconnected:") for s in alice.seen), timeout=9)
    reason = next(s for s in alice.seen if s.startswith("disconnected:")).partition(":")[2]
    assert reason in ("server_unreachable", "session_expired")
    assert "reconnected" not in alice.seen
    assert alice.room.connection_state is ConnectionState.DISCONNECTED
    assert "alice" not in bob.room.remote_participants


async def test_a_resume_needs_no_valid_token(server: RoomServer) -> None:
    path = ImpairedPath(Impairment(seed=2))
    alice = Peer(Room())
    await alice.room.connect(server.url, token("alice", ttl=1), impairment=path)
    await asyncio.sleep(1.5)  # the token has expired
    path.blackout(1.5)
    await eventually(lambda: "reconnected" in alice.seen, timeout=10)


async def test_leaving_on_purpose_is_not_a_drop(server: RoomServer) -> None:
    alice, bob, _path = await pair(server)
    await alice.room.disconnect()
    await eventually(lambda: "participant_disconnected" in bob.seen, timeout=2)
    assert "participant_reconnecting" not in bob.seen
    assert alice.seen == ["disconnected:client_initiated"]
    assert not server.sessions.get(next(iter(server.sessions), ""), None) or all(
        p.identity != "alice" for p in server.sessions.values()
    )


async def test_a_stopped_server_disconnects_with_server_shutdown() -> None:
    server = RoomServer(KEY, SECRET)
    await server.start("127.0.0.1", 0)
    alice = Peer(Room())
    await alice.room.connect(server.url, token("alice"))
    await server.stop()
    await eventually(lambda: alice.seen, timeout=3)
    assert alice.seen == ["disconnected:server_shutdown"]


def start_server_process(port: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from netcode.cli import server_main; server_main()",
            *("--port", str(port), "--api-key", KEY, "--api-secret", SECRET),
            *("--dead-after", "3", "--grace-period", "2", "--log-level", "WARNING"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


async def server_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20)
    url = re.search(r"listening on (\S+)", line)
    assert url, line
    return url.group(1)


async def test_a_killed_server_is_noticed_within_dead_after() -> None:
    process = start_server_process()
    try:
        url = await server_url(process)
        alice = Peer(Room())
        await alice.room.connect(url, token("alice"))
        assert alice.room.dead_after == 3.0
        process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await eventually(lambda: "reconnecting" in alice.seen, timeout=6)
        assert time.monotonic() - killed <= 3.0 + 1.0
        await eventually(lambda: any(s.startswith("disconnected") for s in alice.seen), 10)
        assert alice.seen[-1] == "disconnected:server_unreachable"
    finally:
        process.kill()
        process.wait(10)


async def test_a_restarted_server_says_so() -> None:
    process = start_server_process()
    restarted: subprocess.Popen[str] | None = None
    try:
        url = await server_url(process)
        alice = Peer(Room())
        await alice.room.connect(url, token("alice"))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        await eventually(lambda: "reconnecting" in alice.seen, timeout=6)
        restarted = start_server_process(int(url.rpartition(":")[2]))
        await server_url(restarted)
        await eventually(lambda: any(s.startswith("disconnected") for s in alice.seen), 10)
        assert alice.seen[-1] == "disconnected:server_restarted"
    finally:
        for each in (process, restarted):
            if each is not None:
                each.kill()
                each.wait(10)


async def test_the_replica_catches_up_within_a_second_of_the_path_returning() -> None:
    from test_host import REGISTRY, Game, Runner

    from netcode.rooms.host import GameHost
    from netcode.rooms.replica import Replica

    server = RoomServer(KEY, SECRET, dead_after=1.0, grace_period=10.0)
    await server.start("127.0.0.1", 0)
    host = GameHost(tick_rate=30, registry=REGISTRY, environment_every=6)
    game = Game(host)
    host.attach(server.room("game"))
    try:
        path = ImpairedPath(Impairment(seed=3))
        room = Room()
        replica = Replica(room, registry=REGISTRY)
        await room.connect(server.url, token("ann", room="game"), impairment=path)
        await eventually(lambda: len(replica.entities()) == len(game.runners), timeout=5)
        reconnected = asyncio.Event()
        room.on("reconnected", reconnected.set)
        path.blackout(3.0)
        await asyncio.sleep(1.5)
        # The world changes while ann is away: moves, a spawn, a despawn, then it rests.
        spawned = host.world.spawn(Runner(x=7, y=8))
        host.world.despawn(game.runners.pop(0))
        game.runners.append(spawned)
        await asyncio.sleep(1.0)
        game.moving = False
        await asyncio.sleep(0.5)  # the blackout ends about now
        path_back = time.monotonic()

        def converged() -> bool:
            ids = set(replica.entity_ids())
            if ids != set(game.runners):
                return False
            world = host.world
            return all(replica.decoder.quantized(e) == list(world.quantized(e)) for e in ids)

        await eventually(converged, timeout=5)
        caught_up = time.monotonic() - path_back
        assert reconnected.is_set()
        assert caught_up < 1.0, f"replica caught up {caught_up:.2f} s after the path returned"
        await room.disconnect()
    finally:
        await host.stop()
        await server.stop()


@pytest.mark.slow
async def test_defaults_a_5s_blackout_resumes_and_a_30s_one_ends_the_session() -> None:
    """The defaults: dead_after 3 s, grace 20 s (run with: pytest -m slow)."""
    server = RoomServer(KEY, SECRET)
    await server.start("127.0.0.1", 0)
    try:
        alice, bob, path = await pair(server)
        sending = asyncio.ensure_future(send_stream(alice, 150, "a"))
        await asyncio.sleep(0.5)
        path.blackout(5.0)
        started = time.monotonic()
        await eventually(lambda: "reconnecting" in alice.seen, timeout=5)
        assert time.monotonic() - started <= 3.0 + 1.0
        await eventually(lambda: "reconnected" in alice.seen, timeout=10)
        await sending
        await eventually(lambda: len(bob.data) >= 150 and len(bob.events) >= 150, timeout=10)
        assert bob.data == [f"a{n}" for n in range(150)]
        assert bob.events == list(range(150))
        path.blackout(30.0)
        await eventually(lambda: "participant_disconnected" in bob.seen, timeout=26)
        await eventually(lambda: alice.seen[-1].startswith("disconnected:"), timeout=10)
        assert alice.seen[-1] in ("disconnected:server_unreachable", "disconnected:session_expired")
    finally:
        await server.stop()


async def test_a_forged_resume_with_any_text_is_refused_not_a_server_error() -> None:
    """Found by netcode-fuzz: a resume secret that is not ASCII made the comparison raise."""
    import aiohttp

    from netcode.transport.signaling import SIGNALING_PATH

    server = RoomServer(KEY, SECRET)
    await server.start("127.0.0.1", 0)
    room = Room()
    try:
        await room.connect(server.url, token("alice"))
        session = room._session
        assert session is not None
        async with aiohttp.ClientSession() as http:
            for secret in ("é" * 40, "\ud800", session["secret"][:-1] + "x"):
                body = {
                    "sdp": "v=0",
                    "type": "offer",
                    "resume": {
                        "session": session["session"],
                        "secret": secret,
                        "received": 0,
                        "episode": 1,
                    },
                }
                async with http.post(server.url + SIGNALING_PATH, json=body) as response:
                    assert response.status in (400, 401, 403, 410), secret
        assert room.isconnected()
    finally:
        await room.disconnect()
        await server.stop()
