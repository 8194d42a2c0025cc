"""Game events client -> server -> client on the real stack, under UDP-level impairment.

What ``netcode-bench events`` measures (``--simulated`` runs the older one-hop model of
:mod:`netcode_tools.bench_events` instead).

The load test's server (:mod:`netcode_tools.load_server`: a RoomServer on 127.0.0.1 with a
game host replicating ``entities`` wanderers plus one player per client at ``tick_rate``)
runs in its own process, as a real server would, and ``clients`` bot clients connect to it
over real aiortc peer connections from this one. Every UDP datagram of every bot's peer
connection is impaired, both ways, in the bots' process (so the server's process does only
a server's work, as behind a kernel-level impaired path)
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
  impairment counts it (datagrams sent, lost ones included).
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
from netcode.rooms import DataPacket
from netcode.rooms.events import Chat
from netcode.transport.impair import ImpairedPath, Impairment

from .load import Bot, EmbeddedServer
from .load_server import KEY, LOAD_REGISTRY, ROOM, SECRET

__all__ = ["RelayScenario", "measure_relay", "run_relay"]

PROBE_TOPIC = "probe"

#: What ``netcode-bench events`` impairs by default: 5% loss each way, 50 ms one way.
DEFAULT_IMPAIRMENT = Impairment(latency_ms=50.0, loss=0.05, seed=1)


@attrs.frozen
class RelayScenario:
    """What one run sends, and over what path."""

    clients: int = 8
    duration_s: float = 30.0
    tick_rate: float = 30.0
    entities: int = 64
    event_interval_s: float = 1.0
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


def _wire_bytes(bots: list[ProbeBot]) -> int:
    """UDP payload bytes both ways on the bots' impaired paths (as sent, before loss)."""
    total = 0
    for bot in bots:
        path = bot.room.impairment
        if path is not None:
            total += sum(s.bytes_seen for s in path.stats().values())
    return total


def _add_counters(total: dict[str, int], more: ReliableCounters) -> None:
    for key, value in attrs.asdict(more).items():
        total[key] = total.get(key, 0) + value


async def measure_relay(scenario: RelayScenario, progress: Any = None) -> dict[str, Any]:
    """One run of ``scenario``; returns the figures (see the module docstring)."""
    extra = ["--probe"]
    if scenario.relay_at_once:
        extra.append("--relay-at-once")
    if scenario.redundancy is not None:
        extra += ["--redundancy", str(scenario.redundancy)]
    # The impairment acts in this process, on each bot's connection (both ways): the
    # server's process does only what a server does, as behind a kernel-level impaired path.
    server = EmbeddedServer(scenario.entities, scenario.tick_rate, "", extra)
    bots = [ProbeBot(i) for i in range(scenario.clients)]
    loop = asyncio.get_running_loop()
    try:
        url = await server.url()
        started = loop.time()
        for first in range(0, len(bots), 4):
            await asyncio.gather(
                *(
                    b.room.connect(
                        url,
                        make_token(KEY, SECRET, f"bot{b.index}", ROOM),
                        impairment=ImpairedPath(scenario.impairment, salt=f"bot{b.index}"),
                    )
                    for b in bots[first : first + 4]
                )
            )
        connect_s = loop.time() - started
        if scenario.redundancy is not None:
            for bot in bots:
                if bot.room.events is not None:
                    channel = bot.room.events.channel
                    channel.config = attrs.evolve(
                        channel.config, redundant_copies=scenario.redundancy
                    )
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
        reset = False
        cpu_at_start = 0.0
        wire_at_start = 0
        while (now := loop.time()) < end:
            if not reset and now >= probe_from:
                reset = True
                cpu_at_start = time.process_time()
                wire_at_start = _wire_bytes(bots)
                await server.command("reset", "RESET")  # the server measures from now on
                now = loop.time()
            for bot in bots:
                if not bot.room.isconnected():
                    continue
                dx, dy = (tick + bot.index) % 7 - 3, (tick // 3 + bot.index) % 5 - 2
                bot.send_input(tick, bytes((dx & 0xFF, dy & 0xFF)))
                if reset and now < probe_until and now >= next_probe[bot.index]:
                    next_probe[bot.index] += scenario.event_interval_s
                    bot.send_probe()
            tick += 1
            if progress is not None:
                progress(min(max(now - probe_from, 0.0), scenario.duration_s))
            await asyncio.sleep(max(0.0, t0 + tick * interval - loop.time()))
        window_s = loop.time() - probe_from
        clients_cpu = (time.process_time() - cpu_at_start) / window_s
        wire = (_wire_bytes(bots) - wire_at_start) * 8 / window_s / 1000
        connected = sum(b.room.isconnected() for b in bots)
        stats = await server.stats()
        probe = stats["probe"]

        expected = sum(b.sent for b in bots) * (len(bots) - 1)
        events = _summary([b.events for b in bots], expected)
        reliable = _summary([b.reliable for b in bots], expected)
        counters: dict[str, int] = dict(probe["events_down"])
        for bot in bots:
            if bot.room.events is not None:
                _add_counters(counters, bot.room.events.channel.counters)
        first = counters["messages_sent"]
        copies = first + counters["messages_redundant"] + counters["messages_resent"]
        events.update(
            copies_per_event=round(copies / first, 2) if first else None,
            early_copies_per_event=round(counters["messages_redundant"] / first, 2)
            if first
            else None,
            resends_per_event=round(counters["messages_resent"] / first, 2) if first else None,
        )
        rtts = sorted(
            b.room.connection.endpoint.rtt.smoothed * 1000
            for b in bots
            if b.room.connection is not None and b.room.connection.endpoint.rtt.smoothed
        )
        samples = probe["sctp_samples"]
        cwnds = sorted(float(x[0]) for x in samples)
        flights = sorted(float(x[1]) for x in samples)
        backlogs = sorted(float(x[3]) for x in samples)
        return {
            "scenario": {
                **attrs.asdict(scenario, recurse=False),
                "impairment": str(scenario.impairment),
            },
            "connect_s": round(connect_s, 2),
            "clients_connected_at_end": connected,
            "probes_sent": sum(b.sent for b in bots),
            "rtt_ms_median": round(rtts[len(rtts) // 2], 1) if rtts else None,
            "wire_kbps_per_client": round(wire / len(bots), 1),
            "server_tick_ms": {
                "p50": round(stats["tick_p50_ms"], 1),
                "p99": round(stats["tick_p99_ms"], 1),
                "late": stats["ticks_late"],
                "skipped": stats["ticks_skipped"],
                # as netcode-load judges it: a server short of CPU makes every figure late
                "held": stats["tick_rate_held"],
            },
            "clients_cpu": round(clients_cpu, 2),
            "server_sctp": {
                "cwnd_bytes_p1": _percentile(cwnds, 1),
                "cwnd_bytes_p50": _percentile(cwnds, 50),
                "flight_bytes_p50": _percentile(flights, 50),
                "flight_bytes_p99": _percentile(flights, 99),
                "channel_backlog_bytes_p99": _percentile(backlogs, 99),
                "lossy_send_drops": probe["lossy_send_drops"],
            },
            "events": events,
            "reliable": reliable,
        }
    finally:
        for bot in bots:
            await bot.room.disconnect()
        server.kill()


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
