"""netcode-bench transport runs at a small size over real aiortc on loopback."""

from __future__ import annotations

import json

import pytest
from netcode_tools.bench import main


@pytest.mark.webrtc
def test_bench_transport_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transport", "--messages", "20", "--connects", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {(row["path"], row["channel"]): row for row in result["rows"]}
    assert set(rows) == {
        ("aiortc", "reliable"),
        ("aiortc", "unreliable"),
        ("peerlink", "reliable"),
        ("peerlink", "lossy"),
        ("room relay", "reliable"),
        ("room relay", "lossy"),
        ("p2p", "reliable"),
        ("p2p", "lossy"),
    }
    for row in rows.values():
        assert row["sent"] == 20 and row["lost"] == 0
        assert row["connects"] == 2 and row["connect_ms_median"] > 0
        assert 0 < row["one_way_us_p50"] <= row["one_way_us_p99"]
