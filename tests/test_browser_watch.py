"""The arena's spectator page (``/watch``) in headless Chromium, beside bot players.

The page takes a spectator token from ``/watch/token`` (a --dev server, a page on this
machine), joins without a player, draws the arena from live snapshots, lists the players on
its scoreboard, and chats both ways. Its screenshot is kept in docs/screenshot-watch.png:
refresh it with ``NETCODE_WATCH_SCREENSHOT=docs/screenshot-watch.png pytest
tests/test_browser_watch.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
from typing import Any

import aiohttp
import pytest
from browser_driver import Browser
from helpers import eventually
from test_browser import chromium_or_skip

from demo_game.botclient import BotClient
from demo_game.server import start_arena, stop_arena
from netcode.cli import make_token

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

KEY, SECRET = "watch-key", "watch-secret-watch-secret-watch-secret"


async def test_the_token_endpoint_serves_only_dev_servers_and_this_machine() -> None:
    for dev in (False, True):
        server, arena = await start_arena(KEY, SECRET, watch_tokens=dev)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(server.url + "/watch") as response:
                    assert response.status == 200
                    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
                    assert b'src="/watch.js"' in await response.read()
                async with http.get(server.url + "/watch/token") as response:
                    reply = json.loads(await response.read())
                    if dev:
                        assert response.status == 200 and reply["room"] == "arena"
                        assert reply["identity"].startswith("watcher-")
                    else:
                        assert response.status == 404 and "#token=" in reply["message"]
        finally:
            await stop_arena(server, arena)


async def test_the_spectator_page_draws_the_arena_and_chats(tmp_path: pathlib.Path) -> None:
    chromium = chromium_or_skip()
    server, arena = await start_arena(KEY, SECRET, watch_tokens=True)
    truth: dict[int, dict[int, Any]] = {}  # tick -> entity id -> the state sent that tick
    game_tick = arena.host.on_tick

    def recording_tick(tick: int, dt: float) -> None:
        game_tick(tick, dt)
        world = arena.host.world
        truth[tick] = {p.entity_id: world.get(p.entity_id) for p in arena.players.values()}
        truth.pop(tick - 150, None)

    arena.host.on_tick = recording_tick
    keep = os.environ.get("NETCODE_WATCH_SCREENSHOT")
    names = ["Ada", "Bix", "Cyd"] if keep else ["Ada", "Bix"]  # bots cost CPU: two will do
    stop = asyncio.Event()
    bots = [BotClient(seed=i) for i in range(len(names))]
    tasks = []
    try:
        for i, (bot, name) in enumerate(zip(bots, names, strict=True)):
            await bot.connect(server.url, make_token(KEY, SECRET, f"bot{i}", "arena", name=name))
            tasks.append(asyncio.create_task(bot.run(stop)))
        async with Browser.launch(chromium) as browser:
            page = await browser.new_page()
            await page.set_viewport(1000, 640)
            await page.goto(server.url + "/watch")
            await page.wait_for("window.watch && watch.room.state === 'connected'", timeout=15)
            # the spectator has no player: the scoreboard lists the bots
            rows = f"document.querySelectorAll('#scores tr').length === {len(names)}"
            await page.wait_for(rows, 20)
            await page.wait_for("watch.frames > 10 && watch.pickups.size > 0", 20)
            shown = await page.evaluate(
                "[...document.querySelectorAll('#scores tr')].map((r) => r.textContent)"
            )
            assert sorted(n.rstrip("0123456789") for n in shown) == names
            assert len(arena.players) == len(names) and len(arena.spectators) == 1
            # the pickups the page learnt from Spawn and Despawn events are the server's
            for _ in range(100):
                pickups = set(await page.evaluate("[...watch.pickups.keys()]"))
                if pickups == set(arena.sim.pickups):
                    break
                await asyncio.sleep(0.05)
            assert pickups == set(arena.sim.pickups)
            # players where the server had them at the page's newest tick
            tick, seen = await page.evaluate(
                """[watch.position.latestTick, [...watch.position.entities().entries()]
                    .filter(([id, e]) => e.type === "PlayerEntity")
                    .map(([id, e]) => [id, e.x, e.y])]"""
            )
            assert len(seen) == len(names)
            for eid, x, y in seen:
                held = truth[tick][eid]
                assert abs(held.x - x) <= 0.005 + 1e-9 and abs(held.y - y) <= 0.005 + 1e-9
            # chat: from the page to everyone, and from a player to the page
            await page.evaluate(
                """(() => {
                document.getElementById("line").value = "hello from the stands";
                document.getElementById("say").requestSubmit();
            })()"""
            )
            await eventually(
                lambda: any(line.text == "hello from the stands" for line in bots[0].chat.lines),
                timeout=20,
            )
            line = next(line for line in bots[0].chat.lines if line.text == "hello from the stands")
            assert line.name.endswith("(watching)")
            bots[1].say("nice weather today")
            await page.wait_for("watch.chat.some((c) => c.text === 'nice weather today')", 20)
            await page.wait_for(
                "document.getElementById('chat').textContent.includes('hello from the stands')"
            )
            assert await page.evaluate("watch.room.protocolErrors") == 0
            await asyncio.sleep(8.0 if keep else 0.2)  # let the bots wander a little
            target = keep or tmp_path / "watch.png"
            png = await page.screenshot(target)
            assert png.startswith(b"\x89PNG") and len(png) > 10_000
            # LEAVE ends the session at once (a page that was resuming when it left cannot
            # say LEAVE: its session then ends after the grace period)
            await page.evaluate("watch.room.disconnect()")
            await eventually(lambda: not arena.spectators, timeout=30)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for bot in bots:
            await bot.close()
        await stop_arena(server, arena)
