"""netcode: multiplayer game networking for Python over WebRTC data channels."""

from netcode.errors import NetcodeError, ProtocolError, SendQueueFull
from netcode.wire import MAX_DATAGRAM_BYTES

__all__ = [
    "MAX_DATAGRAM_BYTES",
    "NetcodeError",
    "ProtocolError",
    "SendQueueFull",
]

__version__ = "0.1.0"
