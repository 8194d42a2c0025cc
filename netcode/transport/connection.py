"""The asyncio adapter that drives a sans-IO :class:`~netcode.core.Endpoint` over a link.

Like aioquic's asyncio protocol, it only moves bytes and time: a datagram from the lossy
channel goes to ``receive_datagram``, events are drained to a callback, whatever the endpoint
wants to send is handed to the channel, and one timer is re-armed at ``get_timer()``.

Sends are flushed at the end of the current event-loop iteration (``call_soon``), so frames
queued together leave together, and paced by a token bucket (``pacing_rate`` datagrams a
second, bursts of ``pacing_burst``): thousands of back-to-back datagrams would overflow the
receiver's UDP buffer, where the same datagrams paced arrive.

While the connection's send queue is backed up (``link.datagram_backlog()`` above the link's
limit), it does not pull datagrams from the endpoint: they wait there, where superseded
snapshot parts replace older ones and expired frames are dropped, instead of queueing
stale behind SCTP's congestion window.

A connection outlives its link: :meth:`detach` lets the link go (a drop), and :meth:`attach`
moves the same endpoint (its sequence numbers, acks and queued frames) onto a new one. While
detached, frames wait in the endpoint and leave on the next link as soon as it is attached
(what the dead link swallowed is reported lost in due course and resent by the layers that
resend). :attr:`last_received` is when
the last datagram arrived: with PINGs every second from an idle peer, silence longer than a
few seconds means the path is dead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from netcode.core import DeliveryCallback, Endpoint, EndpointConfig, Event
from netcode.core.endpoint import Tracer
from netcode.transport.peerlink import ChannelNotOpen
from netcode.wire import PROTOCOL_VERSION

__all__ = ["DatagramConnection", "DatagramLink", "FlushHook"]

logger = logging.getLogger(__name__)

#: While backed up, check again this often (seconds).
_BACKLOG_RETRY_S = 0.005


class FlushHook(Protocol):
    """Something that queues frames on the endpoint when flushed (a reliable channel)."""

    def flush(self, now: float) -> object: ...

    def get_timer(self) -> float | None: ...


class DatagramLink(Protocol):
    """What a DatagramConnection needs of a link (PeerLink provides it)."""

    backlog_limit: int

    def send_lossy(self, data: bytes) -> bool: ...

    def datagram_backlog(self) -> int: ...

    def on_lossy(self, handler: Callable[[bytes], object] | None) -> None: ...


class DatagramConnection:
    """One endpoint driven over one link's lossy channel."""

    def __init__(
        self,
        link: DatagramLink | None,
        on_event: Callable[[Event], None],
        *,
        config: EndpointConfig | None = None,
        name: str = "",
        clock: Callable[[], float] | None = None,
        on_malformed: Callable[[], None] | None = None,
        tracer: Tracer | None = None,
        pacing_rate: float = 2000.0,
        pacing_burst: int = 32,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.link: DatagramLink | None = link
        self.endpoint = Endpoint(config, name=name, tracer=tracer)
        self._on_event = on_event
        #: called once per datagram the endpoint dropped as malformed
        self.on_malformed = on_malformed
        self._clock = clock or self._loop.time
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None  # the deadline the armed timer stands for
        self._closed = False
        #: datagrams the endpoint produced that the link refused (backed up)
        self.datagrams_refused = 0
        #: flushes skipped because the link was backed up
        self.flushes_deferred = 0
        self._hooks: list[FlushHook] = []
        self.pacing_rate = pacing_rate
        self.pacing_burst = pacing_burst
        self._tokens = float(pacing_burst)
        self._tokens_at = self._clock()
        #: flushes that left datagrams queued to keep to the pacing rate
        self.flushes_paced = 0
        #: when the last datagram arrived (this connection's clock), or when it was created
        self.last_received = self._clock()
        #: when the current link was attached (this connection's clock)
        self.attached_at = self.last_received
        #: checked with each datagram's size before it is decoded: False drops it (an
        #: inbound budget, so a flooding peer costs little)
        self.admit: Callable[[float, int], bool] | None = None
        #: datagrams dropped because ``admit`` refused them
        self.datagrams_throttled = 0
        #: when set, a message on the lossy channel that is not a netcode datagram (its
        #: first byte's high nibble is not PROTOCOL_VERSION) goes here, after ``admit``,
        #: instead of to the endpoint (a layer above that shares the channel)
        self.on_foreign: Callable[[bytes], None] | None = None
        if link is not None:  # else frames wait in the endpoint until attach()
            link.on_lossy(self._on_datagram)
            self.schedule_flush()  # the first PING (then one a second, even when idle)

    def attach(self, link: DatagramLink) -> None:
        """Drive the endpoint over ``link`` from now on (the previous one is let go)."""
        self.detach()
        self.link = link
        self.last_received = self.attached_at = self._clock()
        link.on_lossy(self._on_datagram)
        self.schedule_flush()

    def detach(self) -> None:
        """Stop using the current link; until :meth:`attach`, datagrams are thrown away."""
        link, self.link = self.link, None
        if link is not None:
            link.on_lossy(None)

    def now(self) -> float:
        """This connection's clock (seconds)."""
        return self._clock()

    def unacked_for(self, now: float) -> float:
        """Seconds since the peer last acknowledged a datagram of ours on this link (or since
        the link was attached, when it has acknowledged none there). The connection PINGs
        at least once a second, so a peer that reads its datagrams keeps this small."""
        acked = self.endpoint.last_acked_at
        since = self.attached_at if acked is None else max(acked, self.attached_at)
        return now - since

    def send_frame(
        self,
        frame_type: int,
        payload: bytes,
        *,
        on_delivery: DeliveryCallback | None = None,
        supersede_key: object = None,
        expires_at: float | None = None,
    ) -> None:
        """Queue a frame (see Endpoint.send_frame) and flush at the end of this iteration."""
        if self._closed:
            return
        self.endpoint.send_frame(
            frame_type,
            payload,
            on_delivery=on_delivery,
            supersede_key=supersede_key,
            expires_at=expires_at,
        )
        self.schedule_flush()

    def add_flush_hook(self, hook: FlushHook) -> None:
        """Flush ``hook`` (before the endpoint) on every flush, and at its timer."""
        self._hooks.append(hook)

    def schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Run timers, send what is due and deliver events now."""
        self._flush_scheduled = False
        if self._closed:
            return
        endpoint = self.endpoint
        now = self._clock()
        endpoint.handle_timer(now)
        link = self.link
        if link is not None and link.datagram_backlog() > link.backlog_limit:
            self.flushes_deferred += 1
            self._drain()
            self._arm(now + _BACKLOG_RETRY_S)
            return
        if link is None:
            # No link (a drop): frames wait in the endpoint, where superseded snapshot parts
            # replace older ones and stale data expires, and leave on the next link at once.
            # The hooks (reliable channels) wait too: their messages would only be resent
            # into the void, and a held session's queue is as long as its grace period
            # allows; attach() flushes them.
            self._drain()
            endpoint_timer = endpoint.get_timer()
            self._arm(None if endpoint_timer is None else max(endpoint_timer, now + 0.05))
            return
        timer: float | None = None
        for hook in self._hooks:
            when = hook.get_timer()
            if when is not None and when <= now:  # flushing a hook with nothing due costs
                hook.flush(now)  # a walk over its queue, on every datagram received
                when = hook.get_timer()
            if when is not None:
                # a hook's "now" (a time already past) waits a millisecond, not a busy loop
                when = max(when, now + 0.001)
                timer = when if timer is None else min(timer, when)
        tokens = min(
            float(self.pacing_burst), self._tokens + (now - self._tokens_at) * self.pacing_rate
        )
        self._tokens_at = now
        datagrams = endpoint.datagrams_to_send(now, max_datagrams=int(tokens))
        self._tokens = tokens - len(datagrams)
        if endpoint.send_queue_bytes:  # paced: the rest leaves when the bucket refills
            self.flushes_paced += 1
            when = now + max(1.0 - self._tokens, 0.0) / self.pacing_rate
            timer = when if timer is None else min(timer, when)
        self._send(link, datagrams)
        self._drain()
        endpoint_timer = endpoint.get_timer()
        if endpoint_timer is not None:
            timer = endpoint_timer if timer is None else min(timer, endpoint_timer)
        self._arm(timer)

    def _send(self, link: DatagramLink, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            try:
                if not link.send_lossy(datagram):
                    self.datagrams_refused += 1
            except ChannelNotOpen:
                # The link closed under us: let it go. The session above decides whether
                # the peer left or will come back on a new link.
                self.detach()
                return

    def close(self) -> None:
        """Stop driving the endpoint; nothing more is sent or delivered."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.detach()

    def _on_datagram(self, data: bytes) -> None:
        if self._closed:
            return
        now = self.last_received = self._clock()
        admit = self.admit
        if admit is not None and not admit(now, len(data)):
            self.datagrams_throttled += 1
            return
        on_foreign = self.on_foreign
        if on_foreign is not None and data and data[0] >> 4 != PROTOCOL_VERSION:
            on_foreign(data)
            return
        counters = self.endpoint.counters
        malformed = counters.datagrams_malformed
        self.endpoint.receive_datagram(data, now)
        if counters.datagrams_malformed != malformed and self.on_malformed is not None:
            self.on_malformed()
        self._drain()
        self.schedule_flush()

    def _drain(self) -> None:
        endpoint = self.endpoint
        while (event := endpoint.next_event()) is not None:
            try:
                self._on_event(event)
            except Exception:
                logger.exception("%s: event handler raised", endpoint.name)

    def _arm(self, when: float | None) -> None:
        # Flushes run for every datagram received; most leave the deadline where it was,
        # and then the armed timer stands instead of being cancelled and made anew. (Keeping
        # an earlier timer when the deadline moved later made the demo's RTT 3x and its
        # acknowledgements late: a timer must be armed for the deadline the flush computed.)
        if self._timer is not None and not self._timer.cancelled() and when == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = when
        if when is None or self._closed:
            return
        # The endpoint's clock may not be the loop's: convert to a delay.
        delay = max(when - self._clock(), 0.0)
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = None
        self.flush()
