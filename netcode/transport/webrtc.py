"""WebRTC transport: client<->server peer links over aiortc, with HTTP signaling (aiohttp).

This module is the public face of the transport; the pieces live in
:mod:`netcode.transport.peerlink` (the peer connection and its channels) and
:mod:`netcode.transport.signaling` (offer/answer over HTTP).

Server::

    async def on_peer(link: PeerLink, claims: Claims) -> None:
        link.on_reliable(lambda message: link.send_reliable(message))  # echo

    server = SignalingServer(authorize, on_peer)
    await server.start("127.0.0.1", 7880)

Client::

    link = await connect_peer("http://127.0.0.1:7880", token)
    link.on_lossy(handle_datagram)
    link.send_reliable("hello")
    if not link.send_lossy(datagram):
        ...  # dropped: the connection is backed up
    await link.close()
"""

from __future__ import annotations

from netcode.transport.ice import IceServer, IceServerLike, ice_servers_from_env
from netcode.transport.impair import (
    DirectionStats,
    ImpairedPath,
    Impairment,
    ImpairmentQueue,
)
from netcode.transport.peerlink import (
    DEFAULT_LOSSY_BACKLOG_LIMIT_BYTES,
    LOSSY_CHANNEL_ID,
    LOSSY_LABEL,
    MAX_EXTRA_CHANNELS,
    MAX_PENDING_MESSAGES,
    MAX_RELIABLE_MESSAGE_BYTES,
    RELIABLE_CHANNEL_ID,
    RELIABLE_LABEL,
    ChannelNotOpen,
    ChannelStats,
    ConnectError,
    ConnectTimeout,
    DataChannel,
    PeerLink,
    loopback_candidates,
    make_peer_connection,
)
from netcode.transport.signaling import (
    DEFAULT_CONNECT_TIMEOUT_S,
    MAX_SIGNALING_BODY_BYTES,
    SIGNALING_PATH,
    AnswerInfo,
    Authorize,
    ImpairmentFor,
    OnPeer,
    ResumeAuthorize,
    SessionRefused,
    SignalingClient,
    SignalingError,
    SignalingLimits,
    SignalingServer,
    client_ssl_context,
    connect_peer,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_LOSSY_BACKLOG_LIMIT_BYTES",
    "LOSSY_CHANNEL_ID",
    "LOSSY_LABEL",
    "MAX_EXTRA_CHANNELS",
    "MAX_PENDING_MESSAGES",
    "MAX_RELIABLE_MESSAGE_BYTES",
    "MAX_SIGNALING_BODY_BYTES",
    "RELIABLE_CHANNEL_ID",
    "RELIABLE_LABEL",
    "SIGNALING_PATH",
    "AnswerInfo",
    "Authorize",
    "ChannelNotOpen",
    "ChannelStats",
    "ConnectError",
    "ConnectTimeout",
    "DataChannel",
    "DirectionStats",
    "IceServer",
    "IceServerLike",
    "ImpairedPath",
    "Impairment",
    "ImpairmentFor",
    "ImpairmentQueue",
    "OnPeer",
    "PeerLink",
    "ResumeAuthorize",
    "SessionRefused",
    "SignalingClient",
    "SignalingError",
    "SignalingLimits",
    "SignalingServer",
    "client_ssl_context",
    "connect_peer",
    "ice_servers_from_env",
    "loopback_candidates",
    "make_peer_connection",
]
