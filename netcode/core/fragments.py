"""Splitting messages too large for one datagram, and reassembling them with bounded memory.

A message of ``n`` bytes becomes ``ceil(n / FRAGMENT_DATA_BYTES)`` FRAGMENT frames, each
filling a datagram of its own. Fragments are not resent: like LiveKit's lossy packets, the
whole message is lost if any piece is. The reassembler keeps at most ``max_messages``
partial messages and ``max_bytes`` of their data, and drops a partial message that has not
completed within ``timeout`` seconds.
"""

from __future__ import annotations

from netcode.errors import ProtocolError
from netcode.wire import FRAGMENT_HEADER_BYTES, MAX_FRAME_PAYLOAD_BYTES, FragmentHeader

__all__ = ["FRAGMENT_DATA_BYTES", "Reassembler", "split_message"]

#: Message bytes each fragment carries (the last one may carry fewer).
FRAGMENT_DATA_BYTES = MAX_FRAME_PAYLOAD_BYTES - FRAGMENT_HEADER_BYTES


def split_message(
    inner_type: int, message_id: int, payload: bytes
) -> list[tuple[FragmentHeader, bytes]]:
    """Cut ``payload`` into pieces of at most FRAGMENT_DATA_BYTES."""
    count = -(-len(payload) // FRAGMENT_DATA_BYTES)
    if count > 255:
        raise ValueError(f"message of {len(payload)} bytes needs {count} fragments; at most 255")
    return [
        (
            FragmentHeader(inner_type, message_id, index, count),
            payload[index * FRAGMENT_DATA_BYTES : (index + 1) * FRAGMENT_DATA_BYTES],
        )
        for index in range(count)
    ]


class _Partial:
    __slots__ = ("count", "first_seen", "inner_type", "pieces", "size")

    def __init__(self, header: FragmentHeader, now: float) -> None:
        self.inner_type = header.inner_type
        self.count = header.fragment_count
        self.pieces: dict[int, bytes] = {}
        self.size = 0
        self.first_seen = now


class Reassembler:
    """Collects FRAGMENT pieces into whole messages."""

    def __init__(
        self, *, max_fragments: int, max_messages: int, max_bytes: int, timeout: float
    ) -> None:
        self.max_fragments = max_fragments
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._partials: dict[int, _Partial] = {}  # insertion order = age
        self._bytes = 0
        self.dropped = 0  #: partial messages dropped (timeout, memory bound or bad piece)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def add(self, header: FragmentHeader, data: bytes, now: float) -> bytes | None:
        """Store one piece; return the whole message when this piece completes it.

        Raises ProtocolError (after dropping the message's partial state) when the piece
        contradicts the pieces already held or exceeds the configured limits.
        """
        if header.fragment_count < 2 or header.fragment_index >= header.fragment_count:
            # decode_fragment_untrusted refuses these too; a piece outside its count would
            # complete a message that lacks piece 0 (KeyError on joining it)
            raise ProtocolError(
                f"fragment {header.fragment_index} of {header.fragment_count} is not a piece"
            )
        if header.fragment_count > self.max_fragments:
            raise ProtocolError(
                f"message in {header.fragment_count} fragments exceeds the limit of "
                f"{self.max_fragments}"
            )
        if len(data) > FRAGMENT_DATA_BYTES or (
            header.fragment_index < header.fragment_count - 1 and len(data) != FRAGMENT_DATA_BYTES
        ):
            raise ProtocolError(
                f"fragment {header.fragment_index} has a wrong size of {len(data)} bytes"
            )
        partial = self._partials.get(header.message_id)
        if partial is None:
            partial = _Partial(header, now)
            self._partials[header.message_id] = partial
        elif partial.count != header.fragment_count or partial.inner_type != header.inner_type:
            self._drop(header.message_id)
            raise ProtocolError(f"fragment of message {header.message_id} contradicts its others")
        if header.fragment_index in partial.pieces:
            return None  # a resent or duplicated piece: nothing new
        partial.pieces[header.fragment_index] = data
        partial.size += len(data)
        self._bytes += len(data)
        if len(partial.pieces) == partial.count:
            del self._partials[header.message_id]
            self._bytes -= partial.size
            return b"".join(partial.pieces[i] for i in range(partial.count))
        while self._bytes > self.max_bytes or len(self._partials) > self.max_messages:
            self._drop(next(iter(self._partials)))  # evict the oldest
        return None

    def expire(self, now: float) -> int:
        """Drop partial messages older than the timeout; return how many."""
        expired = 0
        while self._partials:
            message_id, partial = next(iter(self._partials.items()))
            if now - partial.first_seen < self.timeout:
                break
            self._drop(message_id)
            expired += 1
        return expired

    def next_expiry(self) -> float | None:
        for partial in self._partials.values():
            return partial.first_seen + self.timeout
        return None

    def _drop(self, message_id: int) -> None:
        partial = self._partials.pop(message_id)
        self._bytes -= partial.size
        self.dropped += 1
