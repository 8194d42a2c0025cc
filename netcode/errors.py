"""Exceptions raised by netcode.

Every error netcode raises on purpose derives from :class:`NetcodeError`, except where the
Python convention is clearer (``ValueError`` for an oversized payload given by the caller).
"""

from __future__ import annotations

__all__ = ["NetcodeError", "ProtocolError", "SendQueueFull"]


class NetcodeError(Exception):
    """Base class of netcode's own exceptions."""


class ProtocolError(NetcodeError):
    """Bytes received from a peer do not follow the protocol.

    Raised only by ``decode_*_untrusted`` functions and the state machines that call them;
    callers drop the offending datagram or frame and count it.
    """


class SendQueueFull(NetcodeError):
    """A bounded send queue is full; the caller is sending faster than the link drains."""
