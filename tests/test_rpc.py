"""RPC end to end over real aiortc connections on 127.0.0.1: every error code LiveKit defines
that can arise here, and what the server vouches for (the caller's identity)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from helpers import eventually

from netcode.cli import make_token
from netcode.rooms import Room, RoomServer
from netcode.rooms.protocol import Kind
from netcode.rooms.rpc import (
    MAX_PAYLOAD_BYTES,
    RPC_VERSION,
    RpcError,
    RpcErrorCode,
    RpcInvocationData,
    RpcMessageType,
    _Call,
    decode_rpc_untrusted,
    encode_rpc,
)
from netcode.rooms.server import ExtensionChannel

pytestmark = pytest.mark.webrtc

KEY = "test-key"
SECRET = "test-secret-that-is-long-enough-for-hs256!"


def token(identity: str, **grants: Any) -> str:
    return make_token(KEY, SECRET, identity, "arena", **grants)


@pytest.fixture
async def server() -> AsyncIterator[RoomServer]:
    server = RoomServer(KEY, SECRET)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


@pytest.fixture
async def connect(server: RoomServer) -> AsyncIterator[Callable[..., Any]]:
    rooms: list[Room] = []

    async def connect(identity: str, **grants: Any) -> Room:
        room = Room()
        await room.connect(server.url, token(identity, **grants))
        rooms.append(room)
        return room

    yield connect
    for room in rooms:
        await room.disconnect()


async def two(connect: Callable[..., Any]) -> tuple[Room, Room]:
    alice, bob = await connect("alice"), await connect("bob")
    await eventually(lambda: "bob" in alice.remote_participants)
    return alice, bob


async def raw_call(room: Room, request_id: int, **fields: Any) -> str:
    """Send a hand-made REQUEST and wait for its answer the way perform_rpc does."""
    call = _Call(asyncio.get_running_loop().create_future())
    room.rpc._calls[request_id] = call
    body = {
        "request_id": request_id,
        "version": RPC_VERSION,
        "identity": "bob",
        "method": "echo",
        "response_timeout_ms": 5000,
        "payload": b"",
    }
    room.send_extension(ExtensionChannel.RPC, encode_rpc(RpcMessageType.REQUEST, **body | fields))
    try:
        return await asyncio.wait_for(call.future, 5)
    finally:
        room.rpc._calls.pop(request_id, None)


async def test_calls_succeed_both_ways(connect: Any) -> None:
    alice, bob = await two(connect)
    seen: list[RpcInvocationData] = []

    async def echo(data: RpcInvocationData) -> str:
        seen.append(data)
        await asyncio.sleep(0.01)
        return f"{data.caller_identity} said {data.payload}"

    def shout(data: RpcInvocationData) -> str:  # plain functions serve too
        return data.payload.upper()

    await bob.local_participant.register_rpc_method("echo", echo)
    await alice.local_participant.register_rpc_method("shout", shout)
    answer = await alice.local_participant.perform_rpc(
        destination_identity="bob", method="echo", payload="héllo ✓", response_timeout=3.0
    )
    assert answer == "alice said héllo ✓"
    (data,) = seen
    assert data.caller_identity == "alice"
    assert data.response_timeout == pytest.approx(3.0)
    assert data.request_id
    assert (
        await bob.local_participant.perform_rpc(
            destination_identity="alice", method="shout", payload="hey"
        )
        == "HEY"
    )
    # several calls in flight at once, answered in any order
    answers = await asyncio.gather(
        *(
            alice.local_participant.perform_rpc(
                destination_identity="bob", method="echo", payload=str(i)
            )
            for i in range(20)
        )
    )
    assert answers == [f"alice said {i}" for i in range(20)]
    # a payload of exactly the limit goes through, both ways
    big = "x" * MAX_PAYLOAD_BYTES
    await alice.local_participant.register_rpc_method("same", lambda d: d.payload)
    assert (
        await bob.local_participant.perform_rpc(
            destination_identity="alice", method="same", payload=big
        )
        == big
    )


async def expect(code: RpcErrorCode, call: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await call
    assert info.value.code == code, info.value
    return info.value


async def test_unsupported_method_and_unknown_recipient(connect: Any) -> None:
    alice, bob = await two(connect)
    perform = alice.local_participant.perform_rpc
    error = await expect(
        RpcErrorCode.UNSUPPORTED_METHOD,
        perform(destination_identity="bob", method="nope", payload=""),
    )
    assert error.message == "Method not supported at destination"
    await bob.local_participant.register_rpc_method("gone", lambda d: "here")
    assert await perform(destination_identity="bob", method="gone", payload="") == "here"
    bob.local_participant.unregister_rpc_method("gone")
    await expect(
        RpcErrorCode.UNSUPPORTED_METHOD,
        perform(destination_identity="bob", method="gone", payload=""),
    )
    await expect(
        RpcErrorCode.RECIPIENT_NOT_FOUND,
        perform(destination_identity="zed", method="gone", payload=""),
    )


async def test_recipient_leaving_while_handling(server: RoomServer, connect: Any) -> None:
    alice, bob = await two(connect)
    started = asyncio.Event()

    async def slow(data: RpcInvocationData) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    await bob.local_participant.register_rpc_method("slow", slow)
    call = asyncio.ensure_future(
        alice.local_participant.perform_rpc(
            destination_identity="bob", method="slow", payload="", response_timeout=20
        )
    )
    await asyncio.wait_for(started.wait(), 5)
    assert server.rpc.calls_in_flight == 1
    await bob.disconnect()
    error = await expect(RpcErrorCode.RECIPIENT_DISCONNECTED, asyncio.wait_for(call, 5))
    assert error.message == "Recipient disconnected"
    assert server.rpc.calls_in_flight == 0


async def test_payloads_too_large(connect: Any) -> None:
    alice, bob = await two(connect)
    await bob.local_participant.register_rpc_method("big", lambda d: "é" * MAX_PAYLOAD_BYTES)
    await bob.local_participant.register_rpc_method("echo", lambda d: d.payload)
    perform = alice.local_participant.perform_rpc
    # the limit counts UTF-8 bytes, not characters
    await expect(
        RpcErrorCode.REQUEST_PAYLOAD_TOO_LARGE,
        perform(
            destination_identity="bob", method="echo", payload="é" * (MAX_PAYLOAD_BYTES // 2 + 1)
        ),
    )
    await expect(
        RpcErrorCode.RESPONSE_PAYLOAD_TOO_LARGE,
        perform(destination_identity="bob", method="big", payload=""),
    )
    # the server checks too, for clients that do not
    await expect(
        RpcErrorCode.REQUEST_PAYLOAD_TOO_LARGE,
        raw_call(alice, 77, payload=b"x" * (MAX_PAYLOAD_BYTES + 1)),
    )


async def test_response_timeout(connect: Any) -> None:
    alice, bob = await two(connect)

    async def slow(data: RpcInvocationData) -> str:
        await asyncio.sleep(1.0)
        return "late"

    await bob.local_participant.register_rpc_method("slow", slow)
    started = time.monotonic()
    await expect(
        RpcErrorCode.RESPONSE_TIMEOUT,
        alice.local_participant.perform_rpc(
            destination_identity="bob", method="slow", payload="", response_timeout=0.3
        ),
    )
    assert 0.25 < time.monotonic() - started < 0.9
    await asyncio.sleep(0.9)  # the late answer arrives and is dropped quietly
    assert alice.protocol_errors == 0


async def test_connection_timeout_when_the_callee_never_acknowledges(connect: Any) -> None:
    alice, bob = await two(connect)
    del bob.extension_handlers[ExtensionChannel.RPC]  # bob's client does not speak RPC
    alice.rpc.connection_timeout = 0.3
    started = time.monotonic()
    await expect(
        RpcErrorCode.CONNECTION_TIMEOUT,
        alice.local_participant.perform_rpc(
            destination_identity="bob", method="x", payload="", response_timeout=5
        ),
    )
    assert time.monotonic() - started < 1.0


async def test_application_errors(connect: Any) -> None:
    alice, bob = await two(connect)

    def broken(data: RpcInvocationData) -> str:
        raise ValueError("internal details stay on the callee")

    async def picky(data: RpcInvocationData) -> str:
        raise RpcError(42, "not like that", data="try 'please'")

    await bob.local_participant.register_rpc_method("broken", broken)
    await bob.local_participant.register_rpc_method("picky", picky)
    await bob.local_participant.register_rpc_method("wrong_type", lambda d: 3)  # type: ignore[arg-type,return-value]
    perform = alice.local_participant.perform_rpc
    error = await expect(
        RpcErrorCode.APPLICATION_ERROR,
        perform(destination_identity="bob", method="broken", payload=""),
    )
    assert error.message == "Application error in method handler"
    assert "internal" not in str(error)
    error = await expect(42, perform(destination_identity="bob", method="picky", payload=""))  # type: ignore[arg-type]
    assert (error.message, error.data) == ("not like that", "try 'please'")
    await expect(
        RpcErrorCode.APPLICATION_ERROR,
        perform(destination_identity="bob", method="wrong_type", payload=""),
    )


async def test_unsupported_version(connect: Any) -> None:
    alice, bob = await two(connect)
    await bob.local_participant.register_rpc_method("echo", lambda d: d.payload)
    await expect(RpcErrorCode.UNSUPPORTED_VERSION, raw_call(alice, 5, version=RPC_VERSION + 1))


async def test_send_failed_when_disconnected_or_not_allowed(connect: Any) -> None:
    muted = await connect("muted", can_publish_data=False)
    await connect("bob")
    await eventually(lambda: "bob" in muted.remote_participants)
    error = await expect(
        RpcErrorCode.SEND_FAILED,
        muted.local_participant.perform_rpc(destination_identity="bob", method="x", payload=""),
    )
    assert "can_publish_data" in error.message
    await muted.disconnect()
    await expect(
        RpcErrorCode.SEND_FAILED,
        muted.local_participant.perform_rpc(destination_identity="bob", method="x", payload=""),
    )


async def test_caller_identity_and_answers_cannot_be_forged(
    server: RoomServer, connect: Any
) -> None:
    alice, bob = await two(connect)
    mallory = await connect("mallory")
    await eventually(lambda: len(alice.remote_participants) == 2)
    callers: list[str] = []
    release = asyncio.Event()

    async def whoami(data: RpcInvocationData) -> str:
        callers.append(data.caller_identity)
        await release.wait()
        return data.caller_identity

    await bob.local_participant.register_rpc_method("whoami", whoami)
    # mallory writes alice's pid into the EXTENSION sender field: the server overwrites it
    alice_pid = mallory.remote_participants["alice"].pid
    request = encode_rpc(
        RpcMessageType.REQUEST,
        request_id=1,
        version=RPC_VERSION,
        identity="bob",
        method="whoami",
        response_timeout_ms=5000,
        payload=b"",
    )
    mallory._send(Kind.EXTENSION, channel=ExtensionChannel.RPC, pid=alice_pid, body=request)
    await eventually(lambda: callers == ["mallory"])
    # alice calls bob; mallory answers alice's call (same request id 1, naming alice's pid)
    call = asyncio.ensure_future(
        alice.local_participant.perform_rpc(destination_identity="bob", method="whoami", payload="")
    )
    await eventually(lambda: len(callers) == 2)
    for forged in (
        encode_rpc(RpcMessageType.RESPONSE, request_id=1, peer=alice_pid, payload=b"forged"),
        encode_rpc(
            RpcMessageType.ERROR, request_id=1, peer=alice_pid, code=1500, message="x", data=""
        ),
    ):
        mallory.send_extension(ExtensionChannel.RPC, forged)
    await asyncio.sleep(0.1)
    assert not call.done()
    release.set()
    assert await asyncio.wait_for(call, 5) == "alice"
    assert callers == ["mallory", "alice"]


async def test_malformed_rpc_messages_are_counted(server: RoomServer, connect: Any) -> None:
    alice, bob = await two(connect)
    before = server.protocol_errors
    for body in (
        b"",
        b"\x09",
        b"\x01\x00",
        encode_rpc(RpcMessageType.ACK, request_id=1, peer=2) + b"!",
    ):
        alice.send_extension(ExtensionChannel.RPC, body)
    await eventually(lambda: server.protocol_errors == before + 4)
    await bob.local_participant.register_rpc_method("echo", lambda d: d.payload)
    assert (
        await alice.local_participant.perform_rpc(
            destination_identity="bob", method="echo", payload="fine"
        )
        == "fine"
    )


def test_wire_round_trip_and_untrusted_decoding() -> None:
    message = encode_rpc(
        RpcMessageType.ERROR, request_id=7, peer=3, code=1401, message="m", data="d"
    )
    type_, body = decode_rpc_untrusted(message)
    assert type_ is RpcMessageType.ERROR
    assert (body.request_id, body.peer, body.code, body.message, body.data) == (
        7,
        3,
        1401,
        "m",
        "d",
    )
    from netcode.errors import ProtocolError

    for bad in (
        b"",
        b"\x05",
        message[:-1],
        encode_rpc(RpcMessageType.RESPONSE, request_id=1, peer=0, payload=b"\xff\xfe"),
    ):
        with pytest.raises(ProtocolError):
            decode_rpc_untrusted(bad)
