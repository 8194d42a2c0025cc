"""The browser client: ``netcode.js``, a dependency-free ES module every RoomServer serves.

A web page joins a room with it (``import { Room, Replica } from "/netcode.js"``); it speaks
the protocol of docs/PROTOCOL.md over the browser's RTCPeerConnection. :func:`asset` reads
the files of this package (they install with it as package data).
"""

from __future__ import annotations

from importlib import resources

__all__ = ["NETCODE_JS_PATH", "asset"]

#: Where a RoomServer serves the browser client.
NETCODE_JS_PATH = "/netcode.js"


def asset(name: str) -> bytes:
    """The bytes of one file of the browser client (``"netcode.js"``)."""
    return resources.files(__name__).joinpath(name).read_bytes()
