"""The snapshot encoder against another revision's, interleaved in one process.

::

    python -m netcode_tools.bench_encoder_ab --against 58164b8 --runs 3

On a machine whose speed moves between runs (a shared virtual machine), two separate
``netcode-bench replication`` runs compare the machine as much as the code. This loads the
encoder module of ``--against`` (``git show REV:netcode/replication/encoder.py``) beside the
current one, builds the same ``arena256`` world twice (a world's shared encodings belong to
one encoder class), and alternates the two from tick to tick: the same clients (receipts
2-5 ticks late, as ``netcode-bench replication``'s spread of a 100 ms delay), the same
ticks, the same moments of the machine. It reports the encode time and the encode plus
receipt time per entity per client (thread CPU time, after a 2 s warm-up), for each run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import netcode.replication.encoder as current_encoder
from netcode.replication import World

from .bench_replication import BenchClient, ack_delay_ticks
from .scenes import SCENES

WARMUP_TICKS = 60
#: receipts come back after netcode-bench replication's default delay, spread over clients
ACK_DELAY_MS = 100.0
MAX_PART_BYTES = 1100


def load_encoder(revision: str, directory: str) -> ModuleType:
    """The encoder module of ``revision`` of this repository, under another name."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{revision}:netcode/replication/encoder.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(directory) / "encoder_against.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("encoder_against", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Side:
    """One encoder module's world and clients (``netcode-bench replication``'s clients)."""

    def __init__(self, module: ModuleType, clients: int, seed: int) -> None:
        self.scene = SCENES["arena256"](seed)
        self.world = World(self.scene.registry)
        self.scene.setup(self.world)
        options = argparse.Namespace(no_share=False, seed=seed, loss=0.0)
        hz = self.scene.tick_hz
        self.clients = [
            BenchClient(
                self.world,
                options,
                i,
                ack_delay_ticks(i, clients, ACK_DELAY_MS, hz),
                None,  # the client applies every part: a receipt of its 4 newest ticks
                MAX_PART_BYTES,
                encoder_cls=module.SnapshotEncoder,
            )
            for i in range(clients)
        ]
        self.encode_us: list[float] = []
        self.with_receipts_us: list[float] = []

    def tick(self, tick: int) -> None:
        self.scene.step(self.world, tick)
        encode_s = receipts_s = 0.0
        for client in self.clients:
            t0 = time.thread_time()
            client.receipts(tick)
            t1 = time.thread_time()
            parts = client.encoder.encode(tick)
            t2 = time.thread_time()
            receipts_s += t1 - t0
            encode_s += t2 - t1
            client.receive(tick, parts)
        if tick > WARMUP_TICKS:
            per = 1e6 / len(self.clients) / len(self.world)
            self.encode_us.append(encode_s * per)
            self.with_receipts_us.append((encode_s + receipts_s) * per)


def run_once(against: ModuleType, clients: int, ticks: int, seed: int) -> dict[str, Any]:
    sides = {
        "current": Side(current_encoder, clients, seed),
        "against": Side(against, clients, seed),
    }
    order = list(sides.values())
    for tick in range(1, ticks + 1):
        for side in order if tick % 2 else reversed(order):  # neither always goes first
            side.tick(tick)
    out: dict[str, Any] = {}
    for name, side in sides.items():
        out[name] = {
            "encode_us_per_entity": round(statistics.median(side.encode_us), 3),
            "with_receipts_us_per_entity": round(statistics.median(side.with_receipts_us), 3),
        }
    current, other = out["current"], out["against"]
    out["encode_ratio"] = round(current["encode_us_per_entity"] / other["encode_us_per_entity"], 3)
    out["with_receipts_ratio"] = round(
        current["with_receipts_us_per_entity"] / other["with_receipts_us_per_entity"], 3
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m netcode_tools.bench_encoder_ab", description=__doc__
    )
    parser.add_argument("--against", required=True, help="a git revision of this repository")
    parser.add_argument("--clients", type=int, default=16, help="clients (16)")
    parser.add_argument("--ticks", type=int, default=300, help="ticks per run (300)")
    parser.add_argument("--runs", type=int, default=3, help="runs (3)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.clients < 1 or args.runs < 1 or args.ticks <= WARMUP_TICKS:
        parser.error(f"--clients and --runs must be at least 1, --ticks above {WARMUP_TICKS}")
    with tempfile.TemporaryDirectory() as directory:
        try:
            against = load_encoder(args.against, directory)
        except subprocess.CalledProcessError as exc:
            parser.error(f"git show {args.against}: {exc.stderr.strip()}")
        runs = []
        for i in range(args.runs):
            result = run_once(against, args.clients, args.ticks, args.seed)
            runs.append(result)
            print(f"run {i + 1}: {json.dumps(result)}", file=sys.stderr, flush=True)
    print(json.dumps({"against": args.against, "clients": args.clients, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
