"""RPC between participants, as LiveKit's: register a method, call it, handle its errors.

    python docs/examples/rpc.py

Bob serves ``add`` (a JSON payload in, a JSON payload out) and ``slow``; Alice calls them.
A handler that raises :class:`~netcode.RpcError` sends its code and message to the caller;
any other exception arrives as APPLICATION_ERROR; an unknown method as UNSUPPORTED_METHOD;
no answer in time as RESPONSE_TIMEOUT.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from netcode import (
    AccessToken,
    Grants,
    Room,
    RoomServer,
    RpcError,
    RpcErrorCode,
    RpcInvocationData,
)

API_KEY, API_SECRET = "example-key", "example-secret-of-at-least-32-characters"
ROOM = "workshop"


def token(identity: str) -> str:
    grants = Grants(room_join=True, room=ROOM)
    return AccessToken(API_KEY, API_SECRET).with_identity(identity).with_grants(grants).to_jwt()


def add(call: RpcInvocationData) -> str:
    """Add numbers: ``{"numbers": [1, 2]}`` -> ``{"sum": 3}``."""
    try:
        numbers = json.loads(call.payload)["numbers"]
        total = sum(float(n) for n in numbers)
    except (ValueError, KeyError, TypeError):
        raise RpcError(4000, 'expected {"numbers": [...]}', data=call.payload[:100]) from None
    return json.dumps({"sum": total, "for": call.caller_identity})


async def slow(call: RpcInvocationData) -> str:
    await asyncio.sleep(float(call.payload))
    return "done"


async def main(duration: float) -> None:
    server = RoomServer(API_KEY, API_SECRET)
    await server.start("127.0.0.1", 0)  # 0: any free port
    alice, bob = Room(), Room()
    await alice.connect(server.url, token("alice"))
    await bob.connect(server.url, token("bob"))
    await bob.local_participant.register_rpc_method("add", add)
    await bob.local_participant.register_rpc_method("slow", slow)
    await asyncio.sleep(0.2)

    call = alice.local_participant.perform_rpc
    reply = await call(destination_identity="bob", method="add", payload='{"numbers": [1, 2.5]}')
    print(f"add -> {reply}")
    for method, payload, timeout in (
        ("add", "not json", 5.0),
        ("multiply", "{}", 5.0),
        ("slow", str(duration), duration / 2),
    ):
        try:
            await call(
                destination_identity="bob",
                method=method,
                payload=payload,
                response_timeout=timeout,
            )
        except RpcError as exc:
            name = RpcErrorCode(exc.code).name if exc.code in set(RpcErrorCode) else "app"
            print(f"{method} -> RpcError {exc.code} ({name}): {exc.message}")
    await alice.disconnect()
    await bob.disconnect()
    await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="RPC between two participants.")
    parser.add_argument(
        "--duration", type=float, default=2.0, help="how long the slow method takes (2)"
    )
    asyncio.run(main(parser.parse_args().duration))
