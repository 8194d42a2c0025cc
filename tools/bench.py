"""``netcode-bench``: netcode's benchmarks, one subcommand each.

Each subcommand lives in its own module ``netcode_tools.bench_<name>`` exposing
``add_arguments(parser)`` and ``run(args) -> int``; register it in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "codec": ("netcode_tools.bench_codec", "datagram header and frame encode/decode speed"),
    "link": ("netcode_tools.bench_link", "delivery reports and loss estimate on an impaired link"),
    "transport": ("netcode_tools.bench_transport", "WebRTC connect time and one-way latency"),
    "floor": (
        "netcode_tools.bench_floor",
        "server CPU per client and tick of bare aiortc: the floor under netcode-load's",
    ),
    "events": (
        "netcode_tools.bench_events",
        "game events client -> server -> client under loss, beside SCTP reliable",
    ),
    "replication": ("netcode_tools.bench_replication", "snapshot size and speed on seeded scenes"),
    "resume": ("netcode_tools.bench_resume", "join and resume times on an impaired path"),
    "queue": (
        "netcode_tools.bench_queue",
        "reliable channel CPU per received datagram while its peer is stalled",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netcode-bench", description="netcode's benchmarks, one subcommand each."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="BENCHMARK")
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args))


if __name__ == "__main__":
    sys.exit(main())
