"""netcode-load at a small size: an embedded server process and real WebRTC clients."""

from __future__ import annotations

import json

import pytest
from netcode_tools.load import main

pytestmark = pytest.mark.webrtc


def test_load_json_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--clients", "3", "--duration", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in (
        "clients",
        "tick_rate_hz",
        "tick_p50_ms",
        "tick_p99_ms",
        "tick_rate_held",
        "kbps_per_client",
        "event_p99_ms",
        "snapshot_age_p99_ms",
        "server_cpu_ms_per_client_tick",
        "clients_per_core",
        "wire_kbps_per_client",
        "wire_datagrams_per_client_s",
        "bots_cpu_cores",
    ):
        assert key in result, key
    assert result["clients"] == 3 and result["clients_connected_at_end"] == 3
    assert result["tick_rate_hz"] == 30.0 and result["entities"] == 67
    assert 80 <= result["ticks"] <= 95  # 3 s at 30 Hz, measured after the clients joined
    assert 0 < result["tick_p50_ms"] <= result["tick_p99_ms"]
    assert result["kbps_per_client"] > 5
    # the server's whole process, from /proc, costs at least what its tick does
    assert result["server_cpu_ms_per_tick"] >= 0.5 * result["cpu_per_tick_ms"] > 0
    assert result["clients_per_core"] >= 1
    # on the wire: the payload plus DTLS, SCTP and acknowledgements, in UDP datagrams
    assert result["wire_kbps_per_client"] > result["kbps_per_client"]
    assert result["wire_datagrams_per_client_s"] >= 30  # a snapshot a tick at least
    # every bot sends about one event a second to the two others
    assert result["events_received"] >= 3 * 2 * 2
    assert 0 < result["event_p50_ms"] <= result["event_p99_ms"] < 1000
    assert 0 < result["snapshot_age_p50_ms"] <= result["snapshot_age_p99_ms"] < 1000
    # what the server's connections sent each client: a datagram a tick, the snapshot and
    # INPUT_ACK in it, and the relayed events riding it rather than leaving on their own
    counts = result["server_counts_per_client_s"]
    assert counts["frames_sent.SNAPSHOT"] >= 25 and 25 <= counts["frames_sent.INPUT_ACK"] <= 31
    assert counts["datagrams_sent"] <= counts["frames_sent.INPUT_ACK"] + 4
    assert counts["frames_received.INPUT"] >= 25


def test_url_mode_requires_keys() -> None:
    with pytest.raises(SystemExit):
        main(["--url", "http://127.0.0.1:1", "--json"])


@pytest.mark.parametrize("spec", ["loss=2", "latency=fast", "colour=red"])
def test_bad_impair_spec_is_a_usage_error(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--impair", spec, "--json"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--impair" in err and "Traceback" not in err


@pytest.mark.slow  # keeps the default run under 5 minutes: pytest -m slow
def test_load_under_impairment_reports_it(capsys: pytest.CaptureFixture[str]) -> None:
    spec = "latency=20,loss=5%"
    assert (
        main(
            ["--clients", "2", "--duration", "2", "--impair", spec, "--impair-seed", "4", "--json"]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["impairment"] == "latency=20,loss=0.05,seed=4"
    assert result["clients_connected_at_end"] == 2
    assert result["events_received"] >= 2 and result["event_p50_ms"] >= 40  # two 20 ms hops


@pytest.mark.slow  # keeps the default run under 5 minutes: pytest -m slow
def test_bots_spread_over_processes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--clients", "3", "--duration", "2", "--bot-processes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bot_processes"] == 2 and result["clients_connected_at_end"] == 3
    # the events cross processes: one monotonic clock, so latencies stay meaningful
    assert result["events_received"] >= 3 * 2
    assert 0 < result["event_p50_ms"] < 1000
    assert result["wire_datagrams_per_client_s"] >= 30
    assert result["server_cpu_ms_per_client_tick"] > 0
