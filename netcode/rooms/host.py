"""The server-side game host: an authoritative tick loop that replicates worlds to a room.

Theory of operation
-------------------
A :class:`GameHost` attaches to one room of a :class:`~netcode.rooms.RoomServer`. It owns
two replicated worlds: ``world`` goes out on the ``position`` topic every tick, and
``environment`` on the ``environment`` topic every ``environment_every`` ticks (slower
state: light, weather, hazards). Each tick it

1. calls ``on_tick(tick, dt)``, where the game moves its entities;
2. for each participant and each world it is subscribed to, encodes a snapshot with that
   participant's own :class:`~netcode.replication.SnapshotEncoder` (deltas against what that
   participant applied) and sends each part as a SNAPSHOT frame. A part still queued
   when the next tick's part of the same index is sent is superseded, and one not sent
   within two ticks expires: when the link is backed up, stale snapshots are dropped, never
   delivered late;
3. sends an INPUT_ACK frame: the last input of that participant applied before the snapshot.

Baselines follow the client's RECEIPT frames (``topic_id: u16`` of the snapshot stream, then
a :class:`~netcode.replication.Receipt`), never a datagram's ACK: a part that arrived but
was not applied (no Replica yet, another epoch, over the client's caps) is simply sent
again, and a client that could not apply one asks for a resync. Each encoder (one per
participant and topic) gets its stream epoch from one counter per host, so a dropped and
recreated encoder (unsubscribe and subscribe again, a new connection) is a new epoch the
client's decoder can tell apart. Encoders live as long as the participant object and its
subscription: a session that resumes on a new link keeps them, and the receipts that come
back over the new link carry replication on from where the client is.

Inputs arrive as INPUT frames, are deduplicated per participant and queued (at most
``input_queue`` per participant; the oldest go first when a client sends faster). At the
start of each tick the host hands each participant's queued inputs to ``on_input(participant,
tick, data)`` once each, in order, but no more than the tick rate allows: a participant earns
one input per tick, banked up to ``max_inputs_per_tick`` (2 by default, so an input delayed
by jitter is caught up the next tick), so sending inputs faster never moves a player faster.
By default the host counts an input applied when ``on_input`` returns; a game that buffers
inputs itself sets ``auto_ack_inputs=False`` and calls ``input_applied``.

One participant's failure inside a tick (its queue full, a snapshot it cannot take, an
exception from the game's hooks for it) costs that participant only: it is counted, logged,
and after ``max_client_failures`` in a row the participant is disconnected; the tick and
every other participant go on. A SNAPSHOT frame's payload is
``pid: u16 (0), topic_id: u16, flags: u8, [topic name], part`` (the lossy DATA layout of
the rooms protocol, so the topic's name crosses the wire once); the part is described in
docs/REPLICATION.md.

When a participant joins it gets a HELLO on the HOST extension channel with the tick rate and
the server-clock time of tick 0, so the client can place every tick on the server's clock,
followed by the schema description of the host's entity types and the room's event types
(:mod:`netcode.replication.describe`), so a client without our classes can decode them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from netcode.core import Delivery, Endpoint
from netcode.errors import ProtocolError, SendQueueFull
from netcode.replication import (
    ClientView,
    Receipt,
    SchemaRegistry,
    SnapshotEncoder,
    World,
    decode_receipt_untrusted,
    encode_receipt,
)
from netcode.replication.describe import (
    SchemaDescription,
    decode_description_untrusted,
    encode_description,
)
from netcode.replication.inputs import InputReceiver, encode_input_ack
from netcode.rooms.describe import describe_game
from netcode.rooms.events import EventRegistry
from netcode.rooms.protocol import encode_lossy_down, encode_own_entity
from netcode.rooms.server import ExtensionChannel, RoomHost, ServerParticipant, ServerRoom
from netcode.wire import MAX_FRAME_PAYLOAD_BYTES, FrameType

__all__ = [
    "HELLO",
    "GameHost",
    "HostedClient",
    "decode_hello_untrusted",
    "decode_receipt_frame_untrusted",
    "encode_receipt_frame",
    "hello_description_untrusted",
    "piggyback_acks",
]

logger = logging.getLogger(__name__)

#: HELLO body: tick rate (Hz), server-clock time of tick 0, current tick; the schema
#: description follows (to the end of the message).
HELLO = struct.Struct("!ddI")


def piggyback_acks(endpoint: Endpoint, tick_rate: float) -> None:
    """Let acks wait for the next tick's datagram instead of going alone.

    Both ends of a game connection send every tick, so an ack owed now rides the next
    datagram if it may wait a little over one tick; an ack-only datagram (and the SCTP
    acknowledgement it draws) is then sent only when traffic stops.
    """
    delay = max(endpoint.config.max_ack_delay, 1.2 / tick_rate)
    endpoint.config = attrs.evolve(endpoint.config, max_ack_delay=delay)


_TOPIC_ID = struct.Struct("!H")


def encode_receipt_frame(topic_id: int, receipt: Receipt) -> bytes:
    """A RECEIPT frame's payload: the snapshot stream's topic id (as the SNAPSHOT frames
    name it), then the receipt."""
    return _TOPIC_ID.pack(topic_id) + encode_receipt(receipt)


def decode_receipt_frame_untrusted(payload: bytes) -> tuple[int, Receipt]:
    if len(payload) < _TOPIC_ID.size:
        raise ProtocolError("RECEIPT frame too short")
    (topic_id,) = _TOPIC_ID.unpack_from(payload)
    return topic_id, decode_receipt_untrusted(payload[_TOPIC_ID.size :])


def decode_hello_untrusted(body: bytes) -> tuple[float, float, int]:
    """(tick rate, server-clock time of tick 0, current tick) of a HELLO."""
    if len(body) < HELLO.size:
        raise ProtocolError(f"HELLO of {len(body)} bytes, expected at least {HELLO.size}")
    tick_rate, epoch, tick = HELLO.unpack_from(body)
    if not 0 < tick_rate <= 1000 or epoch != epoch:
        raise ProtocolError("HELLO carries an impossible tick rate or clock")
    return tick_rate, epoch, tick


def hello_description_untrusted(body: bytes) -> SchemaDescription | None:
    """The schema description a HELLO carries after the clock (None if it carries none)."""
    if len(body) <= HELLO.size:
        return None
    return decode_description_untrusted(body[HELLO.size :])


class HostedClient:
    """What the host keeps per participant."""

    def __init__(self, participant: ServerParticipant) -> None:
        self.participant = participant
        self.encoders: dict[str, SnapshotEncoder] = {}
        #: snapshot topic by the topic id its SNAPSHOT frames carry (receipts name it)
        self.topic_ids: dict[int, str] = {}
        self.receipts = 0  #: RECEIPT frames received
        self.inputs = InputReceiver()
        #: inputs received and not yet handed to the game, oldest first
        self.input_queue: deque[tuple[int, bytes]] = deque()
        #: inputs the participant may still have applied (one more each tick, capped)
        self.input_credit = 1.0
        #: inputs dropped because the participant sent faster than they are applied
        self.inputs_dropped = 0
        #: ticks in a row in which serving this participant failed
        self.failures = 0
        self.snapshot_bytes = 0  #: bytes of SNAPSHOT frames sent to this client
        self.parts_sent = 0
        self.parts_lost = 0
        #: ticks this client was sent nothing because it acknowledged nothing (see GameHost)
        self.ticks_held_back = 0
        #: whether it is being sent one tick in ``GameHost.unacked_every`` now
        self.held_back = False


class GameHost(RoomHost):
    """An authoritative tick loop replicating ``world`` and ``environment`` to a room.

    The server side of a game: it owns the replicated worlds, receives every player's
    inputs, runs the game's update each tick and sends each participant the snapshots it
    needs. Clients see the worlds through a :class:`~netcode.rooms.replica.Replica`.
    A whole game in one file: docs/examples/game.py; the model: docs/REPLICATION.md.

    Usage::

        from netcode import GameHost, RoomServer, entity, qfloat

        @entity(type_id=1)
        class Player:
            x: float = qfloat(0, 100, 0.01)
            y: float = qfloat(0, 100, 0.01)

        server = RoomServer(api_key, api_secret)
        await server.start("127.0.0.1", 7880)
        host = GameHost(tick_rate=30)
        players: dict[int, int] = {}  # participant pid -> entity id

        def on_join(participant):
            players[participant.pid] = eid = host.world.spawn(Player(x=50, y=50))
            host.assign_entity(participant, eid)  # the client's Replica.own_entity_id

        def on_input(participant, tick, data):  # each input once, in order
            eid = players[participant.pid]
            host.world.update(eid, x=host.world.get(eid).x + (data[0] - 1) * 0.1)

        def on_leave(participant):
            host.world.despawn(players.pop(participant.pid))

        host.on_join, host.on_input, host.on_leave = on_join, on_input, on_leave
        host.on_tick = lambda tick, dt: None  # move NPCs, apply the rules...
        host.attach(server.room("arena"))  # starts ticking

    Hooks (assign a function to the attribute; a subclass may override the RoomHost
    methods too):

    - ``on_tick(tick, dt)``: once per tick after the inputs, before the snapshots are
      taken: advance the game by ``dt`` seconds (``1 / tick_rate``).
    - ``on_input(participant, tick, data)``: one input (the bytes the client passed to
      ``Replica.send_input(tick, data)``), each exactly once and in tick order, at most
      ``max_inputs_per_tick`` per participant per tick. The input counts as applied when
      the hook returns (``auto_ack_inputs=False``: call :meth:`input_applied` yourself);
      the client's prediction replays the inputs applied after each snapshot.
    - ``on_join(participant)`` / ``on_leave(participant)``: a participant arrived (it
      already has the tick clock) or left for good (a dropped link only leaves after
      the server's grace period; ``participant_reconnecting``/``participant_reconnected``
      report the drop and the resume).
    - ``on_frame(participant, frame_type, data)``: frames of application types; without
      it such a frame is a protocol error against the participant.
    - ``event_received(participant, event, topic)``: a game event a client sent (override
      in a subclass; the room relays it to the others too).

    Sending: :meth:`send_event` (reliable game events), :meth:`assign_entity` (which
    entity is the participant's own). Entities: ``world.spawn(obj)``,
    ``world.update(eid, **fields)``, ``world.despawn(eid)``; every participant subscribed
    to ``position`` gets ``world`` every tick, ``environment`` every ``environment_every``
    ticks.

    Parameters: ``tick_rate`` (Hz, up to 240); ``registry``: the entity types (default:
    :data:`~netcode.replication.DEFAULT_REGISTRY`, where ``@entity`` registers);
    ``budget_bytes_per_tick``: bytes of snapshot per participant per tick (default: as
    many datagrams as needed); ``view_factory(participant)``: a ClientView choosing what
    that participant sees (interest management); ``history_depth``: states kept for deltas;
    ``max_inputs_per_tick``, ``input_queue``: the input rate limit; ``max_client_failures``:
    failed ticks in a row before a participant is disconnected.

    A participant that acknowledged none of our datagrams for ``unacked_after`` seconds (it
    stalled, its path broke one way, or it does not read) is sent its tick (INPUT_ACK and
    snapshots) only every ``unacked_every`` ticks, until it acknowledges one: a client that
    cannot take the stream costs a probe, not a full stream of snapshots encoded from
    scratch (it has receipted no baseline). The server lets such a link go after
    ``RoomServer(unacked_after=...)``.
    """

    sends_every_tick = True

    def __init__(
        self,
        *,
        tick_rate: float = 30.0,
        environment_every: int = 6,
        registry: SchemaRegistry | None = None,
        history_depth: int = 32,
        budget_bytes_per_tick: int | None = None,
        view_factory: Callable[[ServerParticipant], ClientView] | None = None,
        auto_ack_inputs: bool = True,
        max_inputs_per_tick: int = 2,
        input_queue: int = 8,
        max_client_failures: int = 3,
        unacked_after: float = 2.0,
        unacked_every: int = 8,
    ) -> None:
        if not 0 < tick_rate <= 240:
            raise ValueError(f"tick_rate must be within (0, 240], got {tick_rate}")
        if not 1 <= max_inputs_per_tick <= 16:
            raise ValueError(f"max_inputs_per_tick must be in 1..16, got {max_inputs_per_tick}")
        if not max_inputs_per_tick <= input_queue <= 255:
            raise ValueError(f"input_queue must be in max_inputs_per_tick..255, got {input_queue}")
        #: inputs a participant may have applied in one tick (one per tick on average)
        self.max_inputs_per_tick = max_inputs_per_tick
        #: inputs queued per participant before the oldest are dropped
        self.input_queue = input_queue
        #: failed ticks in a row after which a participant is disconnected
        self.max_client_failures = max_client_failures
        if not unacked_after > 0 or not 1 <= unacked_every <= 255:
            raise ValueError(
                f"unacked_after must be > 0 and unacked_every in 1..255, "
                f"got {unacked_after!r} and {unacked_every!r}"
            )
        #: seconds without an acknowledgement after which a participant's ticks thin out
        self.unacked_after = unacked_after
        #: then it is sent one tick in this many
        self.unacked_every = unacked_every
        #: per-participant failures inside ticks (each cost only that participant)
        self.client_failures = 0
        self.tick_rate = tick_rate
        self.environment_every = environment_every
        self.registry = registry
        self.history_depth = history_depth
        self.budget_bytes_per_tick = budget_bytes_per_tick
        self.view_factory = view_factory
        #: count an input applied when on_input returns; else the game calls input_applied()
        self.auto_ack_inputs = auto_ack_inputs
        self.world = World(registry)
        self.environment = World(registry)
        #: the room's game-event types, described to participants in the HELLO
        self.event_registry: EventRegistry | None = None
        self.clients: dict[int, HostedClient] = {}
        self.tick = 0
        self.epoch = 0.0
        self.room: ServerRoom | None = None
        #: processing time of recent ticks, milliseconds
        self.tick_durations_ms: deque[float] = deque(maxlen=20_000)
        #: process CPU time of recent ticks, milliseconds
        self.tick_cpu_ms: deque[float] = deque(maxlen=20_000)
        #: ticks that started more than one interval late, and ticks skipped to catch up
        self.ticks_late = 0
        self.ticks_skipped = 0
        self.ticks_run = 0
        # stream epochs: one counter per host, from a random start so that a restarted
        # host does not repeat the epochs a client's decoder just followed
        self._epoch = secrets.randbelow(0x10000)
        self._task: asyncio.Task[None] | None = None
        # game callbacks: assign or override
        self.on_tick: Callable[[int, float], None] = lambda tick, dt: None
        self.on_input: Callable[[ServerParticipant, int, bytes], None] = lambda p, t, d: None
        self.on_join: Callable[[ServerParticipant], None] = lambda p: None
        self.on_leave: Callable[[ServerParticipant], None] = lambda p: None
        self.on_frame: Callable[[ServerParticipant, int, bytes], None] | None = None
        #: (participant pid, topic) -> the entity assigned to it (see assign_entity)
        self.own_entities: dict[tuple[int, str], int] = {}

    # ------------------------------------------------------------------ lifecycle

    def attach(self, room: ServerRoom) -> None:
        """Attach to ``room`` and start ticking (call from the event loop)."""
        self.room = room
        loop = asyncio.get_running_loop()
        self.epoch = loop.time()
        room.attach_host(self)
        self._task = loop.create_task(self._run())

    async def stop(self) -> None:
        self._stop_pacing()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def close(self) -> None:
        self._stop_pacing()
        if self._task is not None:
            self._task.cancel()

    def _stop_pacing(self) -> None:
        # no more ticks: events go at once again, and what waits for a tick goes now
        self.sends_every_tick = False
        self._release_events()

    def _release_events(self) -> None:
        """Let every participant's events held for the tick go (everyone in the room: one
        the game stopped serving is still sent the room's events)."""
        participants = self.room.participants.values() if self.room is not None else ()
        for participant in list(participants):
            participant.release_events()

    @property
    def interval(self) -> float:
        return 1.0 / self.tick_rate

    # ------------------------------------------------------------------ RoomHost

    def participant_joined(self, participant: ServerParticipant) -> None:
        self.clients[participant.pid] = HostedClient(participant)
        piggyback_acks(participant.connection.endpoint, self.tick_rate)
        loop_time = asyncio.get_running_loop().time()
        current = int((loop_time - self.epoch) * self.tick_rate)
        participant.send_extension(
            ExtensionChannel.HOST,
            HELLO.pack(self.tick_rate, self.epoch, current) + self._description(),
        )
        self.on_join(participant)

    def _description(self) -> bytes:
        """The schema description for a HELLO (b"" for types it cannot express)."""
        try:
            return encode_description(describe_game(self.registry, self.event_registry))
        except (TypeError, ValueError) as exc:  # a custom codec, more than 255 types...
            logger.warning("HELLO without a schema description: %s", exc)
            return b""

    def participant_left(self, participant: ServerParticipant) -> None:
        for key in [key for key in self.own_entities if key[0] == participant.pid]:
            del self.own_entities[key]
        if self.clients.pop(participant.pid, None) is not None:
            self.on_leave(participant)

    def frame_received(self, participant: ServerParticipant, frame_type: int, data: bytes) -> None:
        client = self.clients.get(participant.pid)
        if client is None:
            return
        if frame_type == FrameType.INPUT:
            queue = client.input_queue
            for tick, payload in client.inputs.receive(data):
                if len(queue) >= self.input_queue:
                    queue.popleft()
                    if not client.inputs_dropped:
                        logger.warning(
                            "%s: sends inputs faster than one a tick; dropping the oldest "
                            "past %d queued (throttled)",
                            participant.identity,
                            self.input_queue,
                        )
                    client.inputs_dropped += 1
                queue.append((tick, payload))
        elif frame_type == FrameType.RECEIPT:
            topic_id, receipt = decode_receipt_frame_untrusted(data)
            client.receipts += 1
            topic = client.topic_ids.get(topic_id)
            if topic is None:
                raise ProtocolError(f"RECEIPT for topic id {topic_id}, never sent")
            # the client decoded a SNAPSHOT frame naming this id: it holds the binding
            participant.topics_out.confirm(topic_id)
            encoder = client.encoders.get(topic)
            if encoder is not None:
                encoder.on_receipt(receipt)
        elif self.on_frame is not None:
            self.on_frame(participant, frame_type, data)
        else:
            raise ProtocolError(f"unexpected frame type {frame_type} for the game host")

    def assign_entity(
        self, participant: ServerParticipant, entity_id: int | None, *, topic: str = "position"
    ) -> None:
        """Tell ``participant`` that ``entity_id`` (None: no entity) is its own.

        The participant's :class:`~netcode.rooms.replica.Replica` on ``topic`` then has it
        as ``own_entity_id`` (and emits ``own_entity``), so the client knows which entity
        to predict and to centre its camera on. ``topic`` is ``position`` (:attr:`world`)
        or ``environment``. The message is reliable and survives a resume. Despawning the
        entity does not clear the assignment: assign the new one when the player respawns.
        Raises ValueError for an entity not in that world.
        """
        worlds = {"position": self.world, "environment": self.environment}
        world = worlds.get(topic)
        if world is None:
            raise ValueError(f"topic must be 'position' or 'environment', not {topic!r}")
        if entity_id is not None and entity_id not in world:
            raise ValueError(f"entity {entity_id} is not in the {topic!r} world")
        key = (participant.pid, topic)
        if entity_id is None:
            self.own_entities.pop(key, None)
        else:
            self.own_entities[key] = entity_id
        participant.send_extension(
            ExtensionChannel.HOST_ENTITY, encode_own_entity(topic, entity_id)
        )

    def entity_of(self, participant: ServerParticipant, topic: str = "position") -> int | None:
        """The entity assigned to ``participant`` with :meth:`assign_entity`, or None."""
        return self.own_entities.get((participant.pid, topic))

    def input_applied(self, participant: ServerParticipant, tick: int) -> None:
        """The game applied ``participant``'s input of ``tick`` (with auto_ack_inputs off)."""
        client = self.clients.get(participant.pid)
        if client is not None:
            client.inputs.last_applied = tick

    def send_event(
        self,
        event: Any,
        *,
        topic: str = "",
        destinations: ServerParticipant | Iterable[ServerParticipant] | None = None,
    ) -> None:
        """Send a game event to everyone (or to ``destinations``: participants, or one
        participant alone), reliably and in order."""
        if self.room is not None:
            if isinstance(destinations, ServerParticipant):
                destinations = [destinations]
            pids = [p.pid for p in destinations] if destinations is not None else []
            if destinations is not None and not pids:
                return
            self.room.send_event(event, topic=topic, destination_pids=pids)

    # ------------------------------------------------------------------ ticking

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.interval
        self.tick = int((loop.time() - self.epoch) * self.tick_rate)
        while True:
            due = self.epoch + self.tick * interval
            now = loop.time()
            if now < due:
                await asyncio.sleep(due - now)
                now = loop.time()
            late = now - due
            if late > interval:
                self.ticks_late += 1
                if late > 4 * interval:  # far behind: skip ticks rather than run a burst
                    skip = int(late / interval)
                    self.tick += skip
                    self.ticks_skipped += skip
            try:
                self.run_tick(now)
            except Exception:
                logger.exception("tick %d failed", self.tick)
            self.tick += 1

    def run_tick(self, now: float) -> None:
        """Run one tick at loop time ``now``: the game's update, then snapshots."""
        started, cpu_started = time.perf_counter(), time.process_time()
        tick = self.tick
        expires = now + 2 * self.interval
        streams: list[tuple[str, World]] = [("position", self.world)]
        if tick % self.environment_every == 0:
            streams.append(("environment", self.environment))
        failed: set[int] = set()
        for client in list(self.clients.values()):
            if not client.participant.left.is_set() and not self._guarded(
                client, self._apply_inputs, client
            ):
                failed.add(client.participant.pid)
        self.on_tick(tick, self.interval)
        self._release_events()  # the events relayed since the last tick ride its datagram
        for client in list(self.clients.values()):
            participant = client.participant
            if participant.left.is_set() or participant.reconnecting:
                continue  # a reconnecting client's encoders wait for its receipts
            if self._held_back(client, tick):
                continue
            ok = self._guarded(client, self._send_tick, client, tick, streams, expires)
            if ok and participant.pid not in failed:
                client.failures = 0
        self.ticks_run += 1
        duration_ms = (time.perf_counter() - started) * 1e3
        cpu_ms = (time.process_time() - cpu_started) * 1e3
        self.tick_durations_ms.append(duration_ms)
        self.tick_cpu_ms.append(cpu_ms)
        trace = self.room.server.trace if self.room is not None else None
        if trace is not None:
            fields = {"tick": tick, "duration_ms": duration_ms, "cpu_ms": cpu_ms}
            trace.record("tick", now, {**fields, "budget_ms": 1000 * self.interval})

    def _held_back(self, client: HostedClient, tick: int) -> bool:
        """Whether ``client``, which acknowledged nothing for ``unacked_after``, skips this
        tick (it is sent one in ``unacked_every``)."""
        participant = client.participant
        connection = participant.connection
        unacked = connection.unacked_for(connection.now()) > self.unacked_after
        if unacked != client.held_back:
            client.held_back = unacked
            if unacked:
                logger.warning(
                    "%s: acknowledged none of our datagrams for %.1f s; sending it one "
                    "tick in %d until it does (throttled)",
                    participant.identity,
                    self.unacked_after,
                    self.unacked_every,
                )
            else:
                logger.info("%s: acknowledges again; sending every tick", participant.identity)
        if unacked and tick % self.unacked_every:
            client.ticks_held_back += 1
            return True
        return False

    def _apply_inputs(self, client: HostedClient) -> None:
        client.input_credit = min(float(self.max_inputs_per_tick), client.input_credit + 1.0)
        queue = client.input_queue
        while queue and client.input_credit >= 1.0:
            tick, payload = queue.popleft()
            client.input_credit -= 1.0
            self.on_input(client.participant, tick, payload)
            if self.auto_ack_inputs:
                client.inputs.last_applied = tick

    def _send_tick(
        self, client: HostedClient, tick: int, streams: list[tuple[str, World]], expires: float
    ) -> None:
        participant = client.participant
        # The INPUT_ACK goes first, so it is known when the client sees the snapshot.
        participant.send_frame(
            FrameType.INPUT_ACK,
            encode_input_ack(tick, client.inputs.last_applied),
            supersede_key="input_ack",
            expires_at=expires,
        )
        for topic, world in streams:
            if participant.subscribes_to(topic):
                self._send_snapshot(client, topic, world, tick, expires)
            else:
                client.encoders.pop(topic, None)

    def _guarded(self, client: HostedClient, work: Callable[..., None], *args: Any) -> bool:
        """Run one participant's share of the tick; a failure costs that participant only."""
        try:
            work(*args)
        except Exception as exc:
            participant = client.participant
            client.failures += 1
            self.client_failures += 1
            logger.warning(
                "tick %d: serving %s failed (%d in a row): %s",
                self.tick,
                participant.identity,
                client.failures,
                exc,
                exc_info=not isinstance(exc, SendQueueFull),
            )
            if client.failures >= self.max_client_failures:
                code = "slow_consumer" if isinstance(exc, SendQueueFull) else "server_error"
                participant.disconnect(code, f"the game host could not serve you: {exc}")
            return False
        return True

    def next_epoch(self) -> int:
        """A stream epoch no encoder of this host had recently (16 bits, wrapping)."""
        self._epoch = (self._epoch + 1) & 0xFFFF
        return self._epoch

    def _send_snapshot(
        self, client: HostedClient, topic: str, world: World, tick: int, expires: float
    ) -> None:
        participant = client.participant
        encoder = client.encoders.get(topic)
        topic_id, inline = participant.topics_out.lossy_ref(topic)
        client.topic_ids[topic_id] = topic
        if encoder is None:
            view = self.view_factory(participant) if self.view_factory else ClientView()
            if self.budget_bytes_per_tick is not None:
                view.budget_bytes_per_tick = self.budget_bytes_per_tick
            encoder = client.encoders[topic] = SnapshotEncoder(
                world,
                view,
                # room for the frame's topic header and the topic's name inline
                max_part_bytes=MAX_FRAME_PAYLOAD_BYTES - 6 - len(topic.encode()),
                history_depth=self.history_depth,
                epoch=self.next_epoch(),
                next_epoch=self.next_epoch,
            )
        for index, part in enumerate(encoder.encode(tick)):
            payload = encode_lossy_down(0, topic_id, inline, False, part.payload)

            def delivered(result: Delivery) -> None:
                # statistics only: baselines (and the topic's name, which goes inline until
                # a receipt names its id) follow the client's receipts, not datagram ACKs
                if result is not Delivery.ACKED:
                    client.parts_lost += 1

            participant.send_frame(
                FrameType.SNAPSHOT,
                payload,
                topic=topic,
                on_delivery=delivered,
                supersede_key=("snapshot", topic, index),
                expires_at=expires,
            )
            client.snapshot_bytes += len(payload)
            client.parts_sent += 1

    # ------------------------------------------------------------------ statistics

    def tick_stats(self) -> dict[str, Any]:
        """Tick duration percentiles and whether the tick rate was held."""
        durations = sorted(self.tick_durations_ms)
        cpu = sorted(self.tick_cpu_ms)

        def pct(values: list[float], p: float) -> float | None:
            return values[min(len(values) - 1, int(len(values) * p))] if values else None

        late_fraction = self.ticks_late / self.ticks_run if self.ticks_run else 0.0
        return {
            "ticks": self.ticks_run,
            "tick_rate_hz": self.tick_rate,
            "tick_p50_ms": pct(durations, 0.50),
            "tick_p99_ms": pct(durations, 0.99),
            "cpu_per_tick_ms": sum(cpu) / len(cpu) if cpu else None,
            "ticks_late": self.ticks_late,
            "ticks_skipped": self.ticks_skipped,
            # held: no ticks skipped, at most 1% late, and p99 work fits in the interval
            "tick_rate_held": self.ticks_skipped == 0
            and late_fraction <= 0.01
            and (pct(durations, 0.99) or 0.0) < 1000 * self.interval,
        }
