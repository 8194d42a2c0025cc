"""Remote procedure calls between participants, in the style of LiveKit's RPC.

::

    async def greet(data: RpcInvocationData) -> str:
        return f"hello {data.caller_identity}, you said {data.payload}"

    await bob.local_participant.register_rpc_method("greet", greet)
    answer = await alice.local_participant.perform_rpc(
        destination_identity="bob", method="greet", payload="hi", response_timeout=5.0
    )

Theory of operation
-------------------
RPC messages ride the reliable channel as EXTENSION messages on ``ExtensionChannel.RPC``;
each body is one :data:`RPC_MESSAGE` (a type byte and its fields). A call is four hops
through the server, which relays and never runs handlers itself::

    caller --REQUEST(id, destination)------> server --REQUEST(id, caller identity)--> callee
    caller <--ACK(id)----------------------- server <--ACK(id, caller pid)------------- callee
    caller <--RESPONSE(id) or ERROR(id)----- server <--RESPONSE or ERROR(id, caller pid)-- callee

- The caller picks the request id (32 bits, unique among its own calls in flight). The
  server keys what it relays by (caller, request id), so two callers may use the same id.
- The REQUEST's ``identity`` field names the destination on the way up; the server replaces
  it with the caller's identity, taken from the caller's token, on the way down. A client
  cannot pose as another: whatever it writes is overwritten.
- The callee acknowledges at once (before running the handler), then answers. Its ACK,
  RESPONSE and ERROR name the caller by pid (``peer``); the server relays them only if that
  caller has a request in flight to this very callee, so a participant cannot answer, or
  fake an error for, a call that was not made to it. Late answers (after the caller gave up)
  are dropped quietly.
- The server answers for itself when it can: RECIPIENT_NOT_FOUND for an identity not in the
  room, REQUEST_PAYLOAD_TOO_LARGE, SEND_FAILED for a caller without ``can_publish_data`` or
  with more than :data:`MAX_CALLS_IN_FLIGHT` calls in flight, and RECIPIENT_DISCONNECTED
  for every call in flight to a participant that leaves (:meth:`RpcRouter.participant_left`).

Timeouts, as LiveKit does them: the caller expects the ACK within a short connection
timeout (``RpcClient.connection_timeout``, 7 s as in LiveKit, bounded by the response
timeout) and the RESPONSE within ``response_timeout``. No ACK in time means the callee (or
the path to it) is not there: CONNECTION_TIMEOUT. An ACK without a RESPONSE in time means
the handler is slow: RESPONSE_TIMEOUT. The handler sees ``response_timeout`` in its
:class:`RpcInvocationData` so it can budget its work; nothing stops it running longer, but
its answer is then dropped.

Payloads are str (UTF-8 on the wire), at most :data:`MAX_PAYLOAD_BYTES` (15 KiB) each way,
checked by the caller (REQUEST_PAYLOAD_TOO_LARGE, raised locally), by the server (the same
code, for clients that skip the check) and by the callee for its response
(RESPONSE_PAYLOAD_TOO_LARGE).
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
from construct import (
    Byte,
    ConstructError,
    GreedyBytes,
    Int16ub,
    Int32ub,
    PascalString,
    Struct,
    Switch,
    Terminated,
    VarInt,
)

from netcode.errors import NetcodeError, ProtocolError

if TYPE_CHECKING:
    from netcode.rooms.client import Room
    from netcode.rooms.server import ServerParticipant, ServerRoom

__all__ = [
    "MAX_CALLS_IN_FLIGHT",
    "MAX_METHOD_NAME_BYTES",
    "MAX_PAYLOAD_BYTES",
    "RPC_MESSAGE",
    "RPC_VERSION",
    "RpcClient",
    "RpcError",
    "RpcErrorCode",
    "RpcHandler",
    "RpcInvocationData",
    "RpcMessageType",
    "RpcRouter",
    "decode_rpc_untrusted",
    "encode_rpc",
]

logger = logging.getLogger(__name__)

#: Largest request or response payload, UTF-8 bytes (LiveKit's 15 KiB).
MAX_PAYLOAD_BYTES = 15 * 1024
#: Longest method name, UTF-8 bytes.
MAX_METHOD_NAME_BYTES = 256
#: Longest error message and error data, UTF-8 bytes (LiveKit's limits); longer is cut.
MAX_ERROR_MESSAGE_BYTES = 256
MAX_ERROR_DATA_BYTES = 15 * 1024
#: Calls one participant may have in flight through the server (bounds the router's table).
MAX_CALLS_IN_FLIGHT = 256
#: The protocol version this module speaks (LiveKit's RPC is version 1 too).
RPC_VERSION = 1
#: LiveKit's default connection timeout: how long a caller waits for the callee's ACK.
DEFAULT_CONNECTION_TIMEOUT_S = 7.0
#: The router forgets a call this long after its response timeout, if no answer came.
ROUTER_GRACE_S = 10.0


class RpcErrorCode(enum.IntEnum):
    """LiveKit's RPC error codes."""

    APPLICATION_ERROR = 1500  #: the handler raised
    CONNECTION_TIMEOUT = 1501  #: no ACK from the callee in time
    RESPONSE_TIMEOUT = 1502  #: ACK, but no response in time
    RECIPIENT_DISCONNECTED = 1503  #: the callee left while the call was in flight
    RESPONSE_PAYLOAD_TOO_LARGE = 1504
    SEND_FAILED = 1505  #: the request could not be sent (disconnected, refused, too many)
    UNSUPPORTED_METHOD = 1400  #: the callee has no handler for this method
    RECIPIENT_NOT_FOUND = 1401  #: no participant with that identity in the room
    REQUEST_PAYLOAD_TOO_LARGE = 1402
    UNSUPPORTED_SERVER = 1403  #: the server does not relay RPC
    UNSUPPORTED_VERSION = 1404  #: the callee speaks another RPC version


_DEFAULT_MESSAGES = {
    RpcErrorCode.APPLICATION_ERROR: "Application error in method handler",
    RpcErrorCode.CONNECTION_TIMEOUT: "Connection timeout",
    RpcErrorCode.RESPONSE_TIMEOUT: "Response timeout",
    RpcErrorCode.RECIPIENT_DISCONNECTED: "Recipient disconnected",
    RpcErrorCode.RESPONSE_PAYLOAD_TOO_LARGE: "Response payload too large",
    RpcErrorCode.SEND_FAILED: "Failed to send",
    RpcErrorCode.UNSUPPORTED_METHOD: "Method not supported at destination",
    RpcErrorCode.RECIPIENT_NOT_FOUND: "Recipient not found",
    RpcErrorCode.REQUEST_PAYLOAD_TOO_LARGE: "Request payload too large",
    RpcErrorCode.UNSUPPORTED_SERVER: "RPC not supported by server",
    RpcErrorCode.UNSUPPORTED_VERSION: "Unsupported RPC version",
}


class RpcError(NetcodeError):
    """An RPC failed. ``code`` is one of :class:`RpcErrorCode` or an application's own.

    A handler may raise RpcError to send the caller a specific code, message and data;
    any other exception reaches the caller as APPLICATION_ERROR.
    """

    def __init__(self, code: int, message: str = "", data: str = "") -> None:
        if not message:
            try:
                message = _DEFAULT_MESSAGES[RpcErrorCode(code)]
            except ValueError:
                message = f"RPC error {code}"
        super().__init__(f"{code}: {message}")
        self.code = int(code)
        self.message = message
        self.data = data

    @classmethod
    def built_in(cls, code: RpcErrorCode, data: str = "") -> RpcError:
        """The error with LiveKit's message for ``code``."""
        return cls(code, _DEFAULT_MESSAGES[code], data)


@attrs.frozen
class RpcInvocationData:
    """What a method handler receives."""

    request_id: str  #: the caller's id of this call (unique among its calls in flight)
    caller_identity: str  #: who called, as the server vouches for it
    payload: str  #: the request payload
    response_timeout: float  #: seconds the caller waits for the response


RpcHandler = Callable[[RpcInvocationData], "Awaitable[str] | str"]


# --- wire ---------------------------------------------------------------------------------


class RpcMessageType(enum.IntEnum):
    REQUEST = 1  #: caller -> server -> callee
    ACK = 2  #: callee -> server -> caller: the request arrived, the handler is running
    RESPONSE = 3  #: callee -> server -> caller: the handler's result
    ERROR = 4  #: callee or server -> caller


_String = PascalString(VarInt, "utf8")

_BODIES = {
    RpcMessageType.REQUEST: Struct(
        "request_id" / Int32ub,
        "version" / Byte,
        # up: the destination's identity; down: the caller's, stamped by the server
        "identity" / _String,
        "method" / _String,
        "response_timeout_ms" / Int32ub,
        "payload" / GreedyBytes,  # UTF-8
    ),
    RpcMessageType.ACK: Struct(
        "request_id" / Int32ub,
        "peer" / Int16ub,  # up: the caller's pid; down: 0 (the EXTENSION pid is the callee)
    ),
    RpcMessageType.RESPONSE: Struct(
        "request_id" / Int32ub,
        "peer" / Int16ub,
        "payload" / GreedyBytes,  # UTF-8
    ),
    RpcMessageType.ERROR: Struct(
        "request_id" / Int32ub,
        "peer" / Int16ub,
        "code" / Int16ub,
        "message" / _String,
        "data" / _String,
    ),
}

#: One RPC message: the body of an EXTENSION message on ``ExtensionChannel.RPC``.
RPC_MESSAGE = Struct(
    "type" / Byte,
    "body" / Switch(lambda ctx: ctx.type, _BODIES),
    Terminated,
)

_TYPES = frozenset(int(t) for t in RpcMessageType)


def encode_rpc(type_: RpcMessageType, **fields: Any) -> bytes:
    """Build one RPC message."""
    return bytes(RPC_MESSAGE.build({"type": type_, "body": fields}))


def decode_rpc_untrusted(data: bytes) -> tuple[RpcMessageType, Any]:
    """Parse an RPC message from a peer; raises ProtocolError on bad input.

    Payloads come back as str: a payload that is not UTF-8 is a protocol error.
    """
    if not data or data[0] not in _TYPES:
        raise ProtocolError(f"unknown RPC message type {data[0] if data else None}")
    type_ = RpcMessageType(data[0])
    try:
        parsed = RPC_MESSAGE.parse(data)
        body = parsed.body
        if "payload" in body:
            body.payload = bytes(body.payload).decode()
    except (ConstructError, UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed RPC {type_.name}: {exc}") from None
    return type_, body


def _utf8_len(text: str) -> int:
    return len(text.encode())


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (never inside a character)."""
    raw = text.encode()
    return text if len(raw) <= limit else raw[:limit].decode(errors="ignore")


def _error(request_id: int, error: RpcError, peer: int = 0) -> bytes:
    """An ERROR message for ``error`` (message and data cut to their limits)."""
    return encode_rpc(
        RpcMessageType.ERROR,
        request_id=request_id,
        peer=peer,
        code=error.code & 0xFFFF,
        message=_cut(error.message, MAX_ERROR_MESSAGE_BYTES),
        data=_cut(error.data, MAX_ERROR_DATA_BYTES),
    )


# --- client -------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Call:
    """A call this client made, waiting for its answer."""

    future: asyncio.Future[str]
    acked: bool = False
    timer: asyncio.TimerHandle | None = None


class RpcClient:
    """A room's RPC endpoint: the methods it serves and the calls it has in flight.

    Created by :class:`~netcode.rooms.client.Room` (``room.rpc``); applications use the
    delegating methods of ``room.local_participant``.
    """

    def __init__(self, room: Room, channel: int) -> None:
        self._room = room
        self._channel = channel
        #: seconds a caller waits for the callee's ACK (LiveKit's 7 s by default)
        self.connection_timeout = DEFAULT_CONNECTION_TIMEOUT_S
        self._handlers: dict[str, RpcHandler] = {}
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        room.extension_handlers[channel] = self._on_message

    # serving

    def register_method(self, method: str, handler: RpcHandler) -> None:
        """Serve ``method`` with ``handler`` (replacing any handler it had)."""
        if not method or _utf8_len(method) > MAX_METHOD_NAME_BYTES:
            raise ValueError(f"method name must be 1 to {MAX_METHOD_NAME_BYTES} bytes")
        self._handlers[method] = handler

    def unregister_method(self, method: str) -> None:
        """Stop serving ``method`` (callers then get UNSUPPORTED_METHOD)."""
        self._handlers.pop(method, None)

    # calling

    async def perform(
        self, destination_identity: str, method: str, payload: str, response_timeout: float
    ) -> str:
        """Call ``method`` on ``destination_identity``; see LocalParticipant.perform_rpc."""
        if _utf8_len(payload) > MAX_PAYLOAD_BYTES:
            raise RpcError.built_in(RpcErrorCode.REQUEST_PAYLOAD_TOO_LARGE)
        if not method or _utf8_len(method) > MAX_METHOD_NAME_BYTES:
            raise ValueError(f"method name must be 1 to {MAX_METHOD_NAME_BYTES} bytes")
        if response_timeout <= 0:
            raise ValueError("response_timeout must be positive")
        request_id = self._next_id()
        loop = asyncio.get_running_loop()
        call = _Call(loop.create_future())
        try:
            self._room.send_extension(
                self._channel,
                encode_rpc(
                    RpcMessageType.REQUEST,
                    request_id=request_id,
                    version=RPC_VERSION,
                    identity=destination_identity,
                    method=method,
                    response_timeout_ms=min(int(response_timeout * 1000), 0xFFFFFFFF),
                    payload=payload.encode(),
                ),
            )
        except NetcodeError as exc:  # DisconnectedError: not connected
            raise RpcError(RpcErrorCode.SEND_FAILED, f"Failed to send: {exc}") from None
        self._calls[request_id] = call
        # One timer at a time: first the ACK deadline, then (once acked) the response's.
        started = loop.time()
        ack_deadline = started + min(self.connection_timeout, response_timeout)
        response_deadline = started + response_timeout

        def on_ack_deadline() -> None:
            if call.acked:
                call.timer = loop.call_at(response_deadline, on_response_deadline)
            elif not call.future.done():
                call.future.set_exception(RpcError.built_in(RpcErrorCode.CONNECTION_TIMEOUT))

        def on_response_deadline() -> None:
            if not call.future.done():
                call.future.set_exception(RpcError.built_in(RpcErrorCode.RESPONSE_TIMEOUT))

        call.timer = loop.call_at(ack_deadline, on_ack_deadline)
        try:
            return await call.future
        finally:
            if call.timer is not None:
                call.timer.cancel()
            self._calls.pop(request_id, None)

    def _next_id(self) -> int:
        while True:
            request_id = next(self._ids) & 0xFFFFFFFF
            if request_id and request_id not in self._calls:
                return request_id

    # receiving

    def _on_message(self, sender_pid: int, body: bytes) -> None:
        type_, message = decode_rpc_untrusted(body)
        if type_ is RpcMessageType.REQUEST:
            self._on_request(sender_pid, message)
            return
        call = self._calls.get(message.request_id)
        if call is None or call.future.done():
            return  # an answer to a call that already ended (timed out)
        if type_ is RpcMessageType.ACK:
            call.acked = True
        elif type_ is RpcMessageType.RESPONSE:
            call.future.set_result(message.payload)
        else:
            call.future.set_exception(RpcError(message.code, message.message, message.data))

    def _on_request(self, caller_pid: int, request: Any) -> None:
        request_id = request.request_id
        self._reply(RpcMessageType.ACK, request_id=request_id, peer=caller_pid)
        if request.version != RPC_VERSION:
            self._reply_error(
                caller_pid, request_id, RpcError.built_in(RpcErrorCode.UNSUPPORTED_VERSION)
            )
            return
        handler = self._handlers.get(request.method)
        if handler is None:
            self._reply_error(
                caller_pid, request_id, RpcError.built_in(RpcErrorCode.UNSUPPORTED_METHOD)
            )
            return
        data = RpcInvocationData(
            request_id=str(request_id),
            caller_identity=request.identity,
            payload=request.payload,
            response_timeout=request.response_timeout_ms / 1000,
        )
        task = asyncio.get_running_loop().create_task(
            self._serve(handler, data, caller_pid, request_id)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(
        self, handler: RpcHandler, data: RpcInvocationData, caller_pid: int, request_id: int
    ) -> None:
        try:
            result = handler(data)
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, str):
                raise TypeError(f"RPC handler returned {type(result).__name__}, not str")
        except RpcError as exc:
            self._reply_error(caller_pid, request_id, exc)
            return
        except Exception:
            logger.exception("RPC handler of %r raised", data.caller_identity)
            self._reply_error(
                caller_pid, request_id, RpcError.built_in(RpcErrorCode.APPLICATION_ERROR)
            )
            return
        if _utf8_len(result) > MAX_PAYLOAD_BYTES:
            self._reply_error(
                caller_pid, request_id, RpcError.built_in(RpcErrorCode.RESPONSE_PAYLOAD_TOO_LARGE)
            )
            return
        self._reply(
            RpcMessageType.RESPONSE, request_id=request_id, peer=caller_pid, payload=result.encode()
        )

    def _reply_error(self, caller_pid: int, request_id: int, error: RpcError) -> None:
        self._send(_error(request_id, error, peer=caller_pid))

    def _reply(self, type_: RpcMessageType, **fields: Any) -> None:
        self._send(encode_rpc(type_, **fields))

    def _send(self, body: bytes) -> None:
        try:
            self._room.send_extension(self._channel, body)
        except NetcodeError:
            pass  # disconnected: the server tells the caller RECIPIENT_DISCONNECTED

    def close(self) -> None:
        """The room disconnected: fail calls in flight and stop running handlers."""
        for call in list(self._calls.values()):
            if not call.future.done():
                call.future.set_exception(
                    RpcError(RpcErrorCode.SEND_FAILED, "Failed to send: the room disconnected")
                )
        for task in list(self._tasks):
            task.cancel()


# --- server -------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Relayed:
    """A call the server relayed and whose answer it has not yet seen."""

    caller: ServerParticipant
    callee: ServerParticipant
    request_id: int
    expires_at: float  #: loop time after which the router forgets it


class RpcRouter:
    """The server side: relays RPC messages and answers what only the server can.

    Registered as the router of ``ExtensionChannel.RPC`` (``RoomServer.rpc``); the room
    calls :meth:`participant_left` when someone leaves.
    """

    def __init__(self, channel: int) -> None:
        self._channel = channel
        self._calls: dict[tuple[ServerParticipant, int], _Relayed] = {}
        self._by_callee: dict[ServerParticipant, set[tuple[ServerParticipant, int]]] = {}
        self._by_caller: dict[ServerParticipant, set[tuple[ServerParticipant, int]]] = {}
        #: calls relayed since start
        self.relayed = 0

    def __call__(self, room: ServerRoom, sender: ServerParticipant, body: bytes) -> None:
        """Route one RPC message from ``sender``; raises ProtocolError if malformed."""
        type_, message = decode_rpc_untrusted(body)
        if type_ is RpcMessageType.REQUEST:
            self._on_request(room, sender, message)
        else:
            self._on_answer(sender, type_, message)

    def _on_request(self, room: ServerRoom, caller: ServerParticipant, request: Any) -> None:
        request_id = request.request_id

        def refuse(code: RpcErrorCode, message: str = "") -> None:
            error = RpcError(code, message) if message else RpcError.built_in(code)
            caller.send_extension(self._channel, _error(request_id, error))

        if not caller.can_publish:
            return refuse(
                RpcErrorCode.SEND_FAILED, "permission denied: token lacks can_publish_data"
            )
        if _utf8_len(request.payload) > MAX_PAYLOAD_BYTES:
            return refuse(RpcErrorCode.REQUEST_PAYLOAD_TOO_LARGE)
        callee = room.by_identity(request.identity)
        if callee is None:
            return refuse(RpcErrorCode.RECIPIENT_NOT_FOUND)
        key = (caller, request_id)
        mine = self._by_caller.setdefault(caller, set())
        if key in self._calls:
            raise ProtocolError(f"RPC request id {request_id} reused while in flight")
        self._expire(mine)
        if len(mine) >= MAX_CALLS_IN_FLIGHT:
            return refuse(
                RpcErrorCode.SEND_FAILED,
                f"Failed to send: over {MAX_CALLS_IN_FLIGHT} calls in flight",
            )
        now = asyncio.get_running_loop().time()
        timeout_s = request.response_timeout_ms / 1000
        self._calls[key] = _Relayed(caller, callee, request_id, now + timeout_s + ROUTER_GRACE_S)
        mine.add(key)
        self._by_callee.setdefault(callee, set()).add(key)
        self.relayed += 1
        callee.send_extension(
            self._channel,
            encode_rpc(
                RpcMessageType.REQUEST,
                request_id=request_id,
                version=request.version,
                identity=caller.identity,  # stamped here: never what the caller wrote
                method=request.method,
                response_timeout_ms=request.response_timeout_ms,
                payload=request.payload.encode(),
            ),
            sender_pid=caller.pid,
        )

    def _on_answer(self, callee: ServerParticipant, type_: RpcMessageType, message: Any) -> None:
        caller = callee.room.participants.get(message.peer)
        if caller is None:
            return  # the caller left; its calls were forgotten then
        key = (caller, message.request_id)
        call = self._calls.get(key)
        if call is None or call.callee is not callee:
            return  # late (forgotten), or not a call made to this participant: dropped
        if type_ is RpcMessageType.ACK:
            out = encode_rpc(type_, request_id=call.request_id, peer=0)
        else:
            self._forget(key)
            if type_ is RpcMessageType.RESPONSE and _utf8_len(message.payload) > MAX_PAYLOAD_BYTES:
                out = _error(
                    call.request_id, RpcError.built_in(RpcErrorCode.RESPONSE_PAYLOAD_TOO_LARGE)
                )
            elif type_ is RpcMessageType.RESPONSE:
                out = encode_rpc(
                    type_, request_id=call.request_id, peer=0, payload=message.payload.encode()
                )
            else:
                out = _error(call.request_id, RpcError(message.code, message.message, message.data))
        caller.send_extension(self._channel, out, sender_pid=callee.pid)

    def participant_left(self, participant: ServerParticipant) -> None:
        """Answer RECIPIENT_DISCONNECTED for calls to ``participant``; forget its own."""
        for key in list(self._by_callee.pop(participant, ())):
            call = self._calls.get(key)
            if call is None:
                continue
            self._forget(key)
            error = RpcError.built_in(RpcErrorCode.RECIPIENT_DISCONNECTED)
            call.caller.send_extension(
                self._channel, _error(call.request_id, error), sender_pid=participant.pid
            )
        for key in list(self._by_caller.pop(participant, ())):
            self._forget(key)

    @property
    def calls_in_flight(self) -> int:
        """Calls relayed and not yet answered (nor forgotten)."""
        return len(self._calls)

    def _expire(self, keys: set[tuple[ServerParticipant, int]]) -> None:
        # A callee that never answers must not fill the caller's quota for ever.
        now = asyncio.get_running_loop().time()
        for key in [k for k in keys if self._calls[k].expires_at < now]:
            self._forget(key)

    def _forget(self, key: tuple[ServerParticipant, int]) -> None:
        call = self._calls.pop(key, None)
        if call is None:
            return
        self._by_caller.get(call.caller, set()).discard(key)
        callees = self._by_callee.get(call.callee)
        if callees is not None:
            callees.discard(key)
            if not callees:
                del self._by_callee[call.callee]
