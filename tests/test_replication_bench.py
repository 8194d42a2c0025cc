"""``netcode-bench replication`` runs small and prints one JSON object per scene."""

from __future__ import annotations

import json
import subprocess
import sys

KEYS = {
    "scene",
    "bytes_per_snapshot",
    "json_bytes_per_snapshot",
    "msgpack_bytes_per_snapshot",
    "bits_per_entity",
    "kbps_per_client",
    "datagrams_per_snapshot",
    "encode_us_per_entity",
    "decode_us_per_entity",
}


def test_bench_replication_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "netcode_tools.bench", "replication", "--seconds", "1", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [r["scene"] for r in rows] == ["arena256", "bodies900"]
    for r in rows:
        assert set(r) >= KEYS
        assert r["consistent"] is True
        assert r["max_part_bytes"] <= 1148
        assert r["bytes_per_snapshot"] * 20 <= r["json_bytes_per_snapshot"]


def test_scenes_are_seeded() -> None:
    from netcode_tools.scenes import SCENES

    from netcode.replication import World

    for cls in SCENES.values():
        states = []
        for _ in range(2):
            scene = cls(7)
            world = World(scene.registry)
            scene.setup(world)
            for tick in range(1, 40):
                scene.step(world, tick)
            states.append({e: world.quantized(e) for e in world.entity_ids()})
        assert states[0] == states[1]


def test_encoder_ab_runs_two_encoders_on_the_same_ticks(tmp_path: object) -> None:
    from netcode_tools import bench_encoder_ab

    # the current encoder against itself (HEAD's file): the same work on both sides
    against = bench_encoder_ab.load_encoder("HEAD", str(tmp_path))
    assert against.SnapshotEncoder is not None and against.__name__ == "encoder_against"
    result = bench_encoder_ab.run_once(against, clients=3, ticks=70, seed=2)
    for side in ("current", "against"):
        figures = result[side]
        assert 0 < figures["encode_us_per_entity"] <= figures["with_receipts_us_per_entity"]
    assert 0.2 < result["encode_ratio"] < 5


def test_encoder_ab_names_a_bad_revision() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "netcode_tools.bench_encoder_ab", "--against", "no-such-rev"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "git show no-such-rev" in out.stderr
