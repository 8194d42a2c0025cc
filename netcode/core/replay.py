"""Replay of reliable messages across links: what a session keeps so a drop loses nothing.

Theory of operation
-------------------
A session's reliable messages travel over one link at a time (an SCTP ordered channel). The
link delivers them in order and exactly once *while it lives*, but when it dies, whatever it
had accepted and not delivered is gone. So each side numbers the messages it sends (1, 2,
3...; the number is implicit, the count of messages sent so far) and keeps them in a
:class:`ReplayLog` until the peer says it received them, and each side counts the messages it
received (:class:`ReceiveCounter`) and tells the peer that count from time to time (an ACK
message, not itself counted).

When a new link replaces a dead one, each side tells the other its received count, and each
replays its log from that count: the peer gets exactly the messages it is missing, in order,
once. Counts are exact because each side stops reading the old link before it reports.

Nothing here does IO or reads a clock; the rooms layer decides when to send ACKs and RESUMED.
"""

from __future__ import annotations

from collections import deque

from netcode.errors import ProtocolError, SendQueueFull

__all__ = ["DEFAULT_MAX_REPLAY_BYTES", "ReceiveCounter", "ReplayLog"]

#: Default bound on the bytes of sent, unconfirmed reliable messages one peer may hold up.
DEFAULT_MAX_REPLAY_BYTES = 4 * 1024 * 1024


class ReplayLog:
    """Reliable messages sent and not yet confirmed by the peer, in order."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_REPLAY_BYTES) -> None:
        #: bound on :attr:`bytes`; :meth:`append` raises SendQueueFull beyond it
        self.max_bytes = max_bytes
        #: messages sent since the session began (the number of the newest one)
        self.sent = 0
        #: bytes of the messages kept
        self.bytes = 0
        self._confirmed = 0  # messages the peer confirmed (the number before the oldest kept)
        self._messages: deque[bytes] = deque()

    @property
    def confirmed(self) -> int:
        """How many messages the peer has confirmed receiving."""
        return self._confirmed

    def __len__(self) -> int:
        return len(self._messages)

    def append(self, message: bytes) -> None:
        """Keep a message that is being sent (it gets number ``sent + 1``).

        Raises SendQueueFull if the peer has left more than ``max_bytes`` unconfirmed: a
        peer that stops confirming must not grow this log without bound.
        """
        if self.bytes + len(message) > self.max_bytes and self._messages:
            raise SendQueueFull(
                f"{self.bytes} bytes of reliable messages await the peer's confirmation "
                f"(limit {self.max_bytes})"
            )
        self._messages.append(message)
        self.sent += 1
        self.bytes += len(message)

    def confirm(self, count: int) -> None:
        """The peer received the first ``count`` messages: forget them.

        Raises ProtocolError for a count past what was sent. A count below what was already
        confirmed (an old ACK overtaken by a newer one) changes nothing.
        """
        if count > self.sent:
            raise ProtocolError(f"peer confirmed {count} messages; only {self.sent} were sent")
        messages = self._messages
        while self._confirmed < count:
            self.bytes -= len(messages.popleft())
            self._confirmed += 1

    def replay_from(self, count: int) -> list[bytes]:
        """The messages after the peer's first ``count``, to send again on a new link.

        Raises ProtocolError if ``count`` is before what the peer already confirmed (those
        messages are gone) or after what was sent.
        """
        if count < self._confirmed:
            raise ProtocolError(
                f"peer asks for replay from {count}; it already confirmed {self._confirmed}"
            )
        self.confirm(count)
        return list(self._messages)


class ReceiveCounter:
    """Counts the peer's reliable messages and says when an ACK is due."""

    def __init__(self, ack_every: int = 32) -> None:
        #: send an ACK at once after this many messages since the last one
        self.ack_every = ack_every
        #: messages received since the session began
        self.received = 0
        #: the count last sent to the peer in an ACK (or RESUMED)
        self.acked = 0

    def count(self) -> bool:
        """One more message arrived. True if an ACK is due now (``ack_every`` unconfirmed)."""
        self.received += 1
        return self.received - self.acked >= self.ack_every

    @property
    def ack_owed(self) -> bool:
        """True if the peer has not been told of every message received."""
        return self.received != self.acked

    def take_ack(self) -> int:
        """The count to send in an ACK now (and remember it was sent)."""
        self.acked = self.received
        return self.received
