"""``netcode-bench codec``: the datagram codec and the connection core, per datagram.

Measures the fast encoder/decoder against the construct declaration (interpreted and
compiled) on a small datagram (an input-sized frame) and a full one (three frames filling
1160 bytes), then the whole core path: ``send_frame`` + ``datagrams_to_send`` on one
endpoint and ``receive_datagram`` + ``next_event`` on the other; and the cost of tracing:
recording, serialising and writing one endpoint-sized record with
:class:`netcode.trace.TraceWriter`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from typing import Any

from netcode.core import Endpoint, EndpointConfig
from netcode.trace import TraceWriter
from netcode.wire import (
    DATAGRAM,
    HEADER_BYTES,
    MAX_DATAGRAM_BYTES,
    FrameType,
    decode_datagram_untrusted,
    encode_datagram,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iterations", type=int, default=20_000, help="datagrams per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _per_call_us(fn: Callable[[], object], iterations: int) -> float:
    best = float("inf")
    for _ in range(3):  # best of three: the least disturbed by the rest of the machine
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / iterations * 1e6


def _declared(frames: list[tuple[int, bytes]]) -> dict[str, Any]:
    return {
        "header": {"prefix": {"has_ack": True}, "sequence": 7, "ack": 9, "ack_bits": 0xF0F0},
        "frames": [{"type": t, "length": len(p), "payload": p} for t, p in frames],
    }


def _measure_datagram(frames: list[tuple[int, bytes]], compiled: Any, n: int) -> dict[str, Any]:
    data = encode_datagram(7, 9, 0xF0F0, frames)
    container = _declared(frames)
    return {
        "datagram_bytes": len(data),
        "fast_encode_us": _per_call_us(lambda: encode_datagram(7, 9, 0xF0F0, frames), n),
        "fast_decode_us": _per_call_us(lambda: decode_datagram_untrusted(data), n),
        "construct_build_us": _per_call_us(lambda: DATAGRAM.build(container), n // 10),
        "construct_parse_us": _per_call_us(lambda: DATAGRAM.parse(data), n // 10),
        "compiled_build_us": _per_call_us(lambda: compiled.build(container), n // 10),
        "compiled_parse_us": _per_call_us(lambda: compiled.parse(data), n // 10),
    }


def measure(iterations: int) -> dict[str, Any]:
    compiled = DATAGRAM.compile()
    cases: dict[str, list[tuple[int, bytes]]] = {
        "small": [(FrameType.INPUT, b"i" * 24)],
        "full": [
            (FrameType.SNAPSHOT, b"s" * 700),
            (FrameType.EVENT, b"e" * 300),
            (FrameType.DATA, b"d" * (MAX_DATAGRAM_BYTES - HEADER_BYTES - 1000 - 9)),
        ],
    }
    result: dict[str, Any] = {
        "header_bytes": HEADER_BYTES,
        "max_datagram_bytes": MAX_DATAGRAM_BYTES,
    }
    for name, frames in cases.items():
        result[name] = _measure_datagram(frames, compiled, iterations)
    config = EndpointConfig(ping_interval=None, datagram_events=False)
    sender, receiver = Endpoint(config), Endpoint(config)
    payload = b"p" * 100
    now = [0.0]

    def core_send() -> None:
        now[0] += 0.001
        sender.send_frame(FrameType.DATA, payload)
        for datagram in sender.datagrams_to_send(now[0]):
            last[0] = datagram

    last = [b""]
    core_send()

    def core_receive() -> None:
        now[0] += 0.001
        core_send()
        receiver.receive_datagram(last[0], now[0])
        receiver.next_event()

    send_us = _per_call_us(core_send, iterations)
    both_us = _per_call_us(core_receive, iterations)
    result["core"] = {"send_us": send_us, "receive_us": max(both_us - send_us, 0.0)}
    result["trace"] = {"record_us": _trace_record_us(iterations)}
    return result


def _trace_record_us(iterations: int) -> float:
    """One endpoint-sized record recorded, serialised and written (file closed included)."""
    fields = {"seq": 1, "bytes": 812, "frames": [[17, 700], [19, 80]]}
    best = float("inf")
    with tempfile.TemporaryDirectory() as directory:
        for attempt in range(3):
            writer = TraceWriter(f"{directory}/cost-{attempt}.jsonl")
            trace = writer.tracer("alice")
            now = writer.now()
            start = time.perf_counter()
            for i in range(iterations):
                trace("send", now + i * 1e-4, fields)
            writer.close()
            best = min(best, time.perf_counter() - start)
    return best / iterations * 1e6


def run(args: argparse.Namespace) -> int:
    result = measure(args.iterations)
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"datagram codec (header {result['header_bytes']} bytes), us per datagram")
    table.add_column("datagram")
    for column in (
        "bytes",
        "fast enc",
        "fast dec",
        "construct build",
        "construct parse",
        "compiled build",
        "compiled parse",
    ):
        table.add_column(column, justify="right")
    for name in ("small", "full"):
        r = result[name]
        table.add_row(
            name,
            str(r["datagram_bytes"]),
            *(
                f"{r[k]:.2f}"
                for k in (
                    "fast_encode_us",
                    "fast_decode_us",
                    "construct_build_us",
                    "construct_parse_us",
                    "compiled_build_us",
                    "compiled_parse_us",
                )
            ),
        )
    console = Console(width=max(Console().width, 110))
    console.print(table)
    core = result["core"]
    console.print(
        f"core, 100-byte frame: send {core['send_us']:.2f} us, "
        f"receive {core['receive_us']:.2f} us per datagram"
    )
    console.print(f"trace: {result['trace']['record_us']:.2f} us per record written")
    return 0
