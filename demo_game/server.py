"""The authoritative arena server: netcode's game host running :class:`demo_game.sim.World`.

    netcode-demo-server [--host H] [--port P] [--api-key K --api-secret S | --dev]
                        [--tls-cert PEM --tls-key PEM] [--ice-server URL] ...

Theory of operation
-------------------
An :class:`ArenaServer` attaches a :class:`~netcode.rooms.host.GameHost` to the room
``arena``. A participant who joins gets a player (named after the participant's name, else
its identity) and, as reliable events, every pickup lying around; one who leaves loses it.

Inputs arrive (two bytes each, :mod:`demo_game.messages`) in tick order and wait in a short
queue per player. Each tick applies one input per player, or two when the queue is backing
up (a client whose clock runs a little fast catches up), and never more: sending inputs
faster does not move a player faster. A player with no input waiting stands still for that
tick, so the server never moves a player in a way the client did not predict. Inputs are
acknowledged with ``host.input_applied`` (``auto_ack_inputs=False``), and the host reports
the last one applied with each snapshot, which is what the client reconciles against.

After the inputs the simulation's other rules run (NPCs, storm, pickups); its state is
mirrored into the host's worlds (players and NPCs on ``position``, the environment on
``environment``) and its events become reliable game events: pickups spawning, despawning
and being collected on ``game``, chat lines on ``chat``.

Spectators (participants whose token metadata is ``spectator``) get no player: they see the
arena and may chat. The server serves a spectator page for browsers at ``/watch``
(:mod:`demo_game.watch`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any

from demo_game.messages import (
    CHAT_TOPIC,
    GAME_TOPIC,
    SAY_TOPIC,
    Chat,
    ChatLine,
    Despawn,
    PickupTaken,
    decode_input_untrusted,
    spawn_of_pickup,
)
from demo_game.schemas import (
    DEMO_REGISTRY,
    entity_fields,
    environment_entity,
    npc_entity,
    player_entity,
)
from demo_game.sim import (
    PICKUP_POINTS,
    TICK_RATE_HZ,
    TICK_S,
    GameEvent,
    PickupCollected,
    PickupDespawned,
    PickupSpawned,
    PlayerDowned,
    PlayerInput,
    World,
    apply_input,
    sanitize_chat,
)
from demo_game.watch import add_watch_pages, is_spectator_metadata
from netcode.cli import (
    add_logging_arguments,
    add_server_network_arguments,
    check_secret_argument,
    configure_logging,
    make_token,
    port,
    positive_seconds,
    seconds,
    server_network_options,
)
from netcode.rooms import RoomServer, ServerParticipant, ServerRoom
from netcode.rooms.host import GameHost

__all__ = ["ROOM_NAME", "ArenaServer", "main"]

logger = logging.getLogger(__name__)

ROOM_NAME = "arena"
#: Inputs applied per player per tick when the queue is backing up (never more).
MAX_INPUTS_PER_TICK = 2
#: Inputs kept waiting per player (half a second); older ones are dropped.
MAX_QUEUED_INPUTS = 15
#: Chat lines a player may post per second, on average (bursts of CHAT_BURST).
CHAT_PER_S = 1.0
CHAT_BURST = 4.0


class _Player:
    """What the server keeps per participant."""

    def __init__(self, participant: ServerParticipant, sim_id: int, entity_id: int) -> None:
        self.participant = participant
        self.sim_id = sim_id
        self.entity_id = entity_id
        self.inputs: deque[PlayerInput] = deque()
        self.inputs_dropped = 0
        self.chat_allowance = CHAT_BURST


class _Spectator:
    """A participant who watches (token metadata ``spectator``): no player, may chat."""

    def __init__(self, participant: ServerParticipant) -> None:
        self.participant = participant
        base = (participant.name or participant.identity or "spectator")[:16]
        self.name = f"{base} (watching)"
        self.chat_allowance = CHAT_BURST


class _ArenaHost(GameHost):
    """The game host, handing game events from clients to the arena."""

    def __init__(self, arena: ArenaServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arena = arena

    def event_received(self, participant: ServerParticipant, event: Any, topic: str) -> None:
        self.arena.event_received(participant, event, topic)


class ArenaServer:
    """The arena game on a game host: attach it to a room server's room."""

    def __init__(self, *, seed: int = 1, npc_count: int = 24) -> None:
        self.sim = World(seed, npc_count=npc_count)
        self.host = _ArenaHost(
            self,
            tick_rate=TICK_RATE_HZ,
            environment_every=6,
            registry=DEMO_REGISTRY,
            auto_ack_inputs=False,
        )
        self.host.on_tick = self._tick
        self.host.on_input = self._input
        self.host.on_join = self._join
        self.host.on_leave = self._leave
        self.players: dict[int, _Player] = {}  # by participant pid
        self.spectators: dict[int, _Spectator] = {}  # by participant pid
        self._by_sim_id: dict[int, _Player] = {}
        self._npc_entities: dict[int, int] = {}
        for npc in self.sim.npcs.values():
            self._npc_entities[npc.id] = self.host.world.spawn(npc_entity(npc))
        self._environment = self.host.environment.spawn(environment_entity(self.sim.environment))
        #: events sent, by type name (for logs and tests)
        self.events_sent: dict[str, int] = {}

    def attach(self, room: ServerRoom) -> None:
        """Start running the game in ``room`` (call from the event loop)."""
        self.host.attach(room)

    async def stop(self) -> None:
        """Stop ticking."""
        await self.host.stop()

    # -- participants ---------------------------------------------------------------------

    def _join(self, participant: ServerParticipant) -> None:
        if is_spectator_metadata(getattr(participant, "metadata", "")):
            self.spectators[participant.pid] = _Spectator(participant)
            for pickup in sorted(self.sim.pickups.values(), key=lambda p: p.id):
                self._send(spawn_of_pickup(pickup), GAME_TOPIC, [participant])
            logger.info("%s is watching", participant.identity)
            return
        name = (participant.name or participant.identity or f"player{participant.pid}")[:16]
        state, _ = self.sim.add_player(name)
        eid = self.host.world.spawn(player_entity(state, participant.pid))
        player = _Player(participant, state.id, eid)
        self.players[participant.pid] = player
        self._by_sim_id[state.id] = player
        # The pickups already lying around, before any later spawn or despawn (same order).
        for pickup in sorted(self.sim.pickups.values(), key=lambda p: p.id):
            self._send(spawn_of_pickup(pickup), GAME_TOPIC, [participant])
        self._announce(f"{name} joined")
        logger.info("%s joined as player %d (entity %d)", participant.identity, state.id, eid)

    def _leave(self, participant: ServerParticipant) -> None:
        self.spectators.pop(participant.pid, None)
        player = self.players.pop(participant.pid, None)
        if player is None:
            return
        name = self.sim.players[player.sim_id].name
        self._by_sim_id.pop(player.sim_id, None)
        self.sim.remove_player(player.sim_id)
        self.host.world.despawn(player.entity_id)
        self._announce(f"{name} left")

    # -- inputs and events from clients -----------------------------------------------------

    def _input(self, participant: ServerParticipant, tick: int, data: bytes) -> None:
        player = self.players.get(participant.pid)
        inp = decode_input_untrusted(tick, data)
        if player is None or inp is None:
            return
        if len(player.inputs) >= MAX_QUEUED_INPUTS:
            player.inputs.popleft()
            player.inputs_dropped += 1
        player.inputs.append(inp)

    def event_received(self, participant: ServerParticipant, event: Any, topic: str) -> None:
        """A client's event: a Chat on the ``say`` topic becomes everyone's ChatLine."""
        spectator = self.spectators.get(participant.pid)
        if spectator is not None and topic == SAY_TOPIC and isinstance(event, Chat):
            text = sanitize_chat(event.text)
            if text and spectator.chat_allowance >= 1.0:
                spectator.chat_allowance -= 1.0
                self._send(ChatLine(0, spectator.name, text), CHAT_TOPIC)
            return
        player = self.players.get(participant.pid)
        if player is None or topic != SAY_TOPIC or not isinstance(event, Chat):
            return
        if player.chat_allowance < 1.0:
            return  # flooding: drop the line
        line = self.sim.say(player.sim_id, sanitize_chat(event.text))
        if line is None:
            return
        player.chat_allowance -= 1.0
        self._send(ChatLine(player.entity_id, line.name, line.text), CHAT_TOPIC)

    # -- the tick -------------------------------------------------------------------------

    def _tick(self, tick: int, dt: float) -> None:
        inputs: dict[int, PlayerInput] = {}
        for spectator in self.spectators.values():
            spectator.chat_allowance = min(CHAT_BURST, spectator.chat_allowance + CHAT_PER_S * dt)
        for player in self.players.values():
            player.chat_allowance = min(CHAT_BURST, player.chat_allowance + CHAT_PER_S * dt)
            queue = player.inputs
            if not queue:
                # Nothing arrived: stand still (what the client predicts when it catches up).
                inputs[player.sim_id] = PlayerInput(-1, 0.0, 0.0)
                continue
            if len(queue) > MAX_INPUTS_PER_TICK:
                extra = queue.popleft()
                state = self.sim.players[player.sim_id]
                self.sim.players[player.sim_id] = apply_input(state, extra, TICK_S)
            inp = queue.popleft()
            inputs[player.sim_id] = inp
            self.host.input_applied(player.participant, inp.tick)
        events = self.sim.step(inputs, TICK_S)
        self._mirror()
        for event in events:
            self._publish(event)

    def _mirror(self) -> None:
        world = self.host.world
        for player in self.players.values():
            state = self.sim.players[player.sim_id]
            fields = entity_fields(player_entity(state, player.participant.pid))
            world.update(player.entity_id, **fields)
        for sim_id, eid in self._npc_entities.items():
            world.update(eid, **entity_fields(npc_entity(self.sim.npcs[sim_id])))
        env = environment_entity(self.sim.environment)
        self.host.environment.update(self._environment, **entity_fields(env))

    def _publish(self, event: GameEvent) -> None:
        if isinstance(event, PickupSpawned):
            self._send(spawn_of_pickup(event.pickup), GAME_TOPIC)
        elif isinstance(event, PickupDespawned):
            self._send(Despawn(event.pickup_id, event.reason), GAME_TOPIC)
        elif isinstance(event, PickupCollected):
            player = self._by_sim_id.get(event.player_id)
            state = self.sim.players.get(event.player_id)
            if player is not None and state is not None:
                points = PICKUP_POINTS[event.kind]
                taken = PickupTaken(
                    event.pickup_id, player.entity_id, event.kind.name.lower(), points, state.score
                )
                self._send(taken, GAME_TOPIC)
        elif isinstance(event, PlayerDowned):
            state = self.sim.players.get(event.player_id)
            if state is not None:
                self._announce(f"{state.name} was caught by the storm")

    def _announce(self, text: str) -> None:
        self._send(ChatLine(0, "*", text), CHAT_TOPIC)

    def _send(
        self, event: Any, topic: str, destinations: list[ServerParticipant] | None = None
    ) -> None:
        self.host.send_event(event, topic=topic, destinations=destinations)
        name = type(event).__name__
        self.events_sent[name] = self.events_sent.get(name, 0) + 1

    # -- statistics -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Tick statistics and the players' states."""
        return {
            "tick": self.sim.tick,
            "players": len(self.players),
            "pickups": len(self.sim.pickups),
            "events_sent": dict(self.events_sent),
            **self.host.tick_stats(),
        }


async def start_arena(
    api_key: str,
    api_secret: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 1,
    trace: str | None = None,
    watch_tokens: bool = False,
    **server_options: Any,
) -> tuple[RoomServer, ArenaServer]:
    """A started room server with the arena attached to room ``arena``, and the spectator
    page at ``/watch`` (``watch_tokens``: hand out spectator tokens at ``/watch/token`` to
    pages opened on this machine, for development; see :mod:`demo_game.watch`).

    ``trace``: a file to record the server's trace in (see ``netcode-trace``);
    ``server_options`` go to :class:`~netcode.rooms.RoomServer` (``ssl``, ``ice_servers``,
    ``cors_origins``, ``dead_after``...).
    """
    server = RoomServer(api_key, api_secret, trace=trace, **server_options)
    add_watch_pages(server, ROOM_NAME, api_key, api_secret, dev_tokens=watch_tokens)
    await server.start(host, port)
    arena = ArenaServer(seed=seed)
    arena.attach(server.room(ROOM_NAME))
    return server, arena


async def stop_arena(server: RoomServer, arena: ArenaServer) -> None:
    """Stop the game, then the server."""
    await arena.stop()
    await server.stop()


# -- the command ----------------------------------------------------------------------------


async def _serve(args: argparse.Namespace, ready: str) -> None:
    server, arena = await start_arena(
        args.api_key,
        args.api_secret,
        host=args.host,
        port=args.port,
        seed=args.seed,
        trace=args.trace,
        dead_after=args.dead_after,
        grace_period=args.grace_period,
        watch_tokens=args.dev,
        **args.network,
    )
    print(f"netcode-demo-server: room {ROOM_NAME!r} on {server.url}", flush=True)
    if ready:
        print(ready.replace("{url}", server.url), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=args.stats_every)
            except TimeoutError:
                s = arena.status()
                print(
                    f"tick {s['tick']} players={s['players']} pickups={s['pickups']} "
                    f"tick p99 {s['tick_p99_ms'] or 0:.1f} ms",
                    flush=True,
                )
    finally:
        await stop_arena(server, arena)
        print("netcode-demo-server stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``netcode-demo-server``: host the arena; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="netcode-demo-server",
        description="Host the netcode demo arena (room 'arena') for others to join with "
        "netcode-demo --connect URL --token T. Deploying on the internet: docs/DEPLOY.md.",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("NETCODE_HOST", "127.0.0.1"),
        help="bind address (127.0.0.1; 0.0.0.0 for every interface; default $NETCODE_HOST)",
    )
    parser.add_argument(
        "--port",
        type=port,
        default=os.environ.get("NETCODE_PORT", "7880"),
        help="signaling port, TCP (7880; 0 picks a free one; default $NETCODE_PORT)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("NETCODE_API_KEY"),
        help="API key (default: $NETCODE_API_KEY)",
    )
    parser.add_argument(
        "--api-secret",
        default=os.environ.get("NETCODE_API_SECRET"),
        help="API secret, at least 32 characters (default: $NETCODE_API_SECRET)",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: make up a key and secret if none given, print a join command",
    )
    parser.add_argument("--seed", type=int, default=1, help="world seed (1)")
    parser.add_argument("--trace", metavar="FILE", help="record the server's trace (JSON lines)")
    parser.add_argument(
        "--stats-every",
        type=positive_seconds,
        default=10.0,
        metavar="S",
        help="seconds between status lines (10)",
    )
    parser.add_argument(
        "--dead-after",
        type=positive_seconds,
        default=3.0,
        metavar="S",
        help="seconds without a datagram before a player's link counts as dead (3)",
    )
    parser.add_argument(
        "--grace-period",
        type=seconds,
        default=20.0,
        metavar="S",
        help="seconds a dropped player's session is held for it to resume (20)",
    )
    add_server_network_arguments(parser)
    add_logging_arguments(parser, default="WARNING")
    args = parser.parse_args(argv)
    args.network = server_network_options(parser, args)
    configure_logging(args.log_level)
    ready = ""
    if args.dev:
        args.api_key = args.api_key or "devkey"
        args.api_secret = args.api_secret or secrets.token_urlsafe(32)
        token = make_token(args.api_key, args.api_secret, "player1", ROOM_NAME, name="Player 1")
        ready = (
            f"development key:    {args.api_key}\n"
            f"development secret: {args.api_secret}\n"
            "join with (more tokens: netcode-token --room arena --identity NAME ...):\n"
            "  netcode-demo --connect {url} --token " + token + "\n"
            "watch in a browser on this machine: {url}/watch"
        )
    if not args.api_key or not args.api_secret:
        parser.error("--api-key and --api-secret (or NETCODE_API_KEY/SECRET, or --dev) needed")
    check_secret_argument(parser, args.api_secret)
    try:
        asyncio.run(_serve(args, ready))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
