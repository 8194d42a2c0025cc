"""netcode-fuzz at a small size: a real server, honest aiortc clients, fuzz peers beside them."""

from __future__ import annotations

import json
import random

import pytest
from netcode_tools.fuzz import SignalingFuzzer, http_post, main, mutate

from netcode.rooms import RoomServer
from netcode.transport.signaling import SIGNALING_PATH

pytestmark = pytest.mark.webrtc


def test_small_fuzz_run_finds_nothing_and_honest_clients_lose_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["--inputs", "1500", "--webrtc-inputs", "20", "--signaling-share", "0", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["inputs"] >= 1500
    by_target = result["inputs_by_target"]
    assert by_target["datagram"] > 400 and by_target["reliable"] > 400
    assert by_target["webrtc"] == 20
    assert result["unhandled_exceptions"] == 0, result["exception_samples"]
    assert result["tasks_alive"] and result["memory_ok"]
    assert result["protocol_errors_counted"] > 100  # the fuzz reached the parsers
    assert sum(result["sessions_ended"].values()) > 0  # and the server cut peers off
    honest = result["honest"]
    assert honest["connected_at_end"] == 2
    assert honest["events_expected"] > 0 and honest["events_lost"] == 0
    assert honest["reliable_lost"] == 0 and honest["duplicated"] == 0
    assert honest["out_of_order"] == 0
    assert result["ok"] and code == 0


def test_mutate_is_seeded_and_changes_its_input() -> None:
    corpus = [b"\x01\x02\x03\x04" * 8]
    first = [mutate(corpus[0], random.Random(5), corpus, limit=64) for _ in range(1)]
    again = [mutate(corpus[0], random.Random(5), corpus, limit=64) for _ in range(1)]
    assert first == again
    rng = random.Random(1)
    assert sum(mutate(corpus[0], rng, corpus) != corpus[0] for _ in range(100)) > 90


async def test_nasty_signaling_bodies_get_a_4xx_answer() -> None:
    server = RoomServer("key", "secret-secret-secret-secret-secret-00")
    await server.start("127.0.0.1", 0)
    fuzzer = SignalingFuzzer(server.url, random.Random(0), "v=0", server, risky_budget=0)
    statuses = []
    try:
        for body in (b"[" * 20000, b'{"sdp": ' + b"1" * 5000 + b"}", fuzzer.nasty()):
            statuses.append(await http_post(server.url + SIGNALING_PATH, body))
    finally:
        await server.stop()
    assert all(400 <= status < 500 for status in statuses), statuses
