"""Deployment settings end to end: HTTPS signaling, ICE servers on both ends, CORS."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import ssl
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aioice import stun
from certs import make_self_signed

from netcode import ConnectError, IceServer, Room, RoomServer
from netcode.cli import make_token
from netcode.transport.ice import to_rtc_ice_servers
from netcode.transport.impair import ImpairedPath, Impairment
from netcode.transport.webrtc import PeerLink, connect_peer

KEY = "deploy-key"
SECRET = "deploy-secret-deploy-secret-deploy-secret"


def token(identity: str, room: str = "arena") -> str:
    return make_token(KEY, SECRET, identity, room)


@pytest.fixture
def certificate(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    return make_self_signed(tmp_path)


def server_tls(cert: pathlib.Path, key: pathlib.Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


# --- TLS -----------------------------------------------------------------------------------


@pytest.mark.webrtc
async def test_room_over_https_with_a_certificate_made_here(
    certificate: tuple[pathlib.Path, pathlib.Path],
) -> None:
    cert, key = certificate
    async with RoomServer(KEY, SECRET, ssl=server_tls(cert, key)) as server:
        await server.start("127.0.0.1", 0)
        assert server.url.startswith("https://127.0.0.1:")
        alice, bob = Room(), Room()
        received: list[Any] = []
        bob.on("data_received", lambda packet: received.append(packet.data))
        await alice.connect(server.url, token("alice"), ca_file=cert)
        await bob.connect(server.url, token("bob"), ssl=ssl.create_default_context(cafile=cert))
        await alice.local_participant.publish_data("over tls", topic="chat")
        async with asyncio.timeout(5):
            while not received:
                await asyncio.sleep(0.01)
        assert received == ["over tls"]
        # a resume connects the way the join did: same URL, same trust
        assert alice._ssl is not None and alice._url == server.url
        await alice.disconnect()
        await bob.disconnect()


@pytest.mark.webrtc
async def test_a_client_that_does_not_trust_the_certificate_is_refused(
    certificate: tuple[pathlib.Path, pathlib.Path],
) -> None:
    cert, key = certificate
    async with RoomServer(KEY, SECRET, ssl=server_tls(cert, key)) as server:
        await server.start("127.0.0.1", 0)
        room = Room()
        with pytest.raises(ConnectError) as refused:
            await room.connect(server.url, token("mallory"), timeout=5)
        message = str(refused.value)
        assert "certificate" in message and "not trusted" in message
        assert "self-signed certificate" in message  # OpenSSL's reason, named
        assert "ca_file" in message  # and what to do about it
        assert room.connection_state.value == "disconnected"
    # a trusted certificate for another name is refused too, naming the mismatch
    other = cert.parent / "other"
    other.mkdir()
    other_cert, other_key = make_self_signed(other, hostname="game.example.org", ip="10.9.8.7")
    async with RoomServer(KEY, SECRET, ssl=server_tls(other_cert, other_key)) as server:
        await server.start("127.0.0.1", 0)
        with pytest.raises(ConnectError, match=r"not trusted .*mismatch"):
            await connect_peer(server.url, token("mallory"), ca_file=other_cert, timeout=5)


async def test_a_missing_ca_file_fails_before_connecting(tmp_path: pathlib.Path) -> None:
    room = Room()
    with pytest.raises(FileNotFoundError):
        await room.connect("https://127.0.0.1:9", "t", ca_file=tmp_path / "none.pem")
    assert room.connection_state.value == "disconnected"


async def test_plain_http_on_a_public_address_warns(caplog: pytest.LogCaptureFixture) -> None:
    server = RoomServer(KEY, SECRET)
    with caplog.at_level(logging.WARNING, logger="netcode.transport.signaling"):
        await server.start("127.0.0.1", 0)
        assert not caplog.records
        await server.stop()
        public = RoomServer(KEY, SECRET)
        await public.start("0.0.0.0", 0)
        await public.stop()
    (warning,) = caplog.records
    assert "plain HTTP" in warning.getMessage() and "TLS" in warning.getMessage()


# --- ICE servers ---------------------------------------------------------------------------


class StunResponder(asyncio.DatagramProtocol):
    """A STUN server of one request type: answers Binding requests with the sender's address."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.requests: list[tuple[str, int]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_method != stun.Method.BINDING:
            return
        self.requests.append(addr)
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)


@pytest.fixture
async def stun_server() -> AsyncIterator[tuple[StunResponder, int]]:
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(
        StunResponder, local_addr=("127.0.0.1", 0)
    )
    yield responder, transport.get_extra_info("sockname")[1]
    transport.close()


def closed_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ice_settings(link: PeerLink) -> Any:
    """aioice's connection behind ``link``: the STUN/TURN settings it gathers with."""
    sctp = link.pc.sctp
    assert sctp is not None
    return sctp.transport.transport.iceGatherer._connection


@pytest.mark.webrtc
async def test_ice_servers_reach_aiortc_on_both_ends(
    stun_server: tuple[StunResponder, int],
) -> None:
    responder, stun_port = stun_server
    # A TURN server on a closed TCP port fails at once: configured, used, and harmless.
    turn_port = closed_tcp_port()
    server_ice = [
        IceServer(f"stun:127.0.0.1:{stun_port}"),
        IceServer(f"turn:127.0.0.1:{turn_port}?transport=tcp", username="srv", credential="pw"),
    ]
    client_ice = [
        f"stun:127.0.0.1:{stun_port}",
        f"turn:cli:secret@127.0.0.1:{turn_port}?transport=tcp",
    ]
    async with RoomServer(KEY, SECRET, ice_servers=server_ice) as server:
        await server.start("127.0.0.1", 0)
        room = Room()
        await asyncio.wait_for(room.connect(server.url, token("alice"), ice_servers=client_ice), 8)
        assert room.link is not None
        client = ice_settings(room.link)
        assert client.stun_server == ("127.0.0.1", stun_port)
        assert client.turn_server == ("127.0.0.1", turn_port)
        assert (client.turn_username, client.turn_password) == ("cli", "secret")
        assert client.turn_transport == "tcp"
        (participant,) = server.rooms["arena"].participants.values()
        assert participant.link is not None
        remote = ice_settings(participant.link)
        assert remote.stun_server == ("127.0.0.1", stun_port)
        assert remote.turn_server == ("127.0.0.1", turn_port)
        assert (remote.turn_username, remote.turn_password) == ("srv", "pw")
        # both ends asked the STUN server for their public address while gathering
        assert len(set(responder.requests)) >= 2
        assert "typ srflx" in room.link.pc.localDescription.sdp
        assert "typ srflx" in participant.link.pc.localDescription.sdp
        # a resume gathers with the same servers
        assert room._ice_servers == to_rtc_ice_servers(client_ice)
        await room.disconnect()


@pytest.mark.webrtc
async def test_a_resume_uses_the_joins_tls_trust_and_ice_servers(
    certificate: tuple[pathlib.Path, pathlib.Path], stun_server: tuple[StunResponder, int]
) -> None:
    cert, key = certificate
    _, stun_port = stun_server
    server = RoomServer(KEY, SECRET, ssl=server_tls(cert, key), dead_after=1.0, grace_period=5.0)
    async with server:
        await server.start("127.0.0.1", 0)
        path = ImpairedPath(Impairment(seed=3))
        room = Room()
        seen: list[str] = []
        room.on("reconnected", lambda: seen.append("reconnected"))
        room.on("disconnected", lambda reason: seen.append(f"disconnected:{reason}"))
        await room.connect(
            server.url,
            token("alice"),
            ca_file=cert,
            ice_servers=[f"stun:127.0.0.1:{stun_port}"],
            impairment=path,
        )
        first = room.link
        path.blackout(1.5)  # the link dies; the session resumes on a new one
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.05)
        assert seen == ["reconnected"]  # over https, trusting the same certificate
        assert room.link is not None and room.link is not first
        assert ice_settings(room.link).stun_server == ("127.0.0.1", stun_port)
        await room.disconnect()


def test_ice_server_urls_are_checked() -> None:
    assert IceServer.from_url("turn:u%40x:p%3Aw@turn.example.org:3478") == IceServer(
        "turn:turn.example.org:3478", username="u@x", credential="p:w"
    )
    assert IceServer("stun:a:1").urls == ("stun:a:1",)
    assert "pw" not in repr(IceServer("turn:a", username="u", credential="pw"))
    with pytest.raises(ValueError, match="needs a username and a credential"):
        IceServer("turn:turn.example.org")
    with pytest.raises(ValueError, match="bad ICE server URL 'http://x'"):
        IceServer("http://x")
    with pytest.raises(ValueError, match="supports stun:, turn: over udp or tcp"):
        IceServer("turns:a:5349?transport=udp", username="u", credential="p")
    with pytest.raises(ValueError, match="bad ICE server URL"):
        RoomServer(KEY, SECRET, ice_servers=["stun:"])
    with pytest.raises(ValueError, match="needs 'urls'"):
        to_rtc_ice_servers([{"url": "stun:a"}])
    (one,) = to_rtc_ice_servers({"urls": ["turn:a"], "username": "u", "credential": "p"})
    assert (one.urls, one.username, one.credential) == (["turn:a"], "u", "p")


# --- CORS ----------------------------------------------------------------------------------


async def preflight(url: str, origin: str) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as session,
        session.options(
            url + "/rtc/connect",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        ) as response,
    ):
        await response.read()
        return response


async def test_cors_preflight_from_an_allowed_origin_succeeds_and_others_are_refused() -> None:
    allowed = "https://game.example.org"
    async with RoomServer(KEY, SECRET, cors_origins=[allowed + "/"]) as server:
        await server.start("127.0.0.1", 0)
        ok = await preflight(server.url, allowed)
        assert ok.status == 204
        assert ok.headers["Access-Control-Allow-Origin"] == allowed
        assert "POST" in ok.headers["Access-Control-Allow-Methods"]
        assert ok.headers["Access-Control-Allow-Headers"].lower() == "content-type"
        refused = await preflight(server.url, "https://evil.example.com")
        assert refused.status == 403
        assert not any(h.lower().startswith("access-control-allow") for h in refused.headers)
        # the POST's answer (here a refused token) carries the header, so the page can read it
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                server.url + "/rtc/connect",
                json={"sdp": "v=0", "type": "offer", "token": "x"},
                headers={"Origin": allowed},
            ) as response,
        ):
            assert response.status == 401
            assert response.headers["Access-Control-Allow-Origin"] == allowed


async def test_cors_is_off_by_default_and_origins_are_checked() -> None:
    async with RoomServer(KEY, SECRET) as server:
        await server.start("127.0.0.1", 0)
        response = await preflight(server.url, "https://game.example.org")
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
    async with RoomServer(KEY, SECRET, cors_origins=["*"]) as server:
        await server.start("127.0.0.1", 0)
        response = await preflight(server.url, "https://anyone.example.net")
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    with pytest.raises(ValueError, match="must be '\\*' or scheme://host"):
        RoomServer(KEY, SECRET, cors_origins=["game.example.org"])
