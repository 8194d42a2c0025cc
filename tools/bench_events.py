"""``netcode-bench events``: reliable game events under loss, beside SCTP's reliable channel.

By default it measures the relay path on the real stack (client -> server -> client over
aiortc on 127.0.0.1 with every UDP datagram impaired; :mod:`netcode_tools.bench_relay`).
``--simulated`` runs the older, cheaper model of one hop described below.

Simulated: one seeded scenario, run twice in simulated time over the same kind of link
(one-way delay ``rtt/2``, +-``jitter`` uniform, independent loss per packet both ways):

netcode
    A :class:`~netcode.core.ReliableChannel` on an :class:`~netcode.core.Endpoint`, as
    the game uses it: the sender queues a few events per tick and flushes at the tick rate;
    both endpoints are driven at their ``get_timer()`` (so the receiver's ack-only
    datagrams leave ``max_ack_delay`` after a datagram arrives) and send pings.

sctp
    A model of aiortc 1.16's SCTP association carrying the same events on an ordered, fully
    reliable data channel (``aiortc/rtcsctptransport.py``): one DATA chunk per message and
    one chunk per packet (aiortc bundles nothing); the receiver SACKs every DATA packet at
    once (cumulative TSN and gap blocks) and delivers in order (head-of-line blocking);
    the sender has aiortc's congestion window (initial 3 x 1160 bytes, slow start,
    congestion avoidance, burst limit, fast recovery), fast retransmit when a chunk has
    been reported missing by three SACKs that newly acknowledged later TSNs, and the T3
    retransmission timer: RTO = clamp(srtt + 4 rttvar, 1 s, 60 s) from Karn-filtered
    samples (first transmission only), restarted when the earliest outstanding chunk is
    acknowledged or resent; on expiry every outstanding chunk is marked for retransmission,
    ssthresh = max(cwnd / 2, 4 MTU) and cwnd = 1 MTU. aiortc does not double the RTO on
    repeated expiries (RFC 4960 6.3.3 E2 does); ``--sctp-rfc-backoff`` adds the doubling.
    srtt and rttvar start as one sample of the path's RTT (as if measured while the data
    channel opened), so the RTO starts at its 1 s floor.

Latency is from ``send`` on the sending side to delivery, in order, on the receiving side.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
from collections import deque
from typing import Any

import attrs

from netcode.cli import percent
from netcode.core import Endpoint, EndpointConfig, FrameReceived, ReliableChannel
from netcode.transport.memory import LinkConditions, SimulatedLink, SimulatedPath
from netcode.wire import FrameType

#: Bytes of user data a DATA chunk carries in aiortc (SCTP packet of 1189 bytes at most).
SCTP_USERDATA_MAX_LENGTH = 1160
SCTP_RTO_MIN = 1.0
SCTP_RTO_MAX = 60.0

_EVENT_HEAD = struct.Struct("!I")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--simulated",
        action="store_true",
        help="the one-hop model in simulated time instead of the real relay",
    )
    parser.add_argument(
        "--loss",
        type=percent(),
        default=5.0,
        metavar="PERCENT",
        help="packet loss each way, percent (5; 5 or 5%%)",
    )
    parser.add_argument(
        "--rtt-ms", type=float, default=100.0, help="round-trip time (real: 2 x one-way latency)"
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=None, help="one-way jitter, +- (10 simulated, 0 real)"
    )
    parser.add_argument("--rate-hz", type=float, default=30.0, help="tick rate (30)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the impairment")
    real = parser.add_argument_group("the real relay (default)")
    real.add_argument("--impair", metavar="SPEC", help="impairment spec, replaces the above")
    real.add_argument("--clients", type=int, default=8, help="bot clients (8)")
    real.add_argument("--duration", type=float, default=30.0, help="seconds of probes (30)")
    real.add_argument(
        "--event-interval",
        type=float,
        default=1.0,
        help="s between one bot's probes (1.0, as netcode-load's chat events)",
    )
    real.add_argument("--entities", type=int, default=64, help="replicated movers (64)")
    real.add_argument(
        "--redundancy",
        type=int,
        default=None,
        help="early copies per event transmission (ReliableConfig.redundant_copies)",
    )
    real.add_argument(
        "--relay-at-once",
        action="store_true",
        help="the server relays each event at once, not with the host's next tick",
    )
    sim = parser.add_argument_group("--simulated")
    sim.add_argument("--events", type=int, default=10_000, help="events to send")
    sim.add_argument("--per-tick", type=int, default=3, help="events sent per tick")
    sim.add_argument("--event-bytes", type=int, default=32, help="bytes per event")
    sim.add_argument(
        "--sctp-rfc-backoff",
        action="store_true",
        help="double the SCTP RTO on repeated timeouts (RFC 4960; aiortc does not)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


@attrs.frozen
class Scenario:
    """What both runs send and over what link."""

    events: int = 10_000
    loss: float = 0.05
    rtt_ms: float = 100.0
    jitter_ms: float = 10.0
    rate_hz: float = 30.0
    per_tick: int = 3
    event_bytes: int = 32
    seed: int = 1
    sctp_rfc_backoff: bool = False

    @property
    def conditions(self) -> LinkConditions:
        latency_ms = self.rtt_ms / 2
        return LinkConditions(
            latency_ms=latency_ms, jitter_ms=min(self.jitter_ms, latency_ms), loss=self.loss
        )

    @property
    def tick_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def time_limit_s(self) -> float:
        """Simulated time after which a run gives up on undelivered events."""
        return math.ceil(self.events / self.per_tick) * self.tick_s + 120.0

    def payload(self, index: int) -> bytes:
        return _EVENT_HEAD.pack(index) + bytes(max(self.event_bytes - _EVENT_HEAD.size, 0))


@attrs.define
class RunResult:
    """What one run delivered, and at what cost."""

    order: list[int] = attrs.Factory(list)  #: event indices in delivery order
    latencies_s: list[float] = attrs.Factory(list)  #: per delivery, same order
    sent: int = 0  #: message transmissions, first and repeated
    resent: int = 0  #: repeated transmissions after a timeout, LOST or missing report
    redundant: int = 0  #: early copies riding frames that went out anyway (netcode only)
    packets: int = 0  #: packets (datagrams) the sending side put on the link

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_s)

        def percentile(p: float) -> float | None:
            if not ordered:
                return None
            rank = max(math.ceil(p / 100 * len(ordered)) - 1, 0)
            return round(ordered[rank] * 1000, 2)

        return {
            "p50_ms": percentile(50),
            "p99_ms": percentile(99),
            "max_ms": percentile(100),
            "delivered": len(self.order),
            "in_order": self.order == sorted(self.order),
            "unique": len(set(self.order)),
            "sent": self.sent,
            "resent": self.resent,
            "redundant": self.redundant,
            "packets": self.packets,
        }


def _next_time(now: float, *candidates: float | None) -> float:
    return max(now, min(t for t in candidates if t is not None))


def run_netcode(scenario: Scenario) -> RunResult:
    """The scenario over ReliableChannel + Endpoint on a seeded SimulatedLink."""
    link = SimulatedLink(scenario.conditions, seed=scenario.seed)
    config = EndpointConfig(datagram_events=False)
    sender, receiver = Endpoint(config, name="sender"), Endpoint(config, name="receiver")
    tx = ReliableChannel(sender, name="sender")
    rx = ReliableChannel(receiver, name="receiver")
    result = RunResult()
    sent_at: list[float] = []
    tick = 0
    now = 0.0
    while len(result.order) < scenario.events:
        next_tick = tick * scenario.tick_s
        now = _next_time(
            now,
            next_tick,
            link.a_to_b.next_arrival(),
            link.b_to_a.next_arrival(),
            sender.get_timer(),
            receiver.get_timer(),
        )
        if now > scenario.time_limit_s:
            break
        for data in link.a_to_b.receive(now):
            receiver.receive_datagram(data, now)
        for data in link.b_to_a.receive(now):
            sender.receive_datagram(data, now)
        for endpoint, channel in ((receiver, rx), (sender, tx)):
            while (event := endpoint.next_event()) is not None:
                if isinstance(event, FrameReceived) and event.frame_type == FrameType.EVENT:
                    channel.receive_frame(event.payload, now)
        for message in rx.received():
            index = _EVENT_HEAD.unpack_from(message)[0]
            result.order.append(index)
            result.latencies_s.append(now - sent_at[index])
        if now >= next_tick:
            tick += 1
            for _ in range(scenario.per_tick):
                if len(sent_at) < scenario.events:
                    tx.send(scenario.payload(len(sent_at)))
                    sent_at.append(now)
            tx.flush(now)
            rx.flush(now)
        for endpoint, path in ((sender, link.a_to_b), (receiver, link.b_to_a)):
            endpoint.handle_timer(now)
            for data in endpoint.datagrams_to_send(now):
                path.send(data, now)
    c = tx.counters
    result.sent = c.messages_sent + c.messages_resent + c.messages_redundant
    result.resent = c.messages_resent
    result.redundant = c.messages_redundant
    result.packets = sender.counters.datagrams_sent
    return result


class _Chunk:
    """A DATA chunk on the sending side, with aiortc's bookkeeping fields."""

    __slots__ = (
        "acked",
        "in_flight",
        "index",
        "misses",
        "retransmit",
        "sent_count",
        "sent_time",
        "size",
        "tsn",
    )

    def __init__(self, tsn: int, index: int, size: int) -> None:
        self.tsn = tsn
        self.index = index
        self.size = size
        self.sent_count = 0
        self.sent_time = 0.0
        self.misses = 0
        self.retransmit = False
        self.acked = False
        self.in_flight = False


class SctpSender:
    """The sending half of aiortc's association for one reliable ordered stream.

    Follows ``RTCSctpTransport._transmit``, ``_receive_sack_chunk``, ``_t3_expired`` and
    ``_update_rto``; TSNs are plain integers (no wrap in a run this short).
    """

    def __init__(self, rtt_s: float, *, rfc_backoff: bool = False) -> None:
        self.rfc_backoff = rfc_backoff
        self.cwnd = 3 * SCTP_USERDATA_MAX_LENGTH
        self.ssthresh = 1024 * 1024  # the peer's advertised receive window
        self.flight_size = 0
        self.partial_bytes_acked = 0
        self.fast_recovery_exit: int | None = None
        self.fast_recovery_transmit = False
        self.srtt = rtt_s
        self.rttvar = rtt_s / 2
        self.rto = self._clamp_rto(self.srtt + 4 * self.rttvar)
        self.t3_at: float | None = None
        self.outbound: deque[_Chunk] = deque()
        self.sent_queue: deque[_Chunk] = deque()
        self.next_tsn = 0
        self.last_sacked_tsn = -1
        self.transmissions = 0
        self.retransmissions = 0
        self.timeouts = 0
        self.fast_retransmits = 0

    @staticmethod
    def _clamp_rto(rto: float) -> float:
        return max(SCTP_RTO_MIN, min(rto, SCTP_RTO_MAX))

    def send(self, index: int, size: int, now: float, out: list[_Chunk]) -> None:
        self.outbound.append(_Chunk(self.next_tsn, index, size))
        self.next_tsn += 1
        self.transmit(now, out)

    def _in_flight(self, chunk: _Chunk, flying: bool) -> None:
        if chunk.in_flight != flying:
            chunk.in_flight = flying
            self.flight_size += chunk.size if flying else -chunk.size

    def transmit(self, now: float, out: list[_Chunk]) -> None:
        burst = (2 if self.fast_recovery_exit is not None else 4) * SCTP_USERDATA_MAX_LENGTH
        cwnd = min(self.flight_size + burst, self.cwnd)
        earliest = True
        for chunk in self.sent_queue:
            if chunk.retransmit:
                if self.fast_recovery_transmit:
                    self.fast_recovery_transmit = False
                elif self.flight_size >= cwnd:
                    return
                self._in_flight(chunk, True)
                chunk.misses = 0
                chunk.retransmit = False
                chunk.sent_count += 1
                self.retransmissions += 1
                out.append(chunk)
                if earliest:
                    self.t3_at = now + self.rto
            earliest = False
        while self.outbound and self.flight_size < cwnd:
            chunk = self.outbound.popleft()
            self.sent_queue.append(chunk)
            self._in_flight(chunk, True)
            chunk.sent_count += 1
            chunk.sent_time = now
            out.append(chunk)
            if self.t3_at is None:
                self.t3_at = now + self.rto
        self.transmissions = self.retransmissions + self.next_tsn - len(self.outbound)

    def on_sack(
        self, cumulative_tsn: int, gaps: frozenset[int], now: float, out: list[_Chunk]
    ) -> None:
        if cumulative_tsn < self.last_sacked_tsn:
            return
        self.last_sacked_tsn = cumulative_tsn
        cwnd_fully_utilized = self.flight_size >= self.cwnd
        done = 0
        done_bytes = 0
        queue = self.sent_queue
        while queue and queue[0].tsn <= cumulative_tsn:
            chunk = queue.popleft()
            done += 1
            if not chunk.acked:
                done_bytes += chunk.size
            self._in_flight(chunk, False)
            if done == 1 and chunk.sent_count == 1:
                self._update_rto(now - chunk.sent_time)
        loss = False
        if gaps:
            highest_seen = max(gaps)
            highest_newly_acked = cumulative_tsn
            for chunk in queue:
                if chunk.tsn > highest_seen:
                    break
                if chunk.tsn in gaps:
                    if not chunk.acked:
                        done_bytes += chunk.size
                        chunk.acked = True
                        highest_newly_acked = chunk.tsn
                    self._in_flight(chunk, False)
            for chunk in queue:
                if chunk.tsn > highest_newly_acked:
                    break
                if chunk.tsn not in gaps:
                    chunk.misses += 1
                    if chunk.misses == 3:
                        chunk.misses = 0
                        chunk.retransmit = True
                        chunk.acked = False
                        self._in_flight(chunk, False)
                        self.fast_retransmits += 1
                        loss = True
        if self.fast_recovery_exit is None:
            if done and cwnd_fully_utilized:
                if self.cwnd <= self.ssthresh:
                    self.cwnd += min(done_bytes, SCTP_USERDATA_MAX_LENGTH)
                else:
                    self.partial_bytes_acked += done_bytes
                    if self.partial_bytes_acked >= self.cwnd:
                        self.partial_bytes_acked -= self.cwnd
                        self.cwnd += SCTP_USERDATA_MAX_LENGTH
            if loss:
                self.ssthresh = max(self.cwnd // 2, 4 * SCTP_USERDATA_MAX_LENGTH)
                self.cwnd = self.ssthresh
                self.partial_bytes_acked = 0
                self.fast_recovery_exit = queue[-1].tsn
                self.fast_recovery_transmit = True
        elif cumulative_tsn >= self.fast_recovery_exit:
            self.fast_recovery_exit = None
        if not queue:
            self.t3_at = None
        elif done:
            self.t3_at = now + self.rto
        self.transmit(now, out)

    def on_t3_expired(self, now: float, out: list[_Chunk]) -> None:
        self.t3_at = None
        self.timeouts += 1
        for chunk in self.sent_queue:
            chunk.retransmit = True
            self._in_flight(chunk, False)
        self.fast_recovery_exit = None
        self.partial_bytes_acked = 0
        self.ssthresh = max(self.cwnd // 2, 4 * SCTP_USERDATA_MAX_LENGTH)
        self.cwnd = SCTP_USERDATA_MAX_LENGTH
        if self.rfc_backoff:
            self.rto = min(self.rto * 2, SCTP_RTO_MAX)
        self.transmit(now, out)

    def _update_rto(self, sample: float) -> None:
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
        self.srtt = 0.875 * self.srtt + 0.125 * sample
        self.rto = self._clamp_rto(self.srtt + 4 * self.rttvar)


class SctpReceiver:
    """The receiving half: cumulative TSN, gap set, in-order delivery, a SACK per packet."""

    def __init__(self) -> None:
        self.last_received_tsn = -1
        self.misordered: set[int] = set()

    def on_data(self, tsn: int) -> tuple[int, frozenset[int], list[int]]:
        """Returns the SACK (cumulative TSN, TSNs received above it) and newly delivered TSNs."""
        delivered: list[int] = []
        if tsn > self.last_received_tsn and tsn not in self.misordered:
            self.misordered.add(tsn)
            while self.last_received_tsn + 1 in self.misordered:
                self.last_received_tsn += 1
                self.misordered.discard(self.last_received_tsn)
                delivered.append(self.last_received_tsn)
        return self.last_received_tsn, frozenset(self.misordered), delivered


def run_sctp(scenario: Scenario) -> RunResult:
    """The scenario over the model of aiortc's reliable ordered data channel."""
    link = SimulatedLink(scenario.conditions, seed=scenario.seed)
    sender = SctpSender(scenario.rtt_ms / 1000, rfc_backoff=scenario.sctp_rfc_backoff)
    receiver = SctpReceiver()
    # The simulated paths carry bytes: a packet number, looked up here.
    packets: dict[int, tuple[int, ...]] = {}
    result = RunResult()
    sent_at: list[float] = []
    index_of_tsn: list[int] = []
    tick = 0
    now = 0.0

    def put(path: SimulatedPath, *record: int) -> None:
        key = len(packets)
        packets[key] = record
        path.send(key.to_bytes(4, "big"), now)

    while len(result.order) < scenario.events:
        next_tick = tick * scenario.tick_s
        now = _next_time(
            now,
            next_tick,
            link.a_to_b.next_arrival(),
            link.b_to_a.next_arrival(),
            sender.t3_at,
        )
        if now > scenario.time_limit_s:
            break
        out: list[_Chunk] = []
        for data in link.a_to_b.receive(now):
            (tsn,) = packets[int.from_bytes(data, "big")]
            cumulative, gaps, delivered = receiver.on_data(tsn)
            for done in delivered:
                index = index_of_tsn[done]
                result.order.append(index)
                result.latencies_s.append(now - sent_at[index])
            put(link.b_to_a, cumulative, *sorted(gaps))
        for data in link.b_to_a.receive(now):
            sack = packets[int.from_bytes(data, "big")]
            sender.on_sack(sack[0], frozenset(sack[1:]), now, out)
        if sender.t3_at is not None and now >= sender.t3_at:
            sender.on_t3_expired(now, out)
        if now >= next_tick:
            tick += 1
            for _ in range(scenario.per_tick):
                if len(sent_at) < scenario.events:
                    index = len(sent_at)
                    sent_at.append(now)
                    index_of_tsn.append(index)  # TSN n carries event n
                    sender.send(index, scenario.event_bytes, now, out)
        for chunk in out:
            put(link.a_to_b, chunk.tsn)
    result.sent = sender.transmissions
    result.resent = sender.retransmissions
    result.packets = sender.transmissions
    return result


def measure(scenario: Scenario) -> dict[str, Any]:
    netcode = run_netcode(scenario).summary()
    netcode["sctp"] = run_sctp(scenario).summary()
    netcode["scenario"] = attrs.asdict(scenario)
    return netcode


def run(args: argparse.Namespace) -> int:
    if not args.simulated:
        return run_real(args)
    scenario = Scenario(
        events=args.events,
        loss=args.loss / 100,
        rtt_ms=args.rtt_ms,
        jitter_ms=10.0 if args.jitter_ms is None else args.jitter_ms,
        rate_hz=args.rate_hz,
        per_tick=args.per_tick,
        event_bytes=args.event_bytes,
        seed=args.seed,
        sctp_rfc_backoff=args.sctp_rfc_backoff,
    )
    result = measure(scenario)
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    s = scenario
    table = Table(
        title=(
            f"{s.events} events, {s.per_tick} per tick at {s.rate_hz:g} Hz, "
            f"{s.loss:.0%} loss, RTT {s.rtt_ms:g} ms +-{2 * s.jitter_ms:g} ms, seed {s.seed}"
        )
    )
    table.add_column("channel")
    for column in (
        "delivered",
        "in order",
        "sent",
        "resent",
        "early copies",
        "packets",
        "p50 ms",
        "p99 ms",
    ):
        table.add_column(column, justify="right")
    table.add_column("max ms", justify="right")
    for name, r in (
        ("netcode events", result),
        ("SCTP model", result["sctp"]),
    ):
        table.add_row(
            name,
            f"{r['delivered']}/{s.events}",
            "yes" if r["in_order"] and r["unique"] == r["delivered"] else "NO",
            str(r["sent"]),
            str(r["resent"]),
            str(r["redundant"]),
            str(r["packets"]),
            *(f"{r[k]:.1f}" if r[k] is not None else "-" for k in ("p50_ms", "p99_ms", "max_ms")),
        )
    Console(width=max(Console().width, 120)).print(table)
    return 0


def real_scenario(args: argparse.Namespace) -> Any:
    """The :class:`~netcode_tools.bench_relay.RelayScenario` the arguments describe.

    Raises ValueError with a usage message for a bad ``--impair`` spec or argument.
    """
    from netcode.transport.impair import Impairment

    from .bench_relay import RelayScenario

    if args.impair is not None:
        impairment = Impairment.from_spec(args.impair)
    else:
        impairment = Impairment(
            latency_ms=args.rtt_ms / 2,
            jitter_ms=args.jitter_ms or 0.0,
            loss=args.loss / 100,
            seed=args.seed,
        )
    if args.clients < 2:
        raise ValueError("--clients must be at least 2 (events go from one client to others)")
    if not (args.duration > 0 and args.event_interval > 0 and args.rate_hz > 0):
        raise ValueError("--duration, --event-interval and --rate-hz must be positive")
    if args.redundancy is not None and args.redundancy < 0:
        raise ValueError("--redundancy must be 0 or more")
    return RelayScenario(
        clients=args.clients,
        duration_s=args.duration,
        tick_rate=args.rate_hz,
        entities=args.entities,
        event_interval_s=args.event_interval,
        impairment=impairment,
        redundancy=args.redundancy,
        relay_at_once=args.relay_at_once,
    )


def run_real(args: argparse.Namespace) -> int:
    """``netcode-bench events`` on the real stack: see :mod:`netcode_tools.bench_relay`."""
    import sys

    from .bench_relay import run_relay

    try:
        scenario = real_scenario(args)
    except ValueError as exc:
        print(f"netcode-bench events: error: {exc}", file=sys.stderr)
        return 2
    result = run_relay(scenario, as_json=args.json)
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    s = scenario
    table = Table(
        title=(
            f"client -> server -> client, {s.clients} clients, {s.tick_rate:g} Hz, "
            f"{s.impairment} (each way), probes every {s.event_interval_s:g} s per client"
        )
    )
    table.add_column("channel")
    for column in (
        "delivered",
        "lost",
        "dup",
        "out of order",
        "copies / event",
        "p50 ms",
        "p99 ms",
        "max ms",
    ):
        table.add_column(column, justify="right")
    for name, r in (
        ("netcode events (lossy channel)", result["events"]),
        ("SCTP reliable channel", result["reliable"]),
    ):
        table.add_row(
            name,
            f"{r['delivered']}/{r['expected']}",
            str(r["lost"]),
            str(r["duplicates"]),
            str(r["out_of_order"]),
            str(r.get("copies_per_event", "-")),
            *(f"{r[k]:.1f}" if r[k] is not None else "-" for k in ("p50_ms", "p99_ms", "max_ms")),
        )
    console = Console(width=max(Console().width, 120))
    console.print(table)
    sctp = result["server_sctp"]
    console.print(
        f"RTT (endpoint estimate) {result['rtt_ms_median']} ms; wire "
        f"{result['wire_kbps_per_client']} kbps per client (UDP payload both ways); server "
        f"SCTP cwnd p1/p50 {sctp['cwnd_bytes_p1']}/{sctp['cwnd_bytes_p50']} B, flight p99 "
        f"{sctp['flight_bytes_p99']} B, data-channel backlog p99 "
        f"{sctp['channel_backlog_bytes_p99']} B"
    )
    tick = result["server_tick_ms"]
    if not tick["held"]:
        console.print(
            f"[bold red]the server did not hold its tick rate ({tick['late']} ticks late, "
            f"{tick['skipped']} skipped): it was short of CPU, and these figures measure "
            "that; run again on a quieter machine[/]"
        )
    return 0
