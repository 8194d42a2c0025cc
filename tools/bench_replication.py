"""``netcode-bench replication``: snapshot bytes and speed on the seeded scenes.

Each scene runs for ``--seconds`` of simulated time with ``--clients`` clients of one
world (1 by default): every tick the world moves, each client's encoder packs a snapshot
into parts, the parts reach the client (minus ``--loss`` percent, drawn per client), and
the client's receipt of that tick reaches the encoder after its ack delay (minus the same
loss: receipts ride datagrams too), so baselines lag and go missing as on a real link.
Client 0's receipts take ``--ack-delay-ms``; with more clients, the others' delays spread
evenly from half to one and a half times that (clients with different round trips
acknowledge different baselines). Client 0 decodes everything (the decode figures and the
consistency check are its); the others answer with the receipt a decoder applying every
part it got would send. The first ``--warmup`` seconds (the initial creations) are left
out.

Figures (bytes are client 0's; encode time is every client's, per client):

- bytes per snapshot (the parts), and in the datagram: with the netcode datagram header,
  the frame headers, the SNAPSHOT frames' topic header and the INPUT_ACK that rides with
  them, as the game host sends them; on the wire: plus 93 bytes per datagram (SCTP common
  header and DATA chunk, DTLS record, UDP and IPv4: ../shared/PLATFORM-FACTS.md);
- bits per entity, and bits per *moving* entity (those whose state changed this tick);
- the same state as JSON (every entity, every snapshot, values rounded to their precision),
  as msgpack, and as JSON of the changed entities only (what a careful newcomer sends:
  the entities that changed since the last tick, and the ids removed), sampled in the same
  run;
- encode and decode time per entity, in CPU time of this thread (a busy machine's other
  processes do not count); with several clients the encoders share what they encode alike
  (``SharedEncodings``), and ``--no-share`` turns that off for comparison.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict, deque
from typing import Any

import numpy as np

from netcode.cli import percent
from netcode.replication import Receipt, SnapshotDecoder, SnapshotEncoder, World
from netcode.replication.encoder import SharedEncodings
from netcode.replication.inputs import encode_input_ack
from netcode.replication.schema import EntitySchema, FloatCodec, QuatCodec
from netcode.replication.wire import (
    DEFAULT_HISTORY_DEPTH,
    DEFAULT_MAX_ENTITIES,
    DEFAULT_MAX_ENTITY_ID,
    decode_part_header_untrusted,
)
from netcode.rooms.protocol import encode_lossy_down
from netcode.wire import HEADER_BYTES, MAX_DATAGRAM_BYTES, MAX_FRAME_PAYLOAD_BYTES, frame_bytes

from .scenes import SCENES

#: SCTP common header 12 + DATA chunk header 16 + DTLS record 37, then UDP and IPv4 28
#: (../shared/PLATFORM-FACTS.md)
WIRE_BYTES_PER_DATAGRAM = 65 + 28
#: the game host's snapshot topic (its name sizes the parts)
TOPIC = "position"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scene", action="append", choices=sorted(SCENES), help="default: all")
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated seconds per scene")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds left out of figures")
    parser.add_argument("--clients", type=int, default=1, help="clients of the world (1)")
    parser.add_argument(
        "--no-share",
        action="store_true",
        help="encoders share nothing (each encodes all its clients' records itself)",
    )
    parser.add_argument(
        "--loss",
        type=percent(),
        default=0.0,
        metavar="PERCENT",
        help="parts and receipts lost, percent (0; 5 or 5%%)",
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


def _state_document(world: World, tick: int, ids: Any = None) -> dict[str, Any]:
    entities = []
    for eid in world.entity_ids() if ids is None else ids:
        schema = world.schema_of(eid)
        doc = {"id": eid, "type": schema.cls.__name__.lower()}
        doc.update(_plain(schema, world.get(eid)))
        entities.append(doc)
    return {"tick": tick, "entities": entities}


class _Changes:
    """Which entities changed (or appeared) since the last tick, and which were removed."""

    def __init__(self) -> None:
        self._prev: dict[int, tuple[Any, Any, Any, Any]] = {}

    def step(self, world: World) -> tuple[list[int], list[int]]:
        changed: list[int] = []
        removed: list[int] = []
        for type_id, store in world.stores.items():
            q, alive, gen, eid = store.q, store.alive, store.gen, store.eid
            prev = self._prev.get(type_id)
            if prev is None or len(prev[1]) != len(alive):
                old = len(prev[1]) if prev is not None else 0
                pq = np.zeros_like(q)
                palive = np.zeros_like(alive)
                pgen = np.zeros_like(gen)
                peid = np.full_like(eid, -1)
                if prev is not None:
                    pq[:old], palive[:old], pgen[:old], peid[:old] = prev
            else:
                pq, palive, pgen, peid = prev
            other = gen != pgen
            changed.extend(eid[alive & (~palive | other | (q != pq).any(axis=1))].tolist())
            removed.extend(peid[palive & (~alive | other)].tolist())
            self._prev[type_id] = (q.copy(), alive.copy(), gen.copy(), eid.copy())
        return changed, removed


def ack_delay_ticks(index: int, clients: int, ack_delay_ms: float, hz: float) -> int:
    """Client ``index``'s receipt delay in ticks: client 0 at ``ack_delay_ms``, the others
    spread from half to one and a half of it (clients with different round trips)."""
    spread = 0.5 + (index - 1) / (clients - 2) if index and clients > 2 else 1.0
    return max(1, round(ack_delay_ms * spread / 1000.0 * hz))


class BenchClient:
    """One client: its encoder, its link (ack delay, loss), its receipts."""

    def __init__(
        self,
        world: World,
        args: argparse.Namespace,
        index: int,
        ack_delay: int,
        decoder: SnapshotDecoder | None,
        max_part_bytes: int,
        encoder_cls: Any = SnapshotEncoder,
    ) -> None:
        # encoder_cls: another revision's SnapshotEncoder (netcode_tools.bench_encoder_ab)
        self.encoder = encoder_cls(world, max_part_bytes=max_part_bytes, share=not args.no_share)
        self.decoder = decoder
        self.ack_delay = ack_delay
        self.rng = random.Random(f"{args.seed}/{index}")
        self.loss = args.loss
        self.acks: dict[int, list[Receipt]] = defaultdict(list)
        # without a decoder: the parts received in the 4 newest ticks, as a decoder that
        # applies every part reports them
        self.epoch = -1
        self.applied: deque[tuple[int, list[int]]] = deque(maxlen=4)

    def receipts(self, tick: int) -> None:
        for arrived in self.acks.pop(tick, []):
            self.encoder.on_receipt(arrived)

    def receive(self, tick: int, parts: list[Any]) -> float:
        """Deliver what the link lets through; returns the decode time (CPU seconds)."""
        decode_s = 0.0
        for part in parts:
            if self.rng.random() * 100.0 < self.loss:
                continue
            if self.decoder is not None:
                t0 = time.thread_time()
                self.decoder.receive_part(part.payload)
                decode_s += time.thread_time() - t0
                continue
            header = decode_part_header_untrusted(part.payload)
            if header.epoch != self.epoch:
                self.epoch = header.epoch
                self.applied.clear()
            if self.applied and self.applied[-1][0] == header.tick:
                self.applied[-1][1].append(header.part_index)
            else:
                self.applied.append((header.tick, [header.part_index]))
        receipt: Receipt | None
        if self.decoder is not None:
            receipt = self.decoder.receipt()
        elif self.applied:
            applied = tuple((t, i) for t, indices in reversed(self.applied) for i in indices)
            receipt = Receipt(
                self.epoch,
                False,
                DEFAULT_MAX_ENTITIES,
                DEFAULT_MAX_ENTITY_ID,
                DEFAULT_HISTORY_DEPTH,
                applied,
            )
        else:
            receipt = None
        if receipt is not None and self.rng.random() * 100.0 >= self.loss:
            self.acks[tick + self.ack_delay].append(receipt)
        return decode_s


def _datagrams(tick: int, parts: list[Any]) -> tuple[int, int]:
    """(datagrams, bytes) of one tick as the game host sends it: the INPUT_ACK, then each
    part in a SNAPSHOT frame after its topic header, packed greedily into datagrams."""
    frames = [frame_bytes(len(encode_input_ack(tick, tick)))]
    frames += [frame_bytes(len(encode_lossy_down(0, 1, None, False, p.payload))) for p in parts]
    count, total, room = 0, 0, 0
    for size in frames:
        if size > room:
            count += 1
            total += HEADER_BYTES
            room = MAX_DATAGRAM_BYTES - HEADER_BYTES
        total += size
        room -= size
    return count, total


def run_scene(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import msgpack

    scene = SCENES[name](args.seed)
    hz = scene.tick_hz
    world = World(scene.registry)
    scene.setup(world)
    decoder = SnapshotDecoder(scene.registry, max_entities=4096)
    n_clients = max(1, args.clients)
    # as the game host sizes parts: room for the topic header and its name inline
    max_part_bytes = MAX_FRAME_PAYLOAD_BYTES - 6 - len(TOPIC.encode())
    clients = [
        BenchClient(
            world,
            args,
            i,
            ack_delay_ticks(i, n_clients, args.ack_delay_ms, hz),
            decoder if i == 0 else None,
            max_part_bytes,
        )
        for i in range(n_clients)
    ]
    total_ticks = max(2, round(args.seconds * hz))
    warmup = min(round(args.warmup * hz), total_ticks // 2)
    sums: defaultdict[str, float] = defaultdict(float)
    measured = 0
    json_sizes: list[int] = []
    msgpack_sizes: list[int] = []
    json_changed_sizes: list[int] = []
    changes = _Changes()
    changes.step(world)
    for tick in range(1, total_ticks + 1):
        for client in clients:
            client.receipts(tick)
        scene.step(world, tick)
        changed, removed = changes.step(world)
        encode_s = 0.0
        all_parts = []
        for client in clients:
            t0 = time.thread_time()
            parts = client.encoder.encode(tick)
            encode_s += time.thread_time() - t0
            all_parts.append(parts)
        decode_s = 0.0
        for client, parts in zip(clients, all_parts, strict=True):
            decode_s += client.receive(tick, parts)
        if tick <= warmup:
            continue
        measured += 1
        parts = all_parts[0]
        n = len(world)
        size = sum(len(p.payload) for p in parts)
        datagrams, datagram_bytes = _datagrams(tick, parts)
        sums["bytes"] += size
        sums["datagram_bytes"] += datagram_bytes
        sums["wire_bytes"] += datagram_bytes + WIRE_BYTES_PER_DATAGRAM * datagrams
        sums["datagrams"] += datagrams
        sums["bits_per_entity"] += size * 8 / n
        sums["moving"] += len(changed) / n
        if changed:
            sums["bits_per_moving_entity"] += size * 8 / len(changed)
            sums["ticks_moving"] += 1
        sums["parts"] += len(parts)
        sums["max_part"] = max(sums["max_part"], max(len(p.payload) for p in parts))
        sums["encode_us_per_entity"] += encode_s * 1e6 / n / n_clients
        sums["decode_us_per_entity"] += decode_s * 1e6 / n
        sums["encode_us"] += encode_s * 1e6 / n_clients
        if measured % 10 == 1:  # sampled: building the documents is slow, not the point
            doc = _state_document(world, tick)
            json_sizes.append(len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False)))
            msgpack_sizes.append(len(msgpack.packb(doc)))
            doc = _state_document(world, tick, changed)
            doc["removed"] = removed
            json_changed_sizes.append(
                len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))
            )
    # consistency: a few quiet, loss-free ticks later client 0 holds the world exactly
    first = clients[0]
    first.loss = 0.0
    for tick in range(total_ticks + 1, total_ticks + 4 * first.ack_delay + 4):
        first.receipts(tick)
        first.receive(tick, first.encoder.encode(tick))
    consistent = set(decoder.entity_ids()) == set(world.entity_ids()) and all(
        decoder.quantized(e) == world.quantized(e) for e in world.entity_ids()
    )
    m = max(1, measured)
    bytes_per_snapshot = sums["bytes"] / m
    json_bytes = sum(json_sizes) / max(1, len(json_sizes))
    json_changed = sum(json_changed_sizes) / max(1, len(json_changed_sizes))
    result: dict[str, Any] = {
        "scene": name,
        "tick_hz": hz,
        "entities": len(world),
        "clients": n_clients,
        "seconds": args.seconds,
        "loss_percent": args.loss,
        "moving_fraction": round(sums["moving"] / m, 3),
        "bytes_per_snapshot": round(bytes_per_snapshot, 1),
        "datagram_bytes_per_snapshot": round(sums["datagram_bytes"] / m, 1),
        "wire_bytes_per_snapshot": round(sums["wire_bytes"] / m, 1),
        "json_bytes_per_snapshot": round(json_bytes, 1),
        "msgpack_bytes_per_snapshot": round(sum(msgpack_sizes) / max(1, len(msgpack_sizes)), 1),
        "json_changed_bytes_per_snapshot": round(json_changed, 1),
        "json_ratio": round(json_bytes / max(bytes_per_snapshot, 1e-9), 1),
        "json_changed_ratio": round(json_changed / max(bytes_per_snapshot, 1e-9), 1),
        "bits_per_entity": round(sums["bits_per_entity"] / m, 2),
        "bits_per_moving_entity": round(
            sums["bits_per_moving_entity"] / max(1, sums["ticks_moving"]), 1
        ),
        "kbps_per_client": round(bytes_per_snapshot * 8 * hz / 1000.0, 1),
        "wire_kbps_per_client": round(sums["wire_bytes"] / m * 8 * hz / 1000.0, 1),
        "datagrams_per_snapshot": round(sums["datagrams"] / m, 2),
        "parts_per_snapshot": round(sums["parts"] / m, 2),
        "max_part_bytes": int(sums["max_part"]),
        "encode_us_per_entity": round(sums["encode_us_per_entity"] / m, 3),
        "decode_us_per_entity": round(sums["decode_us_per_entity"] / m, 3),
        "encode_us_per_snapshot": round(sums["encode_us"] / m, 1),
        "consistent": consistent,
    }
    shared = world.encodings
    if isinstance(shared, SharedEncodings):
        bodies = shared.body_hits + shared.body_misses
        plans = shared.plan_hits + shared.plan_misses
        result["shared_bodies"] = round(shared.body_hits / bodies, 3) if bodies else 0.0
        result["shared_parts"] = round(shared.plan_hits / plans, 3) if plans else 0.0
    return result


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
