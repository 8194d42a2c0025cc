"""The arena as a listen server: this process hosts the game in a peer-to-peer room.

``netcode-demo --listen`` runs, in a background thread with its own asyncio loop (as
:mod:`demo_game.embedded` does for the group-room game):

- a :class:`~netcode.rooms.RoomServer` whose room ``arena`` is peer to peer: it admits
  players by token and brokers their offers and answers, and carries none of the game;
- the *host*: a :class:`~netcode.rooms.Room` that joins with the ``room_host`` grant and runs
  the :class:`~demo_game.server.ArenaServer`'s GameHost (``room.host_game``), so every
  player's Replica replicates from it over a direct peer connection;
- ``bots`` bot players, each a participant with its own direct link to the host.

The local player's window joins like anyone else. Other players join with
``netcode-demo --connect URL --token T`` using a token from :meth:`ListenArena.token`
(printed at start); on another machine, listen on a reachable address (``--listen
0.0.0.0:7880``) and make sure the players can reach each other (same LAN, or STUN/TURN
servers with ``--ice-server``).
"""

from __future__ import annotations

import asyncio
import logging

from demo_game.botclient import BotClient, bot_name
from demo_game.embedded import ArenaThread
from demo_game.server import ROOM_NAME, ArenaServer
from netcode.auth import AccessToken, Grants
from netcode.rooms import Room, RoomServer

__all__ = ["HOST_IDENTITY", "ListenArena"]

logger = logging.getLogger(__name__)

API_KEY = "demo"
#: the identity of the host participant (it runs the game; it has no player)
HOST_IDENTITY = "listen-host"


class ListenArena(ArenaThread):
    """A room server with a P2P room, the arena hosted by a participant, and bots."""

    label = "listen server"

    def __init__(
        self, *, bots: int = 3, seed: int = 1, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.bind = (host, port)
        super().__init__(bots=bots, seed=seed)

    def token(self, identity: str, name: str = "", *, room_host: bool = False) -> str:
        """A token that joins the arena as ``identity`` (six hours)."""
        grants = Grants(room_join=True, room=ROOM_NAME, room_host=room_host)
        token = AccessToken(API_KEY, self.api_secret).with_identity(identity).with_grants(grants)
        return token.with_name(name).with_ttl(6 * 3600).to_jwt()

    async def _run(self) -> None:
        assert self._stop is not None
        server = RoomServer(API_KEY, self.api_secret, room_types={ROOM_NAME: "p2p"})
        await server.start(*self.bind)
        host = Room()
        arena = ArenaServer(seed=self.seed)
        bots: list[BotClient] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            self.url = server.url
            await host.connect(server.url, self.token(HOST_IDENTITY, "host", room_host=True))
            host.host_game(arena.host)
            for i in range(self.bot_count):
                bot = BotClient(seed=self.seed * 1000 + i)
                await bot.connect(server.url, self.token(f"bot-{i + 1}", bot_name(i)))
                bots.append(bot)
                tasks.append(asyncio.create_task(bot.run(self._stop)))
            self._ready.set()
            while not self._stop.is_set():
                self._summarise(arena, bots)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=1.0)
                except TimeoutError:
                    pass
            self._summarise(arena, bots)
        finally:
            self._stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for bot in bots:
                await bot.close()
            await arena.stop()
            await host.disconnect()
            await server.stop()

    def _summarise(self, arena: ArenaServer, bots: list[BotClient]) -> None:
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
