"""Hostile clients of netcode-load: each kind is cut off or throttled, with a reason the
server gives, and an honest client beside them loses nothing."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from netcode_tools.hostile import KINDS, ServerReport, parse_spec, run_hostiles, summarize
from netcode_tools.load_server import KEY, LOAD_REGISTRY, ROOM, SECRET, LoadGame

from netcode.cli import make_token
from netcode.rooms import Room, RoomServer
from netcode.rooms.events import Chat
from netcode.rooms.host import GameHost

pytestmark = pytest.mark.webrtc


def test_specs_parse() -> None:
    assert parse_spec("flooder:4") == ("flooder", 4)
    assert parse_spec("garbage") == ("garbage", 1)
    for bad in ("nobody:1", "flooder:0", "flooder:x"):
        with pytest.raises(ValueError):
            parse_spec(bad)
    assert set(KINDS) == {
        "non_acker",
        "flooder",
        "topic_spammer",
        "garbage",
        "oversized",
        "fast_input",
        "signaling",
    }


def test_summary_reads_the_servers_reasons() -> None:
    reports: list[dict[str, Any]] = [
        {"kind": "garbage", "identity": "g0", "server_error": "protocol_error"},
        {"kind": "garbage", "identity": "g1", "server_error": None},
        {"kind": "signaling", "identity": "s0", "server_error": None, "status": {"429": 3}},
    ]
    server = {"participants": {"g1": {"end_reason": "flooding", "over_budget": {"messages": 9}}}}
    summary = summarize(reports, server)
    assert summary["garbage"]["cut_off"] == 2
    assert summary["garbage"]["reasons"] == {"protocol_error": 1, "flooding": 1}
    assert summary["garbage"]["throttled"] == {"messages over budget": 9}
    assert summary["signaling"]["throttled"] == {"HTTP 429": 3}


async def _scenario(
    specs: list[tuple[str, int]], seconds: float, max_events: int = 1 << 30
) -> dict[str, Any]:
    """An in-process server with a game host, one honest client sending events, and the
    hostile clients, for ``seconds`` or until the server cut every hostile client off;
    (or ``max_events`` sent); returns the summary, the server's report and the honest
    figures."""
    server = RoomServer(KEY, SECRET, max_participants=100)
    await server.start("127.0.0.1", 0)
    host = GameHost(tick_rate=30.0, registry=LOAD_REGISTRY)
    LoadGame(host, 8)
    report = ServerReport(server, host)
    host.attach(server.room(ROOM))
    honest, listener = Room(), Room()
    got: list[int] = []
    listener.on_event(Chat, lambda event, participant, topic: got.append(int(event.text)))
    stop = asyncio.Event()
    try:
        await honest.connect(server.url, make_token(KEY, SECRET, "honest", ROOM))
        await listener.connect(server.url, make_token(KEY, SECRET, "listener", ROOM))
        hostiles = asyncio.create_task(run_hostiles(server.url, KEY, SECRET, ROOM, specs, stop))
        sent = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        hostile_names = {f"hostile-{kind}-{i}" for kind, n in specs for i in range(n)}
        while loop.time() < deadline and sent < max_events:
            ended = {k for k, v in report.participants.items() if v.get("end_reason")}
            if hostile_names <= ended:
                break
            for _ in range(4):  # 200 a second: a non-acker's event queue fills in seconds
                sent += 1
                honest.send_event(Chat(str(sent)))
            await asyncio.sleep(0.02)
        stop.set()
        reports = await asyncio.wait_for(hostiles, 30)
        for _ in range(100):
            if len(got) >= sent:
                break
            await asyncio.sleep(0.05)
        server_report = report.summary()
        return {
            "summary": summarize(reports, server_report),
            "reports": reports,
            "server": server_report,
            "sent": sent,
            "got": got,
            "honest_connected": honest.isconnected() and listener.isconnected(),
        }
    finally:
        stop.set()
        await honest.disconnect()
        await listener.disconnect()
        await host.stop()
        await server.stop()


async def test_garbage_is_cut_off_with_a_reason_and_the_honest_lose_nothing() -> None:
    result = await _scenario([("garbage", 1)], 15.0)
    kind = result["summary"]["garbage"]
    assert kind["cut_off"] == 1, result
    assert set(kind["reasons"]) <= {"protocol_error", "flooding"}
    assert result["got"] == list(range(1, result["sent"] + 1))
    assert result["honest_connected"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_each_kind_is_cut_off_or_throttled_and_the_honest_lose_nothing(kind: str) -> None:
    # a non-acker's event queue (1024) is full once enough events were relayed to it
    result = await _scenario([(kind, 2)], 60.0 if kind == "non_acker" else 20.0, 1500)
    summary = result["summary"][kind]
    # every hostile client was either cut off (with the server's reason) or throttled
    assert summary["cut_off"] == 2 or summary["throttled"], result
    assert all(reason for reason in summary["reasons"]), result
    assert result["got"] == list(range(1, result["sent"] + 1)), "honest events lost"
    assert result["honest_connected"]


def test_hostile_clients_are_seeded() -> None:
    first = KINDS["garbage"](0, "http://127.0.0.1:1", "k", "s" * 32, "r")
    again = KINDS["garbage"](0, "http://127.0.0.1:1", "k", "s" * 32, "r")
    assert first.rng.random() == again.rng.random()
    assert isinstance(first.rng, random.Random)
