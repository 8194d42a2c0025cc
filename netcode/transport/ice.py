"""ICE servers (STUN and TURN) as plain data, and their conversion to aiortc's.

A player behind a NAT reaches the server through its public address only if ICE can learn
that address (a STUN server answers "you appear as 203.0.113.7:51234") or relay through a
TURN server when no direct path exists (symmetric NATs, UDP blocked). Both ends of a
connection take a list of :class:`IceServer`::

    IceServer("stun:stun.example.org:3478")
    IceServer("turn:turn.example.org:3478", username="game", credential="s3cret")
    IceServer.from_url("turn:game:s3cret@turn.example.org:3478?transport=tcp")

What aiortc (aioice) does with them: it uses the **first** STUN URL and the **first** TURN
URL it is given (``turn:`` over UDP or TCP, ``turns:`` over TLS) and ignores the rest; a STUN
or TURN server that does not answer delays gathering, hence every join and resume, by up to
5 seconds (aioice's gathering timeout). This module is the only place that builds aiortc's
``RTCIceServer``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

import attrs
from aiortc import RTCIceServer
from aiortc.rtcicetransport import parse_stun_turn_uri

__all__ = ["IceServer", "IceServerLike", "ice_servers_from_env", "to_rtc_ice_servers"]

#: (scheme, transport) pairs aioice can use.
_SUPPORTED = frozenset({("stun", None), ("turn", "udp"), ("turn", "tcp"), ("turns", "tcp")})


def _urls(value: str | Iterable[str]) -> tuple[str, ...]:
    urls = (value,) if isinstance(value, str) else tuple(value)
    if not urls:
        raise ValueError("an ICE server needs at least one URL")
    for url in urls:
        if not isinstance(url, str):
            raise TypeError(f"ICE server URLs are str, not {type(url).__name__}")
    return urls


def _check_url(url: str) -> dict[str, Any]:
    try:
        parsed = parse_stun_turn_uri(url)
    except ValueError as exc:
        raise ValueError(
            f"bad ICE server URL {url!r} ({exc}): expected stun:HOST[:PORT] or "
            "turn(s):HOST[:PORT][?transport=udp|tcp]"
        ) from None
    return parsed


@attrs.frozen
class IceServer:
    """One STUN or TURN server, as in WebRTC's ``RTCIceServer``.

    ``urls``: one URL or several (``stun:host:port``, ``turn:host:port``,
    ``turn:host:port?transport=tcp``, ``turns:host:port``); ``username`` and ``credential``
    are the TURN server's long-term credentials (required for ``turn:`` and ``turns:``).
    Raises ValueError for a malformed URL.
    """

    urls: tuple[str, ...] = attrs.field(converter=_urls)
    username: str | None = None
    credential: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        for url in self.urls:
            parsed = _check_url(url)
            scheme, transport = parsed["scheme"], parsed.get("transport")
            if (scheme, transport) not in _SUPPORTED:
                raise ValueError(
                    f"ICE server URL {url!r}: aiortc supports stun:, turn: over udp or tcp "
                    "and turns: over tcp"
                )
            if scheme in ("turn", "turns") and (not self.username or self.credential is None):
                raise ValueError(
                    f"TURN server {url!r} needs a username and a credential "
                    "(IceServer(url, username=..., credential=...) or turn:USER:PASS@HOST:PORT)"
                )

    @classmethod
    def from_url(cls, text: str) -> IceServer:
        """Parse ``stun:HOST[:PORT]`` or ``turn[s]:[USER:CREDENTIAL@]HOST[:PORT][?transport=T]``.

        The credentials may be percent-encoded (``%40`` for ``@``, ``%3A`` for ``:``).
        """
        text = text.strip()
        scheme, sep, rest = text.partition(":")
        if not sep:
            _check_url(text)  # raises the explanatory ValueError
        username = credential = None
        userinfo, at, hostpart = rest.rpartition("@")
        if at:
            user, colon, password = userinfo.partition(":")
            if not user or not colon:
                raise ValueError(
                    f"bad ICE server URL {scheme}:***@{hostpart}: credentials go as USER:PASS@"
                )
            username, credential = unquote(user), unquote(password)
            rest = hostpart
        return cls(f"{scheme}:{rest}", username=username, credential=credential)

    def __str__(self) -> str:
        """The URLs, with the username (never the credential) shown."""
        user = f" (user {self.username})" if self.username else ""
        return " ".join(self.urls) + user


#: What the ``ice_servers=`` parameters accept per server: an IceServer, a URL (credentials
#: inline, see :meth:`IceServer.from_url`), a mapping like a browser's ``RTCIceServer``
#: (``{"urls": ..., "username": ..., "credential": ...}``) or aiortc's own RTCIceServer.
IceServerLike = IceServer | str | Mapping[str, Any] | RTCIceServer


def _one(server: IceServerLike) -> RTCIceServer:
    if isinstance(server, RTCIceServer):
        return server
    if isinstance(server, str):
        server = IceServer.from_url(server)
    elif isinstance(server, Mapping):
        if "urls" not in server:
            raise ValueError(f"an ICE server mapping needs 'urls', got keys {sorted(server)}")
        server = IceServer(
            server["urls"], username=server.get("username"), credential=server.get("credential")
        )
    if not isinstance(server, IceServer):
        raise TypeError(
            f"an ICE server is an IceServer, a URL or a mapping, not {type(server).__name__}"
        )
    return RTCIceServer(
        urls=list(server.urls), username=server.username, credential=server.credential
    )


def to_rtc_ice_servers(
    servers: Iterable[IceServerLike] | IceServerLike | None,
) -> list[RTCIceServer]:
    """aiortc's RTCIceServer list for ``servers`` (each an :data:`IceServerLike`)."""
    if servers is None:
        return []
    if isinstance(servers, str | IceServer | Mapping | RTCIceServer):
        return [_one(servers)]  # one server given alone
    return [_one(server) for server in servers]


def ice_servers_from_env(name: str = "NETCODE_ICE_SERVERS") -> list[IceServer]:
    """The servers listed in environment variable ``name``: URLs separated by whitespace,
    TURN credentials inline (``turn:USER:PASS@HOST:PORT``). Empty if it is not set."""
    return [IceServer.from_url(url) for url in os.environ.get(name, "").split()]


def ice_connections(pc: Any) -> list[Any]:
    """The ``aioice.Connection`` objects under an aiortc ``RTCPeerConnection``, each once
    (its data-channel transport's and its transceivers'); empty before they exist."""
    found: list[Any] = []
    transports = [pc.sctp.transport] if pc.sctp is not None else []
    transports.extend(t.receiver.transport for t in pc.getTransceivers())
    for dtls in transports:
        connection = getattr(getattr(dtls.transport, "iceGatherer", None), "_connection", None)
        if connection is not None and all(connection is not seen for seen in found):
            found.append(connection)
    return found
