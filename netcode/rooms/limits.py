"""Per-peer inbound budgets: what one participant may send the server each second.

Every budget belongs to one participant and is checked before the expensive work (decoding,
relaying). Lossy datagrams over budget are dropped unread and counted (the peer is
throttled). A peer that keeps sending well over its datagram budget (more than
``flood_after_s`` seconds' worth of its rate dropped, beyond half its rate that is forgiven
each second), or that goes over any reliable budget (reliable messages cannot be dropped
without breaking their guarantees), is disconnected as ``flooding``. The defaults leave
honest games far below them (a 60 Hz client sends about 60 datagrams a second) and a flooding
one little room.
"""

from __future__ import annotations

import attrs

from netcode.core import TokenBucket

__all__ = ["PeerBudgets", "PeerMeter"]


@attrs.frozen
class PeerBudgets:
    """Inbound budgets per participant; each allows a burst of ``burst_s`` seconds' worth,
    except the two byte budgets of big messages, whose bursts are their own."""

    #: lossy datagrams a second (and their bytes)
    datagrams_per_s: float = 1000.0
    datagram_bytes_per_s: float = 1_000_000.0
    #: reliable-channel messages a second (data, RPC, stream chunks, control) and bytes.
    #: Receiving costs the server about 0.1 core per MB/s (aiortc's DTLS and SCTP): this
    #: budget is what one client may cost it. Clients learn it when they join, and their
    #: streams keep under it; the bytes have a burst of their own, ``message_bytes_burst``
    messages_per_s: float = 1000.0
    message_bytes_per_s: float = 256_000.0
    message_bytes_burst: float = 128_000.0
    #: game events a second (relayed to the room)
    events_per_s: float = 1000.0
    #: RPC requests a second
    rpc_per_s: float = 200.0
    #: bytes of published data a second, counted once per receiver the server relays it
    #: to (the fan-out is the sender's: one packet to 15 others costs 15 copies). Over it,
    #: lossy packets are dropped (throttled) and a reliable one disconnects (``flooding``)
    relay_bytes_per_s: float = 256_000.0
    relay_bytes_burst: float = 256_000.0
    #: new topic names a second, after a first burst of ``new_topics_burst`` (a game binds
    #: its few topics as it starts; a peer inventing names faster makes every receiver
    #: learn them: it is disconnected, ``too_many_topics``)
    new_topics_per_s: float = 10.0
    new_topics_burst: int = 32
    #: seconds of rate a burst may use at once
    burst_s: float = 2.0
    #: seconds' worth of the datagram rate a peer may have dropped (beyond half the rate
    #: forgiven each second) before it is disconnected
    flood_after_s: float = 3.0


class PeerMeter:
    """One participant's buckets. Each check returns True when within budget."""

    def __init__(self, budgets: PeerBudgets) -> None:
        b = budgets
        burst = b.burst_s

        def bucket(rate: float) -> TokenBucket:
            return TokenBucket(rate, max(1.0, rate * burst))

        self.budgets = budgets
        self._datagrams = bucket(b.datagrams_per_s)
        self._datagram_bytes = bucket(b.datagram_bytes_per_s)
        self._messages = bucket(b.messages_per_s)
        self._message_bytes = TokenBucket(b.message_bytes_per_s, b.message_bytes_burst)
        self._events = bucket(b.events_per_s)
        self._rpc = bucket(b.rpc_per_s)
        self._relay_bytes = TokenBucket(b.relay_bytes_per_s, b.relay_bytes_burst)
        self._topics = TokenBucket(b.new_topics_per_s, max(1.0, float(b.new_topics_burst)))
        # throttled datagrams the peer may send before it counts as flooding
        self._drops = TokenBucket(
            b.datagrams_per_s / 2, max(1.0, b.datagrams_per_s * b.flood_after_s)
        )
        self._flooding = False
        #: the reliable bytes are charged as they arrive (:meth:`message_bytes`, by the
        #: link's SCTP chunks): :meth:`message` then counts messages only
        self.bytes_by_chunk = False
        #: what went over budget, by budget name
        self.exceeded: dict[str, int] = {}

    def datagram(self, now: float, size: int) -> bool:
        """A lossy datagram arrived: False drops it (throttled)."""
        if self._datagrams.take(now) and self._datagram_bytes.take(now, size):
            return True
        self._count("datagrams")
        if not self._drops.take(now):
            self._flooding = True
        return False

    def flooding(self, now: float) -> bool:
        """True once the peer used up its allowance of dropped datagrams."""
        return self._flooding

    def message(self, now: float, size: int) -> bool:
        """A reliable message of ``size`` bytes arrived; False: over budget."""
        if self._messages.take(now) and (
            self.bytes_by_chunk or self._message_bytes.take(now, size)
        ):
            return True
        self._count("messages")
        return False

    def message_bytes(self, now: float, size: int) -> bool:
        """``size`` bytes of a reliable message arrived (a part of it, before it is whole);
        False: over budget."""
        return self._within(self._message_bytes, "message_bytes", now, size)

    def event(self, now: float) -> bool:
        return self._within(self._events, "events", now)

    def rpc(self, now: float) -> bool:
        return self._within(self._rpc, "rpc", now)

    def relay(self, now: float, size: int) -> bool:
        """``size`` bytes of copies to relay (a packet's payload times its receivers)."""
        return self._within(self._relay_bytes, "relay_bytes", now, size)

    def new_topic(self, now: float) -> bool:
        """The peer bound a new topic name; False: faster than its budget."""
        return self._within(self._topics, "topics", now)

    def _within(self, bucket: TokenBucket, name: str, now: float, amount: float = 1.0) -> bool:
        if bucket.take(now, amount):
            return True
        self._count(name)
        return False

    def _count(self, name: str) -> None:
        self.exceeded[name] = self.exceeded.get(name, 0) + 1
