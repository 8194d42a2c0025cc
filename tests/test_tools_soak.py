"""netcode-load --soak and --hostile: the server's memory over time, every event accounted
for, and the honest figures beside a run without hostile clients."""

from __future__ import annotations

import json

import pytest
from netcode_tools.load import main

pytestmark = pytest.mark.webrtc


@pytest.mark.slow
def test_a_short_soak_loses_no_event_and_memory_stays_flat(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--clients", "6", "--duration", "20", "--impair", "loss=5%", "--soak"]
    assert main([*argv, "--rss-every", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    soak = result["soak"]
    assert len(soak["rss_samples_mib"]) >= 15
    assert soak["events_sent"] >= 6 * 15 and soak["events_expected"] == 5 * soak["events_sent"]
    assert soak["events_lost"] == 0 and soak["events_duplicated"] == 0
    assert soak["rss_growth_after_warmup_pct"] < 10
    assert result["clients_connected_at_end"] == 6


@pytest.mark.slow
def test_hostile_run_compares_the_honest_figures(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--clients", "3", "--duration", "4", "--hostile", "garbage:1", "--compare"]
    assert main([*argv, "--pairs", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["without_hostiles"]["clients_connected_at_end"] == 3
    assert set(result["with_vs_without"]) >= {"event_p99_ratio", "tick_rate_held"}
    # two pairs: the percentiles are over both runs of each side
    assert len(result["pairs"]) == 2
    each_run = 3 * 2 * 4  # 3 bots, an event a second each, 2 others receive it, 4 s
    assert result["events_received"] >= 2 * 0.8 * each_run
    assert result["without_hostiles"]["events_received"] >= 2 * 0.8 * each_run
    assert all(pair["event_p99_ms"][0] and pair["event_p99_ms"][1] for pair in result["pairs"])
    assert result["hostile"]["kinds"]["garbage"]["clients"] == 1
    (garbage,) = result["hostile"]["each"]
    assert garbage["sent"] > 0 and garbage["connect_failed"] is None
    assert result["hostile"]["server_counters"]["protocol_errors"] > 0
    assert result["honest_events"]["events_lost"] == 0


def test_scenario_options_are_checked() -> None:
    for argv in (
        ["--compare"],
        ["--hostile", "garbage:1", "--pairs", "2"],
        ["--hostile", "garbage:1", "--max-steal", "5"],
        ["--hostile", "garbage:1", "--compare", "--max-steal", "0"],
        ["--soak", "--bot-processes", "2"],
        ["--hostile", "nobody:1"],
        ["--hostile", "garbage:1", "--url", "http://127.0.0.1:1", "--api-key", "k"],
    ):
        with pytest.raises(SystemExit):
            main([*argv, "--json"])
