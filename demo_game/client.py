"""The networked arena client: what one player's machine runs.

Theory of operation
-------------------
An :class:`ArenaClient` joins the room with a :class:`~netcode.rooms.Room` and two
:class:`~netcode.rooms.replica.Replica` s: ``position`` (players and NPCs, every tick) and
``environment`` (light, weather, storm, five times a second, rendered further in the past so
that a state on each side of the render time is always at hand). Pickups and chat arrive as
reliable game events (:mod:`demo_game.messages`).

The client runs its own fixed 30 Hz tick (``advance``). Each tick it encodes the player's
movement, sends it (netcode repeats the unacknowledged ones in every INPUT frame) and
predicts its own player at once with the simulation's ``apply_input`` on the *decoded*
input, exactly what the server will run. When a newer snapshot holds its player, it
reconciles: restart from the server's state and replay the inputs the server had not yet
applied when it took that snapshot (``Replica.last_input_applied``). Rules and quantization
being deterministic, the replay lands where the prediction was; ``last_correction_m`` shows
how far off it was (zero, unless inputs were lost or the storm knocked the player down).

Remote players and NPCs are drawn from ``Replica.interpolated()`` (about 100 ms in the
past); the local player between its last two predicted ticks. ``scene()`` assembles a
:class:`~demo_game.scene.Scene`; ``net_stats()`` fills the net graph from the connection's
counters. ``impairment`` adds the F5-F8 latency and loss to the lossy channel.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import attrs

from demo_game.impair import LinkImpairment
from demo_game.messages import (
    CHAT_TOPIC,
    SAY_TOPIC,
    SUBSCRIBED_TOPICS,
    Chat,
    ChatLine,
    Despawn,
    PickupTaken,
    Spawn,
    decode_input,
    encode_input,
    pickup_from_spawn,
)
from demo_game.netstats import NetHistory, NetStats
from demo_game.scene import Scene, lerp_angle
from demo_game.schemas import (
    DEMO_REGISTRY,
    EnvironmentEntity,
    NpcEntity,
    PlayerEntity,
    environment_state,
    npc_state,
    player_state,
)
from demo_game.sim import (
    TICK_S,
    ChatLog,
    ChatPosted,
    EnvironmentState,
    NpcState,
    PickupState,
    PlayerInput,
    PlayerState,
    Weather,
    apply_input,
    light_level_at,
)
from netcode.core.stats import ConnectionStats
from netcode.errors import NetcodeError
from netcode.replication.inputs import Predictor
from netcode.rooms import Room
from netcode.rooms.replica import Replica

__all__ = ["ENVIRONMENT_DELAY_S", "POSITION_DELAY_S", "ArenaClient"]

POSITION_DELAY_S = 0.1
#: The environment comes every 6 ticks (200 ms): render it far enough back to interpolate.
ENVIRONMENT_DELAY_S = 0.35
#: At most this many ticks are run to catch up after a slow frame.
MAX_TICKS_PER_ADVANCE = 5
RATE_WINDOW_S = 1.0
MIN_RATE_WINDOW_S = 0.5

_DEFAULT_ENVIRONMENT = EnvironmentState(
    time_s=0.0,
    light=light_level_at(0.0),
    weather=Weather.CLEAR,
    hazard_x=-100.0,
    hazard_y=-100.0,
    hazard_radius=0.0,
)


def _step(state: PlayerState, inp: PlayerInput) -> PlayerState:
    return apply_input(state, inp, TICK_S)


class ArenaClient:
    """One networked player of the arena (create, then ``await connect(url, token)``)."""

    def __init__(self, *, seed: int = 0) -> None:
        self.room = Room()
        self.positions = Replica(
            self.room, topic="position", registry=DEMO_REGISTRY, interpolation_delay=0.1
        )
        self.environment = Replica(
            self.room,
            topic="environment",
            registry=DEMO_REGISTRY,
            interpolation_delay=ENVIRONMENT_DELAY_S,
        )
        self.predictor: Predictor[PlayerState, PlayerInput] = Predictor(_step)
        self.seed = seed
        self.impairment: LinkImpairment | None = None
        #: my player's entity id, once the server has spawned it
        self.player_id: int | None = None
        self.tick = 0
        self.clock_s = 0.0
        self.accumulator_s = 0.0
        self.pickups: dict[int, PickupState] = {}
        self.chat = ChatLog(50)
        #: chat lines received and not yet taken by the caller (for logs)
        self.new_chat: list[ChatPosted] = []
        #: events received, by type name; pickup spawns and despawns seen
        self.events_received: Counter[str] = Counter()
        self.pickups_spawned: set[int] = set()
        self.pickups_despawned: set[int] = set()
        #: distance between prediction and the server's replayed state, last reconciliation
        self.last_correction_m = 0.0
        self.corrections = 0
        self.net_history = NetHistory()
        self.fps = 0.0
        self._previous: PlayerState | None = None
        self._reconciled_tick = -1
        self._rates: deque[tuple[float, int, int]] = deque()
        self.room.on_event(ChatLine, self._on_chat_line)
        self.room.on_event(Spawn, self._on_spawn)
        self.room.on_event(Despawn, self._on_despawn)
        self.room.on_event(PickupTaken, self._on_pickup_taken)
        self.positions.on("despawned", self._on_entity_despawned)

    # -- connection -----------------------------------------------------------------------

    async def connect(self, url: str, token: str, *, timeout: float = 10.0, **options: Any) -> None:
        """Join the arena (raises a TokenError subclass or ConnectError on failure).

        ``options`` go to :meth:`~netcode.rooms.Room.connect` (``ca_file``, ``ice_servers``...).
        """
        await self.room.connect(url, token, topics=SUBSCRIBED_TOPICS, timeout=timeout, **options)
        self.impairment = LinkImpairment(self.room, seed=self.seed)

    async def close(self) -> None:
        """Leave the arena."""
        if self.impairment is not None:
            self.impairment.remove()
        await self.room.disconnect()

    @property
    def connected(self) -> bool:
        return self.room.isconnected()

    @property
    def identity(self) -> str:
        return self.room.local_participant.identity

    def say(self, text: str) -> bool:
        """Post a chat line (the server sanitises and broadcasts it); False if not sent."""
        try:
            self.room.send_event(Chat(text), topic=SAY_TOPIC)
        except NetcodeError:
            return False
        return True

    def set_impairment(self, latency_ms: float, loss: float) -> None:
        """Simulated extra round-trip latency (ms) and loss (0..1) on the lossy channel."""
        if self.impairment is not None:
            self.impairment.set(latency_ms=latency_ms, loss=loss)

    # -- the client tick ------------------------------------------------------------------

    def advance(self, frame_dt: float, move: Callable[[], tuple[float, float]]) -> int:
        """Run the client ticks due after ``frame_dt`` seconds; ``move()`` gives each tick's
        movement. Returns the number of ticks run."""
        frame_dt = min(max(frame_dt, 0.0), MAX_TICKS_PER_ADVANCE * TICK_S)
        self.clock_s += frame_dt
        self.accumulator_s += frame_dt
        ticks = 0
        while self.accumulator_s >= TICK_S:
            self.accumulator_s -= TICK_S
            self.step(move())
            ticks += 1
        return ticks

    def step(self, move: tuple[float, float]) -> PlayerState | None:
        """One client tick: reconcile with the newest snapshot, then send and predict."""
        if not self.connected:
            return None
        if self.player_id is None and not self._find_me():
            return None
        self._reconcile()
        self.tick += 1
        data = encode_input(PlayerInput(self.tick, move[0], move[1]))
        self.positions.send_input(self.tick, data)
        self._previous = self.predictor.state
        return self.predictor.predict(self.tick, decode_input(self.tick, data))

    def _find_me(self) -> bool:
        pid = self.room.local_participant.pid
        for eid, e in self.positions.entities().items():
            if isinstance(e, PlayerEntity) and e.owner == pid:
                self.player_id = eid
                state = player_state(eid, e)
                self.predictor.reset(state)
                self._previous = state
                self._reconciled_tick = self.positions.decoder.tick_of(eid)
                return True
        return False

    def _reconcile(self) -> None:
        eid = self.player_id
        if eid is None or eid not in self.positions.decoder:
            return
        tick = self.positions.decoder.tick_of(eid)
        if tick <= self._reconciled_tick:
            return
        last_applied = self.positions.last_input_applied(tick)
        if last_applied is None:
            return  # its INPUT_ACK is late or lost, or nothing applied yet: next snapshot
        self._reconciled_tick = tick
        before = self.predictor.state
        after = self.predictor.reconcile(player_state(eid, self.positions.get(eid)), last_applied)
        if before is not None:
            self.last_correction_m = math.hypot(after.x - before.x, after.y - before.y)
            if self.last_correction_m > 1e-6:
                self.corrections += 1

    def _on_entity_despawned(self, entity_id: int) -> None:
        if entity_id == self.player_id:
            self.player_id = None

    # -- events ---------------------------------------------------------------------------

    def _on_chat_line(self, event: ChatLine, participant: Any, topic: str) -> None:
        if topic != CHAT_TOPIC or participant is not None:
            return  # chat lines come from the server only
        line = ChatPosted(
            tick=self.tick, player_id=event.player_id, name=event.name, text=event.text
        )
        self.chat.add(line)
        self.new_chat.append(line)
        self.events_received["ChatLine"] += 1

    def _on_spawn(self, event: Spawn, participant: Any, topic: str) -> None:
        pickup = pickup_from_spawn(event)
        if participant is None and pickup is not None:
            self.pickups[pickup.id] = pickup
            self.pickups_spawned.add(pickup.id)
            self.events_received["Spawn"] += 1

    def _on_despawn(self, event: Despawn, participant: Any, topic: str) -> None:
        if participant is None and self.pickups.pop(event.entity_id, None) is not None:
            self.pickups_despawned.add(event.entity_id)
            self.events_received["Despawn"] += 1

    def _on_pickup_taken(self, event: PickupTaken, participant: Any, topic: str) -> None:
        if participant is None:
            self.events_received["PickupTaken"] += 1

    # -- what to draw ---------------------------------------------------------------------

    @property
    def me(self) -> PlayerState | None:
        """My player, predicted (the newest tick)."""
        return self.predictor.state if self.player_id is not None else None

    def me_smoothed(self) -> PlayerState | None:
        """My player between its last two predicted ticks, for frames between ticks."""
        now, before = self.me, self._previous
        if now is None or before is None:
            return now
        t = min(1.0, self.accumulator_s / TICK_S)
        if math.hypot(now.x - before.x, now.y - before.y) > 2.0:
            return now  # a respawn or a big correction: no sliding across the map
        return attrs.evolve(
            now,
            x=before.x + (now.x - before.x) * t,
            y=before.y + (now.y - before.y) * t,
            heading=lerp_angle(before.heading, now.heading, t),
        )

    def remote_view(self) -> tuple[list[PlayerState], list[NpcState]]:
        """Other players and the NPCs, interpolated at the render time."""
        players: list[PlayerState] = []
        npcs: list[NpcState] = []
        for eid, e in self.positions.interpolated().items():
            if isinstance(e, PlayerEntity):
                if eid != self.player_id:
                    players.append(player_state(eid, e))
            elif isinstance(e, NpcEntity):
                npcs.append(npc_state(eid, e))
        return players, npcs

    def environment_view(self) -> EnvironmentState:
        """The environment at its render time (a neutral default before the first one)."""
        for e in self.environment.interpolated().values():
            if isinstance(e, EnvironmentEntity):
                return environment_state(e)
        return _DEFAULT_ENVIRONMENT

    def scene(
        self,
        *,
        show_net_graph: bool = False,
        chat_input: str | None = None,
    ) -> Scene:
        """Everything to draw this frame."""
        players, npcs = self.remote_view()
        me = self.me_smoothed()
        if me is not None:
            players.append(me)
        return Scene(
            players=sorted(players, key=lambda p: p.id),
            npcs=npcs,
            pickups=list(self.pickups.values()),
            environment=self.environment_view(),
            local_player_id=self.player_id,
            chat_lines=self.chat.last(8),
            chat_input=chat_input,
            show_net_graph=show_net_graph,
            net_stats=self.net_stats(),
            net_history=self.net_history,
            clock_s=self.clock_s,
        )

    # -- statistics -----------------------------------------------------------------------

    def sample_rates(self, now: float | None = None) -> tuple[float, float]:
        """Record the byte counters now; returns (kbps in, kbps out) over the last second."""
        now = time.monotonic() if now is None else now
        if not self.connected:
            return 0.0, 0.0
        stats = self._link_stats()
        rates = self._rates
        rates.append((now, stats.bytes_received, stats.bytes_sent))
        while len(rates) > 2 and now - rates[1][0] >= RATE_WINDOW_S:
            rates.popleft()
        t0, in0, out0 = rates[0]
        span = now - t0
        if span <= 0:
            return 0.0, 0.0
        return (stats.bytes_received - in0) * 8 / span / 1000, (
            stats.bytes_sent - out0
        ) * 8 / span / 1000

    def _link_stats(self) -> ConnectionStats:
        """The game's connection: to the server, or in a peer-to-peer room to the host."""
        connection = self.room.host_connection
        return connection.endpoint.stats() if connection is not None else self.room.stats()

    def net_stats(self) -> NetStats:
        """The net graph's numbers, from the connection's real counters."""
        impairment = self.impairment
        sim_latency = impairment.latency_ms if impairment is not None else 0.0
        sim_loss = impairment.loss if impairment is not None else 0.0
        if not self.connected:
            return NetStats(mode="disconnected", sim_latency_ms=sim_latency, sim_loss=sim_loss)
        stats = self._link_stats()
        rates = self._rates
        kbps_in = kbps_out = 0.0
        span = rates[-1][0] - rates[0][0] if rates else 0.0
        # A shorter window would turn the join's burst (first snapshot, pickups) into a spike.
        if span >= MIN_RATE_WINDOW_S:
            kbps_in = (rates[-1][1] - rates[0][1]) * 8 / span / 1000
            kbps_out = (rates[-1][2] - rates[0][2]) * 8 / span / 1000
        snap = self.positions.snapshot_stats()
        return NetStats(
            mode="connected",
            rtt_ms=stats.rtt_ms or 0.0,
            loss=stats.recent_loss,
            kbps_in=kbps_in,
            kbps_out=kbps_out,
            snapshot_bytes=round(snap["snapshot_bytes"]),
            datagrams_per_snapshot=snap["datagrams_per_snapshot"],
            interp_buffer_ms=self.positions.buffer_depth_ms() or 0.0,
            sim_latency_ms=sim_latency,
            sim_loss=sim_loss,
            fps=self.fps,
        )

    def record_stats(self, now: float | None = None) -> NetStats:
        """Sample the counters and append a point to the net graph's history (call ~10 Hz)."""
        self.sample_rates(now)
        stats = self.net_stats()
        self.net_history.append(stats)
        return stats
