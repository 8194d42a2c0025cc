"""What a newcomer trips on: each fixed, each checked here.

A single identity as a str, short secrets, loss in percent everywhere, quiet aioice logs,
help texts, ``dir(netcode)``, the licence, the README's port.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest

import netcode
from netcode import AccessToken, Chat, Room, RoomServer, TokenVerifier
from netcode.cli import configure_logging, make_token, server_main, token_main

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEY = "usability-key"
SECRET = "usability-secret-usability-secret-usa"


# --- destination_identities="bob" ----------------------------------------------------------


async def _until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.webrtc
async def test_a_single_identity_as_a_str_is_one_destination() -> None:
    async with RoomServer(KEY, SECRET) as server:
        await server.start("127.0.0.1", 0)
        rooms = {name: Room() for name in ("alice", "bob", "carol")}
        got: dict[str, list[Any]] = {name: [] for name in rooms}
        for name, room in rooms.items():
            room.on("data_received", lambda p, name=name: got[name].append(p.data))
            room.on_event(Chat, lambda e, p, t, name=name: got[name].append(e.text))

            async def on_text(reader: Any, sender: str, name: str = name) -> None:
                got[name].append(await reader.read_all())

            room.register_text_stream_handler("notes", on_text)
            await room.connect(server.url, make_token(KEY, SECRET, name, "arena"))
        alice = rooms["alice"]
        await _until(lambda: len(alice.remote_participants) == 2)
        await alice.local_participant.publish_data("reliable", destination_identities="bob")
        await alice.local_participant.publish_data(
            "lossy", reliable=False, destination_identities="bob"
        )
        alice.send_event(Chat("event"), destination_identities="bob")
        await alice.local_participant.send_text(
            "stream", topic="notes", destination_identities="bob"
        )
        room = server.rooms["arena"]
        room.send_data("from server", destination_identities="bob")
        room.send_event(Chat("server event"), destination_identities="bob")
        expected = {"reliable", "lossy", "event", "stream", "from server", "server event"}
        await _until(lambda: set(got["bob"]) == expected)
        await asyncio.sleep(0.2)
        assert got["carol"] == [] and got["alice"] == []
        with pytest.raises(TypeError, match="identities \\(str\\), not int"):
            await alice.local_participant.publish_data("x", destination_identities=[2])
        for each in rooms.values():
            await each.disconnect()


# --- secrets and token lifetimes -----------------------------------------------------------


def test_secrets_shorter_than_32_characters_are_refused() -> None:
    short = "s" * 31
    for make in (
        lambda: AccessToken(KEY, short),
        lambda: TokenVerifier(KEY, short),
        lambda: TokenVerifier.from_keys({KEY: SECRET, "old": short}),
        lambda: RoomServer(KEY, short),
    ):
        with pytest.raises(ValueError, match="at least 32 characters, got 31"):
            make()
    AccessToken(KEY, "s" * 32)  # 32 is enough


def test_commands_refuse_a_short_secret(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--api-key", "k", "--api-secret", "too-short", "--identity", "a", "--room", "r"]
    with pytest.raises(SystemExit) as exit_token:
        token_main(argv)
    with pytest.raises(SystemExit) as exit_server:
        server_main(["--api-key", "k", "--api-secret", "too-short", "--port", "0"])
    assert exit_token.value.code == exit_server.value.code == 2
    err = capsys.readouterr().err
    assert err.count("--api-secret: api_secret must be at least 32 characters, got 9") == 2


def test_ttl_errors_speak_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"^ttl must be positive seconds, got -60 s$"):
        AccessToken(KEY, SECRET).with_ttl(-60)
    with pytest.raises(SystemExit):
        token_main(["--api-key", "k", "--api-secret", SECRET, "--identity", "a", "--room", "r",
                    "--ttl", "-60"])  # fmt: skip
    assert "argument --ttl: -60 must be more than 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "nowhere.pem", "--tls-key", "nowhere.pem"], "cannot load nowhere.pem"),
        (["--ice-server", "http://stun.example.org"], "bad ICE server URL"),
        (["--ice-server", "turn:turn.example.org"], "needs a username and a credential"),
        (["--cors-origin", "game.example.org"], "must be '*' or scheme://host"),
        (["--port", "70000"], "not a port in 0..65535"),
        (["--log-level", "LOUD"], "invalid choice: 'LOUD'"),
    ],
)
def test_server_options_are_checked_before_starting(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        server_main(["--dev", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# --- --loss is a percentage everywhere -----------------------------------------------------


def _parser_of(command: str) -> Callable[[list[str]], Any]:
    """Parse arguments as ``command`` would (without running it)."""
    if command == "netcode-demo":
        from demo_game.main import _parse_args

        return _parse_args
    import argparse

    from netcode_tools import bench_events, bench_link, bench_replication, bench_resume

    module = {
        "events": bench_events,
        "link": bench_link,
        "replication": bench_replication,
        "resume": bench_resume,
    }[command]

    def parse(argv: list[str]) -> Any:
        parser = argparse.ArgumentParser(prog=f"netcode-bench {command}")
        module.add_arguments(parser)
        return parser.parse_args(argv)

    return parse


@pytest.mark.parametrize("command", ["events", "link", "replication", "resume", "netcode-demo"])
def test_loss_is_a_percentage_everywhere(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    parse = _parser_of(command)
    assert parse(["--loss", "5"]).loss == parse(["--loss", "5%"]).loss == 5.0
    for bad, why in (("150", "not within 0..(100|50)%"), ("lots", "is not a percentage")):
        with pytest.raises(SystemExit) as exit_info:
            parse(["--loss", bad])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert re.search(f"argument --loss: .*{why}", err), err
        assert "Traceback" not in err


# --- logs ----------------------------------------------------------------------------------


def test_aioice_is_quiet_at_the_default_level_but_ours_is_not() -> None:
    root = logging.getLogger()
    saved = root.level, list(root.handlers), logging.getLogger("aioice").level
    try:
        root.handlers.clear()
        configure_logging("INFO")
        assert not logging.getLogger("aioice.ice").isEnabledFor(logging.INFO)
        assert logging.getLogger("aioice.ice").isEnabledFor(logging.WARNING)
        assert logging.getLogger("netcode.rooms.server").isEnabledFor(logging.INFO)
        configure_logging("DEBUG")
        assert logging.getLogger("aioice.ice").isEnabledFor(logging.WARNING)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        logging.getLogger("aioice").setLevel(saved[2])


@pytest.mark.webrtc
async def test_a_join_logs_no_aioice_lines_at_the_default_level() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from netcode.cli import server_main; server_main()",
        "--dev",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        lines = [(await process.stdout.readline()).decode() for _ in range(5)]
        url = re.search(r"listening on (\S+)", lines[0])
        assert url is not None, lines
        room = Room()
        await room.connect(url.group(1), lines[-1].strip())
        await room.disconnect()
        await asyncio.sleep(0.3)
    finally:
        process.terminate()
        err = (await process.stderr.read()).decode()
        await process.wait()
    assert "aioice" not in err
    assert "INFO netcode" in err  # our own INFO lines still show


# --- help texts ----------------------------------------------------------------------------

COMMANDS = [
    ["netcode.cli", "server_main"],
    ["netcode.cli", "token_main"],
    ["demo_game.main", "main"],
    ["demo_game.server", "main"],
    ["netcode_tools.load", "main"],
    ["netcode_tools.trace", "main"],
    ["netcode_tools.bench", "main"],
]


def _help(module: str, function: str, *args: str) -> str:
    """``command ... --help``, run in this process (a subprocess each costs a second)."""
    import contextlib
    import importlib
    import io
    import os
    from unittest import mock

    main = getattr(importlib.import_module(module), function)  # imports print nothing here
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NETCODE_")}
    out = io.StringIO()
    with (
        mock.patch.dict(os.environ, {**clean, "COLUMNS": "100"}, clear=True),
        contextlib.redirect_stdout(out),
        pytest.raises(SystemExit) as exit_info,
    ):
        main([*args, "--help"])
    assert exit_info.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c[0]}:{c[1]}")
def test_help_texts_have_no_rest_markup(command: list[str]) -> None:
    texts = [_help(*command)]
    if command[0] == "netcode_tools.bench":
        from netcode_tools.bench import SUBCOMMANDS

        texts += [_help(*command, name) for name in SUBCOMMANDS]
    for text in texts:
        assert "`" not in text, text


def test_demo_server_help_documents_every_option() -> None:
    text = _help("demo_game.server", "main")
    lines = text.split("options:", 1)[1].splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        if not line.startswith("  -"):
            continue
        described = re.match(r"  \S.*?\S  +\S", line) is not None
        continued = i + 1 < len(lines) and lines[i + 1].startswith(" " * 8)
        if not described and not continued:
            undocumented.append(line.strip())
    assert undocumented == []


# --- the package and the repository --------------------------------------------------------


def test_dir_of_netcode_shows_the_public_api_only() -> None:
    names = set(dir(netcode))
    assert not names & {"Any", "TYPE_CHECKING", "annotations", "importlib", "_EXPORTS"}
    assert set(netcode.__all__) <= names
    assert "IceServer" in netcode.__all__ and "__version__" in names


def test_license_is_mit_as_pyproject_says() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the netcode authors" in text
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()


def test_readme_example_does_not_take_the_dev_servers_port() -> None:
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert 'start("127.0.0.1", 0)' in code and 'start("127.0.0.1", 7880)' not in code
