"""The sans-IO connection core: sequence numbers, acks, loss and RTT, fragmentation.

This package does no IO and reads no clock: time comes in as ``now`` (seconds).
"""

from netcode.core.budget import TokenBucket
from netcode.core.endpoint import ACK_WINDOW, DeliveryCallback, Endpoint, EndpointConfig
from netcode.core.events import DatagramAcked, DatagramLost, Delivery, Event, FrameReceived
from netcode.core.fragments import FRAGMENT_DATA_BYTES, Reassembler, split_message
from netcode.core.reliable import (
    FallbackSender,
    ReliableChannel,
    ReliableConfig,
    ReliableCounters,
    ReliableStats,
)
from netcode.core.replay import DEFAULT_MAX_REPLAY_BYTES, ReceiveCounter, ReplayLog
from netcode.core.seq import seq_add, seq_diff, seq_newer
from netcode.core.stats import ConnectionStats, Counters

__all__ = [
    "ACK_WINDOW",
    "DEFAULT_MAX_REPLAY_BYTES",
    "FRAGMENT_DATA_BYTES",
    "ConnectionStats",
    "Counters",
    "DatagramAcked",
    "DatagramLost",
    "Delivery",
    "DeliveryCallback",
    "Endpoint",
    "EndpointConfig",
    "Event",
    "FallbackSender",
    "FrameReceived",
    "Reassembler",
    "ReceiveCounter",
    "ReliableChannel",
    "ReliableConfig",
    "ReliableCounters",
    "ReliableStats",
    "ReplayLog",
    "TokenBucket",
    "seq_add",
    "seq_diff",
    "seq_newer",
    "split_message",
]
