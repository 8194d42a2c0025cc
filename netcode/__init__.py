"""netcode: multiplayer game networking for Python over WebRTC data channels.

Everything a game needs is importable from here::

    from netcode import AccessToken, Grants, Room, RoomServer

Names are loaded on first use (PEP 562), so ``import netcode.wire`` or ``netcode.core``
stays free of asyncio, aiortc and aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "NetcodeError": "netcode.errors",
    "ProtocolError": "netcode.errors",
    "SendQueueFull": "netcode.errors",
    # wire and core
    "MAX_DATAGRAM_BYTES": "netcode.wire",
    "FrameType": "netcode.wire",
    "Endpoint": "netcode.core",
    "EndpointConfig": "netcode.core",
    "Delivery": "netcode.core",
    "ConnectionStats": "netcode.core",
    # auth
    "AccessToken": "netcode.auth",
    "Claims": "netcode.auth",
    "Grants": "netcode.auth",
    "TokenVerifier": "netcode.auth",
    "verify_token": "netcode.auth",
    "TokenError": "netcode.auth",
    "MalformedToken": "netcode.auth",
    "InvalidSignature": "netcode.auth",
    "UnknownApiKey": "netcode.auth",
    "TokenExpired": "netcode.auth",
    "TokenNotYetValid": "netcode.auth",
    "WrongRoom": "netcode.auth",
    "MissingGrant": "netcode.auth",
    # transport
    "ConnectError": "netcode.transport.webrtc",
    "ConnectTimeout": "netcode.transport.webrtc",
    "IceServer": "netcode.transport.ice",
    "HttpReply": "netcode.transport.signaling",
    "ImpairedPath": "netcode.transport.impair",
    "Impairment": "netcode.transport.impair",
    "PeerBudgets": "netcode.rooms.limits",
    "SignalingLimits": "netcode.transport.signaling",
    # rooms
    "Room": "netcode.rooms",
    "RoomServer": "netcode.rooms",
    "RoomHost": "netcode.rooms",
    "ServerRoom": "netcode.rooms",
    "ServerParticipant": "netcode.rooms",
    "LocalParticipant": "netcode.rooms",
    "RemoteParticipant": "netcode.rooms",
    "DataPacket": "netcode.rooms",
    "DataPacketKind": "netcode.rooms",
    "ConnectionState": "netcode.rooms",
    "LocalDataTrack": "netcode.rooms",
    "RemoteDataTrack": "netcode.rooms",
    "TrackRefused": "netcode.rooms",
    "DisconnectedError": "netcode.rooms",
    "MAX_RELIABLE_PAYLOAD_BYTES": "netcode.rooms",
    "MAX_LOSSY_PAYLOAD_BYTES": "netcode.rooms",
    # game hosting, replication, events, traces
    "GameHost": "netcode.rooms.host",
    "Replica": "netcode.rooms.replica",
    "event_type": "netcode.rooms.events",
    "EventRegistry": "netcode.rooms.events",
    "Chat": "netcode.rooms.events",
    "Spawn": "netcode.rooms.events",
    "Despawn": "netcode.rooms.events",
    "entity": "netcode.replication",
    "qfloat": "netcode.replication",
    "qint": "netcode.replication",
    "qbool": "netcode.replication",
    "qenum": "netcode.replication",
    "qangle": "netcode.replication",
    "qquat": "netcode.replication",
    "qstring": "netcode.replication",
    "qcolor": "netcode.replication",
    "SchemaRegistry": "netcode.replication",
    "SchemaMismatch": "netcode.replication.describe",
    "World": "netcode.replication",
    "ClientView": "netcode.replication",
    "Predictor": "netcode.replication.inputs",
    "TraceWriter": "netcode.trace",
    "read_trace": "netcode.trace",
    # RPC
    "RpcError": "netcode.rooms",
    "RpcErrorCode": "netcode.rooms",
    "RpcInvocationData": "netcode.rooms",
    # streams
    "MAX_STREAM_BYTES": "netcode.rooms",
    "ByteStreamReader": "netcode.rooms",
    "StreamError": "netcode.rooms",
    "StreamInfo": "netcode.rooms",
    "TextStreamReader": "netcode.rooms",
}

__all__ = [
    "MAX_DATAGRAM_BYTES",
    "MAX_LOSSY_PAYLOAD_BYTES",
    "MAX_RELIABLE_PAYLOAD_BYTES",
    "MAX_STREAM_BYTES",
    "AccessToken",
    "ByteStreamReader",
    "Chat",
    "Claims",
    "ClientView",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionState",
    "ConnectionStats",
    "DataPacket",
    "DataPacketKind",
    "Delivery",
    "Despawn",
    "DisconnectedError",
    "Endpoint",
    "EndpointConfig",
    "EventRegistry",
    "FrameType",
    "GameHost",
    "Grants",
    "HttpReply",
    "IceServer",
    "ImpairedPath",
    "Impairment",
    "InvalidSignature",
    "LocalDataTrack",
    "LocalParticipant",
    "MalformedToken",
    "MissingGrant",
    "NetcodeError",
    "PeerBudgets",
    "Predictor",
    "ProtocolError",
    "RemoteDataTrack",
    "RemoteParticipant",
    "Replica",
    "Room",
    "RoomHost",
    "RoomServer",
    "RpcError",
    "RpcErrorCode",
    "RpcInvocationData",
    "SchemaMismatch",
    "SchemaRegistry",
    "SendQueueFull",
    "ServerParticipant",
    "ServerRoom",
    "SignalingLimits",
    "Spawn",
    "StreamError",
    "StreamInfo",
    "TextStreamReader",
    "TokenError",
    "TokenExpired",
    "TokenNotYetValid",
    "TokenVerifier",
    "TraceWriter",
    "TrackRefused",
    "UnknownApiKey",
    "World",
    "WrongRoom",
    "entity",
    "event_type",
    "qangle",
    "qbool",
    "qcolor",
    "qenum",
    "qfloat",
    "qint",
    "qquat",
    "qstring",
    "read_trace",
    "verify_token",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'netcode' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The public names and the module's own dunders; not the helpers this file imports.
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})


if TYPE_CHECKING:
    from netcode.auth import (
        AccessToken,
        Claims,
        Grants,
        InvalidSignature,
        MalformedToken,
        MissingGrant,
        TokenError,
        TokenExpired,
        TokenNotYetValid,
        TokenVerifier,
        UnknownApiKey,
        WrongRoom,
        verify_token,
    )
    from netcode.core import ConnectionStats, Delivery, Endpoint, EndpointConfig
    from netcode.errors import NetcodeError, ProtocolError, SendQueueFull
    from netcode.replication import (
        ClientView,
        SchemaRegistry,
        World,
        entity,
        qangle,
        qbool,
        qcolor,
        qenum,
        qfloat,
        qint,
        qquat,
        qstring,
    )
    from netcode.replication.describe import SchemaMismatch
    from netcode.replication.inputs import Predictor
    from netcode.rooms import (
        MAX_LOSSY_PAYLOAD_BYTES,
        MAX_RELIABLE_PAYLOAD_BYTES,
        MAX_STREAM_BYTES,
        ByteStreamReader,
        ConnectionState,
        DataPacket,
        DataPacketKind,
        DisconnectedError,
        LocalDataTrack,
        LocalParticipant,
        RemoteDataTrack,
        RemoteParticipant,
        Room,
        RoomHost,
        RoomServer,
        RpcError,
        RpcErrorCode,
        RpcInvocationData,
        ServerParticipant,
        ServerRoom,
        StreamError,
        StreamInfo,
        TextStreamReader,
        TrackRefused,
    )
    from netcode.rooms.events import Chat, Despawn, EventRegistry, Spawn, event_type
    from netcode.rooms.host import GameHost
    from netcode.rooms.limits import PeerBudgets
    from netcode.rooms.replica import Replica
    from netcode.trace import TraceWriter, read_trace
    from netcode.transport.ice import IceServer
    from netcode.transport.impair import ImpairedPath, Impairment
    from netcode.transport.signaling import HttpReply, SignalingLimits
    from netcode.transport.webrtc import ConnectError, ConnectTimeout
    from netcode.wire import MAX_DATAGRAM_BYTES, FrameType
