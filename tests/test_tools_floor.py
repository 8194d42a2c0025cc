"""netcode-bench floor runs bare aiortc connections at a small size on loopback."""

from __future__ import annotations

import json

import pytest
from netcode_tools.bench import main


@pytest.mark.webrtc
@pytest.mark.parametrize("acks", [[], pytest.param(["--aiortc-acks"], marks=pytest.mark.slow)])
def test_bench_floor_moves_a_message_each_way_per_tick(
    capsys: pytest.CaptureFixture[str], acks: list[str]
) -> None:
    argv = ["floor", "--clients", "2", "--tick-rate", "20", "--duration", "1.5", "--warmup", "0.5"]
    assert main([*argv, "--json", *acks]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["clients"] == 2
    assert result["acks"] == ("aiortc" if acks else "delayed")
    # every tick's message arrives both ways (unreliable, but nothing is lost on loopback)
    assert 16 <= result["delivered_down_per_client_s"] <= 24
    assert 16 <= result["delivered_up_per_client_s"] <= 24
    assert result["server_cpu_per_client_tick_ms"] > 0
    assert result["server_cores"] > 0


def test_bench_floor_refuses_what_it_cannot_measure() -> None:
    with pytest.raises(SystemExit, match="must be positive"):
        main(["floor", "--clients", "0"])
    with pytest.raises(SystemExit, match="1160"):
        main(["floor", "--down-bytes", "5000"])
