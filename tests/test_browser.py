"""netcode.js in headless Chromium against a Python RoomServer, driven over DevTools.

The page imports the browser client from the server (``/netcode.js``) and joins a room beside
a Python client: data both ways (reliable and lossy, with topics and destinations), game
events both ways (over EVENT frames, and over the reliable fallback path when large),
participants coming and going, and a replica whose decoded entities match the server's
world within quantization, acknowledging what it applied with RECEIPT frames.

Chromium comes from the distribution (``apt-get install chromium``); without it these tests
skip, saying so, unless NETCODE_REQUIRE_BROWSER=1 (.ci/run), where they fail instead.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from browser_driver import Browser, Page, find_chromium
from helpers import eventually

from netcode.cli import make_token
from netcode.replication import (
    ClientView,
    SchemaRegistry,
    SnapshotDecoder,
    SnapshotEncoder,
    World,
    entity,
    qangle,
    qbool,
    qcolor,
    qenum,
    qfloat,
    qint,
    qquat,
    qstring,
)
from netcode.replication.describe import describe_registry, encode_description
from netcode.rooms import DataPacket, DataPacketKind, RemoteParticipant, Room, RoomServer
from netcode.rooms.events import Chat
from netcode.rooms.host import GameHost
from netcode.transport.signaling import HttpReply

# One Chromium for the module (it takes a second or two to start): tests share its event
# loop, each with tabs of its own, closed after it.
pytestmark = [pytest.mark.browser, pytest.mark.webrtc, pytest.mark.asyncio(loop_scope="module")]

KEY, SECRET = "browser-key", "browser-secret-browser-secret-12345"

PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>netcode test page</title>
<script type="module">
import * as netcode from "/netcode.js";
window.netcode = netcode;
window.log = [];
window.ready = true;
</script>
"""


def chromium_or_skip() -> str:
    path = find_chromium()
    if path is None:
        reason = "Chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("NETCODE_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with Browser.launch(chromium_or_skip()) as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="module")
async def browser(chromium: Browser) -> AsyncIterator[Browser]:
    yield chromium
    await chromium.close_pages()


@pytest_asyncio.fixture(loop_scope="module")
async def server() -> AsyncIterator[RoomServer]:
    room_server = RoomServer(KEY, SECRET)
    room_server.add_page("/test", HttpReply(PAGE, "text/html; charset=utf-8"))
    await room_server.start("127.0.0.1", 0)
    yield room_server
    await room_server.stop()


def token(identity: str, room: str = "lobby") -> str:
    return make_token(KEY, SECRET, identity, room)


async def open_page(browser: Browser, server: RoomServer) -> Page:
    page = await browser.new_page()
    await page.goto(server.url + "/test")
    await page.wait_for("window.ready === true")
    return page


async def test_netcode_js_is_served_with_cors_for_allowed_origins() -> None:
    import aiohttp

    room_server = RoomServer(KEY, SECRET, cors_origins=["https://game.example.org"])
    await room_server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"Origin": "https://game.example.org"}
            async with http.get(room_server.url + "/netcode.js", headers=headers) as response:
                body = await response.read()
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/javascript")
                allowed = response.headers["Access-Control-Allow-Origin"]
                assert allowed == "https://game.example.org"
            assert b"export class Room" in body
            async with http.get(
                room_server.url + "/netcode.js", headers={"Origin": "https://evil.example"}
            ) as response:
                assert "Access-Control-Allow-Origin" not in response.headers
    finally:
        await room_server.stop()


async def test_a_page_resumes_its_session_when_its_link_drops(
    browser: Browser, server: RoomServer
) -> None:
    """The server drops the page's link: the page resumes on a new peer connection, and the
    reliable messages either side sent meanwhile arrive once each."""
    py = Room()
    received: list[str] = []
    py.on("data_received", lambda p: received.append(p.data))
    await py.connect(server.url, token("py"))
    page = await open_page(browser, server)
    url, web_token = json.dumps(server.url), json.dumps(token("web"))
    await page.evaluate(
        f"""(async () => {{
        const room = window.room = new netcode.Room();
        room.on("dataReceived", (p) => log.push(p.data));
        room.on("reconnecting", () => {{
            log.push("reconnecting");
            room.localParticipant.publishData("sent while reconnecting");
        }});
        room.on("reconnected", () => log.push("reconnected"));
        await room.connect({url}, {web_token});
        await room.localParticipant.publishData("before");
    }})()"""
    )
    await eventually(lambda: received == ["before"])
    participant = server.rooms["lobby"].by_identity("web")
    assert participant is not None and participant.link is not None
    await participant.link.close()
    await py.local_participant.publish_data("sent while the page was away")
    await page.wait_for("log.includes('reconnected')", timeout=10)
    await page.evaluate("room.localParticipant.publishData('after')")
    await eventually(lambda: received == ["before", "sent while reconnecting", "after"])
    await page.wait_for("log.includes('sent while the page was away')")
    log = await page.evaluate("log")
    assert log.count("sent while the page was away") == 1
    assert log.index("reconnecting") < log.index("reconnected")
    assert participant.links_used == 2 and not participant.reconnecting
    assert await page.evaluate("[room.state, room.reconnects]") == ["connected", 1]
    await page.evaluate("room.disconnect()")
    await py.disconnect()


async def test_a_page_joins_and_talks_with_a_python_client(
    browser: Browser, server: RoomServer
) -> None:
    py = Room()
    packets: list[DataPacket] = []
    chats: list[tuple[str, str, str]] = []
    joined: list[str] = []
    left: list[str] = []
    py.on("data_received", packets.append)
    py.on("participant_connected", lambda p: joined.append(p.identity))
    py.on("participant_disconnected", lambda p: left.append(p.identity))

    @py.on_event(Chat)
    def on_chat(event: Chat, participant: RemoteParticipant | None, topic: str) -> None:
        chats.append((event.text, participant.identity if participant else "", topic))

    await py.connect(server.url, token("py"))
    page = await open_page(browser, server)
    url, web_token = json.dumps(server.url), json.dumps(token("web"))
    who = await page.evaluate(
        f"""(async () => {{
        const room = window.room = new netcode.Room();
        room.on("dataReceived", (p) => log.push(["data", p.participant && p.participant.identity,
            p.topic, p.kind, typeof p.data === "string" ? p.data : Array.from(p.data)]));
        room.on("eventReceived", (e, p, topic) => log.push(["event", e.type,
            p && p.identity, topic, e.fields.text]));
        room.on("participantConnected", (p) => log.push(["joined", p.identity]));
        room.on("participantDisconnected", (p) => log.push(["left", p.identity]));
        await room.connect({url}, {web_token});
        return [room.localParticipant.identity, [...room.remoteParticipants.keys()]];
    }})()"""
    )
    assert who == ["web", ["py"]]
    await eventually(lambda: joined == ["web"])

    # browser -> Python: reliable text and lossy bytes, with topics, to a destination
    await page.evaluate(
        """(async () => {
        await room.localParticipant.publishData("hello from the browser",
            { reliable: true, topic: "chat", destinationIdentities: ["py"] });
        for (let i = 0; i < 5; i++) {
            await room.localParticipant.publishData(new Uint8Array([1, 2, 3, i]),
                { reliable: false, topic: "position" });
            await new Promise((r) => setTimeout(r, 20));
        }
        // over one datagram: FRAGMENT frames, reassembled by the server
        await room.localParticipant.publishData(new Uint8Array(3000).fill(7),
            { reliable: false, topic: "big" });
        room.sendEvent("Chat", { text: "hi from the browser" }, { topic: "say" });
        room.sendEvent("Chat", { text: "x".repeat(3000) });  // over a datagram: fallback path
    })()"""
    )
    await eventually(lambda: len(chats) == 2 and any(p.kind.value == "lossy" for p in packets))
    reliable = next(p for p in packets if p.kind is DataPacketKind.RELIABLE)
    assert (reliable.data, reliable.topic) == ("hello from the browser", "chat")
    assert reliable.participant is not None and reliable.participant.identity == "web"
    await eventually(lambda: any(p.topic == "big" for p in packets))
    (big,) = [p for p in packets if p.topic == "big"]
    assert big.data == bytes([7]) * 3000 and big.kind is DataPacketKind.LOSSY
    lossy = [p for p in packets if p.kind is DataPacketKind.LOSSY and p.topic != "big"]
    assert all(p.topic == "position" and p.participant is not None for p in lossy)
    assert {bytes(p.data) for p in lossy} <= {bytes([1, 2, 3, i]) for i in range(5)}
    assert lossy[0].participant is not None and lossy[0].participant.identity == "web"
    assert chats == [("hi from the browser", "web", "say"), ("x" * 3000, "web", "")]

    # Python -> browser
    await py.local_participant.publish_data("reliable to web", topic="news")
    await py.local_participant.publish_data(b"\x09\x08", reliable=False, topic="fast")
    await py.local_participant.publish_data(bytes(range(256)) * 10, reliable=False, topic="big")
    py.send_event(Chat("hi from python"), topic="chat")
    py.send_event(Chat("y" * 2500))
    py.send_event(Chat("after the big one"))
    await page.wait_for("log.filter((e) => e[0] === 'event').length === 3")
    await page.wait_for("log.some((e) => e[0] === 'data' && e[3] === 'lossy')")
    log = await page.evaluate("log")
    data = [entry for entry in log if entry[0] == "data"]
    assert ["data", "py", "news", "reliable", "reliable to web"] in data
    assert ["data", "py", "fast", "lossy", [9, 8]] in data
    await page.wait_for("log.some((e) => e[0] === 'data' && e[2] === 'big')")
    big_down = next(e for e in await page.evaluate("log") if e[0] == "data" and e[2] == "big")
    assert big_down[4] == list(range(256)) * 10
    events = [entry for entry in log if entry[0] == "event"]
    assert events == [
        ["event", "Chat", "py", "chat", "hi from python"],
        ["event", "Chat", "py", "", "y" * 2500],
        ["event", "Chat", "py", "", "after the big one"],
    ]
    # the browser acknowledged the fallback message: Python's send window is clear again
    events_link = py.events
    assert events_link is not None
    await eventually(lambda: not events_link.channel.stats().fallback_outstanding)
    # the browser's ACKs confirm what the server sent it, so nothing waits for a replay
    participant = server.rooms["lobby"].by_identity("web")
    assert participant is not None
    await eventually(lambda: participant.replay.bytes == 0, timeout=3)
    assert participant.protocol_errors == 0
    assert await page.evaluate("room.protocolErrors") == 0

    # participants leaving, both ways
    await py.disconnect()
    await page.wait_for("log.some((e) => e[0] === 'left' && e[1] === 'py')")
    py2 = Room()
    py2.on("participant_disconnected", lambda p: left.append(p.identity))
    await py2.connect(server.url, token("py2"))
    await page.wait_for("log.some((e) => e[0] === 'joined' && e[1] === 'py2')")
    await page.evaluate("room.disconnect()")
    await eventually(lambda: left == ["web"])
    await py2.disconnect()
    assert not [line for line in page.console if "netcode:" in line], page.log_text()


class Mood(enum.Enum):
    CALM = 1
    BUSY = 2
    ANGRY = 3


REGISTRY = SchemaRegistry()


@entity(type_id=1, registry=REGISTRY)
class Mover:
    x: float = qfloat(0.0, 100.0, 0.01, group="pos")
    y: float = qfloat(0.0, 100.0, 0.01, group="pos")
    heading: float = qangle(bits=10)
    level: int = qint(-1000, 1000)
    lives: int = qint(0, 5)
    alive: bool = qbool()
    mood: Mood = qenum(Mood)
    spin: tuple[float, float, float, float] = qquat(bits=10)
    label: str = qstring(max_bytes=12)
    tint: tuple[int, int, int] = qcolor()


@entity(type_id=2, registry=REGISTRY)
class Rock:
    x: float = qfloat(0.0, 100.0, 0.5)
    y: float = qfloat(0.0, 100.0, 0.5)


def mover_state(tick: int, i: int) -> dict[str, Any]:
    a = tick / 15 + i
    half = (tick / 40 + i) / 2
    return {
        "x": 50 + 40 * math.cos(a),
        "y": 50 + 40 * math.sin(a),
        "heading": a,
        "level": (tick * 7 + i) % 2000 - 1000,
        "lives": (tick // 10 + i) % 6,
        "alive": (tick // 7) % 2 == 0,
        "mood": list(Mood)[(tick // 9 + i) % 3],
        "spin": (0.0, math.sin(half), 0.0, math.cos(half)),
        "label": f"m{i}-{tick // 20}",
        "tint": ((tick * 3) % 256, i * 40 % 256, 200),
    }


async def test_a_page_gets_only_the_topics_it_subscribed_to(
    browser: Browser, server: RoomServer
) -> None:
    py = Room()
    await py.connect(server.url, token("py", "topics"))
    page = await open_page(browser, server)
    url, web_token = json.dumps(server.url), json.dumps(token("web", "topics"))
    await page.evaluate(
        f"""(async () => {{
        const room = window.room = new netcode.Room();
        room.on("dataReceived", (p) => log.push([p.topic, p.data]));
        await room.connect({url}, {web_token}, {{ topics: ["chat"] }});
    }})()"""
    )
    (room,) = (r for r in server.rooms.values() if r.name == "topics")
    (web,) = (p for p in room.participants.values() if p.identity == "web")
    await eventually(lambda: web.subscriptions == {"chat"})
    # as between the page's join and its SUBSCRIBE: the server forwards every topic
    web.subscriptions = None
    await py.local_participant.publish_data("rain", topic="environment")
    await py.local_participant.publish_data(b"xy", reliable=False, topic="position")
    await py.local_participant.publish_data("hi", topic="chat")
    await py.local_participant.publish_data("no topic")
    await page.wait_for("room.unsubscribedDropped === 2 && log.length === 2")
    assert await page.evaluate("log") == [["chat", "hi"], ["", "no topic"]]
    await page.evaluate("room.disconnect()")
    await py.disconnect()


async def test_a_page_replicates_entities_within_quantization(
    browser: Browser, server: RoomServer
) -> None:
    host = GameHost(tick_rate=30, registry=REGISTRY)
    world = host.world
    movers = [world.spawn(Mover(**mover_state(0, i))) for i in range(6)]
    rocks = [world.spawn(Rock(x=10.0 * i, y=5.0)) for i in range(20)]
    moving = [True]
    truth: dict[int, dict[int, list[Any]]] = {}

    def on_tick(tick: int, dt: float) -> None:
        if moving[0]:
            for i, eid in enumerate(movers):
                world.update(eid, **mover_state(tick, i))
        truth[tick] = {eid: world.quantized(eid) for eid in movers + rocks}
        truth.pop(tick - 300, None)

    host.on_tick = on_tick
    host.on_join = lambda participant: host.assign_entity(participant, movers[2])
    inputs: list[tuple[int, bytes]] = []
    host.on_input = lambda participant, tick, data: inputs.append((tick, data))
    host.attach(server.room("game"))
    try:
        page = await open_page(browser, server)
        url, web_token = json.dumps(server.url), json.dumps(token("viewer", "game"))
        await page.evaluate(
            f"""(async () => {{
            const room = window.room = new netcode.Room();
            const replica = window.replica = new netcode.Replica(room, {{ topic: "position" }});
            window.spawned = 0;
            replica.on("spawned", () => spawned++);
            await room.connect({url}, {web_token});
        }})()"""
        )
        await page.wait_for("spawned === 26 && replica.snapshotsReceived > 20", timeout=10)
        assert await page.evaluate("replica.ownEntityId") == movers[2]  # HOST_ENTITY
        # inputs: each once, in order, and the INPUT_ACK says which the server applied
        await page.evaluate(
            """(async () => {
            for (let t = 1000; t < 1010; t++) {
                replica.sendInput(t, new Uint8Array([t % 256, 7]));
                await new Promise((r) => setTimeout(r, 33));
            }
        })()"""
        )
        await eventually(lambda: len(inputs) == 10, timeout=10)
        assert inputs == [(t, bytes([t % 256, 7])) for t in range(1000, 1010)]
        await page.wait_for("replica.lastInputApplied(replica.latestTick) === 1009")
        for _ in range(3):
            seen = await page.evaluate(
                """(() => {
                const tick = replica.latestTick;
                const out = {};
                for (const id of replica.entityIds()) {
                    out[id] = [replica.quantized(id), replica.get(id)];
                }
                return [tick, out];
            })()"""
            )
            tick, entities = seen
            # the newest tick's state of every entity (an entity unchanged since is as it was)
            for eid_text, (quantized, value) in entities.items():
                eid = int(eid_text)
                assert quantized == truth[tick][eid], (eid, tick)
                server_value = world.get(eid)
                if eid in movers:
                    for name in ("x", "y"):
                        held = truth[tick][eid][0 if name == "x" else 1] / 100
                        assert abs(value[name] - held) <= 0.005 + 1e-9
                    assert value["type"] == "Mover" and value["mood"] in ("CALM", "BUSY", "ANGRY")
                    assert len(value["spin"]) == 4 and abs(math.hypot(*value["spin"]) - 1) < 0.01
                else:
                    assert value == {
                        "x": server_value.x,
                        "y": server_value.y,
                        "type": "Rock",
                        "typeId": 2,
                    }
            await page.evaluate("new Promise((r) => setTimeout(r, 100))")
        # interpolation: about 100 ms behind the newest snapshot, every mover inside the arena
        frame = await page.evaluate(
            """(() => {
            const m = replica.interpolated();
            return [replica.bufferDepthMs(), [...m.values()].map((e) => [e.x, e.y])];
        })()"""
        )
        depth, positions = frame
        assert depth is not None and 0 < depth < 500, depth  # about 100 ms when not loaded
        assert all(0 <= x <= 100 and 0 <= y <= 100 for x, y in positions)
        # receipts: baselines advance, so a world at rest costs the header alone
        viewer = server.rooms["game"].by_identity("viewer")
        assert viewer is not None
        client = host.clients[viewer.pid]
        assert client.receipts > 10 and client.parts_sent > 20  # one may cover several parts
        moving[0] = False
        await page.evaluate("new Promise((r) => setTimeout(r, 300))")
        before_bytes, before_parts = client.snapshot_bytes, client.parts_sent
        await page.evaluate("new Promise((r) => setTimeout(r, 500))")
        parts = client.parts_sent - before_parts
        assert parts >= 10
        assert (client.snapshot_bytes - before_bytes) / parts < 20  # header and an empty body
        assert all(e.resyncs == 0 for e in client.encoders.values())
        assert await page.evaluate("room.protocolErrors") == 0
        await page.evaluate("room.disconnect()")
    finally:
        await host.stop()


async def test_the_page_decodes_parts_exactly_as_python_does(
    browser: Browser, server: RoomServer
) -> None:
    """Snapshot parts of a world that spawns, moves and despawns entities of every field
    kind, in parts of at most 200 bytes (several a tick, deltas against older baselines),
    10% of the parts lost and a fifth of the receipts too: netcode.js's decoder holds,
    after every tick, exactly the slots Python's decoder holds."""
    rng = random.Random(15)
    world = World(REGISTRY)
    encoder = SnapshotEncoder(world, ClientView(), max_part_bytes=200, epoch=40)
    decoder = SnapshotDecoder(REGISTRY)
    live: list[int] = []
    ticks = []
    for tick in range(1, 121):
        if len(live) < 30 and rng.random() < 0.5:
            live.append(world.spawn(Mover(**mover_state(tick, rng.randrange(100)))))
        if live and rng.random() < 0.15:
            world.despawn(live.pop(rng.randrange(len(live))))
        for eid in live:
            if rng.random() < 0.6:
                world.update(eid, **mover_state(tick, eid))
        kept = [p.payload for p in encoder.encode(tick) if rng.random() > 0.1]
        for payload in kept:
            decoder.receive_part(payload)
        receipt = decoder.receipt()
        if receipt is not None and rng.random() > 0.2:
            encoder.on_receipt(receipt)
        held = {str(eid): decoder.quantized(eid) for eid in decoder.entity_ids()}
        ticks.append([[base64.b64encode(p).decode() for p in kept], held])
    description = encode_description(describe_registry(REGISTRY))
    page = await open_page(browser, server)
    mismatches = await page.evaluate(
        f"""(() => {{
        const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const types = netcode.decodeDescription(bytes({
            json.dumps(base64.b64encode(description).decode())
        })).entities;
        const decoder = new netcode.SnapshotDecoder(types);
        const mismatches = [];
        {json.dumps(ticks)}.forEach(([parts, held], tick) => {{
            for (const part of parts) decoder.receivePart(bytes(part));
            const mine = {{}};
            for (const [id, e] of decoder.entities) mine[id] = e.history.get(e.newest);
            if (JSON.stringify(mine) !== JSON.stringify(held)) mismatches.push(tick);
        }});
        return mismatches;
    }})()"""
    )
    assert mismatches == []
    assert decoder.parts_refused == 0 and len(decoder.entity_ids()) > 5
