"""``netcode-bench link``: the connection core's delivery reports on an impaired link.

Both ends of a simulated link (seeded latency, jitter, loss, duplication, reordering) send
one DATA frame every tick; the client's sequence numbers start just before the 16-bit wrap.
Reports how many datagrams were reported ACKED and LOST (each exactly once), whether any
was reported ACKED that the peer never received, the loss estimate beside the configured
loss, the RTT estimate, and the core's cost per simulated datagram.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from netcode.cli import percent
from netcode.core import DatagramAcked, DatagramLost, EndpointConfig
from netcode.transport.memory import LinkConditions, client_and_server
from netcode.wire import FrameType, decode_datagram_untrusted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datagrams", type=int, default=10_000, help="datagrams each way")
    parser.add_argument(
        "--loss", type=percent(), default=5.0, metavar="PERCENT", help="loss, percent (5)"
    )
    parser.add_argument(
        "--reorder", type=percent(), default=20.0, metavar="PERCENT", help="reordered, percent (20)"
    )
    parser.add_argument(
        "--duplicate",
        type=percent(),
        default=5.0,
        metavar="PERCENT",
        help="duplicated, percent (5)",
    )
    parser.add_argument("--latency-ms", type=float, default=50.0, help="one-way latency")
    parser.add_argument("--jitter-ms", type=float, default=20.0, help="one-way jitter (+-)")
    parser.add_argument("--rate-hz", type=float, default=100.0, help="datagrams per second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    conditions = LinkConditions(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        loss=args.loss / 100,
        duplicate=args.duplicate / 100,
        reorder=args.reorder / 100,
    )
    config = EndpointConfig(initial_sequence=0xFFFF - args.datagrams // 2, ping_interval=0.25)
    pair = client_and_server(conditions, seed=args.seed, config=config)
    received: set[int] = set()
    server_receive = pair.server.receive_datagram

    def recording_receive(data: bytes, now: float) -> None:
        received.add(decode_datagram_untrusted(data).sequence)
        server_receive(data, now)

    pair.server.receive_datagram = recording_receive  # type: ignore[method-assign]
    dt = 1.0 / args.rate_hz
    started = time.perf_counter()
    for i in range(args.datagrams):
        pair.client.send_frame(FrameType.DATA, i.to_bytes(4, "big"))
        pair.server.send_frame(FrameType.DATA, b"s")
        pair.step(dt)
    pair.run_until(lambda: pair.client.in_flight == 0, max_steps=10_000, dt=dt)
    elapsed = time.perf_counter() - started
    acked = [e.sequence for e in pair.client_reports if isinstance(e, DatagramAcked)]
    lost = [e.sequence for e in pair.client_reports if isinstance(e, DatagramLost)]
    reported = acked + lost
    sent = pair.client.counters.datagrams_sent
    stats = pair.client.stats()
    path = pair.link.a_to_b.counters
    return {
        "datagrams_sent": sent,
        "ack_eliciting": len(reported),
        "reported_once": len(reported) == len(set(reported)),
        "acked": len(acked),
        "lost": len(lost),
        "acked_but_not_received": len(set(acked) - received),
        "crossed_wrap": any(s < 1000 for s in acked) and any(s > 60000 for s in acked),
        "configured_loss": args.loss / 100,
        "link_dropped_fraction": round(path.lost / path.sent, 4),
        "loss_estimate": round(stats.loss, 4),
        "rtt_ms": round(stats.rtt_ms or 0.0, 1),
        "jitter_ms": round(stats.jitter_ms, 1),
        "duplicates_dropped": pair.server.counters.datagrams_duplicate,
        "core_us_per_datagram": round(elapsed / (2 * sent) * 1e6, 2),
    }


def run(args: argparse.Namespace) -> int:
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return 0
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key.ljust(width)}  {value}")
    return 0
