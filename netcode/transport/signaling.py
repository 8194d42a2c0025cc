"""HTTP signaling for :class:`PeerLink`: one POST carries the offer, its answer comes back.

Protocol (no trickle ICE: aiortc gathers every candidate before it answers):

``POST {url}/rtc/connect`` with JSON ``{"sdp": ..., "type": "offer", "token": ...}`` and,
optionally, ``"room": ...`` (the room the client asks for; the token must grant it).
A client resuming a session after a drop sends ``"resume": {"session": ..., "secret": ...,
"received": N}`` instead of a token (see docs/PROTOCOL.md, "Resume").

- ``200`` ``{"sdp": ..., "type": "answer", ...server info}``
- ``401``/``403`` ``{"error": <TokenError code>, "message": ..., ["grant": ...]}``: the
  token was refused; the client raises the matching :class:`~netcode.auth.TokenError`.
- ``400`` ``{"error": "bad_request" | "bad_sdp", "message": ...}``: malformed request.
- ``413`` ``{"error": "request_too_large", ...}``: body over :data:`MAX_SIGNALING_BODY_BYTES`.
- ``410`` ``{"error": "session_expired" | "server_restarted", ...}``: the session to resume
  is gone; the client raises :class:`SignalingError` with that ``code``.

The server answers, then waits for the link to open and hands it to ``on_peer``; a link
that does not open within ``open_timeout_s`` is closed.

Over the internet, signaling runs over HTTPS (``SignalingServer(ssl=...)``; clients verify
the certificate, see :func:`client_ssl_context`): the request carries the access token and
the answer the server's DTLS fingerprint, so whoever can rewrite plain HTTP can also sit in
the middle of the DTLS handshake. ``OPTIONS {url}/rtc/connect`` answers CORS preflights for
the origins in ``cors_origins`` (204 with the ``Access-Control-Allow-*`` headers; 403 for
any other origin).

Behind a router (:mod:`netcode.transport.router`, used by worker pools and Redis clusters),
every request comes from the router's address: a request that carries the server's
:attr:`SignalingServer.forward_key` in ``X-Netcode-Forward-Key`` is taken to come from the
client address in ``X-Netcode-Forwarded-For`` (for the per-address limits, the loopback
candidate and the logs).

Pages: :meth:`SignalingServer.add_page` serves a GET path (a fixed body such as the browser
client ``/netcode.js``, or a function of the query), with CORS headers for the allowed
origins when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import ssl as _ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import attrs
from aiohttp import web
from aiortc import RTCSessionDescription

from netcode.auth import Claims, TokenError, token_error_from_code
from netcode.core.budget import TokenBucket
from netcode.transport.ice import IceServerLike, to_rtc_ice_servers
from netcode.transport.impair import ImpairedPath, Impairment
from netcode.transport.peerlink import (
    DEFAULT_LOSSY_BACKLOG_LIMIT_BYTES,
    NO_CANDIDATES,
    ConnectError,
    ConnectTimeout,
    PeerLink,
    has_candidates,
    is_loopback_host,
    loopback_candidates,
    make_peer_connection,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "FORWARDED_FOR_HEADER",
    "FORWARD_KEY_HEADER",
    "MAX_SIGNALING_BODY_BYTES",
    "SIGNALING_PATH",
    "AnswerInfo",
    "Authorize",
    "HttpReply",
    "ImpairmentFor",
    "OnPeer",
    "PageHandler",
    "ResumeAuthorize",
    "SessionRefused",
    "SignalingClient",
    "SignalingError",
    "SignalingLimits",
    "SignalingServer",
    "client_ssl_context",
    "connect_peer",
]

logger = logging.getLogger(__name__)

SIGNALING_PATH = "/rtc/connect"

#: A router's headers: the client's address, and the key that makes the server believe it.
FORWARDED_FOR_HEADER = "X-Netcode-Forwarded-For"
FORWARD_KEY_HEADER = "X-Netcode-Forward-Key"

#: Largest signaling request or response body. An offer with a few candidates is about
#: 1 KB; a token under 1 KB.
MAX_SIGNALING_BODY_BYTES = 64 * 1024

#: Default limit for :func:`connect_peer`, from the offer to open channels.
DEFAULT_CONNECT_TIMEOUT_S = 10.0

#: Checks a token (and the client's optional requested ``room``, "" if none) and returns
#: its claims, or raises a TokenError.
Authorize = Callable[[str, str], Awaitable[Claims]]
#: Checks a resume request's fields (``session``, ``secret``, ``received``) and returns the
#: session's claims, or raises SessionRefused.
ResumeAuthorize = Callable[[Mapping[str, Any]], Awaitable[Claims]]
#: Receives each peer once its link is open.
OnPeer = Callable[[PeerLink, Claims], Awaitable[None]]
#: Extra fields for the answer, per peer (``sdp`` and ``type`` cannot be overridden).
AnswerInfo = Callable[[Claims], Mapping[str, Any]]
#: Chooses the impairment of each peer's UDP datagrams at the server (None: unimpaired).
ImpairmentFor = Callable[[Claims], Impairment | ImpairedPath | None]


@attrs.frozen
class HttpReply:
    """The answer to a GET of a page (see :meth:`SignalingServer.add_page`)."""

    body: bytes
    content_type: str = "application/json"
    status: int = 200
    #: extra headers (a Content-Security-Policy, say)
    headers: Mapping[str, str] = attrs.field(factory=dict)


#: Answers a GET: ``page(query, remote)`` with the URL's query parameters and the client's
#: address; returns the reply (raising is a 500).
PageHandler = Callable[[Mapping[str, str], str], HttpReply]


class SignalingError(ConnectError):
    """The signaling server refused the request (other than a refused token)."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        #: HTTP status (0 if the response was not HTTP-level wrong)
        self.status = status
        #: the server's error code, e.g. ``bad_sdp``
        self.code = code


@attrs.frozen
class SignalingLimits:
    """Limits on signaling requests, per client address and in all."""

    #: requests a second from one address, and the burst it may use at once
    requests_per_s: float = 20.0
    request_burst: float = 200.0
    #: connections being set up (request to open link) from one address, and in all
    max_pending_per_address: int = 64
    max_pending: int = 1024
    #: seconds a client has to send its whole request body
    body_timeout_s: float = 10.0
    #: addresses remembered for rate limiting (least recently seen forgotten first)
    max_addresses: int = 10_000


class AddressAdmission:
    """Per-address admission under :class:`SignalingLimits`: a token bucket per address
    (the least recently seen forgotten first, past ``max_addresses``) and the requests in
    progress, per address and in all. Shared by the signaling server and the router."""

    def __init__(self, limits: SignalingLimits) -> None:
        self.limits = limits
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._pending: dict[str, int] = {}

    def refusal(self, address: str) -> str | None:
        """None if a request from ``address`` may go on; else the refusal's code
        (``rate_limited`` or ``too_many_pending``)."""
        limits = self.limits
        now = time.monotonic()
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(
                limits.requests_per_s, limits.request_burst, now
            )
            while len(self._buckets) > limits.max_addresses:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        if not bucket.take(now):
            return "rate_limited"
        if (
            self._pending.get(address, 0) >= limits.max_pending_per_address
            or sum(self._pending.values()) >= limits.max_pending
        ):
            return "too_many_pending"
        return None

    def acquire(self, address: str) -> None:
        """A request from ``address`` is in progress (until :meth:`release`)."""
        self._pending[address] = self._pending.get(address, 0) + 1

    def release(self, address: str) -> None:
        count = self._pending.get(address, 0) - 1
        if count > 0:
            self._pending[address] = count
        else:
            self._pending.pop(address, None)


#: the answer to each refusal code of AddressAdmission
ADMISSION_REFUSALS = {
    "rate_limited": "too many signaling requests from this address",
    "too_many_pending": "too many connections being set up",
}


class SessionRefused(Exception):
    """Raised by a ResumeAuthorize: the session cannot be resumed (``code`` says why)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _check_origin(origin: str) -> str:
    """A CORS allow-list entry: ``*`` or ``scheme://host[:port]``, lower-cased."""
    if origin == "*":
        return origin
    parts = urlsplit(origin.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise ValueError(
            f"CORS origin {origin!r} must be '*' or scheme://host[:port], "
            "e.g. https://game.example.org"
        )
    return f"{parts.scheme}://{parts.netloc}".lower()


def _error(status: int, code: str, message: str, **extra: str) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


class _BadRequest(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _parse_resume_untrusted(resume: object) -> dict[str, Any]:
    if not isinstance(resume, dict):
        raise _BadRequest("bad_request", "field 'resume' must be an object")
    session, secret, received = resume.get("session"), resume.get("secret"), resume.get("received")
    if not isinstance(session, str) or not 0 < len(session) <= 128:
        raise _BadRequest("bad_request", "resume.session must be a string of 1 to 128 chars")
    if not isinstance(secret, str) or not 0 < len(secret) <= 128:
        raise _BadRequest("bad_request", "resume.secret must be a string of 1 to 128 chars")
    if isinstance(received, bool) or not isinstance(received, int) or not 0 <= received < 2**63:
        raise _BadRequest("bad_request", "resume.received must be an integer in 0..2**63-1")
    episode = resume.get("episode", 0)
    if isinstance(episode, bool) or not isinstance(episode, int) or not 0 <= episode < 2**31:
        raise _BadRequest("bad_request", "resume.episode must be an integer in 0..2**31-1")
    return {"session": session, "secret": secret, "received": received, "episode": episode}


def _parse_offer_untrusted(body: bytes) -> tuple[str, str, str, dict[str, Any] | None]:
    """(sdp, token, requested room or "", resume fields or None) from a request body.

    Raises _BadRequest."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError: not UTF-8, not JSON, or an integer of more digits than Python converts;
        # RecursionError: arrays or objects nested past the decoder's depth
        raise _BadRequest("bad_request", f"body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(request, dict):
        raise _BadRequest("bad_request", "body is not a JSON object")
    sdp, kind, token = request.get("sdp"), request.get("type"), request.get("token")
    if not isinstance(sdp, str) or not sdp:
        raise _BadRequest("bad_request", "missing or non-string field 'sdp'")
    if kind != "offer":
        raise _BadRequest("bad_request", "field 'type' must be 'offer'")
    resume = None if request.get("resume") is None else _parse_resume_untrusted(request["resume"])
    if resume is None and (not isinstance(token, str) or not token):
        raise _BadRequest("bad_request", "missing or non-string field 'token'")
    room = request.get("room", "")
    if not isinstance(room, str) or len(room) > 256:
        raise _BadRequest("bad_request", "field 'room' must be a string of at most 256 chars")
    return sdp, token if isinstance(token, str) else "", room, resume


class SignalingServer:
    """Accepts peer connections over HTTP signaling and hands each open link to ``on_peer``.

    ``authorize(token, room)`` checks the client's token (raise a TokenError to refuse);
    ``on_peer(link, claims)`` runs as its own task once the link is open; when it returns the
    link stays open (close it yourself, or let :meth:`stop` close it). ``resume(fields)``
    checks a resume request instead of a token (raise SessionRefused to refuse); the link
    of an accepted resume carries the fields in :attr:`PeerLink.resume_request`. Without
    ``resume``, resume requests are refused as ``session_expired``.
    """

    def __init__(
        self,
        authorize: Authorize,
        on_peer: OnPeer,
        *,
        ice_servers: Iterable[IceServerLike] | None = None,
        include_loopback: bool | None = None,
        answer_info: AnswerInfo | None = None,
        open_timeout_s: float = 15.0,
        lossy_backlog_limit_bytes: int = DEFAULT_LOSSY_BACKLOG_LIMIT_BYTES,
        impairment: Impairment | ImpairmentFor | None = None,
        resume: ResumeAuthorize | None = None,
        ssl: _ssl.SSLContext | None = None,
        cors_origins: Iterable[str] | None = None,
        limits: SignalingLimits | None = None,
    ) -> None:
        """``include_loopback``: offer a 127.0.0.1 candidate; None (default) does so for
        clients whose signaling request came over loopback.

        ``ice_servers``: STUN/TURN servers for the server's side of every peer connection
        (see :class:`~netcode.transport.ice.IceServer`). ``ssl``: serve HTTPS with this
        context (its certificate chain loaded); the URL becomes ``https://``.
        ``cors_origins``: web origins (``https://game.example.org``, or ``*``) whose pages
        may call the signaling endpoint; default none. ``limits``: per-address request
        rate and pending connections, and the time a client has to send its request
        (:class:`SignalingLimits`).

        ``impairment``: impair every peer's UDP datagrams at the server, both ways. An
        :class:`~netcode.transport.impair.Impairment` gives each peer its own
        :class:`~netcode.transport.impair.ImpairedPath` (its RNG derived from the seed and
        the peer's number); a function ``impairment_for(claims)`` chooses per peer. The
        peer's path is ``link.impairment``."""
        self._authorize = authorize
        self._resume = resume
        self._on_peer = on_peer
        self._ice_servers = to_rtc_ice_servers(ice_servers)  # ValueError now for a bad one
        self._ssl = ssl
        self._cors_origins = frozenset(_check_origin(o) for o in (cors_origins or ()))
        self._include_loopback = include_loopback
        self._cors_paths: set[str] = {SIGNALING_PATH}
        self._answer_info = answer_info
        self._open_timeout_s = open_timeout_s
        self._backlog_limit = lossy_backlog_limit_bytes
        self._impairment = impairment
        #: per-address limits on requests and pending connections
        self.limits = limits or SignalingLimits()
        self._admission = AddressAdmission(self.limits)
        #: requests refused by the limits (rate, pending), and bodies that came too slowly
        self.refused_rate = 0
        self.refused_pending = 0
        self.slow_bodies = 0
        #: a secret shared with the routers in front of this server ("": none): a request
        #: carrying it in FORWARD_KEY_HEADER comes from the address in FORWARDED_FOR_HEADER
        self.forward_key = ""
        self._links: set[PeerLink] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._requests: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._peer_count = 0
        self._stopping = False
        #: the aiohttp application (add routes before :meth:`start` if you need more)
        self.app = web.Application(client_max_size=MAX_SIGNALING_BODY_BYTES)
        self.app.router.add_post(SIGNALING_PATH, self._handle_connect)
        self.app.router.add_route("OPTIONS", SIGNALING_PATH, self._handle_preflight)
        self.app.on_response_prepare.append(self._add_cors_headers)

    @property
    def url(self) -> str:
        """Base URL clients connect to, e.g. ``http://127.0.0.1:7880`` (after start)."""
        if not self._url:
            raise RuntimeError("SignalingServer is not started")
        return self._url

    @property
    def links(self) -> frozenset[PeerLink]:
        """Links currently connecting or open."""
        return frozenset(self._links)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host``:``port`` (port 0: pick a free one; see :attr:`url`)."""
        if self._runner is not None:
            raise RuntimeError("SignalingServer already started")
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, ssl_context=self._ssl)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        scheme = "https" if self._ssl is not None else "http"
        self._url = f"{scheme}://{shown}:{bound_port}"
        logger.info("signaling server listening on %s", self._url)
        if self._ssl is None and not is_loopback_host(host):
            logger.warning(
                "signaling over plain HTTP on %s: access tokens and DTLS fingerprints cross "
                "the network in clear; serve HTTPS (ssl=..., --tls-cert/--tls-key) or put a "
                "TLS reverse proxy in front (docs/DEPLOY.md)",
                host or "every interface",
            )

    async def stop(self) -> None:
        """Stop listening, cancel pending ``on_peer`` tasks and close every link."""
        self._stopping = True
        # Requests still in authorize() or gathering would hold up the runner's cleanup.
        for request_task in list(self._requests):
            request_task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(link.close() for link in list(self._links)))
        self._links.clear()

    async def __aenter__(self) -> SignalingServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _allowed_origin(self, origin: str) -> str | None:
        """The Access-Control-Allow-Origin value for ``origin``, or None if not allowed."""
        if not origin or not self._cors_origins:
            return None
        if origin.lower() in self._cors_origins:
            return origin
        return "*" if "*" in self._cors_origins else None

    async def _handle_preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if self._allowed_origin(origin) is None:
            logger.info("refused a CORS preflight from origin %r", origin[:200])
            return _error(403, "origin_not_allowed", f"origin {origin[:200]!r} is not allowed")
        method = request.headers.get("Access-Control-Request-Method", "POST")
        if method.upper() != "POST":
            return _error(403, "method_not_allowed", f"only POST is allowed, not {method[:20]!r}")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "600",
            },
        )

    def add_page(self, path: str, page: HttpReply | PageHandler, *, cors: bool = False) -> None:
        """Answer GET ``path`` with ``page`` (a fixed reply, or a function of the query).

        ``cors``: pages of the allowed origins (``cors_origins``) may fetch it too (a script
        module such as ``/netcode.js`` loaded from a game's own site). Call before start.
        """
        if not path.startswith("/") or path == SIGNALING_PATH:
            raise ValueError(f"page path {path!r} must start with / and not be the signaling path")

        async def handle(request: web.Request) -> web.Response:
            try:
                reply = (
                    page
                    if isinstance(page, HttpReply)
                    else page(request.query, self._remote(request))
                )
            except Exception:
                logger.exception("page %s raised", path)
                return _error(500, "internal_error", "the page failed")
            headers = {"X-Content-Type-Options": "nosniff", **reply.headers}
            return web.Response(
                body=reply.body,
                status=reply.status,
                content_type=None,
                headers={"Content-Type": reply.content_type, **headers},
            )

        self.app.router.add_get(path, handle)
        if cors:
            self._cors_paths.add(path)

    async def _add_cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path not in self._cors_paths or not self._cors_origins:
            return
        allowed = self._allowed_origin(request.headers.get("Origin", ""))
        if allowed is not None:
            response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Vary"] = "Origin"

    async def _handle_connect(self, request: web.Request) -> web.Response:
        if self._stopping:
            return _error(503, "unavailable", "server is stopping")
        address = self._remote(request)
        refusal = self._admit(address)
        if refusal is not None:
            return refusal
        task = asyncio.current_task()
        if task is not None:
            self._requests.add(task)
        self._admission.acquire(address)
        opening = False
        try:
            response = await self._connect(request)
            # An answered offer stays pending until its link opens or gives up.
            opening = response.status == 200
            return response
        finally:
            self._requests.discard(task)
            if not opening:
                self._admission.release(address)

    def _remote(self, request: web.Request) -> str:
        """The client's address: the connection's, or the one a trusted router names."""
        key = self.forward_key
        given = request.headers.get(FORWARD_KEY_HEADER, "").encode("utf-8", "surrogateescape")
        if key and hmac.compare_digest(given, key.encode()):
            forwarded = request.headers.get(FORWARDED_FOR_HEADER, "")
            if forwarded:
                return forwarded[:64]
        return request.remote or ""

    def _admit(self, address: str) -> web.Response | None:
        """None if a request from ``address`` may go on; else the refusal to send."""
        code = self._admission.refusal(address)
        if code is None:
            return None
        if code == "rate_limited":
            self.refused_rate += 1
        else:
            self.refused_pending += 1
        return _error(429, code, ADMISSION_REFUSALS[code])

    async def _connect(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                body = await request.read()
        except TimeoutError:
            self.slow_bodies += 1
            return _error(408, "request_timeout", "the request body came too slowly")
        except web.HTTPRequestEntityTooLarge:
            return _error(
                413, "request_too_large", f"body exceeds {MAX_SIGNALING_BODY_BYTES} bytes"
            )
        try:
            sdp, token, room, resume = _parse_offer_untrusted(body)
        except _BadRequest as exc:
            return _error(400, exc.code, str(exc))

        try:
            if resume is not None:
                if self._resume is None:
                    raise SessionRefused("session_expired", "this server does not resume sessions")
                claims = await self._resume(resume)
            else:
                claims = await self._authorize(token, room)
        except SessionRefused as exc:
            logger.info("refused a resume from %s: %s (%s)", self._remote(request), exc.code, exc)
            return _error(410, exc.code, str(exc))
        except TokenError as exc:
            extra = {"grant": str(exc.grant)} if hasattr(exc, "grant") else {}
            logger.info("refused a token from %s: %s (%s)", self._remote(request), exc.code, exc)
            return _error(exc.http_status, exc.code, str(exc), **extra)
        except Exception:
            logger.exception("authorize() raised")
            return _error(500, "internal_error", "authorization failed")

        self._peer_count += 1
        try:
            impairment = self._impairment_for(claims)
        except Exception:
            logger.exception("impairment_for() raised")
            return _error(500, "internal_error", "impairment configuration failed")
        pc = make_peer_connection(self._ice_servers)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:
            # aiortc's SDP parser raises assorted exceptions (and asserts) on bad input.
            await pc.close()
            return _error(400, "bad_sdp", f"offer not accepted: {type(exc).__name__}")
        except BaseException:
            await pc.close()
            raise
        if pc.sctp is None:
            await pc.close()
            return _error(400, "bad_sdp", "offer has no data channel (application) section")
        link = PeerLink(
            pc,
            name=f"server:{claims.identity}#{self._peer_count}",
            lossy_backlog_limit_bytes=self._backlog_limit,
            impairment=impairment,
        )
        link.resume_request = resume
        self._links.add(link)
        link.on_state_change(lambda state: self._forget(link) if state == "closed" else None)
        try:
            include_loopback = self._include_loopback
            if include_loopback is None:
                include_loopback = is_loopback_host(self._remote(request))
            with loopback_candidates(include_loopback):
                await pc.setLocalDescription(await pc.createAnswer())
            if not has_candidates(pc.localDescription.sdp):
                logger.error("%s: %s", link.name, NO_CANDIDATES)
                await link.close()
                return _error(503, "no_candidates", "server has no usable network address")
            answer: dict[str, Any] = {}
            if self._answer_info is not None:
                answer.update(self._answer_info(claims))
            answer.update(sdp=pc.localDescription.sdp, type=pc.localDescription.type)
        except BaseException:
            self._links.discard(link)
            await link.close()
            raise

        task = asyncio.get_running_loop().create_task(
            self._run_peer(link, claims, self._remote(request))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(answer)

    def _impairment_for(self, claims: Claims) -> ImpairedPath | None:
        config = self._impairment
        if config is None:
            return None
        chosen = config if isinstance(config, Impairment) else config(claims)
        if isinstance(chosen, Impairment):
            return ImpairedPath(chosen, salt=f"peer{self._peer_count}")
        return chosen

    def _forget(self, link: PeerLink) -> None:
        self._links.discard(link)

    async def _run_peer(self, link: PeerLink, claims: Claims, address: str = "") -> None:
        try:
            await link.wait_open(self._open_timeout_s)
        except ConnectError as exc:
            logger.info("%s: did not open: %s", link.name, exc)
            self._links.discard(link)
            await link.close()
            return
        finally:
            self._admission.release(address)
        try:
            await self._on_peer(link, claims)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s: on_peer raised; closing the link", link.name)
            await link.close()


# --- client ---------------------------------------------------------------------------------


def client_ssl_context(
    ssl: _ssl.SSLContext | None = None, ca_file: str | os.PathLike[str] | None = None
) -> _ssl.SSLContext | None:
    """The TLS context a client verifies an ``https://`` signaling server with.

    ``ssl`` is used as given; ``ca_file`` (a PEM file of certificates, e.g. a self-signed
    server's own certificate or a private CA) makes a context that trusts those in addition
    to the system's CAs. Neither: None, which verifies against the system's CAs. Raises
    ValueError if both are given, and OSError / ssl.SSLError for an unreadable ``ca_file``.
    """
    if ssl is not None and ca_file is not None:
        raise ValueError("pass ssl= or ca_file=, not both")
    if ca_file is None:
        return ssl
    context = _ssl.create_default_context()
    context.load_verify_locations(cafile=os.fspath(ca_file))
    return context


def _tls_failure(url: str, exc: aiohttp.ClientSSLError) -> ConnectError:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        problem = exc.certificate_error
        reason = getattr(problem, "verify_message", "") or str(problem)
        return ConnectError(
            f"TLS: the certificate of signaling server {url} is not trusted ({reason}); for a "
            "self-signed or private-CA certificate pass ca_file=PEM (or ssl=an SSLContext "
            "that trusts it; --ca-file on the commands)"
        )
    return ConnectError(f"TLS handshake with signaling server {url} failed: {exc}")


class SignalingClient:
    """An HTTP(S) client that keeps its connection to the signaling server open.

    Pass one to :func:`connect_peer` for every request to the same server (a room's join and
    its resumes): a later request then rides the open connection, one round trip, instead of
    paying a new TCP (and TLS) handshake first. Close it when done.
    """

    def __init__(self, keepalive_s: float = 60.0) -> None:
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The underlying aiohttp session (created on first use)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(keepalive_timeout=self._keepalive_s)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _post_offer(
    url: str,
    payload: Mapping[str, Any],
    ssl: _ssl.SSLContext | None = None,
    http: SignalingClient | None = None,
) -> dict[str, Any]:
    """POST the offer; return the answer object or raise the matching error."""
    endpoint = url.rstrip("/") + SIGNALING_PATH
    try:
        async with contextlib.AsyncExitStack() as stack:
            if http is None:
                session = await stack.enter_async_context(aiohttp.ClientSession())
            else:
                session = http.session()
            response = await stack.enter_async_context(
                session.post(endpoint, json=payload, ssl=True if ssl is None else ssl)
            )
            body = bytearray()
            async for chunk in response.content.iter_chunked(16384):
                body += chunk
                if len(body) > MAX_SIGNALING_BODY_BYTES:
                    raise SignalingError(
                        f"signaling response from {endpoint} exceeds "
                        f"{MAX_SIGNALING_BODY_BYTES} bytes",
                        status=response.status,
                    )
            status = response.status
    except aiohttp.ClientSSLError as exc:
        raise _tls_failure(url, exc) from None
    except aiohttp.ClientConnectorError as exc:
        raise ConnectError(f"cannot reach signaling server {url}: {exc.os_error}") from None
    except aiohttp.ClientError as exc:
        raise ConnectError(f"signaling request to {endpoint} failed: {exc}") from None

    try:
        reply = json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, too deep, too many digits
        reply = None
    if not isinstance(reply, dict):
        raise SignalingError(
            f"signaling server {endpoint} answered HTTP {status} without a JSON object",
            status=status,
        )
    if status != 200:
        code = str(reply.get("error", ""))
        message = str(reply.get("message", ""))[:500] or f"HTTP {status}"
        if status in (401, 403):
            raise token_error_from_code(code, message, grant=str(reply.get("grant", "")))
        raise SignalingError(
            f"signaling server refused the connection: HTTP {status} {code}: {message}",
            status=status,
            code=code,
        )
    if reply.get("type") != "answer" or not isinstance(reply.get("sdp"), str):
        raise SignalingError(f"signaling server {endpoint} sent no SDP answer", status=status)
    return reply


async def connect_peer(
    url: str,
    token: str,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    ice_servers: Iterable[IceServerLike] | None = None,
    include_loopback: bool | None = None,
    lossy_backlog_limit_bytes: int = DEFAULT_LOSSY_BACKLOG_LIMIT_BYTES,
    name: str = "",
    room: str = "",
    impairment: Impairment | ImpairedPath | None = None,
    resume: Mapping[str, Any] | None = None,
    ssl: _ssl.SSLContext | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    http: SignalingClient | None = None,
) -> PeerLink:
    """Connect to the signaling server at ``url`` (``http(s)://host:port``) with ``token``.

    Returns an open :class:`PeerLink` (its ``server_info`` holds the answer's extra fields).
    Raises a :class:`~netcode.auth.TokenError` subclass if the token is refused,
    :class:`ConnectError` if the server is unreachable or the connection fails,
    :class:`SignalingError` if the server refuses otherwise, and :class:`ConnectTimeout`
    after ``timeout`` seconds. ``include_loopback``: offer a 127.0.0.1 candidate; None
    (default) does so when ``url``'s host is a loopback address or ``localhost``.
    ``impairment`` impairs every UDP datagram of the connection at this end, both ways
    (pass an :class:`~netcode.transport.impair.ImpairedPath` to keep a handle on it; the
    link's path is ``link.impairment`` either way).
    ``resume`` (``session``, ``secret``, ``received``) resumes a session instead of joining
    with ``token``; a refusal raises SignalingError whose ``code`` says why.
    ``ice_servers``: STUN/TURN servers (see :class:`~netcode.transport.ice.IceServer`).
    ``https://`` URLs are verified against the system's CAs, or with ``ssl`` / ``ca_file``
    (see :func:`client_ssl_context`); an untrusted certificate raises ConnectError naming
    the problem.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise ConnectError(f"bad signaling URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConnectError(f"bad signaling URL {url!r}: expected http(s)://host:port")
    if include_loopback is None:
        include_loopback = is_loopback_host(host)
    ssl = client_ssl_context(ssl, ca_file)

    started = time.perf_counter()
    link = PeerLink(
        make_peer_connection(ice_servers),
        name=name or f"client->{host}",
        lossy_backlog_limit_bytes=lossy_backlog_limit_bytes,
        impairment=impairment,
    )
    stage = "gathering candidates"
    try:
        async with asyncio.timeout(timeout):
            pc = link.pc
            with loopback_candidates(include_loopback):
                await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription
            if not has_candidates(offer.sdp):
                raise ConnectError(
                    NO_CANDIDATES
                    + " (pass include_loopback=True if the server runs on this machine)"
                )
            stage = "waiting for the signaling answer"
            request: dict[str, Any] = {"sdp": offer.sdp, "type": offer.type, "token": token}
            if room:
                request["room"] = room
            if resume is not None:
                request["resume"] = dict(resume)
            reply = await _post_offer(url, request, ssl, http)
            stage = "connecting (ICE, DTLS, SCTP)"
            try:
                await pc.setRemoteDescription(
                    RTCSessionDescription(sdp=reply["sdp"], type="answer")
                )
            except Exception as exc:
                raise SignalingError(f"server's SDP answer not accepted: {exc!r}") from None
            link.server_info = {k: v for k, v in reply.items() if k not in ("sdp", "type")}
            await link.wait_open()
    except TimeoutError:
        await link.close()
        raise ConnectTimeout(f"no connection to {url} within {timeout} s ({stage})") from None
    except BaseException:
        await link.close()
        raise
    logger.debug("%s: open in %.1f ms", link.name, (time.perf_counter() - started) * 1e3)
    return link
