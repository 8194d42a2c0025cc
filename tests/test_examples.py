"""Every program in docs/examples runs, briefly, and does what its docstring says."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "docs" / "examples"

pytestmark = pytest.mark.webrtc


def run(name: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_example_is_tested() -> None:
    tested = {"chat.py", "game.py", "streams.py", "rpc.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_chat() -> None:
    lines = set(run("chat.py", "--duration", "1").splitlines())
    assert {"[alice] bob joined", "[bob] carol joined"} <= lines
    assert {"[bob] alice: hello everyone", "[carol] alice: hello everyone"} <= lines
    assert "[alice] bob: psst, alice" in lines  # private: nobody else has it
    assert not any("psst" in line for line in lines - {"[alice] bob: psst, alice"})
    assert "[carol] server: the server says hi" in lines
    assert "[alice] carol: line 1" in lines and "[carol] carol: line 1" not in lines


def test_game_finds_and_predicts_its_own_entity() -> None:
    out = run("game.py", "--duration", "2.5")
    reports = dict(line.split(": ", 1) for line in out.splitlines())
    assert set(reports) == {"alice", "bob"}
    own = {}
    for name, report in reports.items():
        found = re.match(
            r"own entity (\d+), predicted at \(([\d.]+), ([\d.]+)\), 0 corrections .*; "
            r"sees entity (\d+) at",
            report,
        )
        assert found, report
        own[name] = int(found.group(1))
        assert (float(found.group(2)), float(found.group(3))) != (50.0, 50.0)  # it moved
        assert int(found.group(4)) != own[name]  # the other one
    assert own["alice"] != own["bob"]


def test_streams() -> None:
    out = run("streams.py", "--size", "300000")
    assert "bob: text from alice: 10500 characters" in out
    sent = re.search(r"alice: file stream \S+ delivered, sha256 (\w+)", out)
    got = re.search(r"bob: file 'level.bin' \(application/octet-stream\) from alice: "
                    r"300000 bytes, sha256 (\w+)", out)  # fmt: skip
    assert sent and got and sent.group(1) == got.group(1)
    assert "alice: sent 300000 of 300000 bytes" in out


def test_rpc() -> None:
    out = run("rpc.py", "--duration", "0.6").splitlines()
    assert out == [
        'add -> {"sum": 3.5, "for": "alice"}',
        'add -> RpcError 4000 (app): expected {"numbers": [...]}',
        "multiply -> RpcError 1400 (UNSUPPORTED_METHOD): Method not supported at destination",
        "slow -> RpcError 1502 (RESPONSE_TIMEOUT): Response timeout",
    ]
