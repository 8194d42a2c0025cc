"""netcode-token and netcode-server --dev."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from netcode.auth import TokenVerifier
from netcode.cli import token_main

SECRET = "cli-secret-cli-secret-cli-secret-cli!"


def test_token_command_prints_a_token_the_server_accepts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--api-key", "k", "--api-secret", SECRET, "--identity", "ann", "--room", "arena"]
    assert token_main([*argv, "--name", "Ann", "--no-publish"]) == 0
    claims = TokenVerifier("k", SECRET).verify(capsys.readouterr().out.strip(), room="arena")
    assert (claims.identity, claims.name) == ("ann", "Ann")
    assert claims.grants.room_join and not claims.grants.can_publish_data


def test_token_command_needs_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETCODE_API_KEY", raising=False)
    monkeypatch.delenv("NETCODE_API_SECRET", raising=False)
    with pytest.raises(SystemExit):
        token_main(["--identity", "ann", "--room", "arena"])


@pytest.mark.webrtc
def test_dev_server_prints_a_key_secret_and_working_token() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from netcode.cli import server_main; server_main()",
            "--dev",
            "--port",
            "0",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
        text = "".join(lines)
        assert re.search(r"listening on http://127\.0\.0\.1:\d+", text)
        key = re.search(r"development key:\s+(\S+)", text)
        secret = re.search(r"development secret:\s+(\S+)", text)
        assert key and secret
        token = lines[-1].strip()
        claims = TokenVerifier(key.group(1), secret.group(1)).verify(token, room="dev")
        assert claims.identity == "dev-user"
    finally:
        process.terminate()
        process.wait(10)
