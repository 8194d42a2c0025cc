"""Rooms: the LiveKit/Twilio-style API (client) and the room server that relays it."""

from netcode.rooms.client import (
    MAX_LOSSY_PAYLOAD_BYTES,
    MAX_RELIABLE_PAYLOAD_BYTES,
    ConnectionState,
    DataPacket,
    DataPacketKind,
    DisconnectedError,
    LocalDataTrack,
    LocalParticipant,
    RemoteDataTrack,
    RemoteParticipant,
    Room,
    TrackRefused,
)
from netcode.rooms.rpc import RpcError, RpcErrorCode, RpcInvocationData
from netcode.rooms.server import RoomHost, RoomServer, ServerParticipant, ServerRoom
from netcode.rooms.streams import (
    MAX_STREAM_BYTES,
    ByteStreamReader,
    StreamError,
    StreamInfo,
    TextStreamReader,
)

__all__ = [
    "MAX_LOSSY_PAYLOAD_BYTES",
    "MAX_RELIABLE_PAYLOAD_BYTES",
    "MAX_STREAM_BYTES",
    "ByteStreamReader",
    "ConnectionState",
    "DataPacket",
    "DataPacketKind",
    "DisconnectedError",
    "LocalDataTrack",
    "LocalParticipant",
    "RemoteDataTrack",
    "RemoteParticipant",
    "Room",
    "RoomHost",
    "RoomServer",
    "RpcError",
    "RpcErrorCode",
    "RpcInvocationData",
    "ServerParticipant",
    "ServerRoom",
    "StreamError",
    "StreamInfo",
    "TextStreamReader",
    "TrackRefused",
]
