"""One public signaling address in front of many room servers: each request goes on to the
server that hosts its room.

A :class:`SignalingRouter` listens where clients connect (``POST /rtc/connect``, the same
protocol as :class:`~netcode.transport.signaling.SignalingServer`) and *proxies* each request
to the server a :class:`Directory` names:

- a join goes to the server hosting the room its token names (or ``room`` field), which the
  directory places on the least-loaded server when it is new;
- a resume goes to the server named by the session id's prefix (the server's
  ``instance_id``); a server that is gone is refused as HTTP 410 ``node_lost``, which
  ``Room`` reports as ``disconnected("node_lost")``;
- other GETs (``/netcode.js``...) and CORS preflights go to any live server.

The server's answer (its SDP, with *its own* ICE candidates) comes back unchanged, so the
WebRTC traffic then flows straight between the client and that server's UDP ports: the
router carries one HTTP request per join or resume, never a datagram. A proxy rather than a
redirect keeps one public address (the servers may listen on loopback or a private
network), needs nothing of the client, and works for browsers without CORS on every server.

The router tells the server the client's address in ``X-Netcode-Forwarded-For`` with the
shared ``forward_key`` (see :attr:`SignalingServer.forward_key`), so the server's
per-address limits and loopback candidate apply to the client, not to the router. The
router applies the same :class:`~netcode.transport.signaling.SignalingLimits` (request rate
and requests in flight per address) before any work.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
from typing import Protocol

import aiohttp
import attrs
import jwt
from aiohttp import web

from netcode.auth import TokenError, TokenVerifier
from netcode.transport.signaling import (
    ADMISSION_REFUSALS,
    FORWARD_KEY_HEADER,
    FORWARDED_FOR_HEADER,
    MAX_SIGNALING_BODY_BYTES,
    SIGNALING_PATH,
    AddressAdmission,
    SignalingLimits,
    _BadRequest,
    _parse_offer_untrusted,
)

__all__ = ["Directory", "Route", "SignalingRouter"]

logger = logging.getLogger(__name__)

#: Headers of a server's answer passed on to the client (the rest are the router's own).
_PASSED_HEADERS = (
    "Content-Type",
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "Cache-Control",
    "ETag",
    "Last-Modified",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Max-Age",
    "Vary",
)
#: Headers of the client's request passed on to the server.
_FORWARDED_REQUEST_HEADERS = (
    "Content-Type",
    "Origin",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
)


@attrs.frozen
class Route:
    """Where a request goes: a server's base URL, or a refusal (HTTP ``status``, ``code``)."""

    url: str = ""
    status: int = 0
    code: str = ""
    message: str = ""

    @classmethod
    def to(cls, url: str) -> Route:
        return cls(url=url)

    @classmethod
    def refuse(cls, status: int, code: str, message: str) -> Route:
        return cls(status=status, code=code, message=message)


class Directory(Protocol):
    """Knows which server hosts what (a worker pool's table, or Redis)."""

    async def route_join(self, room: str) -> Route:
        """The server hosting ``room``, placing the room on one if it is new."""

    async def route_resume(self, session_id: str) -> Route:
        """The server holding the session (its id's prefix names the server), or a refusal:
        ``node_lost`` when that server is gone."""

    async def route_any(self) -> Route:
        """Any live server (pages, CORS preflights, requests naming no room)."""

    def unreachable(self, url: str) -> None:
        """A request forwarded to ``url`` could not connect (the server may be dying)."""


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def room_of_token_unverified(token: str) -> str:
    """The room a token's grants name, read *without* checking the signature ("" if none):
    only to route; the server that gets the request verifies the token."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return ""
    grants = claims.get("video", claims.get("grants"))
    room = grants.get("room") if isinstance(grants, dict) else None
    return room if isinstance(room, str) and len(room) <= 256 else ""


class SignalingRouter:
    """Routes signaling requests to the servers of a :class:`Directory` (see the module).

    ``forward_key``: the secret the servers' ``SignalingServer.forward_key`` holds.
    ``verifier``: check tokens here and refuse bad ones before any server sees them
    (optional: the server checks them anyway). ``ssl``: serve HTTPS.
    """

    def __init__(
        self,
        directory: Directory,
        *,
        forward_key: str,
        ssl: _ssl.SSLContext | None = None,
        limits: SignalingLimits | None = None,
        verifier: TokenVerifier | None = None,
        forward_timeout_s: float = 30.0,
    ) -> None:
        self.directory = directory
        self.forward_key = forward_key
        self.limits = limits or SignalingLimits()
        self._ssl = ssl
        self._verifier = verifier
        self._forward_timeout_s = forward_timeout_s
        self._admission = AddressAdmission(self.limits)
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._url = ""
        #: requests forwarded: joins, resumes, others (pages, preflights)
        self.joins = 0
        self.resumes = 0
        self.others = 0
        #: requests refused here (limits, bad requests, tokens, routes refused)
        self.refused = 0
        #: forwards that could not connect to their server
        self.unreachable = 0
        self.app = web.Application(client_max_size=MAX_SIGNALING_BODY_BYTES)
        self.app.router.add_post(SIGNALING_PATH, self._handle_connect)
        self.app.router.add_route("*", "/{tail:.*}", self._handle_other)

    @property
    def url(self) -> str:
        """The public base URL clients connect to (after start)."""
        if not self._url:
            raise RuntimeError("SignalingRouter is not started")
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host``:``port`` (0: any free port)."""
        if self._runner is not None:
            raise RuntimeError("SignalingRouter already started")
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, ssl_context=self._ssl).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0)
        )
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._url = f"{'https' if self._ssl else 'http'}://{shown}:{bound_port}"
        logger.info("signaling router listening on %s", self._url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def __aenter__(self) -> SignalingRouter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ admission

    def _admit(self, address: str) -> web.Response | None:
        code = self._admission.refusal(address)
        return None if code is None else _json_error(429, code, ADMISSION_REFUSALS[code])

    # ------------------------------------------------------------------ handlers

    async def _handle_connect(self, request: web.Request) -> web.StreamResponse:
        address = request.remote or ""
        refusal = self._admit(address)
        if refusal is not None:
            self.refused += 1
            return refusal
        self._admission.acquire(address)
        try:
            return await self._connect(request, address)
        except Exception:  # a directory's or a forward's trouble is this request's alone
            logger.exception("router: a signaling request failed")
            return _json_error(500, "internal_error", "routing the request failed")
        finally:
            self._admission.release(address)

    async def _connect(self, request: web.Request, address: str) -> web.StreamResponse:
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                body = await request.read()
        except TimeoutError:
            self.refused += 1
            return _json_error(408, "request_timeout", "the request body came too slowly")
        except web.HTTPRequestEntityTooLarge:
            self.refused += 1
            return _json_error(
                413, "request_too_large", f"body exceeds {MAX_SIGNALING_BODY_BYTES} bytes"
            )
        try:
            _, token, room, resume = _parse_offer_untrusted(body)
        except _BadRequest as exc:
            self.refused += 1
            return _json_error(400, exc.code, str(exc))
        if resume is not None:
            route = await self.directory.route_resume(str(resume["session"]))
            self.resumes += 1
        else:
            if self._verifier is not None:
                try:
                    claims = self._verifier.verify(token, room=room or None)
                except TokenError as exc:
                    self.refused += 1
                    extra = {"grant": str(exc.grant)} if hasattr(exc, "grant") else {}
                    return web.json_response(
                        {"error": exc.code, "message": str(exc), **extra}, status=exc.http_status
                    )
                room = claims.grants.room
            else:
                room = room or room_of_token_unverified(token)
            # A request naming no room goes to any server, which refuses it properly.
            route = await (self.directory.route_join(room) if room else self.directory.route_any())
            self.joins += 1
        return await self._forward(request, route, address, body)

    async def _handle_other(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            return _json_error(405, "method_not_allowed", f"{request.method} is not allowed")
        refusal = self._admit(request.remote or "")
        if refusal is not None:
            self.refused += 1
            return refusal
        self.others += 1
        try:
            route = await self.directory.route_any()
            return await self._forward(request, route, request.remote or "", None)
        except Exception:
            logger.exception("router: a request for %s failed", request.path[:200])
            return _json_error(500, "internal_error", "routing the request failed")

    async def _forward(
        self, request: web.Request, route: Route, address: str, body: bytes | None
    ) -> web.StreamResponse:
        if not route.url:
            self.refused += 1
            return _json_error(
                route.status or 503,
                route.code or "unavailable",
                route.message or "no server available",
            )
        http = self._http
        if http is None:
            return _json_error(503, "unavailable", "the router is stopping")
        headers = {
            name: request.headers[name]
            for name in _FORWARDED_REQUEST_HEADERS
            if name in request.headers
        }
        headers[FORWARDED_FOR_HEADER] = address
        headers[FORWARD_KEY_HEADER] = self.forward_key
        target = route.url.rstrip("/") + request.rel_url.path_qs
        try:
            async with http.request(
                request.method,
                target,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._forward_timeout_s),
            ) as response:
                payload = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    payload += chunk
                    if len(payload) > 64 * 1024 * 1024:
                        return _json_error(502, "bad_gateway", "the server's answer is too large")
                passed = {k: v for k, v in response.headers.items() if k in _PASSED_HEADERS}
                return web.Response(status=response.status, body=bytes(payload), headers=passed)
        except aiohttp.ClientConnectorError as exc:
            self.unreachable += 1
            self.directory.unreachable(route.url)
            logger.info("router: %s unreachable: %s", route.url, exc)
            return _json_error(
                503, "node_unreachable", "the server hosting this room does not answer; try again"
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.unreachable += 1
            logger.info("router: forwarding to %s failed: %r", route.url, exc)
            return _json_error(502, "bad_gateway", "the server hosting this room failed to answer")
