"""netcode-bench codec runs at a small size and reports sane figures."""

from __future__ import annotations

import json

import pytest
from netcode_tools.bench import main


def test_bench_codec_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codec", "--iterations", "200", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["header_bytes"] == 9
    assert result["full"]["datagram_bytes"] == result["max_datagram_bytes"] == 1160
    for case in ("small", "full"):
        assert 0 < result[case]["fast_encode_us"] < result[case]["construct_build_us"]
        assert 0 < result[case]["fast_decode_us"] < result[case]["construct_parse_us"]
    assert result["core"]["send_us"] > 0
    assert result["trace"]["record_us"] > 0


def test_bench_codec_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codec", "--iterations", "100"]) == 0
    assert "fast enc" in capsys.readouterr().out


def test_bench_link_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["link", "--datagrams", "2000", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reported_once"] and result["crossed_wrap"]
    assert result["acked_but_not_received"] == 0
    assert result["acked"] + result["lost"] == result["ack_eliciting"]
    assert abs(result["loss_estimate"] - result["configured_loss"]) < 0.02
