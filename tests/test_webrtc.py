"""End-to-end tests of the WebRTC transport over real aiortc connections on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import ifaddr
import pytest

from netcode.auth import (
    AccessToken,
    Claims,
    Grants,
    InvalidSignature,
    MalformedToken,
    MissingGrant,
    TokenError,
    TokenExpired,
    TokenVerifier,
    UnknownApiKey,
    WrongRoom,
)
from netcode.transport.peerlink import is_loopback_host
from netcode.transport.webrtc import (
    DEFAULT_LOSSY_BACKLOG_LIMIT_BYTES,
    MAX_EXTRA_CHANNELS,
    MAX_RELIABLE_MESSAGE_BYTES,
    MAX_SIGNALING_BODY_BYTES,
    SIGNALING_PATH,
    ChannelNotOpen,
    ConnectError,
    ConnectTimeout,
    DataChannel,
    PeerLink,
    SignalingServer,
    connect_peer,
)
from netcode.wire import MAX_DATAGRAM_BYTES

pytestmark = pytest.mark.webrtc

KEY = "devkey"
SECRET = "devsecret-devsecret-devsecret-devsecret"
ROOM = "arena"


def token(
    identity: str = "alice",
    *,
    room: str = ROOM,
    room_join: bool = True,
    key: str = KEY,
    secret: str = SECRET,
    ttl: float = 600,
    now: float | None = None,
) -> str:
    return (
        AccessToken(key, secret)
        .with_identity(identity)
        .with_ttl(ttl)
        .with_grants(Grants(room_join=room_join, room=room))
        .to_jwt(now=now)
    )


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds; fail loudly after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class Collector:
    """Collects messages from a handler; ``wait(n)`` waits for n of them."""

    def __init__(self) -> None:
        self.messages: list[bytes | str] = []

    def __call__(self, message: bytes | str) -> None:
        self.messages.append(message)

    async def wait(self, count: int, timeout: float = 5.0) -> list[bytes | str]:
        await eventually(lambda: len(self.messages) >= count, timeout)
        return self.messages


def echo_channel(channel: DataChannel) -> None:
    channel.set_handler(channel.send)


class EchoServer:
    """A SignalingServer whose peers echo on every channel; remembers its links."""

    def __init__(self, **kwargs: Any) -> None:
        self.verifier = TokenVerifier(KEY, SECRET)
        self.peers: list[tuple[PeerLink, Claims]] = []
        self.on_peer_delay_s = 0.0
        self.server = SignalingServer(self.authorize, self.on_peer, **kwargs)

    async def authorize(self, token: str, room: str = "") -> Claims:
        return self.verifier.verify(token, room=ROOM)

    async def on_peer(self, link: PeerLink, claims: Claims) -> None:
        if self.on_peer_delay_s:
            await asyncio.sleep(self.on_peer_delay_s)
        self.peers.append((link, claims))
        link.on_reliable(link.send_reliable)
        link.on_lossy(link.send_lossy)
        link.on_channel(echo_channel)

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., Awaitable[EchoServer]]]:
    servers: list[EchoServer] = []

    async def make(**kwargs: Any) -> EchoServer:
        echo = EchoServer(**kwargs)
        await echo.server.start("127.0.0.1", 0)
        servers.append(echo)
        return echo

    yield make
    for echo in servers:
        await echo.server.stop()


@pytest.fixture
async def server(make_server: Callable[..., Awaitable[EchoServer]]) -> EchoServer:
    return await make_server()


@pytest.fixture
async def link(server: EchoServer) -> AsyncIterator[PeerLink]:
    client = await connect_peer(server.url, token())
    yield client
    await client.close()


# --- connecting and delivery -----------------------------------------------------------------


async def test_connect_gives_open_link_and_server_sees_claims(
    server: EchoServer, link: PeerLink
) -> None:
    assert link.is_open and link.connection_state == "connected"
    assert link.reliable.ready_state == link.lossy.ready_state == "open"
    assert (link.reliable.id, link.lossy.id) == (0, 1)
    assert link.lossy.max_retransmits == 0 and not link.lossy.ordered
    assert link.reliable.reliable and link.reliable.ordered
    await eventually(lambda: len(server.peers) == 1)
    server_link, claims = server.peers[0]
    assert claims.identity == "alice" and claims.grants.room == ROOM
    assert server_link.is_open and server_link in server.server.links


async def test_reliable_messages_arrive_complete_in_order_with_types(link: PeerLink) -> None:
    received = Collector()
    link.on_reliable(received)
    sent: list[bytes | str] = []
    for i in range(300):
        message: bytes | str = f"message {i} é✓" if i % 2 else bytes([i % 256]) * (i * 37 % 3000)
        sent.append(message)
        link.send_reliable(message)
    sent += ["", b"", "x" * MAX_RELIABLE_MESSAGE_BYTES, b"y" * MAX_RELIABLE_MESSAGE_BYTES]
    for message in sent[-4:]:
        link.send_reliable(message)
    assert await received.wait(len(sent)) == sent
    assert [type(m) for m in received.messages] == [type(m) for m in sent]
    stats = link.reliable.stats
    assert stats.messages_sent == stats.messages_received == len(sent)


async def test_several_clients_each_get_their_own_echo(server: EchoServer) -> None:
    links = await asyncio.gather(*(connect_peer(server.url, token(f"p{i}")) for i in range(4)))
    try:
        collectors = []
        for i, client in enumerate(links):
            collector = Collector()
            client.on_reliable(collector)
            collectors.append(collector)
            client.send_reliable(f"from p{i}")
        for i, collector in enumerate(collectors):
            assert await collector.wait(1) == [f"from p{i}"]
        await eventually(lambda: len(server.peers) == 4)
        assert sorted(claims.identity for _, claims in server.peers) == ["p0", "p1", "p2", "p3"]
    finally:
        await asyncio.gather(*(client.close() for client in links))


async def test_lossy_datagrams_arrive(link: PeerLink) -> None:
    received = Collector()
    link.on_lossy(received)
    sent = [i.to_bytes(2, "big") * 50 for i in range(100)]
    for datagram in sent:
        assert link.send_lossy(datagram)
        await asyncio.sleep(0.0005)  # paced, as a game sends: no backlog, no drops
    sent.append(b"z" * MAX_DATAGRAM_BYTES)
    assert link.send_lossy(sent[-1])
    await received.wait(len(sent))
    assert sorted(received.messages) == sorted(sent)  # unordered channel
    assert link.lossy.stats.send_drops == 0


async def test_messages_sent_before_server_handler_are_kept(
    make_server: Callable[..., Awaitable[EchoServer]],
) -> None:
    echo = await make_server()
    echo.on_peer_delay_s = 0.2  # the application installs its handlers late
    client = await connect_peer(echo.url, token())
    try:
        received = Collector()
        client.on_reliable(received)
        client.send_reliable("early")
        assert await received.wait(1) == ["early"]
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("options", "limit"),
    [
        ({"ordered": True}, MAX_RELIABLE_MESSAGE_BYTES),
        ({"ordered": False, "max_retransmits": 0}, MAX_DATAGRAM_BYTES),
        ({"ordered": False, "max_packet_life_time": 500}, MAX_RELIABLE_MESSAGE_BYTES),
        ({"ordered": True, "max_retransmits": 3}, MAX_RELIABLE_MESSAGE_BYTES),
    ],
)
async def test_extra_channel_from_client_delivers(
    server: EchoServer, link: PeerLink, options: dict[str, Any], limit: int
) -> None:
    channel = link.create_channel("cursor", **options)
    await asyncio.wait_for(channel.wait_open(), 5)
    assert channel.max_message_bytes == limit
    assert channel.id is not None and channel.id > 1
    received = Collector()
    channel.set_handler(received)
    sent: list[bytes | str] = [f"m{i}" for i in range(20)]
    for message in sent:
        assert channel.send(message)
    # Unreliable channels drop while the connection's queue is backed up: let it drain.
    await eventually(lambda: link.send_backlog() == 0)
    sent.append(b"\x00" * limit)
    assert channel.send(sent[-1])
    messages = await received.wait(len(sent))
    if options["ordered"]:
        assert messages == sent
    else:
        assert sorted(map(repr, messages)) == sorted(map(repr, sent))
    with pytest.raises(ValueError, match=str(limit)):
        channel.send(b"\x00" * (limit + 1))
    # The server side saw the channel with the same settings.
    server_link = server.peers[0][0]
    (remote,) = [c for c in server_link.channels if c.label == "cursor"]
    assert remote.ordered == options["ordered"]
    assert remote.max_retransmits == options.get("max_retransmits")
    assert remote.max_packet_life_time == options.get("max_packet_life_time")


async def test_peer_opening_too_many_channels_is_bounded(
    server: EchoServer, link: PeerLink
) -> None:
    await eventually(lambda: len(server.peers) == 1)
    server_link = server.peers[0][0]
    channels = [link.create_channel(f"c{i}") for i in range(MAX_EXTRA_CHANNELS + 3)]
    await eventually(lambda: sum(c.ready_state == "closed" for c in channels) == 3)
    assert len(server_link.channels) == 2 + MAX_EXTRA_CHANNELS
    # Closing channels frees room for new ones.
    for channel in channels[:5]:
        channel.close()
    await eventually(lambda: len(server_link.channels) == 2 + MAX_EXTRA_CHANNELS - 5)
    extra = link.create_channel("later")
    await asyncio.wait_for(extra.wait_open(), 5)
    extra.send("still works")


async def test_extra_channel_from_server_reaches_client_handler(
    server: EchoServer, link: PeerLink
) -> None:
    await eventually(lambda: len(server.peers) == 1)
    server_link = server.peers[0][0]
    opened: list[DataChannel] = []
    link.on_channel(opened.append)
    channel = server_link.create_channel("world", ordered=False, max_retransmits=0)
    await asyncio.wait_for(channel.wait_open(), 5)
    assert channel.id is not None and channel.id > 1  # clear of the negotiated ids
    await eventually(lambda: len(opened) == 1)
    client_channel = opened[0]
    received = Collector()
    client_channel.set_handler(received)
    channel.send(b"snapshot")
    assert await received.wait(1) == [b"snapshot"]
    assert client_channel.label == "world" and client_channel.max_retransmits == 0


# --- limits -----------------------------------------------------------------------------------


async def test_oversized_payloads_raise_value_error_naming_the_limit(link: PeerLink) -> None:
    with pytest.raises(ValueError, match=r"1161 bytes .*1160.*MAX_DATAGRAM_BYTES"):
        link.send_lossy(b"x" * (MAX_DATAGRAM_BYTES + 1))
    with pytest.raises(ValueError, match=r"16385 bytes .*16384.*MAX_RELIABLE_MESSAGE_BYTES"):
        link.send_reliable(b"x" * (MAX_RELIABLE_MESSAGE_BYTES + 1))
    # A str is measured in UTF-8 bytes: 6000 chars of 3 bytes each are over the limit.
    with pytest.raises(ValueError, match="MAX_RELIABLE_MESSAGE_BYTES"):
        link.send_reliable("€" * 6000)
    with pytest.raises(TypeError):
        link.send_lossy("text")  # type: ignore[arg-type]
    assert link.lossy.stats.messages_sent == link.reliable.stats.messages_sent == 0


async def test_lossy_backpressure_drops_instead_of_queueing(link: PeerLink) -> None:
    datagram = b"d" * 1000
    results = [link.send_lossy(datagram) for _ in range(2000)]  # one burst, no awaits
    accepted = results.count(True)
    assert results.count(False) == link.lossy.stats.send_drops > 1900
    assert accepted <= DEFAULT_LOSSY_BACKLOG_LIMIT_BYTES // len(datagram)
    assert link.send_backlog() <= DEFAULT_LOSSY_BACKLOG_LIMIT_BYTES
    # Once the queue drains, datagrams go out again.
    await eventually(lambda: link.send_backlog() == 0)
    assert link.send_lossy(datagram)


async def test_datagrams_go_ahead_of_queued_reliable_data(link: PeerLink) -> None:
    # All channels share one queue in aiortc: a datagram behind 480 KiB of reliable data
    # would be stale. It goes ahead of what has not started (and is not dropped).
    reliable = Collector()
    arrived_after: list[int] = []
    link.on_reliable(reliable)
    link.on_lossy(lambda data: arrived_after.append(len(reliable.messages)))
    for _ in range(30):
        link.send_reliable(b"r" * MAX_RELIABLE_MESSAGE_BYTES)
    assert link.send_backlog() > 20 * MAX_RELIABLE_MESSAGE_BYTES
    assert link.datagram_backlog() == 0
    assert link.send_lossy(b"urgent")
    assert link.lossy.stats.send_drops == 0
    await reliable.wait(30, timeout=20)
    await eventually(lambda: arrived_after)
    assert arrived_after[0] < 5  # echoed back ahead of most of the reliable data, both ways
    assert all(m == b"r" * MAX_RELIABLE_MESSAGE_BYTES for m in reliable.messages)


async def test_custom_backlog_limit(server: EchoServer) -> None:
    client = await connect_peer(server.url, token(), lossy_backlog_limit_bytes=3000)
    try:
        results = [client.send_lossy(b"d" * 1000) for _ in range(10)]
        assert results == [True] * 3 + [False] * 7
    finally:
        await client.close()


# --- refusals and failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_token", "error"),
    [
        (lambda: token(secret="wrong-secret-wrong-secret-wrong-secret"), InvalidSignature),
        (lambda: token(ttl=60, now=time.time() - 3600), TokenExpired),
        (lambda: token(room="lobby"), WrongRoom),
        (lambda: token(room_join=False), MissingGrant),
        (lambda: token(key="other-key"), UnknownApiKey),
        (lambda: "not.a.jwt", MalformedToken),
    ],
)
async def test_bad_token_is_refused_with_matching_error(
    server: EchoServer, bad_token: Callable[[], str], error: type[TokenError]
) -> None:
    with pytest.raises(error) as info:
        await connect_peer(server.url, bad_token())
    assert type(info.value) is error
    if error is MissingGrant:
        assert info.value.grant == "room_join"  # type: ignore[attr-defined]
    assert not server.server.links  # nothing was left half open


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_server_gives_connect_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ConnectError, match="cannot reach signaling server"):
        await connect_peer(url, token())
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("url", ["127.0.0.1:7880", "ws://127.0.0.1:7880", "http://"])
async def test_bad_url_gives_connect_error(url: str) -> None:
    with pytest.raises(ConnectError, match="bad signaling URL"):
        await connect_peer(url, token())


async def test_slow_server_gives_connect_timeout(
    make_server: Callable[..., Awaitable[EchoServer]],
) -> None:
    echo = await make_server()

    async def slow_authorize(_: str, room: str = "") -> Claims:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    echo.server._authorize = slow_authorize
    with pytest.raises(ConnectTimeout, match="signaling answer"):
        await connect_peer(echo.url, token(), timeout=0.3)


async def test_malformed_signaling_requests_get_4xx_and_server_survives(
    server: EchoServer,
) -> None:
    endpoint = server.url + SIGNALING_PATH
    cases: list[tuple[bytes, int, str]] = [
        (b"{not json", 400, "bad_request"),
        (b"\xff\xfe", 400, "bad_request"),
        (b"[1, 2]", 400, "bad_request"),
        (b'{"type": "offer", "token": "t"}', 400, "bad_request"),
        (b'{"sdp": "v=0", "type": "answer", "token": "t"}', 400, "bad_request"),
        (b'{"sdp": "v=0", "type": "offer"}', 400, "bad_request"),
        (b'{"sdp": 5, "type": "offer", "token": "t"}', 400, "bad_request"),
        (b"x" * (MAX_SIGNALING_BODY_BYTES + 1), 413, "request_too_large"),
        # found by netcode-fuzz: past the JSON decoder's depth, and past Python's digit limit
        (b"[" * 5000 + b"]" * 5000, 400, "bad_request"),
        (b'{"sdp": ' + b"7" * 5000 + b"}", 400, "bad_request"),
    ]
    good = token().encode()
    cases += [
        (b'{"sdp": "garbage", "type": "offer", "token": "' + good + b'"}', 400, "bad_sdp"),
        (
            b'{"sdp": "v=0\\r\\no=- 1 1 IN IP4 0.0.0.0\\r\\ns=-\\r\\nt=0 0\\r\\n", '
            b'"type": "offer", "token": "' + good + b'"}',
            400,
            "bad_sdp",
        ),
    ]
    async with aiohttp.ClientSession() as session:
        for body, status, code in cases:
            async with session.post(endpoint, data=body) as response:
                assert response.status == status, body[:60]
                assert (await response.json())["error"] == code
        async with session.get(endpoint) as response:
            assert response.status == 405
    assert not server.server.links
    client = await connect_peer(server.url, token())  # still serving
    await client.close()


# --- closing -----------------------------------------------------------------------------------


async def test_client_close_closes_server_side(server: EchoServer, link: PeerLink) -> None:
    await eventually(lambda: len(server.peers) == 1)
    server_link = server.peers[0][0]
    states: list[str] = []
    link.on_state_change(states.append)
    await link.close()
    assert link.closed.is_set() and states[-1] == "closed"
    with pytest.raises(ChannelNotOpen):
        link.send_reliable("after close")
    await asyncio.wait_for(server_link.wait_closed(), 5)
    await eventually(lambda: not server.server.links)


async def test_server_stop_closes_clients(server: EchoServer, link: PeerLink) -> None:
    await eventually(lambda: len(server.peers) == 1)
    await server.server.stop()
    assert server.peers[0][0].closed.is_set()
    await asyncio.wait_for(link.wait_closed(), 5)
    with pytest.raises(ConnectError):
        await connect_peer(server.url, token())


def test_full_cycle_leaves_no_pending_tasks(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        echo = EchoServer()
        await echo.server.start("127.0.0.1", 0)
        client = await connect_peer(echo.url, token())
        received = Collector()
        client.on_reliable(received)
        client.send_reliable("ping")
        await received.wait(1)
        client.create_channel("extra")
        await client.close()
        await echo.server.stop()
        # Everything the link and server started has finished: nothing left to be destroyed
        # while pending when the loop closes.
        current = asyncio.current_task()
        await eventually(lambda: asyncio.all_tasks() == {current}, timeout=2)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(scenario())
        gc.collect()
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]


# --- loopback-only machines and other processes ----------------------------------------------


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make aioice see only the loopback interface, as on a machine without a network."""
    real = ifaddr.get_adapters

    def adapters(*args: Any, **kwargs: Any) -> list[Any]:
        return [adapter for adapter in real(*args, **kwargs) if adapter.name == "lo"]

    monkeypatch.setattr(ifaddr, "get_adapters", adapters)


@pytest.mark.usefixtures("loopback_only")
async def test_connects_when_loopback_is_the_only_interface(server: EchoServer) -> None:
    client = await connect_peer(server.url, token())
    try:
        assert "127.0.0.1" in client.pc.localDescription.sdp
        received = Collector()
        client.on_reliable(received)
        client.send_reliable("over lo")
        assert await received.wait(1) == ["over lo"]
    finally:
        await client.close()


@pytest.mark.usefixtures("loopback_only")
async def test_without_loopback_candidates_fails_fast_and_clearly(server: EchoServer) -> None:
    with pytest.raises(ConnectError, match="no local candidates"):
        await connect_peer(server.url, token(), include_loopback=False)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.5", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("192.0.2.2", False),
        ("fd00::2", False),
        ("game.example.com", False),
        (None, False),
    ],
)
def test_loopback_candidates_only_for_loopback_hosts(host: str | None, loopback: bool) -> None:
    # A remote peer cannot reach our 127.0.0.1: offering it would only waste checks.
    assert is_loopback_host(host) is loopback


async def test_loopback_hook_leaves_other_connections_alone(link: PeerLink) -> None:
    assert "127.0.0.1" in link.pc.localDescription.sdp
    assert "127.0.0.1" in link.pc.remoteDescription.sdp
    from aiortc import RTCPeerConnection

    plain = RTCPeerConnection()  # the process-wide hook leaves other connections alone
    plain.createDataChannel("x")
    try:
        await plain.setLocalDescription(await plain.createOffer())
        assert "127.0.0.1" not in plain.localDescription.sdp
    finally:
        await plain.close()


SERVER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from netcode.auth import TokenVerifier
    from netcode.transport.webrtc import SignalingServer

    async def main():
        verifier = TokenVerifier(sys.argv[1], sys.argv[2])

        async def authorize(token, room=""):
            return verifier.verify(token)

        async def on_peer(link, claims):
            link.on_reliable(lambda m: link.send_reliable(claims.identity + ":" + m))
            link.on_lossy(link.send_lossy)

        server = SignalingServer(authorize, on_peer)
        await server.start("127.0.0.1", 0)
        print(server.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
        await server.stop()

    asyncio.run(main())
    """
)


async def test_server_in_another_process() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVER_SCRIPT,
        KEY,
        SECRET,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        client = await connect_peer(url, token("remote"))
        try:
            reliable, lossy = Collector(), Collector()
            client.on_reliable(reliable)
            client.on_lossy(lossy)
            client.send_reliable("hi")
            client.send_lossy(b"\x01\x02")
            assert await reliable.wait(1) == ["remote:hi"]
            assert await lossy.wait(1) == [b"\x01\x02"]
        finally:
            await client.close()
        process.stdin.close()
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
