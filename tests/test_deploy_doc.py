"""Every command in docs/DEPLOY.md runs.

Shell blocks are marked with an HTML comment on the line above the fence:
``<!-- runnable -->`` blocks run for real (against 127.0.0.1, in a temporary directory);
``<!-- options -->`` blocks name files and hosts of a real deployment, so each of their
commands runs with ``--help`` and every option it uses must be one the command has. The
service unit's ExecStart is checked the same way, and the Python block compiles.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import io
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
from unittest import mock

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "DEPLOY.md"
BIN = pathlib.Path(sys.executable).parent

_BLOCK = re.compile(r"(?:<!-- (?P<mark>[\w-]+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


def blocks(lang: str, mark: str | None = None) -> list[str]:
    found = []
    for match in _BLOCK.finditer(DOC.read_text()):
        if match["lang"] == lang and (mark is None or match["mark"] == mark):
            found.append(match["body"])
    return found


def commands(script: str) -> list[str]:
    """The command lines of a shell block (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NETCODE_")}
    return {**clean, "PATH": f"{BIN}{os.pathsep}{clean.get('PATH', '')}", "COLUMNS": "200"}


def help_text(program: str) -> str:
    """``program --help``, run in this process through its console-script entry point."""
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name=program)
    main = entry.load()
    out = io.StringIO()
    with (
        mock.patch.dict(os.environ, env(), clear=True),
        contextlib.redirect_stdout(out),
        pytest.raises(SystemExit) as exit_info,
    ):
        main(["--help"])
    assert exit_info.value.code == 0
    return out.getvalue()


def check_options(command: str) -> None:
    words = command.split()
    program = words[0].rsplit("/", 1)[-1]
    assert program.startswith("netcode-"), command
    text = help_text(program)
    for option in (w.split("=")[0] for w in words[1:] if w.startswith("--")):
        assert re.search(rf"(^|\s|\[){re.escape(option)}\b", text), f"{program} has no {option}"


def test_every_shell_block_is_marked() -> None:
    marks = [m["mark"] for m in _BLOCK.finditer(DOC.read_text()) if m["lang"] == "sh"]
    assert marks and all(mark in ("runnable", "options") for mark in marks), marks


def test_commands_with_deployment_paths_have_the_options_they_use() -> None:
    lines = [line for block in blocks("sh", "options") for line in commands(block)]
    assert len(lines) >= 4
    for line in lines:
        check_options(line)


def test_the_service_unit_runs_a_real_command_line() -> None:
    (unit,) = [b for b in blocks("ini") if "ExecStart=" in b]
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    check_options(exec_start)


def test_every_environment_variable_named_is_read_by_the_commands() -> None:
    named = set(re.findall(r"\bNETCODE_[A-Z_]+", DOC.read_text()))
    helps = "".join(
        help_text(p) for p in ("netcode-server", "netcode-demo", "netcode-token")
    ).replace("\n", " ")
    assert named and all(name in helps for name in named), named


def test_the_python_block_compiles() -> None:
    for block in blocks("python"):
        ast.parse(block)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.webrtc
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_runnable_blocks_run(tmp_path: pathlib.Path) -> None:
    runnable = blocks("sh", "runnable")
    assert any("--tls-cert" in block for block in runnable)
    for block in runnable:
        script = block.replace("7443", str(_free_port())).replace("--duration 3", "--duration 1")
        # its own process group: a failed script must not leave its server running
        shell = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
            start_new_session=True,
        )
        try:
            stdout, stderr = shell.communicate(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGKILL)
        assert shell.returncode == 0, f"{block}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        if "--tls-cert" in block:
            assert "joined room 'arena' on https://127.0.0.1:" in stdout
            assert "refused: the certificate is not trusted without --ca-file" in stdout
            assert "is not trusted (self-signed certificate)" in stderr
