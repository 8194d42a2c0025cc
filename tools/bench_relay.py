"""Game events client -> server -> client on the real stack, under UDP-level impairment.

What ``netcode-bench events`` measures (``--simulated`` runs the older one-hop model of
:mod:`netcode_tools.bench_events` instead).

One process runs a :class:`~netcode.rooms.RoomServer` on 127.0.0.1 with a game host (the
load test's: ``entities`` wanderers plus one player per client, replicated at ``tick_rate``)
and ``clients`` bot clients over real aiortc peer connections. The server impairs every UDP
datagram of every client's peer connection, both ways
(:class:`~netcode.transport.impair.Impairment`: ``loss=5%`` is 5% each way, ``latency=50``
is 50 ms one way), so SCTP, DTLS and ICE see the same loss the game does.

Every bot sends an input each tick (as a game client does) and, every ``event_interval_s``,
one probe to everyone else twice: as a game event (``Room.send_event``: the
reliable-over-lossy event channel) and as reliable data (``publish_data(reliable=True)``:
SCTP's ordered reliable channel), each stamped with its sender, its sequence number and the
send time. Every other bot records what arrives. After ``duration_s`` the bots keep ticking
for ``drain_s`` so that what is still in flight can arrive, then:

- latency p50 / p99 / max, from the sender's call to the receiver's handler (one clock);
- lost (expected deliveries that never came), duplicates, out of order (per sender and
  receiver);
- copies per event: transmissions of event messages on the lossy channel (first sends,
  early copies and resends, both hops) divided by first transmissions;
- wire kbps per client: UDP payload both ways (DTLS, SCTP and its acknowledgements), as the
  impairment counts it at the server.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

import attrs

from netcode.cli import make_token
from netcode.core.reliable import ReliableCounters
from netcode.rooms import DataPacket, RoomServer
from netcode.rooms.events import Chat
from netcode.rooms.host import GameHost
from netcode.transport.impair import Impairment
from netcode.transport.peerlink import PeerLink

from .load import Bot
from .load_server import LOAD_REGISTRY, LoadGame

__all__ = ["RelayScenario", "measure_relay", "run_relay"]

KEY = "relay-key"
SECRET = "relay-secret-relay-secret-relay-0"
ROOM = "relay"
PROBE_TOPIC = "probe"

#: What ``netcode-bench events`` impairs by default: 5% loss each way, 50 ms one way.
DEFAULT_IMPAIRMENT = Impairment(latency_ms=50.0, loss=0.05, seed=1)


@attrs.frozen
class RelayScenario:
    """What one run sends, and over what path."""

    clients: int = 8
    duration_s: float = 20.0
    tick_rate: float = 30.0
    entities: int = 64
    event_interval_s: float = 0.5
    impairment: Impairment = DEFAULT_IMPAIRMENT
    #: seconds the bots keep ticking after the last probe, for stragglers to arrive
    drain_s: float = 3.0
    #: seconds between the last join and the first probe (RTT estimates settle)
    warmup_s: float = 1.0
    #: early copies per event transmission on both sides (None: the channel's default)
    redundancy: int | None = None
    #: the server relays an event at once instead of with the host's next tick
    #: (``RoomHost.sends_every_tick = False``)
    relay_at_once: bool = False


class _Probes:
    """What one receiver got on one channel."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.seen: set[tuple[int, int]] = set()
        self.last_seq: dict[int, int] = {}
        self.duplicates = 0
        self.out_of_order = 0

    def record(self, text: str) -> None:
        sender_s, seq_s, sent_s = text.split(":")
        sender, seq = int(sender_s), int(seq_s)
        key = (sender, seq)
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        self.latencies_ms.append((time.perf_counter() - float(sent_s)) * 1e3)
        if seq < self.last_seq.get(sender, -1):
            self.out_of_order += 1
        else:
            self.last_seq[sender] = seq


class ProbeBot(Bot):
    """A light load bot (inputs every tick, snapshots acknowledged) that records probes."""

    def __init__(self, index: int) -> None:
        super().__init__(index, LOAD_REGISTRY, full=False)
        self.events = _Probes()
        self.reliable = _Probes()
        self.sent = 0
        self.room.on("data_received", self._on_data)

    def _on_chat(self, event: Chat, participant: Any, topic: str) -> None:
        if topic == PROBE_TOPIC:
            self.events.record(event.text)

    def _on_data(self, packet: DataPacket) -> None:
        if packet.topic == PROBE_TOPIC and isinstance(packet.data, str):
            self.reliable.record(packet.data)

    def send_probe(self) -> None:
        text = f"{self.index}:{self.sent}:{time.perf_counter():.6f}"
        self.room.send_event(Chat(text), topic=PROBE_TOPIC)
        text = f"{self.index}:{self.sent}:{time.perf_counter():.6f}"
        self.room.publish_data(text, True, (), PROBE_TOPIC)
        self.sent += 1


def _percentile(ordered: Sequence[float], p: float) -> float | None:
    if not ordered:
        return None
    rank = max(math.ceil(p / 100 * len(ordered)) - 1, 0)
    return round(ordered[rank], 1)


def _summary(probes: list[_Probes], expected: int) -> dict[str, Any]:
    latencies = sorted(v for p in probes for v in p.latencies_ms)
    return {
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": _percentile(latencies, 100),
        "expected": expected,
        "delivered": len(latencies),
        "lost": expected - len(latencies),
        "duplicates": sum(p.duplicates for p in probes),
        "out_of_order": sum(p.out_of_order for p in probes),
    }


def _sctp_state(link: PeerLink) -> tuple[int, int, int, int]:
    """The server's SCTP state towards one client: congestion window, bytes in flight,
    chunks waiting behind the window, bytes waiting in the data channels (aiortc's private
    fields, read only; zeros if they moved)."""
    sctp = getattr(getattr(link, "_pc", None), "sctp", None)
    cwnd = int(getattr(sctp, "_cwnd", 0))
    flight = int(getattr(sctp, "_flight_size", 0))
    queued = len(getattr(sctp, "_outbound_queue", ()))
    return cwnd, flight, queued, link.send_backlog()


def _add_counters(total: ReliableCounters, more: ReliableCounters) -> None:
    for field in attrs.fields(ReliableCounters):
        setattr(total, field.name, getattr(total, field.name) + getattr(more, field.name))


async def measure_relay(scenario: RelayScenario, progress: Any = None) -> dict[str, Any]:
    """One run of ``scenario``; returns the figures (see the module docstring)."""
    server = RoomServer(KEY, SECRET, impairment=scenario.impairment)
    await server.start("127.0.0.1", 0)
    host = GameHost(tick_rate=scenario.tick_rate, registry=LOAD_REGISTRY)
    LoadGame(host, scenario.entities)
    if scenario.relay_at_once:
        host.sends_every_tick = False
    room = server.room(ROOM)
    host.attach(room)
    bots = [ProbeBot(i) for i in range(scenario.clients)]
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        for first in range(0, len(bots), 4):
            await asyncio.gather(
                *(
                    b.room.connect(server.url, make_token(KEY, SECRET, f"bot{b.index}", ROOM))
                    for b in bots[first : first + 4]
                )
            )
        connect_s = loop.time() - started
        if scenario.redundancy is not None:
            channels = [b.room.events.channel for b in bots if b.room.events is not None]
            channels += [p.events.channel for p in room.participants.values()]
            for channel in channels:
                channel.config = attrs.evolve(channel.config, redundant_copies=scenario.redundancy)
        links = [p.link for p in room.participants.values() if p.link is not None]

        def wire_bytes() -> int:
            total = 0
            for link in links:
                path = link.impairment
                if path is not None:
                    total += sum(s.bytes_seen for s in path.stats().values())
            return total

        interval = 1.0 / scenario.tick_rate
        tick = 0
        t0 = loop.time()
        probe_from = t0 + scenario.warmup_s
        probe_until = probe_from + scenario.duration_s
        end = probe_until + scenario.drain_s
        # spread the bots' probes over the interval
        next_probe = [
            probe_from + (i / len(bots)) * scenario.event_interval_s for i in range(len(bots))
        ]
        bytes_at_start: int | None = None
        bytes_at_stop = 0
        sctp_samples: list[tuple[int, int, int, int]] = []
        while (now := loop.time()) < end:
            if bytes_at_start is None and now >= probe_from:
                bytes_at_start = wire_bytes()
            for bot in bots:
                if not bot.room.isconnected():
                    continue
                dx, dy = (tick + bot.index) % 7 - 3, (tick // 3 + bot.index) % 5 - 2
                bot.send_input(tick, bytes((dx & 0xFF, dy & 0xFF)))
                if now < probe_until and now >= next_probe[bot.index]:
                    next_probe[bot.index] += scenario.event_interval_s
                    bot.send_probe()
            if now >= probe_until and not bytes_at_stop:
                bytes_at_stop = wire_bytes()
            if probe_from <= now < probe_until:
                sctp_samples.extend(_sctp_state(link) for link in links)
            tick += 1
            if progress is not None:
                progress(min(max(now - probe_from, 0.0), scenario.duration_s))
            await asyncio.sleep(max(0.0, t0 + tick * interval - loop.time()))

        expected = sum(b.sent for b in bots) * (len(bots) - 1)
        events = _summary([b.events for b in bots], expected)
        reliable = _summary([b.reliable for b in bots], expected)
        counters = ReliableCounters()
        resend_ms: list[float] = []
        for bot in bots:
            if bot.room.events is not None:
                _add_counters(counters, bot.room.events.channel.counters)
                resend_ms.append(bot.room.events.channel.resend_timeout * 1000)
        for participant in room.participants.values():
            _add_counters(counters, participant.events.channel.counters)
            resend_ms.append(participant.events.channel.resend_timeout * 1000)
        first = counters.messages_sent
        copies = counters.messages_sent + counters.messages_redundant + counters.messages_resent
        events.update(
            copies_per_event=round(copies / first, 2) if first else None,
            early_copies_per_event=round(counters.messages_redundant / first, 2) if first else None,
            resends_per_event=round(counters.messages_resent / first, 2) if first else None,
            resend_timeout_ms_median=round(sorted(resend_ms)[len(resend_ms) // 2], 1)
            if resend_ms
            else None,
        )
        rtts = sorted(
            b.room.connection.endpoint.rtt.smoothed * 1000
            for b in bots
            if b.room.connection is not None and b.room.connection.endpoint.rtt.smoothed
        )
        cwnds = sorted(s[0] for s in sctp_samples)
        flights = sorted(s[1] for s in sctp_samples)
        queued = sorted(s[2] for s in sctp_samples)
        backlogs = sorted(s[3] for s in sctp_samples)
        wire = (bytes_at_stop - (bytes_at_start or 0)) * 8 / scenario.duration_s / 1000
        return {
            "scenario": {
                **attrs.asdict(scenario, recurse=False),
                "impairment": str(scenario.impairment),
            },
            "connect_s": round(connect_s, 2),
            "clients_connected_at_end": sum(b.room.isconnected() for b in bots),
            "probes_sent": sum(b.sent for b in bots),
            "rtt_ms_median": round(rtts[len(rtts) // 2], 1) if rtts else None,
            "wire_kbps_per_client": round(wire / len(bots), 1),
            "server_tick_ms": {
                k: round(v, 1) if isinstance(v, float) else v
                for k, v in host.tick_stats().items()
                if k in ("tick_p50_ms", "tick_p99_ms", "ticks_late", "ticks_skipped")
            },
            "server_sctp": {
                "cwnd_bytes_p1": _percentile(cwnds, 1),
                "cwnd_bytes_p50": _percentile(cwnds, 50),
                "flight_bytes_p50": _percentile(flights, 50),
                "flight_bytes_p99": _percentile(flights, 99),
                "sctp_queued_chunks_p99": _percentile(queued, 99),
                "channel_backlog_bytes_p99": _percentile(backlogs, 99),
                "lossy_send_drops": sum(link.lossy.stats.send_drops for link in links),
            },
            "events": events,
            "reliable": reliable,
        }
    finally:
        for bot in bots:
            await bot.room.disconnect()
        await host.stop()
        await server.stop()


def run_relay(scenario: RelayScenario, *, as_json: bool) -> dict[str, Any]:
    """Run ``scenario`` (with a progress bar on a terminal unless ``as_json``)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn(f"relay, {scenario.clients} clients, {scenario.impairment}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=as_json and not console.is_terminal,
    ) as bar:
        task = bar.add_task("relay", total=scenario.duration_s)
        return asyncio.run(
            measure_relay(scenario, lambda s: bar.update(task, completed=s)),
        )
