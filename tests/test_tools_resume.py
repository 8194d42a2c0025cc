"""netcode-bench resume at a small size: it joins, resumes and reconnects, and reports it."""

from __future__ import annotations

import json

import pytest
from netcode_tools.bench import main

pytestmark = pytest.mark.webrtc


def test_bench_resume_reports_join_resume_and_blackout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resume", "--runs", "1", "--latency", "5", "--blackout", "1.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("join", "resume", "after_blackout"):
        assert result[key]["runs"] == 1
        assert 0 < result[key]["max_ms"] < 10_000 or key == "after_blackout"
    # each handshake costs a few 10 ms round trips, so a resume takes at least two
    assert result["resume"]["median_rtts"] >= 2
