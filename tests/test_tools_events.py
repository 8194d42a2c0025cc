"""netcode-bench events at a small size: the relay over real aiortc under UDP impairment."""

from __future__ import annotations

import json

import pytest
from netcode_tools.bench import main as bench_main

pytestmark = pytest.mark.webrtc


def test_relay_json_reports_every_figure_and_loses_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["events", "--clients", "3", "--duration", "2", "--event-interval", "0.25"]
    assert (
        bench_main([*argv, "--entities", "8", "--impair", "latency=20,loss=5%,seed=3", "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["scenario"]["impairment"] == "latency=20,loss=0.05,seed=3"
    assert result["clients_connected_at_end"] == 3
    assert result["probes_sent"] >= 3 * 6
    for channel in ("events", "reliable"):
        r = result[channel]
        assert r["expected"] == result["probes_sent"] * 2  # each probe to the two others
        assert r["delivered"] == r["expected"] and r["lost"] == 0
        assert r["duplicates"] == 0 and r["out_of_order"] == 0
        assert 40 <= r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] < 5000  # two 20 ms hops
    assert result["events"]["copies_per_event"] >= 1
    assert result["wire_kbps_per_client"] > 0
    for key in ("cwnd_bytes_p50", "flight_bytes_p99", "channel_backlog_bytes_p99"):
        assert key in result["server_sctp"]


def test_bad_impair_spec_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["events", "--impair", "loss=lots"]) == 2
    err = capsys.readouterr().err
    assert "loss='lots'" in err and "Traceback" not in err


def test_simulated_mode_is_still_there(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["events", "--simulated", "--events", "300", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["delivered"] == 300 and result["sctp"]["delivered"] == 300
