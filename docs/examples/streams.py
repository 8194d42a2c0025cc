"""Streams: large text and files, chunked, with progress, as LiveKit's send_text/send_file.

    python docs/examples/streams.py --size 1000000

Alice sends Bob a long text and a file; Bob's handlers, registered per topic, read one
at once (``read_all``) and the other chunk by chunk (``async for``). ``send_file`` returns
once every receiver has the whole stream; ``on_progress(sent, total)`` follows it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import pathlib
import tempfile

from netcode import (
    AccessToken,
    ByteStreamReader,
    Grants,
    Room,
    RoomServer,
    TextStreamReader,
)

API_KEY, API_SECRET = "example-key", "example-secret-of-at-least-32-characters"
ROOM = "studio"


def token(identity: str) -> str:
    grants = Grants(room_join=True, room=ROOM)
    return AccessToken(API_KEY, API_SECRET).with_identity(identity).with_grants(grants).to_jwt()


async def main(size: int) -> None:
    server = RoomServer(API_KEY, API_SECRET)
    await server.start("127.0.0.1", 0)  # 0: any free port
    alice, bob = Room(), Room()
    done = asyncio.Event()

    async def read_text(reader: TextStreamReader, sender: str) -> None:
        text = await reader.read_all()
        print(f"bob: text from {sender}: {len(text)} characters, starts {text[:24]!r}")

    async def read_file(reader: ByteStreamReader, sender: str) -> None:
        digest, received = hashlib.sha256(), 0
        async for chunk in reader:  # chunks as they arrive
            digest.update(chunk)
            received += len(chunk)
        info = reader.info
        print(
            f"bob: file {info.name!r} ({info.mime_type}) from {sender}: {received} bytes, "
            f"sha256 {digest.hexdigest()[:16]}"
        )
        done.set()

    # Handlers are plain functions or coroutines; coroutines run as their own tasks.
    bob.register_text_stream_handler("notes", read_text)
    bob.register_byte_stream_handler("files", read_file)
    await alice.connect(server.url, token("alice"))
    await bob.connect(server.url, token("bob"))
    await asyncio.sleep(0.2)

    info = await alice.local_participant.send_text("all work and no play " * 500, topic="notes")
    print(f"alice: sent text stream {info.id} of {info.size} bytes")

    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(directory) / "level.bin"
        data = os.urandom(size)
        path.write_bytes(data)
        shown = -1

        def progress(sent: int, total: int) -> None:
            nonlocal shown
            quarter = 4 * sent // total
            if quarter > shown:
                shown = quarter
                print(f"alice: sent {sent} of {total} bytes")

        info = await alice.local_participant.send_file(
            path, topic="files", destination_identities="bob", on_progress=progress
        )
        print(
            f"alice: file stream {info.id} delivered, sha256 "
            f"{hashlib.sha256(data).hexdigest()[:16]}"
        )
    await asyncio.wait_for(done.wait(), 30)
    await alice.disconnect()
    await bob.disconnect()
    await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Text and file streams with progress.")
    parser.add_argument("--size", type=int, default=1_000_000, help="file bytes (1000000)")
    asyncio.run(main(parser.parse_args().size))
