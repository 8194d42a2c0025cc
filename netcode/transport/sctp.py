"""Delayed and bundled SCTP acknowledgements for one aiortc association.

aiortc answers every packet that carries DATA with a SACK of its own, at once: a game
connection where both ends send a datagram every tick then moves twice the packets it
needs (each data packet draws another 93 bytes on the wire, and each SACK costs both ends
a DTLS record and a trip through the SCTP stack). RFC 4960 section 6.2 (RFC 9260 keeps it)
lets a receiver delay its acknowledgement: it must acknowledge at least every second
packet carrying DATA, and within 200 ms of the arrival of any unacknowledged DATA; it must
acknowledge at once a packet that shows a gap or a duplicate (so fast retransmission is not
slowed), and a SACK may ride in front of DATA in the same packet (section 6.10, bundling:
control chunks first).

:func:`delay_acks` installs that policy on one ``RTCSctpTransport`` instance (instance
attributes shadow two of its methods; nothing is patched at module or class level, so other
associations in the process keep aiortc's behaviour):

- after a packet with DATA, the SACK waits unless this is the second unacknowledged
  packet, the packet shows or fills a gap, holds a duplicate or a FORWARD TSN, or the
  association is not established;
- a waiting SACK rides the next DATA chunk this end sends, in the same packet, if the
  packet stays within aiortc's largest (``SCTP_MAX_PACKET_LENGTH``, 1189 bytes): both ends
  of a game connection send every tick, so acknowledgements then cost no packet at all;
- otherwise it goes alone after ``delay`` seconds (at most 200 ms).

It also bundles DATA (section 6.10): aiortc puts every message in a packet of its own, so a
burst of small messages queued in one turn of the event loop (a relay fanning packets out, a
TOPIC binding and the DATA behind it) costs a packet, a DTLS record and a trip through
both SCTP stacks per message. Messages queued in one turn now leave together: the first of
aiortc's flushes of its data-channel queue drains it, and the DATA chunks that flush hands
down leave in as few packets as fit ``SCTP_MAX_PACKET_LENGTH``, in TSN order, with a
waiting SACK in front. Retransmissions leave as aiortc sends them.

It bounds what a peer can make the association hold (RFC 4960 section 6.2: a receiver
without buffer space drops new DATA). aiortc advertises a receive window of 1 MiB but never
enforces it: a peer that opens messages and never ends them, or leaves a gap and sends past
it, grows the reassembly buffer and the set of out-of-order TSNs without limit (and aiortc
sorts that set for every chunk). Once the window is spent, or ``MAX_MISORDERED`` TSNs wait
above a gap, a DATA chunk is dropped and counted (``data_refused``) unless it is the next
TSN that fills a gap, so a peer that keeps to the window never meets the bound, and an
honest retransmission always lets the association move on.

Only when a SACK leaves changes; what it says is aiortc's own (built by aiortc's
``_send_sack``). The sender's retransmission timer (at least 1 s) is far longer than the
delay; its congestion window grows per SACK in slow start, which game traffic, paced far
below the window, does not depend on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from struct import pack
from typing import Any

from google_crc32c import value as _crc32c  # what aiortc checksums its packets with

__all__ = ["DEFAULT_SACK_DELAY_S", "MAX_MISORDERED", "SackPolicy", "delay_acks"]

logger = logging.getLogger(__name__)

#: How long an acknowledgement may wait for a packet to ride (RFC 4960 6.2: at most 200 ms).
DEFAULT_SACK_DELAY_S = 0.2
#: TSNs received above a gap that an association holds before it drops new DATA
MAX_MISORDERED = 2048

_SCTP_COMMON_HEADER = 12
_REQUIRED = (
    "_send_sack",
    "_send_chunk",
    "_sack_needed",
    "_sack_misordered",
    "_sack_duplicates",
    "_receive_forward_tsn_chunk",
    "_data_channel_flush",
    "_receive_data_chunk",
    "_advertised_rwnd",
    "_last_received_tsn",
    "_association_state",
    "State",
    "transport",
    "_local_port",
    "_remote_port",
    "_remote_verification_tag",
)


class SackPolicy:
    """The delayed, bundled acknowledgements of one association (see the module docstring).

    Counters: ``sacks_alone`` (SACK packets sent by themselves), ``sacks_bundled`` (SACKs
    that rode a DATA chunk), ``sacks_delayed`` (packets whose acknowledgement waited),
    ``data_bundled`` (DATA chunks that rode in a packet behind another DATA chunk),
    ``data_refused`` (DATA chunks dropped: the peer went past the receive window).
    """

    def __init__(self, sctp: Any, delay: float = DEFAULT_SACK_DELAY_S) -> None:
        from aiortc import rtcsctptransport as _aiortc_sctp

        if not 0 < delay <= 0.2:
            raise ValueError("the SACK delay must be within (0, 0.2] seconds (RFC 4960 6.2)")
        self._m = _aiortc_sctp
        self._sctp = sctp
        self.delay = delay
        self._send_sack = sctp._send_sack  # aiortc's: builds and sends the SACK
        self._send_chunk = sctp._send_chunk  # aiortc's: one chunk per packet
        self._receive_forward_tsn = sctp._receive_forward_tsn_chunk
        self._unacked = 0  # packets with DATA since the last SACK
        self._gaps_before = False  # gaps were outstanding before the current packet
        self._urgent = False  # the current packet carried a FORWARD TSN
        self._timer: asyncio.TimerHandle | None = None
        self._capture: list[Any] | None = None
        self.sacks_alone = 0
        #: chunks that could not be sent: the transport under the association was gone
        self.send_failures = 0
        self.sacks_bundled = 0
        self.sacks_delayed = 0
        self.data_bundled = 0
        self.data_refused = 0
        #: called with (stream id, bytes) for each new DATA chunk before aiortc takes it:
        #: False drops it (the link's owner metered its peer over budget, before the
        #: reassembly and the rest of the expensive work)
        self.admit: Callable[[int, int], bool] | None = None
        #: DATA chunks ``admit`` refused
        self.data_throttled = 0
        self._receive_data = sctp._receive_data_chunk
        self._data_channel_flush = sctp._data_channel_flush  # aiortc's: queue -> DATA chunks
        self._bundle: list[Any] | None = None  # DATA chunks held while a flush runs
        self._flushing = 0
        sctp._send_sack = self._on_sack_needed
        sctp._send_chunk = self._on_send_chunk
        sctp._receive_forward_tsn_chunk = self._on_forward_tsn
        sctp._data_channel_flush = self._on_data_channel_flush
        sctp._receive_data_chunk = self._on_data_chunk

    async def _on_data_chunk(self, chunk: Any) -> None:
        # how far past the cumulative TSN the chunk is (0 or over 2**31: a duplicate), or
        # None before the first DATA
        last = self._sctp._last_received_tsn
        ahead = None if last is None else (chunk.tsn - last) % 2**32
        if self._past_window(chunk, ahead):
            self.data_refused += 1  # new data with no room for it: dropped (6.2)
            return
        admit = self.admit
        if (
            admit is not None
            and self._is_new(chunk, ahead)
            and not admit(chunk.stream_id, len(chunk.user_data))
        ):
            self.data_throttled += 1
            return
        await self._receive_data(chunk)

    def _is_new(self, chunk: Any, ahead: int | None) -> bool:
        """Not a duplicate (a retransmission of a chunk already received)."""
        if ahead is None:
            return True
        return 0 < ahead < 2**31 and chunk.tsn not in self._sctp._sack_misordered

    def _past_window(self, chunk: Any, ahead: int | None) -> bool:
        sctp = self._sctp
        if ahead is None:
            return False
        waiting = sctp._sack_misordered
        full = sctp._advertised_rwnd < len(chunk.user_data) or len(waiting) >= MAX_MISORDERED
        if not full or chunk.tsn in waiting:
            return False
        if not 0 < ahead < 2**31:
            return False  # a duplicate: aiortc reports it
        return not (waiting and ahead == 1)  # the TSN that fills the gap always gets in

    async def _on_forward_tsn(self, chunk: Any) -> None:
        self._urgent = True
        await self._receive_forward_tsn(chunk)

    async def _on_sack_needed(self) -> None:
        """aiortc calls this after each packet that needs acknowledging."""
        sctp = self._sctp
        self._unacked += 1
        gaps = bool(sctp._sack_misordered)
        now = (
            self._unacked >= 2
            or gaps
            or self._gaps_before  # this packet may have filled a gap: say so at once
            or bool(sctp._sack_duplicates)
            or self._urgent
            or sctp._association_state != sctp.State.ESTABLISHED
        )
        self._gaps_before = gaps
        self._urgent = False
        if now:
            await self.flush()
            return
        self.sacks_delayed += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        sctp = self._sctp
        if sctp._sack_needed and sctp._association_state == sctp.State.ESTABLISHED:
            task = asyncio.ensure_future(self.flush())
            task.add_done_callback(_log_failure)

    async def flush(self) -> None:
        """Send the waiting acknowledgement now, alone."""
        self._cancel_timer()
        self._unacked = 0
        if not self._sctp._sack_needed:
            return
        self.sacks_alone += 1
        await self._send_sack()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _on_data_channel_flush(self) -> None:
        """aiortc's flush of its data-channel queue, with the DATA chunks it sends bundled.

        aiortc schedules one per message queued (and awaits one after each SACK); the first
        to run drains the whole queue, so a burst queued in one turn leaves together.
        """
        self._flushing += 1
        if self._bundle is None:
            self._bundle = []
        try:
            await self._data_channel_flush()
        finally:
            self._flushing -= 1
            bundle = self._bundle
            self._bundle = [] if self._flushing else None
            if bundle:
                await self._send_bundle(bundle)

    async def _send_bundle(self, chunks: list[Any]) -> None:
        """Send DATA chunks in order, as many to a packet as fit, a waiting SACK first."""
        limit = self._m.SCTP_MAX_PACKET_LENGTH - _SCTP_COMMON_HEADER
        encoded = [bytes(chunk) for chunk in chunks]
        first = 0
        while first < len(encoded):
            size = len(encoded[first])
            end = first + 1
            while end < len(encoded) and size + len(encoded[end]) <= limit:
                size += len(encoded[end])
                end += 1
            self.data_bundled += end - first - 1
            try:
                await self._send_data(b"".join(encoded[first:end]), size)
            except ConnectionError:
                self.send_failures += 1
            first = end

    async def _on_send_chunk(self, chunk: Any) -> None:
        bundle = self._bundle
        if bundle is not None:
            if isinstance(chunk, self._m.DataChunk):
                bundle.append(chunk)  # leaves when the flush that produced it ends
                return
            if bundle:  # keep the order: what was handed down first leaves first
                self._bundle = []
                await self._send_bundle(bundle)
        try:
            await self._send_or_bundle(chunk)
        except ConnectionError:
            # The ICE or DTLS transport under the association is gone: the chunk is lost as
            # any packet can be, and the association's end is reported by its transport.
            # (aiortc lets this escape from tasks nobody awaits.)
            self.send_failures += 1

    async def _send_or_bundle(self, chunk: Any) -> None:
        if self._capture is not None:  # aiortc's _send_sack handing us its SACK
            self._capture.append(chunk)
            return
        if isinstance(chunk, self._m.DataChunk):
            data = bytes(chunk)
            await self._send_data(data, len(data))
            return
        await self._send_chunk(chunk)

    async def _send_data(self, data: bytes, size: int) -> None:
        """Send encoded DATA chunks as one packet, a waiting SACK in front if it fits."""
        sctp = self._sctp
        m = self._m
        if sctp._sack_needed:
            # an upper bound of the SACK: 16 bytes, 4 per gap and per duplicate TSN
            sack_bound = 16 + 4 * (len(sctp._sack_misordered) + len(sctp._sack_duplicates))
            if _SCTP_COMMON_HEADER + sack_bound + size <= m.SCTP_MAX_PACKET_LENGTH:
                captured: list[Any] = []
                self._capture = captured
                try:
                    await self._send_sack()  # builds the SACK and clears what it reports
                finally:
                    self._capture = None
                self._cancel_timer()
                self._unacked = 0
                if len(captured) == 1:
                    self.sacks_bundled += 1
                    await sctp.transport._send_data(self._packet(bytes(captured[0]) + data))
                    return
                for extra in captured:  # not what we expected: send as aiortc would
                    await self._send_chunk(extra)
        await sctp.transport._send_data(self._packet(data))

    def _packet(self, chunks: bytes) -> bytes:
        sctp = self._sctp
        header = pack("!HHL", sctp._local_port, sctp._remote_port, sctp._remote_verification_tag)
        checksum = _crc32c(header + b"\x00\x00\x00\x00" + chunks)
        return header + pack("<L", checksum) + chunks


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("a delayed SCTP acknowledgement was not sent: %r", task.exception())


def delay_acks(pc: Any, delay: float = DEFAULT_SACK_DELAY_S) -> SackPolicy | None:
    """Delay and bundle the SCTP acknowledgements of ``pc``'s association (this one only).

    Returns the policy (its counters), or None if ``pc`` has no association yet or aiortc's
    internals are not what this was written against (then aiortc's own behaviour stays).
    """
    sctp = getattr(pc, "sctp", None)
    if sctp is None:
        return None
    existing = getattr(sctp, "_netcode_sack_policy", None)
    if isinstance(existing, SackPolicy):
        return existing
    if not all(hasattr(sctp, name) for name in _REQUIRED):
        logger.warning("aiortc's SCTP internals changed: acknowledgements are not delayed")
        return None
    policy = SackPolicy(sctp, delay)
    sctp._netcode_sack_policy = policy
    return policy
