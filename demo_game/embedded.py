"""An arena server and its bot players in a background thread of the same process.

``netcode-demo`` with no ``--connect`` hosts the game itself: :class:`EmbeddedArena` starts a
thread with its own asyncio loop running a :class:`~demo_game.server.ArenaServer` on
127.0.0.1 (a free port) and ``bots`` :class:`~demo_game.botclient.BotClient` s, each over its
own WebRTC connection like any remote player. The window's loop stays free to draw; the
server's tick loop is never held up by a slow frame. ``summary()`` is a copy of the
server's and the bots' figures, refreshed by that thread once a second.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from typing import Any

from demo_game.botclient import BotClient, bot_name
from demo_game.server import ROOM_NAME, ArenaServer, start_arena, stop_arena
from netcode.cli import make_token
from netcode.rooms import RoomServer

__all__ = ["ArenaThread", "EmbeddedArena"]

logger = logging.getLogger(__name__)

API_KEY = "demo"


class ArenaThread:
    """The arena and its bots in a thread with its own asyncio loop: started (returning once
    ``_run`` sets ``_ready``), stopped, and its figures read from the window's thread.
    Subclasses write ``_run``; :class:`EmbeddedArena` and the listen server's
    :class:`~demo_game.listen.ListenArena` are two."""

    #: what the thread and a start that times out are called
    label = "arena"

    def __init__(self, *, bots: int, seed: int) -> None:
        self.bot_count = bots
        self.seed = seed
        self.api_secret = secrets.token_urlsafe(32)
        self.url = ""
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=self.label, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._summary: dict[str, Any] = {}
        self._lock = threading.Lock()

    def start(self, timeout: float = 20.0) -> None:
        """Start the thread; returns once the game is up and the bots have joined."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the {self.label} did not start in time")
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the bots and the game, and wait for the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)

    def summary(self) -> dict[str, Any]:
        """The latest figures: ``server`` (tick stats) and ``bots`` (per bot)."""
        with self._lock:
            return dict(self._summary)

    def _main(self) -> None:
        try:
            asyncio.run(self._begin())
        except BaseException as exc:  # reported to the starting thread
            self.error = exc
            self._ready.set()

    async def _begin(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self._run()

    async def _run(self) -> None:
        raise NotImplementedError


class EmbeddedArena(ArenaThread):
    """A room server, the arena game and bot clients, in their own thread."""

    label = "embedded arena"

    def __init__(self, *, bots: int = 3, seed: int = 1, trace: str | None = None) -> None:
        self.trace = trace
        super().__init__(bots=bots, seed=seed)

    def token(self, identity: str, name: str = "") -> str:
        """A token that joins the arena as ``identity``."""
        return make_token(API_KEY, self.api_secret, identity, ROOM_NAME, name=name)

    async def _run(self) -> None:
        assert self._stop is not None
        server, arena = await start_arena(
            API_KEY, self.api_secret, seed=self.seed, trace=self.trace
        )
        bots: list[BotClient] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            self.url = server.url
            for i in range(self.bot_count):
                bot = BotClient(seed=self.seed * 1000 + i)
                await bot.connect(server.url, self.token(f"bot-{i + 1}", bot_name(i)))
                bots.append(bot)
                tasks.append(asyncio.create_task(bot.run(self._stop)))
            self._ready.set()
            while not self._stop.is_set():
                self._summarise(server, arena, bots)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=1.0)
                except TimeoutError:
                    pass
            self._summarise(server, arena, bots)
        finally:
            self._stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for bot in bots:
                await bot.close()
            await stop_arena(server, arena)

    def _summarise(self, server: RoomServer, arena: ArenaServer, bots: list[BotClient]) -> None:
        figures = []
        for bot in bots:
            stats = bot.net_stats()
            me = bot.me
            figures.append(
                {
                    "name": me.name if me is not None else bot.identity,
                    "said": bot.said,
                    "score": me.score if me is not None else 0,
                    "rtt_ms": stats.rtt_ms,
                    "kbps_in": stats.kbps_in,
                    "kbps_out": stats.kbps_out,
                    "snapshot_bytes": stats.snapshot_bytes,
                    "corrections": bot.corrections,
                }
            )
        with self._lock:
            self._summary = {"server": arena.status(), "bots": figures}
