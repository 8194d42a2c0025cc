"""``netcode-bench queue``: what a reliable channel costs the server while its peer is stalled.

A peer that stops acknowledging (a stalled client, a link about to drop, a non-acker) leaves
up to ``max_send_queue_messages`` game events in flight on the server. The connection asks
the channel for its timer on every datagram it receives and flushes it when something is
due, while the game adds events every tick. This measures the CPU those calls cost per
received datagram, with N messages in flight, on a fake clock (no IO), after a warm-up of
``WARMUP_S`` simulated seconds::

    netcode-bench queue --outstanding 0 100 1000

The figure to compare is ``us_per_datagram``: with a cost that grows with N, a few stalled
peers take a whole core.
"""

from __future__ import annotations

import argparse
import json
import time

from netcode.core import Endpoint, EndpointConfig, ReliableChannel, ReliableConfig

#: simulated seconds before the measurement starts
WARMUP_S = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--outstanding",
        type=int,
        nargs="+",
        default=[0, 100, 1000],
        help="messages in flight, unacknowledged (0 100 1000; at most 1024)",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="simulated seconds per figure (10)"
    )
    parser.add_argument(
        "--datagrams-per-s", type=float, default=60.0, help="datagrams received a second (60)"
    )
    parser.add_argument("--tick-rate", type=float, default=30.0, help="new events a second (30)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def measure(
    outstanding: int, seconds: float, datagrams_per_s: float, tick_rate: float
) -> dict[str, float]:
    config = ReliableConfig()  # max_send_queue_messages: 1024
    endpoint = Endpoint(EndpointConfig(ping_interval=None), name="server")
    channel = ReliableChannel(endpoint, config)
    now = 0.0
    for _ in range(outstanding):
        channel.send(b"e" * 24)
        if channel.get_timer() is not None:
            channel.flush(now)
        endpoint.datagrams_to_send(now)  # lost: the peer never acknowledges
        now += 0.001
    step = 1.0 / datagrams_per_s
    next_tick = now
    calls = 0
    # the first seconds resend each message once, as its first transmission is reported
    # LOST; then the stall's steady state is measured
    warm_until = now + WARMUP_S
    end = warm_until + seconds
    started = time.perf_counter()
    resent = 0
    while now < end:
        if now < warm_until <= now + step:
            started = time.perf_counter()
            calls = 0
            resent = channel.counters.messages_resent
        if now >= next_tick:  # the game adds an event each tick, while the queue has room
            if channel.unacked_messages < config.max_send_queue_messages:
                channel.send(b"e" * 24)
            next_tick += 1.0 / tick_rate
        # what DatagramConnection.flush does with a hook, for each datagram received
        when = channel.get_timer()
        if when is not None and when <= now:
            channel.flush(now)
            channel.get_timer()
        endpoint.handle_timer(now)
        endpoint.datagrams_to_send(now)
        calls += 1
        now += step
    elapsed = time.perf_counter() - started
    return {
        "outstanding": outstanding,
        "datagrams": calls,
        "us_per_datagram": round(elapsed / calls * 1e6, 2),
        "resent": channel.counters.messages_resent - resent,
    }


def run(args: argparse.Namespace) -> int:
    rows = [
        measure(n, args.seconds, args.datagrams_per_s, args.tick_rate) for n in args.outstanding
    ]
    if args.json:
        print(json.dumps({"rows": rows}))
        return 0
    print(f"{'in flight':>10} {'datagrams':>10} {'us/datagram':>12} {'resent':>8}")
    for row in rows:
        print(
            f"{row['outstanding']:>10} {row['datagrams']:>10} {row['us_per_datagram']:>12.2f} "
            f"{row['resent']:>8}"
        )
    return 0
