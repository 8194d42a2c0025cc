"""The client's view of a game host's replicated world: a :class:`Replica` per topic.

A Replica decodes the SNAPSHOT frames of one topic (``position`` by default) into entities,
places every tick on the server's clock (from the host's HELLO and the connection's
measured clock offset), and renders remote entities interpolated ``interpolation_delay``
seconds in the past. It also sends the local player's inputs, redundantly, and reports the
last input the server applied for each snapshot tick, which is what
:class:`~netcode.replication.Predictor` needs to reconcile the local player.

Every Room has one hub (created by the first Replica, or by :func:`install`) that decodes
every snapshot topic from the first part on, whether or not a Replica has been created for
it yet, and answers every part with a RECEIPT frame (the parts its decoder applied, its
limits, or a resync request). The server adopts a delta baseline only from receipts, so a
part that arrives before there is a hub, or that the decoder refuses, is merely sent again
or resynced, never assumed. Receipts wait up to half a tick for an INPUT frame to ride
with (``receipt_delay``), and repeat each applied part for a few ticks.

The host's HELLO carries its schema description; the hub checks it against the client's own
entity and event registries. If an entity type differs (a field's range, precision, kind,
group...), the hub records the mismatch (``Replica.schema_error``, naming the type and the
field, and the ``schema_mismatch`` event) and decodes no snapshot: it would misread them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from netcode.errors import ProtocolError
from netcode.replication import (
    DEFAULT_REGISTRY,
    EntityDespawned,
    EntitySpawned,
    SchemaRegistry,
    SnapshotDecoder,
)
from netcode.replication.clock import ServerClock, TickTimeline
from netcode.replication.describe import SchemaMismatch
from netcode.replication.inputs import InputSender, decode_input_ack_untrusted
from netcode.replication.interpolation import sample
from netcode.rooms.client import DisconnectedError, Room
from netcode.rooms.describe import game_mismatches
from netcode.rooms.emitter import EventEmitter
from netcode.rooms.host import (
    decode_hello_untrusted,
    encode_receipt_frame,
    hello_description_untrusted,
    piggyback_acks,
)
from netcode.rooms.protocol import decode_lossy_down_untrusted, decode_own_entity_untrusted
from netcode.rooms.server import ExtensionChannel
from netcode.wire import FrameType

__all__ = ["Replica"]

logger = logging.getLogger(__name__)


class _Hub:
    """Per room: decoders per snapshot topic, the tick timeline and input acks."""

    def __init__(self, room: Room, registry: SchemaRegistry) -> None:
        self.room = room
        self.registry = registry
        self.decoders: dict[str, SnapshotDecoder] = {}
        self.replicas: dict[str, Replica] = {}
        self.timeline: TickTimeline | None = None
        self.input_acks: dict[int, int | None] = {}
        self._ack_order: deque[int] = deque()
        self.history_depth = 32
        #: snapshot topic -> the topic id its SNAPSHOT frames carry (receipts name it)
        self.topic_ids: dict[str, int] = {}
        #: seconds a receipt may wait for an input to ride with; None: half a tick
        self.receipt_delay: float | None = None
        self._receipts_due: set[str] = set()
        self._receipt_timer: asyncio.TimerHandle | None = None
        #: how the server's entity types differ from ours (None: they agree, or not told)
        self.schema_error: SchemaMismatch | None = None
        #: how the server's event types differ from ours (None: they agree, or not told)
        self.event_schema_error: SchemaMismatch | None = None
        room.frame_handlers[FrameType.SNAPSHOT] = self._on_snapshot
        room.frame_handlers[FrameType.INPUT_ACK] = self._on_input_ack
        room.extension_handlers[ExtensionChannel.HOST] = self._on_hello
        #: topic -> the entity the game host assigned to this client (None: none)
        self.own_entities: dict[str, int | None] = {}
        room.extension_handlers[ExtensionChannel.HOST_ENTITY] = self._on_own_entity

    def decoder(self, topic: str) -> SnapshotDecoder:
        decoder = self.decoders.get(topic)
        if decoder is None:
            decoder = self.decoders[topic] = SnapshotDecoder(
                self.registry, history_depth=self.history_depth
            )
        return decoder

    def _on_snapshot(self, payload: bytes) -> None:
        if self.schema_error is not None:
            return  # our classes would misread the server's entities: decode nothing
        _, topic_id, inline, _, part = decode_lossy_down_untrusted(payload)
        topic = self.room.host_topics_in.resolve(topic_id, inline)
        if self.room.drop_unsubscribed(topic):
            return
        self.topic_ids[topic] = topic_id
        decoder = self.decoder(topic)
        try:
            received = decoder.receive_part(part)
        except ProtocolError:
            self._receipt_due(topic)  # it asks for a resync
            self._drain(topic, decoder)
            raise
        if not received.current:
            return  # a late part of a stream the server has ended
        self._receipt_due(topic)
        replica = self.replicas.get(topic)
        if replica is not None:
            replica._on_part(received.tick, len(payload), received.part_count)
        else:
            self._drain(topic, decoder)

    def _drain(self, topic: str, decoder: SnapshotDecoder) -> None:
        replica = self.replicas.get(topic)
        if replica is not None:
            replica._emit_events()
        else:
            while decoder.next_event() is not None:
                pass

    def _receipt_due(self, topic: str) -> None:
        self._receipts_due.add(topic)
        delay = self.receipt_delay
        if delay is None:
            delay = 0.5 / self.timeline.tick_rate if self.timeline is not None else 0.0
        if delay <= 0:
            self.send_receipts()
        elif self._receipt_timer is None:
            loop = asyncio.get_running_loop()
            self._receipt_timer = loop.call_later(delay, self.send_receipts)

    def send_receipts(self) -> None:
        """Send the receipts due now (Replica.send_input calls this to share its datagram)."""
        if self._receipt_timer is not None:
            self._receipt_timer.cancel()
            self._receipt_timer = None
        due, self._receipts_due = self._receipts_due, set()
        if self.room.host_connection is None:
            return
        for topic in sorted(due):
            receipt = self.decoders[topic].receipt()
            if receipt is None:
                continue
            payload = encode_receipt_frame(self.topic_ids[topic], receipt)
            try:
                self.room.send_frame(FrameType.RECEIPT, payload, supersede_key=("receipt", topic))
            except DisconnectedError:
                return

    def _on_input_ack(self, payload: bytes) -> None:
        snapshot_tick, last_input = decode_input_ack_untrusted(payload)
        if snapshot_tick not in self.input_acks:
            self._ack_order.append(snapshot_tick)
            if len(self._ack_order) > 256:
                self.input_acks.pop(self._ack_order.popleft(), None)
        self.input_acks[snapshot_tick] = last_input
        if last_input is not None:
            for replica in self.replicas.values():
                replica.inputs.acknowledge(last_input)

    def _on_hello(self, sender_pid: int, body: bytes) -> None:
        tick_rate, epoch, _ = decode_hello_untrusted(body)
        self.timeline = TickTimeline(tick_rate, epoch)
        connection = self.room.host_connection
        if connection is not None:
            piggyback_acks(connection.endpoint, tick_rate)
        description = hello_description_untrusted(body)
        if description is None:
            return
        events = self.room.events.registry if self.room.events is not None else None
        entities, event_problems = game_mismatches(description, self.registry, events)
        if event_problems:
            self.event_schema_error = SchemaMismatch("; ".join(event_problems))
            logger.error("the server's event types differ: %s", self.event_schema_error)
        if entities:
            self.schema_error = error = SchemaMismatch("; ".join(entities))
            logger.error("the server's entity types differ; decoding no snapshot: %s", error)
            self.decoders.clear()
            for replica in list(self.replicas.values()):
                replica.emit("schema_mismatch", error)

    def _on_own_entity(self, sender_pid: int, body: bytes) -> None:
        if sender_pid != 0:
            raise ProtocolError("HOST_ENTITY from a participant, not the server")
        topic, entity_id = decode_own_entity_untrusted(body)
        self.own_entities[topic] = entity_id
        replica = self.replicas.get(topic)
        if replica is not None:
            replica.emit("own_entity", entity_id)


def _hub(room: Room, registry: SchemaRegistry | None) -> _Hub:
    hub: _Hub | None = getattr(room, "_replication_hub", None)
    if hub is None:
        hub = _Hub(room, registry or DEFAULT_REGISTRY)
        room._replication_hub = hub  # type: ignore[attr-defined]
    return hub


def install(room: Room, registry: SchemaRegistry | None = None) -> None:
    """Start decoding snapshots in ``room`` (call before ``connect``; Replica does it too)."""
    _hub(room, registry)


class Replica(EventEmitter):
    """Entities replicated on one topic, as this client sees them.

    Events: ``spawned(entity_id, entity)``, ``despawned(entity_id)``, ``snapshot(tick)``,
    ``schema_mismatch(SchemaMismatch)`` (the server's entity types differ from this
    client's: nothing is decoded, see :attr:`schema_error`).

    ``own_entity(entity_id)``: the game host told this client which entity is its own
    (see :attr:`own_entity_id`; None when it has none any more).

    Usage (the client side of the :class:`~netcode.rooms.host.GameHost` example; a whole
    game in one file: docs/examples/game.py)::

        room = Room()
        replica = Replica(room)  # topic "position"; create it before connecting
        predictor = Predictor(apply_input)  # the same apply_input the server runs
        await room.connect(url, token)

        tick = 0
        while room.isconnected():  # the game's fixed-rate loop
            tick += 1
            data = read_controls()  # bytes: the game's own input format
            replica.send_input(tick, data)
            eid = replica.own_entity_id  # from host.assign_entity(participant, eid)
            if eid is not None and eid in replica:
                if predictor.state is None:
                    predictor.reset(replica.get(eid))
                server_tick = replica.decoder.tick_of(eid)
                applied = replica.last_input_applied(server_tick)
                if applied is not None:
                    predictor.reconcile(replica.get(eid), applied)
                me = predictor.predict(tick, data)  # draw the local player here
            others = replica.interpolated()  # {entity id: entity}, 100 ms in the past
            await asyncio.sleep(1 / 30)

    What it offers: :meth:`entities` and :meth:`get` (the newest states received),
    :meth:`interpolated` (every entity at the render time, smooth), :meth:`send_input`
    and :meth:`last_input_applied` (for prediction), :attr:`own_entity_id`,
    :meth:`server_time` and :meth:`render_tick` (the server's clock), and
    :meth:`snapshot_stats` / :meth:`buffer_depth_ms` for a net graph.
    """

    EVENTS = frozenset({"spawned", "despawned", "snapshot", "schema_mismatch", "own_entity"})

    def __init__(
        self,
        room: Room,
        *,
        topic: str = "position",
        registry: SchemaRegistry | None = None,
        interpolation_delay: float = 0.1,
        max_extrapolation: float = 0.1,
        input_redundancy: int = 8,
        max_entities: int | None = None,
    ) -> None:
        super().__init__()
        self.room = room
        self.topic = topic
        self.hub = _hub(room, registry)
        if topic in self.hub.replicas:
            raise ValueError(f"room already has a Replica for topic {topic!r}")
        self.hub.replicas[topic] = self
        if max_entities is not None:
            # announced in the receipts: the server never shows this client more
            self.hub.decoder(topic).max_entities = max_entities
        self.interpolation_delay = interpolation_delay
        self.max_extrapolation = max_extrapolation
        self.clock = ServerClock()
        self.inputs = InputSender(redundancy=input_redundancy)
        self.latest_tick: int | None = None
        #: (tick, bytes, parts) of recent snapshots, for the net graph
        self._snapshots: deque[list[int]] = deque(maxlen=64)
        self.snapshots_received = 0

    @property
    def decoder(self) -> SnapshotDecoder:
        return self.hub.decoder(self.topic)

    @property
    def own_entity_id(self) -> int | None:
        """The entity the game host assigned to this client on this topic
        (``GameHost.assign_entity``), or None. It may not have arrived in a snapshot yet:
        check ``entity_id in replica``."""
        return self.hub.own_entities.get(self.topic)

    def own_entity(self) -> Any:
        """The newest state received of :attr:`own_entity_id`, or None."""
        eid = self.own_entity_id
        return None if eid is None or eid not in self.decoder else self.decoder.get(eid)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self.decoder

    @property
    def schema_error(self) -> SchemaMismatch | None:
        """How the server's entity types differ from this client's (None: they agree).

        The message names each differing type and its first differing field.
        """
        return self.hub.schema_error

    # ------------------------------------------------------------------ state

    def entity_ids(self) -> list[int]:
        return self.decoder.entity_ids()

    def get(self, entity_id: int) -> Any:
        """The newest state received of an entity."""
        return self.decoder.get(entity_id)

    def entities(self) -> dict[int, Any]:
        """Every entity at its newest received state."""
        decoder = self.decoder
        return {eid: decoder.get(eid) for eid in decoder.entity_ids()}

    def server_time(self, local_now: float | None = None) -> float | None:
        """The server's clock now, as estimated from the connection's pings."""
        now = self._now() if local_now is None else local_now
        connection = self.room.host_connection
        if connection is not None:
            self.clock.update(now, connection.endpoint.clock.offset)
        return self.clock.server_time(now)

    def render_tick(self, local_now: float | None = None) -> float | None:
        """The fractional tick to render remote entities at (server time minus the delay)."""
        timeline = self.hub.timeline
        server_now = self.server_time(local_now)
        if timeline is None or server_now is None:
            return None
        return timeline.tick_at(server_now - self.interpolation_delay)

    def interpolated(self, local_now: float | None = None) -> dict[int, Any]:
        """Every entity at the render time, interpolated between received states."""
        decoder = self.decoder
        tick = self.render_tick(local_now)
        if tick is None:
            return self.entities()
        timeline = self.hub.timeline
        assert timeline is not None
        max_ticks = self.max_extrapolation * timeline.tick_rate
        registry = self.hub.registry
        out = {}
        for eid in decoder.entity_ids():
            schema = registry[decoder.type_id(eid)]
            out[eid] = sample(
                schema,
                decoder.history(eid),
                tick,
                max_extrapolation_ticks=max_ticks,
                decode=schema.from_slots,
                known_until=decoder.known_until(eid),
            )
        return out

    def last_input_applied(self, snapshot_tick: int) -> int | None:
        """The last input the server had applied when it took the snapshot of that tick.

        None if no input had been applied yet, or if that tick's INPUT_ACK never arrived
        (then use a later snapshot: every tick carries one, ahead of the tick's parts).
        """
        return self.hub.input_acks.get(snapshot_tick)

    def buffer_depth_ms(self, local_now: float | None = None) -> float | None:
        """How far the newest snapshot is ahead of the render time (interpolation cushion)."""
        tick = self.render_tick(local_now)
        timeline = self.hub.timeline
        if tick is None or timeline is None or self.latest_tick is None:
            return None
        return (self.latest_tick - tick) / timeline.tick_rate * 1000

    def snapshot_stats(self) -> dict[str, float]:
        """Mean bytes and datagrams per snapshot over the recent ones."""
        recent = list(self._snapshots)
        if not recent:
            return {"snapshot_bytes": 0.0, "datagrams_per_snapshot": 0.0}
        return {
            "snapshot_bytes": sum(r[1] for r in recent) / len(recent),
            "datagrams_per_snapshot": sum(r[2] for r in recent) / len(recent),
        }

    # ------------------------------------------------------------------ inputs

    def send_input(self, tick: int, data: bytes) -> None:
        """Send the local player's input for ``tick`` (with the recent unacknowledged ones)."""
        payload = self.inputs.add(tick, data)
        self.hub.send_receipts()  # the receipts due ride this input's datagram
        # Each INPUT frame repeats the unacknowledged inputs, so a newer one supersedes it.
        self.room.send_frame(FrameType.INPUT, payload, supersede_key=("input", self.topic))

    def acknowledge_inputs(self, last_applied_tick: int) -> None:
        self.inputs.acknowledge(last_applied_tick)

    # ------------------------------------------------------------------ receiving

    def _on_part(self, tick: int, size: int, parts: int) -> None:
        recent = self._snapshots
        if recent and recent[-1][0] == tick:
            recent[-1][1] += size
            recent[-1][2] += 1
        else:
            recent.append([tick, size, 1])
            self.snapshots_received += 1
        new_tick = self.latest_tick is None or tick > self.latest_tick
        if new_tick:
            self.latest_tick = tick
        self._emit_events()
        if new_tick:
            self.emit("snapshot", tick)

    def _emit_events(self) -> None:
        decoder = self.decoder
        while (event := decoder.next_event()) is not None:
            if isinstance(event, EntitySpawned):
                if event.entity_id in decoder:
                    self.emit("spawned", event.entity_id, decoder.get(event.entity_id))
            elif isinstance(event, EntityDespawned):
                self.emit("despawned", event.entity_id)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
