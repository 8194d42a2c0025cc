"""Events the connection core reports through ``Endpoint.next_event()``."""

from __future__ import annotations

import enum

import attrs

__all__ = ["DatagramAcked", "DatagramLost", "Delivery", "Event", "FrameReceived"]


class Delivery(enum.Enum):
    """The fate of something sent on the lossy channel, reported exactly once."""

    ACKED = "acked"  #: the peer received it
    LOST = "lost"  #: not known to have arrived (dropped, never acked in time, or never sent)


@attrs.frozen
class FrameReceived:
    """A frame (or a reassembled fragmented message) arrived from the peer."""

    frame_type: int  #: the frame's type byte (see netcode.wire.FrameType)
    payload: bytes  #: the frame's payload
    sequence: int  #: sequence of the datagram that completed it


@attrs.frozen
class DatagramAcked:
    """An ack-eliciting datagram we sent was acknowledged by the peer."""

    sequence: int  #: the datagram's sequence number
    size: int  #: its size in bytes
    sent_at: float  #: when it left (the ``now`` given to ``datagrams_to_send``)


@attrs.frozen
class DatagramLost:
    """An ack-eliciting datagram we sent is now considered lost; it will never be ACKED."""

    sequence: int  #: the datagram's sequence number
    size: int  #: its size in bytes
    sent_at: float  #: when it left


Event = FrameReceived | DatagramAcked | DatagramLost
