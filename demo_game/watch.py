"""The arena's spectator page: ``/watch`` on the demo server, drawn from live snapshots.

The page (``demo_game/web/watch.html`` and ``watch.js``) joins room ``arena`` with the
browser client ``/netcode.js``, draws players, NPCs, pickups and the storm on a canvas,
and shows the scoreboard and the chat; the viewer can chat too.

It needs a token whose participant metadata is ``spectator`` (the arena gives spectators no
player). Two ways to get one:

- in the URL's fragment: ``/watch#token=...`` (mint it with ``netcode-token --room arena
  --identity NAME --metadata spectator``). A fragment never leaves the browser: it is not
  in the server's request, its logs or a Referer header;
- from ``GET /watch/token``, which only a server started with ``--dev`` answers, and only to
  pages opened from its own machine (a loopback address): a spectator token valid for an
  hour, under a fresh identity. Everywhere else it answers 404 and the page asks for a
  token in the URL. (Behind a reverse proxy on the same machine every request comes from
  loopback: never put a --dev server behind one.)
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Mapping
from importlib import resources

from netcode import HttpReply, RoomServer
from netcode.cli import make_token

__all__ = ["SPECTATOR_METADATA", "WATCH_PATH", "add_watch_pages", "is_spectator_metadata"]

#: Participant metadata that makes a participant a spectator (no player in the arena).
SPECTATOR_METADATA = "spectator"
WATCH_PATH = "/watch"
#: Lifetime of the tokens /watch/token hands out, seconds.
WATCH_TOKEN_TTL_S = 3600

#: The page's own scripts only; fetch, WebRTC and inline styles as it needs them.
_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def is_spectator_metadata(metadata: str) -> bool:
    return metadata == SPECTATOR_METADATA


def _asset(name: str) -> bytes:
    return resources.files("demo_game").joinpath("web", name).read_bytes()


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def add_watch_pages(
    server: RoomServer, room: str, api_key: str, api_secret: str, *, dev_tokens: bool = False
) -> None:
    """Serve the spectator page on ``server`` (before it starts): ``/watch``, ``/watch.js``
    and, with ``dev_tokens``, spectator tokens for room ``room`` at ``/watch/token``."""
    headers = {"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"}
    server.add_page(
        WATCH_PATH, HttpReply(_asset("watch.html"), "text/html; charset=utf-8", headers=headers)
    )
    server.add_page(
        WATCH_PATH + ".js",
        HttpReply(_asset("watch.js"), "text/javascript; charset=utf-8", headers=headers),
    )

    def watch_token(query: Mapping[str, str], remote: str) -> HttpReply:
        if not dev_tokens or not _is_loopback(remote):
            body = {
                "error": "no_token_here",
                "message": "open /watch#token=<a spectator token> (netcode-token --room "
                f"{room} --identity NAME --metadata {SPECTATOR_METADATA}); only a --dev "
                "server hands out tokens, and only to its own machine",
            }
            return HttpReply(json.dumps(body).encode(), status=404)
        identity = f"watcher-{secrets.token_hex(3)}"
        token = make_token(
            api_key,
            api_secret,
            identity,
            room,
            name="Spectator",
            metadata=SPECTATOR_METADATA,
            ttl_s=WATCH_TOKEN_TTL_S,
        )
        body = {"token": token, "room": room, "identity": identity}
        return HttpReply(json.dumps(body).encode(), headers={"Cache-Control": "no-store"})

    server.add_page(WATCH_PATH + "/token", watch_token)
