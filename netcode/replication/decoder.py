"""Client side of snapshots: parse parts from the server, resolve them against the states
this client holds, and keep a short history of states per entity.

Parts arrive in any order, duplicated or not at all. Each is handled in three steps:
:func:`decode_part_untrusted` parses it (needs only the schemas), :meth:`SnapshotDecoder.
receive_part` resolves every record against the baselines held, checking everything, and
only then applies it all. A bad part raises :class:`~netcode.errors.ProtocolError` and
changes nothing; the caller drops and counts it.

Records that are legitimately out of date are skipped, not refused: a record of an entity's
previous owner (its tick is not after the removal this client saw), and a delta whose
baseline has aged out of a full history (the encoder never adopts such a record as a
baseline, so nothing depends on it).

Epochs and receipts. Every part names its stream epoch (one per server encoder lifetime).
The first part of an epoch the decoder has not seen drops everything it holds (spawned
entities are reported despawned) and starts the new epoch from empty; parts of the epochs
it left are ignored. :meth:`SnapshotDecoder.receipt` says what the client applied of the
current epoch (each applied part is listed in the receipts of the next few ticks, so one
lost receipt costs nothing), the limits it decodes under, and whether it needs a resync: a
part of the current epoch it could not apply asks the server for a new epoch.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

import attrs

from netcode.errors import ProtocolError
from netcode.replication.bits import BitReader
from netcode.replication.schema import (
    DEFAULT_REGISTRY,
    EntitySchema,
    GroupKind,
    SchemaRegistry,
    Slot,
)
from netcode.replication.wire import (
    DEFAULT_HISTORY_DEPTH,
    DEFAULT_MAX_ENTITIES,
    DEFAULT_MAX_ENTITY_ID,
    FLAG_COMPLETE,
    MAX_RECEIPT_PARTS,
    PART_HEADER_BYTES,
    Receipt,
    decode_part_header_untrusted,
)

__all__ = [
    "DecodedPart",
    "DecodedRecord",
    "EntityDespawned",
    "EntitySpawned",
    "PartReceived",
    "SnapshotDecoder",
    "decode_part_untrusted",
]

# change operations on a slot, resolved against the baseline
_SET, _ADD, _WRAP, _FLIP = 0, 1, 2, 3


@attrs.frozen
class EntitySpawned:
    """An entity became visible to this client."""

    #: The entity's id (unique among live entities; reused after despawns).
    entity_id: int
    #: Its registered type id.
    type_id: int
    #: The tick of the first state received.
    tick: int


@attrs.frozen
class EntityDespawned:
    """An entity left this client's view (despawned, or out of interest)."""

    #: The entity's id.
    entity_id: int
    #: Tick of the part that carried the removal.
    tick: int


@attrs.frozen
class PartReceived:
    """What applying one part did."""

    #: Server tick of the part.
    tick: int
    #: Index of the part among its tick's parts.
    part_index: int
    #: Number of parts of that tick.
    part_count: int
    #: Entity states stored.
    applied: int
    #: Records skipped as out of date.
    stale: int
    #: Stream epoch of the part.
    epoch: int = 0
    #: False if the part belonged to an epoch this decoder has left (nothing applied).
    current: bool = True


class DecodedRecord(NamedTuple):
    """One entity record as parsed, before resolution."""

    entity_id: int
    type_id: int
    #: Baseline tick for a delta; -1 for a full state.
    baseline_tick: int
    #: Full state: all slots. Delta: (slot, op, value) changes against the baseline.
    full: list[Slot] | None
    changes: list[tuple[int, int, Slot]] | None


class DecodedPart(NamedTuple):
    tick: int
    part_index: int
    part_count: int
    removals: list[int]
    records: list[DecodedRecord]
    epoch: int = 0
    flags: int = 0


def _zigzag(z: int) -> int:
    return (z >> 1) ^ -(z & 1)


def _read_string(r: BitReader, schema: EntitySchema, field: int) -> str:
    codec = schema.codecs[field]
    n = r.read(codec.slot_bits[0])
    if n > codec.slot_max[0]:
        raise ProtocolError(f"string of {n} bytes exceeds {codec!r}")
    data = bytes(r.read(8) for _ in range(n))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("string is not UTF-8") from None


def _read_full(r: BitReader, schema: EntitySchema) -> list[Slot]:
    out: list[Slot] = []
    for i, codec in enumerate(schema.codecs):
        if codec.kind == GroupKind.STRING:
            out.append(_read_string(r, schema, i))
            continue
        for w, top in zip(codec.slot_bits, codec.slot_max, strict=True):
            v = r.read(w)
            if v > top:
                raise ProtocolError(f"{schema.cls.__name__}.{schema.names[i]} out of range")
            out.append(v)
    return out


def _read_delta(r: BitReader, schema: EntitySchema) -> list[tuple[int, int, Slot]]:
    changes: list[tuple[int, int, Slot]] = []
    read = r.read
    for g in schema.groups:
        if not read(1):
            continue
        kind = g.kind
        if kind == GroupKind.DELTA:
            n = read(g.length_bits) + 1
            if n > g.max_delta_bits:
                raise ProtocolError("delta wider than its field")
            for s in g.slots:
                d = _zigzag(read(n))
                changes.append((s, _WRAP if s in schema.wrap_slots else _ADD, d))
        elif kind == GroupKind.QUAT:
            s0 = g.slots[0]
            if read(1):
                n = read(g.length_bits) + 1
                if n > g.max_delta_bits:
                    raise ProtocolError("delta wider than its field")
                for s in g.slots[1:]:
                    changes.append((s, _ADD, _zigzag(read(n))))
            else:
                changes.append((s0, _SET, read(2)))
                w = schema.slot_bits[g.slots[1]]
                for s in g.slots[1:]:
                    changes.append((s, _SET, read(w)))
        elif kind == GroupKind.STRING:
            changes.append((g.slots[0], _SET, _read_string(r, schema, g.fields[0])))
        elif kind == GroupKind.FLIP:
            changes.append((g.slots[0], _FLIP, 0))
        else:
            s = g.slots[0]
            v = read(schema.slot_bits[s])
            if v > schema.slot_max[s]:
                raise ProtocolError(f"{schema.cls.__name__} field out of range")
            changes.append((s, _SET, v))
    return changes


def decode_part_untrusted(
    payload: bytes, registry: SchemaRegistry | None = None, *, max_entity_id: int = 65535
) -> DecodedPart:
    """Parse one SNAPSHOT payload. Raises ProtocolError (and nothing else) on bad input:
    truncation, unknown entity type, raw value out of range, id beyond ``max_entity_id``,
    trailing garbage. Resolution against baselines is :meth:`SnapshotDecoder.receive_part`'s.
    """
    registry = registry or DEFAULT_REGISTRY
    header = decode_part_header_untrusted(payload)
    tick = header.tick
    common = tick - header.baseline_offset if header.baseline_offset else -1
    r = BitReader(payload, PART_HEADER_BYTES)
    removals: list[int] = []
    prev = -1
    for _ in range(r.read_eg(0)):
        prev += r.read_eg(0) + 1
        if prev > max_entity_id:
            raise ProtocolError(f"entity id {prev} beyond {max_entity_id}")
        removals.append(prev)
    records: list[DecodedRecord] = []
    while r.read(1):
        type_id = r.read(8)
        schema = registry.get(type_id)
        if schema is None:
            raise ProtocolError(f"unknown entity type {type_id}")
        k = r.read(3)
        count = r.read_eg(0) + 1
        if count > max_entity_id + 1:
            raise ProtocolError(f"{count} records in a section")
        prev = -1
        for _ in range(count):
            prev += r.read_eg(k) + 1
            if prev > max_entity_id:
                raise ProtocolError(f"entity id {prev} beyond {max_entity_id}")
            if not r.read(1):
                if common < 0:
                    raise ProtocolError("record uses a common baseline the part does not name")
                base = common
            elif not r.read(1):
                records.append(DecodedRecord(prev, type_id, -1, _read_full(r, schema), None))
                continue
            else:
                base = tick - r.read_eg(0) - 1
                if base < 0:
                    raise ProtocolError("baseline before tick 0")
            records.append(DecodedRecord(prev, type_id, base, None, _read_delta(r, schema)))
    r.check_padding()
    return DecodedPart(
        tick, header.part_index, header.part_count, removals, records, header.epoch, header.flags
    )


@attrs.define
class _Entity:
    type_id: int
    schema: EntitySchema
    #: tick of the first (earliest) creation record received for this owner of the id
    spawn_tick: int
    newest: int
    history: dict[int, list[Slot]]


class SnapshotDecoder:
    """One client's view of the replicated world, built from snapshot parts.

    ``history_depth`` (states kept per entity, 2..255), ``max_entities`` (live entities a
    server may make this client hold) and ``max_entity_id`` (the highest id it may use) are
    announced in every receipt, and the server's encoder keeps within them.
    ``receipt_ticks`` is how many of the newest ticks' applied parts each receipt repeats.
    """

    def __init__(
        self,
        registry: SchemaRegistry | None = None,
        *,
        history_depth: int = DEFAULT_HISTORY_DEPTH,
        max_entities: int = DEFAULT_MAX_ENTITIES,
        max_entity_id: int = DEFAULT_MAX_ENTITY_ID,
        receipt_ticks: int = 4,
    ) -> None:
        if not 2 <= history_depth <= 255:
            raise ValueError("history_depth must be within 2..255")
        self.registry = registry or DEFAULT_REGISTRY
        self.history_depth = history_depth
        self.max_entities = max_entities
        self.max_entity_id = max_entity_id
        self.receipt_ticks = receipt_ticks
        self._entities: dict[int, _Entity] = {}
        #: id -> newest tick at which a removal of it was received
        self._removed: dict[int, int] = {}
        self._events: deque[EntitySpawned | EntityDespawned] = deque()
        #: newest tick of any part received (for the interpolation and clock layers)
        self.newest_tick = -1
        #: the stream epoch this decoder follows (None before the first part)
        self.epoch: int | None = None
        self._left_epochs: deque[int] = deque(maxlen=16)
        #: the current epoch needs a resync (a part of it could not be applied)
        self.needs_resync = False
        #: (tick, part indices applied) of the newest ticks, for receipts
        self._applied: deque[tuple[int, list[int]]] = deque()
        #: tick -> [part count, indices received, every part flagged complete]
        self._assembly: dict[int, tuple[int, set[int], list[bool]]] = {}
        #: newest tick all of whose parts were applied and flagged COMPLETE
        self.complete_tick = -1
        #: parts ignored as belonging to an epoch this decoder left
        self.parts_of_old_epochs = 0
        #: parts refused (ProtocolError) in the current epoch
        self.parts_refused = 0

    # -- reading the state ------------------------------------------------------------

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._entities

    def __len__(self) -> int:
        return len(self._entities)

    def entity_ids(self) -> list[int]:
        return list(self._entities)

    def type_id(self, entity_id: int) -> int:
        return self._entities[entity_id].type_id

    def quantized(self, entity_id: int) -> list[Slot]:
        """The newest slots held for the entity (compare with ``World.quantized``)."""
        e = self._entities[entity_id]
        return e.history[e.newest]

    def tick_of(self, entity_id: int) -> int:
        """Tick of the newest state held for the entity."""
        return self._entities[entity_id].newest

    def known_until(self, entity_id: int) -> int:
        """The newest tick at which the entity's state is known to be its newest state held:
        that state's tick, or a later COMPLETE tick whose parts did not change it (the entity
        is at rest there, not merely unheard of)."""
        e = self._entities[entity_id]
        return max(e.newest, self.complete_tick)

    def get(self, entity_id: int) -> Any:
        """The newest state of the entity as an instance of its class."""
        e = self._entities[entity_id]
        return e.schema.from_slots(e.history[e.newest])

    def history(self, entity_id: int) -> list[tuple[int, list[Slot]]]:
        """The states held for the entity, oldest first (at most ``history_depth``)."""
        e = self._entities[entity_id]
        return sorted(e.history.items())

    def next_event(self) -> EntitySpawned | EntityDespawned | None:
        """The next spawn or despawn notification, or None."""
        return self._events.popleft() if self._events else None

    # -- receipts ---------------------------------------------------------------------

    def receipt(self) -> Receipt | None:
        """What to tell the server about the current epoch (None before any part)."""
        if self.epoch is None:
            return None
        applied: list[tuple[int, int]] = []
        newest = max((t for t, _ in self._applied), default=0)
        for tick, indices in reversed(self._applied):
            if newest - tick <= 255:
                applied.extend((tick, i) for i in indices)
        return Receipt(
            self.epoch,
            self.needs_resync,
            self.max_entities,
            self.max_entity_id,
            self.history_depth,
            tuple(applied[:MAX_RECEIPT_PARTS]),
        )

    def _start_epoch(self, epoch: int, tick: int) -> None:
        if self.epoch is not None:
            self._left_epochs.append(self.epoch)
        self.epoch = epoch
        for eid in list(self._entities):
            self._events.append(EntityDespawned(eid, tick))
        self._entities.clear()
        self._removed.clear()
        self._applied.clear()
        self._assembly.clear()
        self.complete_tick = -1
        self.needs_resync = False

    def _note_applied(self, part: DecodedPart) -> None:
        tick, index = part.tick, part.part_index
        for t, indices in self._applied:
            if t == tick:
                if index not in indices:
                    indices.append(index)
                break
        else:
            self._applied.append((tick, [index]))
            while len(self._applied) > self.receipt_ticks:
                self._applied.popleft()
        entry = self._assembly.get(tick)
        if entry is None or entry[0] != part.part_count:
            entry = self._assembly[tick] = (part.part_count, set(), [True])
            if len(self._assembly) > 16:
                del self._assembly[min(self._assembly)]
        entry[1].add(index)
        entry[2][0] = entry[2][0] and bool(part.flags & FLAG_COMPLETE)
        if entry[2][0] and len(entry[1]) == entry[0] and tick > self.complete_tick:
            self.complete_tick = tick

    # -- receiving --------------------------------------------------------------------

    def receive_part(self, payload: bytes) -> PartReceived:
        """Parse, check and apply one SNAPSHOT payload from the server.

        Raises ProtocolError, leaving the decoder's entities unchanged, if the part is
        malformed, names an unknown type, holds an out-of-range value, refers to a baseline
        this client never had, or would make the client hold more than ``max_entities``
        entities; a refused part of the current epoch makes the next receipts ask for a
        resync. A part of a new epoch first resets the decoder; one of an epoch it has left
        is ignored (``current`` is False in the result).
        """
        header = decode_part_header_untrusted(payload)
        if header.epoch != self.epoch:
            if header.epoch in self._left_epochs:
                self.parts_of_old_epochs += 1
                return PartReceived(
                    header.tick, header.part_index, header.part_count, 0, 0, header.epoch, False
                )
            self._start_epoch(header.epoch, header.tick)
        try:
            part = decode_part_untrusted(payload, self.registry, max_entity_id=self.max_entity_id)
            received = self._apply(part)
        except ProtocolError:
            self.parts_refused += 1
            self.needs_resync = True
            raise
        self._note_applied(part)
        return received

    def _apply(self, part: DecodedPart) -> PartReceived:
        tick = part.tick
        ents = self._entities
        h = self.history_depth
        # -- resolve and check, changing nothing
        removed_now: list[int] = []
        removal_ticks: dict[int, int] = {}
        for eid in part.removals:
            e = ents.get(eid)
            if e is not None and tick >= e.spawn_tick:
                removed_now.append(eid)
            removal_ticks[eid] = tick
        gone = set(removed_now)
        stores: list[tuple[int, int, EntitySchema, list[Slot], bool]] = []
        seen: set[int] = set()
        stale = 0
        spawned = 0
        for rec in part.records:
            eid = rec.entity_id
            if eid in seen:
                raise ProtocolError(f"entity {eid} twice in one part")
            seen.add(eid)
            if tick <= max(self._removed.get(eid, -1), removal_ticks.get(eid, -1)):
                stale += 1  # a record of the id's previous owner
                continue
            schema = self.registry.by_id[rec.type_id]
            e = None if eid in gone else ents.get(eid)
            if e is not None and e.type_id != rec.type_id:
                raise ProtocolError(f"entity {eid} is a {e.schema.cls.__name__}")
            if rec.full is not None:
                if e is None:
                    spawned += 1
                stores.append((eid, rec.type_id, schema, rec.full, e is None))
                continue
            if e is None:
                raise ProtocolError(f"delta for entity {eid}, which this client does not hold")
            base = e.history.get(rec.baseline_tick)
            if base is None:
                if len(e.history) >= h and rec.baseline_tick < min(e.history):
                    stale += 1
                    continue
                raise ProtocolError(f"entity {eid}: no baseline at tick {rec.baseline_tick}")
            new = list(base)
            top = schema.slot_max
            assert rec.changes is not None
            for s, op, v in rec.changes:
                if op == _ADD:
                    x = int(new[s]) + int(v)
                    if not 0 <= x <= top[s]:
                        raise ProtocolError(f"entity {eid}: delta leaves the field's range")
                    new[s] = x
                elif op == _WRAP:
                    new[s] = (new[s] + v) & top[s]  # type: ignore[operator]
                elif op == _FLIP:
                    new[s] = 1 - new[s]  # type: ignore[operator]
                else:
                    new[s] = v
            stores.append((eid, rec.type_id, schema, new, False))
        if spawned and len(ents) - len(removed_now) + spawned > self.max_entities:
            raise ProtocolError(f"more than {self.max_entities} entities")
        # -- apply
        for eid, t in removal_ticks.items():
            if t > self._removed.get(eid, -1):
                self._removed[eid] = t
        for eid in removed_now:
            del ents[eid]
            self._events.append(EntityDespawned(eid, tick))
        for eid, type_id, schema, slots, is_new in stores:
            if is_new:
                ents[eid] = _Entity(type_id, schema, tick, tick, {tick: slots})
                self._events.append(EntitySpawned(eid, type_id, tick))
                continue
            e = ents[eid]
            hist = e.history
            hist[tick] = slots
            if len(hist) > h:
                del hist[min(hist)]
            if tick > e.newest:
                e.newest = tick
            elif tick < e.spawn_tick:
                e.spawn_tick = tick
            if e.newest not in hist:  # cannot happen: newest is never the evicted minimum
                e.newest = max(hist)
        if tick > self.newest_tick:
            self.newest_tick = tick
        return PartReceived(tick, part.part_index, part.part_count, len(stores), stale, part.epoch)
