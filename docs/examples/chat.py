"""A room with chat: a server, three participants, public and private lines.

    python docs/examples/chat.py --duration 3

Each participant joins with an access token, receives what is published on the ``chat``
topic (``publish_data`` with ``reliable=True``: complete and in order) and sees the others
come and go. ``destination_identities`` sends a line to some participants only (a list, or
one identity as a str).
"""

from __future__ import annotations

import argparse
import asyncio

from netcode import AccessToken, DataPacket, Grants, RemoteParticipant, Room, RoomServer

API_KEY, API_SECRET = "example-key", "example-secret-of-at-least-32-characters"
ROOM = "lobby"


def token(identity: str) -> str:
    """What an application's backend hands a player: the right to join ROOM."""
    grants = Grants(room_join=True, room=ROOM)
    return AccessToken(API_KEY, API_SECRET).with_identity(identity).with_grants(grants).to_jwt()


async def join(url: str, identity: str) -> Room:
    room = Room()

    def on_data(packet: DataPacket) -> None:
        sender = packet.participant.identity if packet.participant else "server"
        text = packet.data if isinstance(packet.data, str) else packet.data.decode()
        print(f"[{identity}] {sender}: {text}")

    def on_join(participant: RemoteParticipant) -> None:
        print(f"[{identity}] {participant.identity} joined")

    room.on("data_received", on_data)  # or @room.on("data_received") on the function
    room.on("participant_connected", on_join)
    await room.connect(url, token(identity), topics=["chat"])
    return room


async def main(duration: float) -> None:
    server = RoomServer(API_KEY, API_SECRET)
    await server.start("127.0.0.1", 0)  # 0: any free port
    alice = await join(server.url, "alice")
    bob = await join(server.url, "bob")
    carol = await join(server.url, "carol")
    await asyncio.sleep(0.2)  # let everyone hear of everyone

    await alice.local_participant.publish_data("hello everyone", topic="chat")
    await bob.local_participant.publish_data(
        "psst, alice", topic="chat", destination_identities="alice"
    )
    server.rooms[ROOM].send_data("the server says hi", topic="chat")
    loop = asyncio.get_running_loop()
    started, line = loop.time(), 0
    while loop.time() - started < duration:
        line += 1
        await carol.local_participant.publish_data(f"line {line}", topic="chat")
        await asyncio.sleep(0.5)

    await asyncio.sleep(0.2)
    for room in (alice, bob, carol):
        await room.disconnect()
    await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A room with chat.")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of chat (3)")
    asyncio.run(main(parser.parse_args().duration))
