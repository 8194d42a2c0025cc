"""``netcode-bench replication``: snapshot bytes and speed on the seeded scenes.

Each scene runs for ``--seconds`` of simulated time with one client: every tick the world
moves, the client's encoder packs a snapshot into parts, the parts reach the decoder (minus
``--loss`` percent), and the decoder's receipt of that tick reaches the encoder 100 ms after
the parts left, so baselines lag as on a real link. The first ``--warmup`` seconds (the
initial creations) are left out of the figures. The same world state is also serialized as
JSON and msgpack (every entity, every snapshot, values rounded to their precision), in the
same run, for comparison.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from typing import Any

from netcode.cli import percent
from netcode.replication import Receipt, SnapshotDecoder, SnapshotEncoder, World
from netcode.replication.schema import EntitySchema, FloatCodec, QuatCodec
from netcode.wire import HEADER_BYTES

from .scenes import SCENES

#: netcode datagram header + frame type and length, then SCTP/DTLS/UDP/IPv4 per packet
#: (../shared/PLATFORM-FACTS.md: 65 + 28 bytes)
_PER_DATAGRAM_BYTES = HEADER_BYTES + 3 + 93


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scene", action="append", choices=sorted(SCENES), help="default: all")
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated seconds per scene")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds left out of figures")
    parser.add_argument(
        "--loss",
        type=percent(),
        default=0.0,
        metavar="PERCENT",
        help="parts lost, percent (0; 5 or 5%%)",
    )
    parser.add_argument("--ack-delay-ms", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object per scene")


def _plain(schema: EntitySchema, obj: Any) -> dict[str, Any]:
    """The entity as a naive sender would put it in JSON: names and rounded values."""
    out: dict[str, Any] = {}
    for name, codec in zip(schema.names, schema.codecs, strict=True):
        v = getattr(obj, name)
        if isinstance(codec, FloatCodec):
            v = round(v, codec.decimals)
        elif isinstance(codec, QuatCodec):
            v = [round(c, 4) for c in v]
        elif hasattr(v, "name") and not isinstance(v, str):
            v = v.name.lower()
        elif isinstance(v, float):
            v = round(v, 3)
        elif isinstance(v, tuple):
            v = list(v)
        out[name] = v
    return out


def _state_document(world: World, tick: int) -> dict[str, Any]:
    entities = []
    for eid in world.entity_ids():
        schema = world.schema_of(eid)
        doc = {"id": eid, "type": schema.cls.__name__.lower()}
        doc.update(_plain(schema, world.get(eid)))
        entities.append(doc)
    return {"tick": tick, "entities": entities}


def run_scene(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import msgpack

    scene = SCENES[name](args.seed)
    hz = scene.tick_hz
    world = World(scene.registry)
    scene.setup(world)
    encoder = SnapshotEncoder(world)
    decoder = SnapshotDecoder(scene.registry, max_entities=4096)
    rng = random.Random(args.seed)
    ack_delay = max(1, round(args.ack_delay_ms / 1000.0 * hz))
    total_ticks = max(2, round(args.seconds * hz))
    warmup = min(round(args.warmup * hz), total_ticks // 2)
    acks: dict[int, list[Receipt]] = defaultdict(list)
    sums: defaultdict[str, float] = defaultdict(float)
    measured = 0
    json_sizes: list[int] = []
    msgpack_sizes: list[int] = []
    for tick in range(1, total_ticks + 1):
        for arrived in acks.pop(tick, []):
            encoder.on_receipt(arrived)
        scene.step(world, tick)
        t0 = time.perf_counter()
        parts = encoder.encode(tick)
        t1 = time.perf_counter()
        decode_s = 0.0
        for part in parts:
            delivered = rng.random() * 100.0 >= args.loss
            if delivered:
                t2 = time.perf_counter()
                decoder.receive_part(part.payload)
                decode_s += time.perf_counter() - t2
        if (receipt := decoder.receipt()) is not None:
            acks[tick + ack_delay].append(receipt)
        if tick <= warmup:
            continue
        measured += 1
        n = len(world)
        size = sum(len(p.payload) for p in parts)
        sums["bytes"] += size
        sums["wire_bytes"] += size + _PER_DATAGRAM_BYTES * len(parts)
        sums["bits_per_entity"] += size * 8 / n
        sums["parts"] += len(parts)
        sums["max_part"] = max(sums["max_part"], max(len(p.payload) for p in parts))
        sums["encode_us_per_entity"] += (t1 - t0) * 1e6 / n
        sums["decode_us_per_entity"] += decode_s * 1e6 / n
        sums["encode_us"] += (t1 - t0) * 1e6
        sums["moving"] += scene.moving_fraction()
        if measured % 10 == 1:  # sampled: building the documents is slow, not the point
            doc = _state_document(world, tick)
            json_sizes.append(len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False)))
            msgpack_sizes.append(len(msgpack.packb(doc)))
    # consistency: a few quiet, loss-free ticks later the client holds the world exactly
    for tick in range(total_ticks + 1, total_ticks + 4 * ack_delay + 4):
        for arrived in acks.pop(tick, []):
            encoder.on_receipt(arrived)
        for part in encoder.encode(tick):
            decoder.receive_part(part.payload)
        if (receipt := decoder.receipt()) is not None:
            acks[tick + ack_delay].append(receipt)
    consistent = set(decoder.entity_ids()) == set(world.entity_ids()) and all(
        decoder.quantized(e) == world.quantized(e) for e in world.entity_ids()
    )
    m = max(1, measured)
    bytes_per_snapshot = sums["bytes"] / m
    json_bytes = sum(json_sizes) / max(1, len(json_sizes))
    return {
        "scene": name,
        "tick_hz": hz,
        "entities": len(world),
        "seconds": args.seconds,
        "loss_percent": args.loss,
        "moving_fraction": round(sums["moving"] / m, 3),
        "bytes_per_snapshot": round(bytes_per_snapshot, 1),
        "json_bytes_per_snapshot": round(json_bytes, 1),
        "msgpack_bytes_per_snapshot": round(sum(msgpack_sizes) / max(1, len(msgpack_sizes)), 1),
        "json_ratio": round(json_bytes / max(bytes_per_snapshot, 1e-9), 1),
        "bits_per_entity": round(sums["bits_per_entity"] / m, 2),
        "kbps_per_client": round(bytes_per_snapshot * 8 * hz / 1000.0, 1),
        "wire_kbps_per_client": round(sums["wire_bytes"] / m * 8 * hz / 1000.0, 1),
        "datagrams_per_snapshot": round(sums["parts"] / m, 2),
        "max_part_bytes": int(sums["max_part"]),
        "encode_us_per_entity": round(sums["encode_us_per_entity"] / m, 3),
        "decode_us_per_entity": round(sums["decode_us_per_entity"] / m, 3),
        "encode_us_per_snapshot": round(sums["encode_us"] / m, 1),
        "consistent": consistent,
    }


def run(args: argparse.Namespace) -> int:
    names = args.scene or list(SCENES)
    results = [run_scene(name, args) for name in names]
    if args.json:
        for r in results:
            print(json.dumps(r))
        return 0 if all(r["consistent"] for r in results) else 1
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"replication ({args.seconds:g} s per scene, {args.loss:g}% loss)")
    keys = [k for k in results[0] if k != "scene"]
    table.add_column("")
    for r in results:
        table.add_column(r["scene"], justify="right")
    for k in keys:
        table.add_row(k, *(str(r[k]) for r in results))
    Console().print(table)
    return 0 if all(r["consistent"] for r in results) else 1


if __name__ == "__main__":
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
