"""Per-client snapshot encoder: acked per-entity baselines, bit-packed parts.

Theory of operation
===================

One :class:`SnapshotEncoder` serves one client. Each tick the game calls
``encode(tick)``, which returns the parts of that tick's snapshot; each part is one SNAPSHOT
frame payload that fits one datagram and decodes on its own. The client's decoder reports
the parts it *applied* in receipts (:class:`~netcode.replication.wire.Receipt`), which come
back to ``on_receipt``. A datagram's transport ACK is not used: it says a part arrived, not
that the client could use it (no decoder yet, a decoder of another stream, over its caps).

Epochs
    Every part carries the encoder's epoch. A new encoder, and a resync, start a new epoch;
    a decoder that sees a new epoch drops everything it held and starts from empty, and the
    encoder of the new epoch knows nothing about the client, so it only sends full states
    until receipts of that epoch come back. Receipts of another epoch are ignored.

Per-entity baselines (Quake 3 / Fiedler, per entity instead of per snapshot)
    For every entity it shows the client, the encoder keeps the newest state *the client
    applied*: ``base_q`` and ``base_tick``, and the world's version it was read at. A
    record is a delta against it; the part names the baseline tick (one common tick in the
    header, explicit offsets for the exceptions), so the client looks the baseline up in
    its own short history of the entity. An entity is sent while it has changed since the
    version of its baseline, i.e. until the client confirms a send of its current value (it
    may hold another value sent since the baseline, even one the entity has since returned
    from), so an entity that is not sent holds, on the client, exactly its server state: a
    resting world costs a vectorised comparison and no bits, and a tick whose parts carry
    every due entity is flagged
    COMPLETE (the client then knows the entities it did not hear of are at rest, and does
    not extrapolate them).

The client never decodes against a baseline it does not hold
    The client keeps the ``history_depth`` (H) newest received states of each entity (H is
    the smaller of the encoder's and the one the client announces). A baseline was applied,
    so the client stored it; it can only have been evicted if the client has since stored H
    newer states of that entity, and those are among the states sent since. The encoder
    counts the sends of each entity and remembers which of them each baseline was, and only
    deltas against ``base_tick`` if fewer than H sends are newer; otherwise it sends the
    full state.
    Likewise a receipt only advances the baseline if the record was decodable when it
    arrived (fewer than H sends newer than the baseline it used).

Resync and caps
    A receipt flagged RESYNC (the client could not apply a part of this epoch) starts a new
    epoch. Each receipt announces the client's limits (live entities, highest id, history
    depth): the encoder never shows the client more entities than it may hold (ids whose
    removal is unconfirmed count), nor ids above its highest, and starts a new epoch if a
    receipt announces limits below what it already relies on. Until the first receipt it
    assumes the decoder's defaults.

Creation and removal are reliable
    An entity entering the client's view (spawned, or let in by the interest hook) is sent
    as a full-state record on every resend interval until a part carrying it is acked; only
    then do deltas start. Leaving the view queues a removal of its id, repeated in later
    parts until one of them is acked. An id whose removal is pending is not created again
    for this client until that ack, so the client never confuses two owners of one id; and
    the decoder, knowing at which tick it saw the removal, ignores late records of the
    previous owner. Visibility serials make late acks of a previous visibility harmless.

Budget and priority
    With a per-tick byte budget, candidates (changed or unacked entities) accumulate their
    priority every tick they wait and are sent highest first; sending resets the
    accumulator, so every entity gets through eventually. Without a budget all go.

Encode once, send to many
    What a record's bits depend on is the same for every client: the entity's state (the
    world's version), and for a delta the tick its baseline is named by and the state it
    holds (the tick and version the baseline was sent at). Encoders of one world share, per
    tick and version, the record bodies of every type whose candidate rows and baselines
    coincide, and the packed part bodies of ticks that coincide entirely
    (:class:`SharedEncodings`); only the part header (tick, epoch, flags) and the
    bookkeeping of sends and receipts are each client's own, so epochs, receipts and resyncs
    work exactly as without sharing, and the parts are the same bytes.

Packing
    Records are grouped per entity type into sections, in ascending id order (ids travel as
    Exp-Golomb gaps), and split greedily into parts of at most ``max_part_bytes``. All bit
    work is vectorised with numpy over the candidate records of a type: record bodies are
    built as columns of (value, width) segments, and :func:`~netcode.replication.bits.
    pack_segments` flattens them into bytes. See :mod:`netcode.replication.wire` for the bits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from netcode.replication.bits import bit_length, eg_bits, eg_bits_int, eg_segments, pack_segments
from netcode.replication.schema import EntitySchema, GroupKind
from netcode.replication.wire import (
    DEFAULT_HISTORY_DEPTH,
    DEFAULT_MAX_ENTITIES,
    DEFAULT_MAX_ENTITY_ID,
    FLAG_COMPLETE,
    PART_HEADER_BYTES,
    PartHeader,
    Receipt,
    encode_part_header,
)
from netcode.replication.world import TypeStore, World
from netcode.wire import MAX_FRAME_PAYLOAD_BYTES

__all__ = ["ClientView", "InterestFn", "PriorityFn", "SnapshotEncoder", "SnapshotPart"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

#: (store) -> bool per row: may this client see the entity in that row? Rows not alive are
#: ignored. Vectorised so that a distance test over thousands of entities stays cheap.
InterestFn = Callable[[TypeStore], Bools]
#: (store, rows) -> priority increment per row (default: the schema's ``priority``).
PriorityFn = Callable[[TypeStore, I64], F64]

_NONE, _CREATING, _ALIVE = 0, 1, 2
#: the baseline version of a row not shown: no world version is newer, so the row is never a
#: candidate by change (one comparison finds the changed rows, without a test of the state)
_NEVER = np.iinfo(np.int64).max


def _gaps(ids: I64) -> I64:
    """Gap of each ascending id from the previous one minus one (-1 before the first)."""
    out = np.empty_like(ids)
    if len(ids):
        out[0] = ids[0]
        np.subtract(ids[1:], ids[:-1] + 1, out=out[1:])
    return out


@attrs.frozen
class SnapshotPart:
    """One part of a tick's snapshot: a SNAPSHOT frame payload for one datagram."""

    #: Encoder-local id of the part (increasing).
    part_id: int
    #: The tick this part describes.
    tick: int
    #: The stream epoch the part belongs to.
    epoch: int
    #: Its index among the tick's parts.
    part_index: int
    #: The frame payload (header and bit-packed body).
    payload: bytes


@attrs.define
class ClientView:
    """What one client sees and how much of it per tick."""

    #: Which entities this client may see (default: all).
    interest: InterestFn | None = None
    #: Priority increments (default: each type's schema priority).
    priority: PriorityFn | None = None
    #: Payload bytes per tick for this client; None: send every change every tick.
    budget_bytes_per_tick: int | None = None


class _TypeView:
    """A client's view of one TypeStore: per-row visibility, baselines and send history."""

    def __init__(self, store: TypeStore, history_depth: int) -> None:
        self.store = store
        self.schema = store.schema
        self.cap = 0
        self.h = history_depth
        s = self.schema.slot_count
        self.state = np.zeros(0, dtype=np.int8)
        self.gen = np.zeros(0, dtype=np.int64)
        self.vis = np.zeros(0, dtype=np.int64)
        self.eid = np.zeros(0, dtype=np.int64)
        self.base_q = np.zeros((0, s), dtype=np.int64)
        # the baseline: the tick it was sent at, the world's version it was read at, which
        # of this row's sends it was, and the shared encodings' generation (tick, version)
        self.base_tick = np.zeros(0, dtype=np.int64)
        self.base_ver = np.zeros(0, dtype=np.int64)
        self.base_idx = np.zeros(0, dtype=np.int64)
        self.base_gen = np.zeros(0, dtype=np.int64)
        #: sends of each row in its current visibility
        self.sends = np.zeros(0, dtype=np.int64)
        self.last_full = np.zeros(0, dtype=np.int64)
        self.acc = np.zeros(0, dtype=np.float64)
        #: the store's serial when this view last took in every row it could (else -1)
        self.synced = -1
        #: rows in state _CREATING (while 0, nothing needs a test of the state per row)
        self.creating = 0
        self.grow()

    def grow(self) -> None:
        cap = self.store.capacity
        if cap == self.cap:
            return
        old = self.cap

        def g(a: Any, fill: int | float = 0) -> Any:
            out = np.full((cap, *a.shape[1:]), fill, dtype=a.dtype)
            out[:old] = a
            return out

        self.state = g(self.state)
        self.gen = g(self.gen)
        self.vis = g(self.vis)
        self.eid = g(self.eid, -1)
        self.base_q = g(self.base_q)
        self.base_tick = g(self.base_tick, -1)
        self.base_ver = g(self.base_ver, _NEVER)
        self.base_idx = g(self.base_idx, -1)
        self.base_gen = g(self.base_gen, -1)
        self.sends = g(self.sends)
        self.last_full = g(self.last_full, -(1 << 40))
        self.acc = g(self.acc, 0.0)
        self.cap = cap

    def forget(self, rows: I64) -> None:
        """End the visibility of ``rows``: no serial (0 is none), nothing due."""
        if self.creating:
            self.creating -= int(np.count_nonzero(self.state[rows] == _CREATING))
        self.state[rows] = _NONE
        self.start(rows)
        self.vis[rows] = 0
        self.base_ver[rows] = _NEVER

    def start(self, rows: I64) -> None:
        """No baseline and no sends for ``rows`` (a visibility ends or begins)."""
        self.base_tick[rows] = -1
        self.base_ver[rows] = -1
        self.base_idx[rows] = -1
        self.base_gen[rows] = -1
        self.sends[rows] = 0
        self.acc[rows] = 0.0


@attrs.define
class _Section:
    view: _TypeView
    rows: I64
    vis: I64
    base_used: I64  # baseline tick each record was encoded against, -1 for full state
    q: I64  # the slots sent (copied; shared between clients: read only), adopted when acked
    version: int  # the world's version when they were read
    gen: int  # the shared encodings' generation (tick and version) they were sent in
    send_idx: I64  # which send of each row each record was
    base_idx: I64  # which send of each row each delta's baseline was


@attrs.define
class _InFlight:
    tick: int
    removals: list[tuple[int, int]]  # (entity id, removal serial)
    sections: list[_Section]


@attrs.define
class _Candidates:
    """The records one type could send this tick, in candidate order (shared between the
    clients whose candidates and baselines coincide: read only)."""

    type_id: int
    rows: I64
    eids: I64
    base_used: I64
    values: I64  # (n, columns) segment values of the record bodies (kind + fields)
    widths: I64  # (n, columns) segment widths
    bits: I64  # body bits per record


@attrs.define
class _PlannedSection:
    cand: int  # position of the type's candidates
    idx: I64  # which of them, in send order
    k: int  # Exp-Golomb order of the id gaps
    rows: I64  # their rows, baselines and slots (read only)
    base_used: I64
    q: I64


@attrs.define
class _PlannedPart:
    body: bytes  # the bits after the header
    removals: int  # how many of the tick's first removals it carries
    sections: list[_PlannedSection]


class SharedEncodings:
    """What the encoders of one world share within one tick and world version.

    Clients whose candidates coincide (the same rows, each against the same baseline: the
    same tick and world version) get the same record bodies; clients whose whole tick
    coincides (those bodies for every type and the same removals) get the same part bodies.
    Only the part header (tick, epoch, flags) and the bookkeeping of sends and receipts are
    each client's own. Everything is forgotten when the tick or the world's version
    changes, so what is shared was read from one state of the world.
    """

    def __init__(self) -> None:
        self.tick = -1
        self.version = -1
        #: numbers each (tick, version) pair read: a baseline sent in generation g was read
        #: at g's version and is named by g's tick
        self.generation = 0
        self.bodies: dict[tuple[Any, ...], _Candidates] = {}
        self.plans: dict[tuple[Any, ...], list[_PlannedPart]] = {}
        #: record bodies found / encoded (per type and tick), part bodies found / packed
        self.body_hits = 0
        self.body_misses = 0
        self.plan_hits = 0
        self.plan_misses = 0

    @staticmethod
    def of(world: World, tick: int) -> SharedEncodings:
        """The shared encodings of ``world`` at ``tick`` and its current version."""
        shared = world.encodings
        if not isinstance(shared, SharedEncodings):
            shared = world.encodings = SharedEncodings()
        if shared.tick != tick or shared.version != world.version:
            shared.tick, shared.version = tick, world.version
            shared.generation += 1
            shared.bodies.clear()
            shared.plans.clear()
        return shared


class SnapshotEncoder:
    """Encodes a :class:`World` for one client; see the module docstring.

    ``max_part_bytes`` is the largest payload a part may have (leave room for other frames
    in the datagram by lowering it). ``history_depth`` bounds the client decoder's (the
    smaller of the two is used). ``epoch`` is the first stream epoch; ``next_epoch``, if
    given, hands out the epoch of each resync (give every encoder of one client's stream a
    source of distinct epochs, e.g. one counter per host), else the epoch is incremented.
    A part not receipted within ``receipt_timeout_ticks`` is forgotten (its entities have
    been sent again since: an unconfirmed send keeps an entity due). With ``share`` (the
    default), encoders of one world encode once what they would encode alike, and send the
    same bytes (:class:`SharedEncodings`); the parts are the same as without.
    """

    def __init__(
        self,
        world: World,
        view: ClientView | None = None,
        *,
        max_part_bytes: int = MAX_FRAME_PAYLOAD_BYTES,
        history_depth: int = DEFAULT_HISTORY_DEPTH,
        resend_ticks: int = 1,
        send_empty: bool = True,
        epoch: int = 1,
        next_epoch: Callable[[], int] | None = None,
        receipt_timeout_ticks: int = 255,
        share: bool = True,
    ) -> None:
        if not 64 <= max_part_bytes <= MAX_FRAME_PAYLOAD_BYTES:
            raise ValueError(f"max_part_bytes must be within 64..{MAX_FRAME_PAYLOAD_BYTES}")
        if history_depth < 2:
            raise ValueError("history_depth must be at least 2")
        if not 0 <= epoch <= 0xFFFF:
            raise ValueError("epoch must fit 16 bits")
        self.world = world
        self.view = view or ClientView()
        self.max_part_bytes = max_part_bytes
        self.history_depth = history_depth
        #: ticks between repeats of an unacked creation or removal (1: every tick)
        self.resend_ticks = resend_ticks
        #: send a header-only part on ticks with nothing to say (the client learns the tick)
        self.send_empty = send_empty
        self.receipt_timeout_ticks = receipt_timeout_ticks
        #: share encodings with the other encoders of this world (see SharedEncodings)
        self.share = share
        for store in world.stores.values():
            self._check_fits(store.schema)
        #: the current stream epoch (in every part's header)
        self.epoch = epoch
        self._next_epoch = next_epoch
        #: epochs started since construction (resyncs)
        self.resyncs = 0
        #: the client's limits, from its receipts (the decoder's defaults until then)
        self.client_max_entities = DEFAULT_MAX_ENTITIES
        self.client_max_entity_id = DEFAULT_MAX_ENTITY_ID
        self.client_history_depth = DEFAULT_HISTORY_DEPTH
        self._h = min(history_depth, self.client_history_depth)
        self._next_part_id = 0
        self._vis_serial = 0
        self._removal_serial = 0
        self._last_tick = -1
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._views: dict[int, _TypeView] = {}
        self._view_list: list[_TypeView] = []
        self._gen = -1
        #: (tick, part index) -> what the part carried
        self._inflight: dict[tuple[int, int], _InFlight] = {}
        #: entity id -> (removal serial, last tick sent)
        self._removals: dict[int, tuple[int, int]] = {}
        self._removal_pending = np.zeros(self.world.max_entities, dtype=bool)

    # -- public API -------------------------------------------------------------------

    @property
    def parts_in_flight(self) -> int:
        """Parts sent and not yet reported delivered or lost."""
        return len(self._inflight)

    @property
    def pending_removals(self) -> int:
        """Removals not yet confirmed applied by the client."""
        return len(self._removals)

    def resync(self) -> None:
        """Start a new epoch: forget everything about the client, send full states."""
        if self._next_epoch is not None:
            epoch = self._next_epoch() & 0xFFFF
        else:
            epoch = (self.epoch + 1) & 0xFFFF
        self.epoch = epoch
        self.resyncs += 1
        self._h = min(self.history_depth, self.client_history_depth)
        self._reset_stream()

    def encode(self, tick: int) -> list[SnapshotPart]:
        """The parts of this tick's snapshot (ticks must increase; time comes from the caller)."""
        if tick <= self._last_tick:
            raise ValueError(f"tick {tick} is not after {self._last_tick}")
        if tick >= 1 << 32:
            raise ValueError("tick does not fit 32 bits")
        self._last_tick = tick
        inflight = self._inflight
        if inflight:  # in send order: the oldest first
            oldest = tick - self.receipt_timeout_ticks
            while inflight and (first := next(iter(inflight)))[0] < oldest:
                del inflight[first]
        if len(self._views) != len(self.world.stores):
            for type_id, store in self.world.stores.items():
                if type_id not in self._views:
                    self._check_fits(store.schema)
                    self._views[type_id] = _TypeView(store, self.history_depth)
            self._view_list = [self._views[t] for t in sorted(self._views)]
        views = self._view_list
        # all removals first: an id may move from one type to another within a tick
        capped = self.client_max_entity_id < self.world.max_entities - 1
        inside: list[Bools | None] = []
        for tv in views:
            tv.grow()
            if self.view.interest is None and not capped and tv.synced == tv.store.serial:
                inside.append(None)  # nobody came or went since every row was taken in
            else:
                inside.append(self._sync_gone(tv, capped))
        if any(ins is not None for ins in inside):
            room = self.client_max_entities - len(self._removals)
            for tv in views:
                room -= int(np.count_nonzero(tv.state))
            for tv, ins in zip(views, inside, strict=True):
                if ins is not None:
                    room -= self._sync_new(tv, ins, room)
        removals = self._due_removals(tick) if self._removals else []
        base_ticks: list[I64] = []
        rows_per_type: list[tuple[_TypeView, I64, Bools]] = []
        complete = True
        for tv in views:
            rows, use_delta, bt, all_due = self._candidates(tv, tick)
            complete &= all_due
            if len(rows):
                rows_per_type.append((tv, rows, use_delta))
                base_ticks.append(bt[use_delta])
        common = self._common_offset(tick, base_ticks)
        shared = SharedEncodings.of(self.world, tick)
        self._gen = shared.generation
        cands: list[_Candidates] = []
        keys: list[tuple[Any, ...]] = []
        for tv, rows, use_delta in rows_per_type:
            if not self.share:
                cands.append(self._encode_bodies(tv, rows, use_delta, tick, common))
                continue
            # a record's bits depend on the row's state (this generation's version) and, for
            # a delta, on its baseline: the tick it is named by and the state it holds, both
            # given by the generation it was sent in
            bkey = (
                tv.schema.type_id,
                common,
                rows.tobytes(),
                np.where(use_delta, tv.base_gen[rows], -1).tobytes(),
            )
            cand = shared.bodies.get(bkey)
            if cand is None:
                shared.body_misses += 1
                cand = self._encode_bodies(tv, rows, use_delta, tick, common)
                shared.bodies[bkey] = cand
            else:
                shared.body_hits += 1
            cands.append(cand)
            keys.append(bkey)
        plan: list[_PlannedPart] | None = None
        if self.view.budget_bytes_per_tick is not None:
            n_before = sum(len(c.rows) for c in cands)
            cands = self._select(cands, removals)
            complete &= sum(len(c.rows) for c in cands) == n_before
        elif self.share:
            removed = tuple(e for e, _ in removals)
            pkey = (common, self.max_part_bytes, self.send_empty, tuple(keys), removed)
            plan = shared.plans.get(pkey)
            if plan is None:
                shared.plan_misses += 1
                plan = shared.plans[pkey] = self._plan(common, removals, cands)
            else:
                shared.plan_hits += 1
        if plan is None:
            plan = self._plan(common, removals, cands)
        return self._emit(tick, common, FLAG_COMPLETE if complete else 0, removals, cands, plan)

    def on_receipt(self, receipt: Receipt) -> None:
        """The client's receipt: the parts it applied, its limits, or a request to resync.

        Parts it never reports need nothing: whatever they carried that still matters is
        still a difference against the baseline, an unconfirmed send, or a creation or
        removal not yet confirmed, all of which go again.
        """
        if receipt.epoch != self.epoch:
            return  # about a stream that has ended
        self.client_max_entity_id = receipt.max_entity_id
        self.client_history_depth = receipt.history_depth
        shown = len(self._removals) + sum(
            int(np.count_nonzero(tv.state)) for tv in self._views.values()
        )
        tighter = receipt.max_entities < shown or receipt.history_depth < self._h
        self.client_max_entities = receipt.max_entities
        if receipt.resync or tighter:
            self.resync()
            return
        if receipt.max_entity_id < self.world.max_entities - 1:
            for tv in self._views.values():
                if (tv.eid[tv.state != _NONE] > receipt.max_entity_id).any():
                    self.resync()
                    return
        for key in receipt.applied:
            rec = self._inflight.pop(key, None)
            if rec is not None:
                self._applied(rec)

    def _applied(self, rec: _InFlight) -> None:
        for eid, serial in rec.removals:
            entry = self._removals.get(eid)
            if entry is not None and entry[0] == serial:
                del self._removals[eid]
                self._removal_pending[eid] = False
        h = self._h
        tick = rec.tick
        for sec in rec.sections:
            tv = sec.view
            rows = sec.rows
            # still the visibility it was sent in (a row not shown has serial 0, and serials
            # start at 1)
            ok = tv.vis[rows] == sec.vis
            if tv.creating:
                creating = ok & (tv.state[rows] == _CREATING)
                if creating.any():
                    tv.state[rows[creating]] = _ALIVE
                    tv.creating -= int(np.count_nonzero(creating))
            # adopt as baseline only if the client could decode the record when it arrived
            # (its own baseline, or the record itself for full states, not yet evicted:
            # fewer than H sends newer than it, else it skipped the record as stale) and if
            # it is newer than the current baseline
            ref = np.where(sec.base_used >= 0, sec.base_idx, sec.send_idx)
            adopt = ok & (tick > tv.base_tick[rows]) & (tv.sends[rows] - ref <= h)
            if adopt.all():  # the usual case: every row, without a copy of each array
                r, q, send_idx = rows, sec.q, sec.send_idx
            elif adopt.any():
                r, q, send_idx = rows[adopt], sec.q[adopt], sec.send_idx[adopt]
            else:
                continue
            tv.base_q[r] = q
            tv.base_tick[r] = tick
            tv.base_ver[r] = sec.version
            tv.base_gen[r] = sec.gen
            tv.base_idx[r] = send_idx

    # -- internals --------------------------------------------------------------------

    def _check_fits(self, schema: EntitySchema) -> None:
        worst = schema.full_bits + 2 + 3 * 17 + 8 + 3 + 40 + 8
        if worst > (self.max_part_bytes - PART_HEADER_BYTES) * 8:
            raise ValueError(f"a {schema.cls.__name__} record may not fit a part")

    def _due_removals(self, tick: int) -> list[tuple[int, int]]:
        return sorted(
            (eid, serial)
            for eid, (serial, last) in self._removals.items()
            if tick - last >= self.resend_ticks
        )

    def _sync_gone(self, tv: _TypeView, capped: bool) -> Bools:
        """End the visibility of rows that left (queueing removals); returns the rows inside."""
        store = tv.store
        inside = (
            store.alive if self.view.interest is None else store.alive & self.view.interest(store)
        )
        if capped:
            inside = inside & (store.eid <= self.client_max_entity_id)
        visible = tv.state != _NONE
        gone = visible & ((tv.gen != store.gen) | ~inside)
        if gone.any():
            rows = np.flatnonzero(gone)
            for eid in tv.eid[rows].tolist():
                self._removal_serial += 1
                self._removals[eid] = (self._removal_serial, -(1 << 40))
                self._removal_pending[eid] = True
            tv.forget(rows)
        return inside

    def _sync_new(self, tv: _TypeView, inside: Bools, room: int) -> int:
        """Start the visibility of rows that entered, unless their id's removal is pending,
        at most ``room`` of them (the client's cap); returns how many started. A view that
        took in every row it could is not synced again until a row comes or goes."""
        store = tv.store
        new = inside & (tv.state == _NONE)
        taken = 0
        if new.any():
            rows = np.flatnonzero(new)
            held = self._removal_pending[store.eid[rows]]
            rows = rows[~held][: max(room, 0)]
            taken = len(rows)
            if taken:
                tv.state[rows] = _CREATING
                tv.creating += taken
                serials = np.arange(self._vis_serial + 1, self._vis_serial + 1 + taken)
                self._vis_serial += taken
                tv.vis[rows] = serials
                tv.eid[rows] = store.eid[rows]
                tv.gen[rows] = store.gen[rows]
                tv.start(rows)
                tv.last_full[rows] = -(1 << 40)
            complete = taken == len(held) and not held.any()
        else:
            complete = True
        tv.synced = store.serial if complete else -1
        return taken

    def _candidates(self, tv: _TypeView, tick: int) -> tuple[I64, Bools, I64, bool]:
        """Rows to send (changed since the state of their baseline, or creation due), which
        of them can be sent as deltas, their baseline ticks, and whether every creation due
        was taken."""
        # due until the client confirms a send of the current value: the row changed after
        # the world's version its baseline was read at (before that confirmation it may
        # hold another value sent since its baseline, even if the row is back at it); a row
        # not shown has the baseline version _NEVER
        changed = tv.store.changed > tv.base_ver
        all_due = True
        if tv.creating:
            creating = tv.state == _CREATING
            changed &= ~creating  # due by their resend interval, not by change
            due = creating & (tick - tv.last_full >= self.resend_ticks)
            all_due = bool((due == creating).all())
            changed |= due
        rows = np.flatnonzero(changed)
        bt = tv.base_tick[rows]
        # a baseline is safe while fewer than H sends are newer than it
        use_delta = (bt >= 0) & (tv.sends[rows] - tv.base_idx[rows] <= self._h)
        return rows, use_delta, bt, all_due

    @staticmethod
    def _common_offset(tick: int, base_ticks: list[I64]) -> int:
        if not base_ticks:
            return 0
        offsets = tick - np.concatenate(base_ticks)
        offsets = offsets[offsets <= 255]
        if not len(offsets):
            return 0
        return int(np.bincount(offsets).argmax())

    def _encode_bodies(
        self, tv: _TypeView, rows: I64, use_delta: Bools, tick: int, common: int
    ) -> _Candidates:
        schema = tv.schema
        store = tv.store
        n = len(rows)
        cur = store.q[rows]
        vals: list[I64] = []
        wids: list[I64] = []
        zero = np.zeros(n, dtype=np.int64)
        one = np.ones(n, dtype=np.int64)

        # kind: '0' common baseline, '10' full, '11' EG(0)(offset - 1)
        bt = tv.base_tick[rows]
        offset = np.where(use_delta, tick - bt, 0)
        explicit = use_delta & (offset != common)
        vals.append(np.where(use_delta, np.where(explicit, 3, 0), 2))
        wids.append(np.where(use_delta & ~explicit, 1, 2))
        if explicit.any():
            off = np.where(explicit, offset - 1, 0)
            for i, seg in enumerate(eg_segments(off, 0)):
                (vals if i % 2 == 0 else wids).append(seg if i % 2 == 0 else seg * explicit)
        n_delta = int(use_delta.sum())
        if n_delta:
            self._delta_columns(tv, rows, cur, use_delta.astype(np.int64), vals, wids, zero, one)
        if n_delta < n:
            full = (~use_delta).astype(np.int64)
            for i, codec in enumerate(schema.codecs):
                first = schema.first_slot[i]
                if codec.kind == GroupKind.STRING:
                    k = schema.string_fields.index(i)
                    self._string_columns(store, k, rows, full, vals, wids)
                    continue
                for j, w in enumerate(codec.slot_bits):
                    vals.append(cur[:, first + j])
                    wids.append(full * w)
        # np.array on equal-length rows is one C call; column_stack costs per column
        values = np.array(vals).T
        widths = np.array(wids).T
        return _Candidates(
            type_id=schema.type_id,
            rows=rows,
            eids=tv.eid[rows],
            base_used=np.where(use_delta, bt, -1),
            values=values,
            widths=widths,
            bits=widths.sum(axis=1),
        )

    @staticmethod
    def _string_columns(
        store: TypeStore, k: int, rows: I64, on: I64, vals: list[I64], wids: list[I64]
    ) -> None:
        codec_len_bits = int(store.schema.codecs[store.schema.string_fields[k]].slot_bits[0])
        length = store.str_len[k][rows]
        vals.append(length)
        wids.append(on * codec_len_bits)
        sent = length[on > 0]
        longest = int(sent.max()) if len(sent) else 0
        if not longest:  # no bytes to send: skip the byte columns altogether
            return
        data = store.str_bytes[k][rows, :longest].astype(np.int64)
        for j in range(longest):
            vals.append(data[:, j])
            wids.append(on * 8 * (length > j))

    def _delta_columns(
        self,
        tv: _TypeView,
        rows: I64,
        cur: I64,
        on: I64,
        vals: list[I64],
        wids: list[I64],
        zero: I64,
        one: I64,
    ) -> None:
        schema = tv.schema
        # whole-matrix work first (one numpy call each for all slots), then cheap per-group
        # column picks: per-call overhead, not arithmetic, is what costs here
        d = cur - tv.base_q[rows]
        wrap = schema.wrap_slots
        if wrap:
            half = np.array([1 << (schema.slot_bits[s] - 1) for s in wrap], dtype=np.int64)
            d[:, wrap] = ((d[:, wrap] + half) & (2 * half - 1)) - half
        z = (d << 1) ^ (d >> 63)
        bl = bit_length(z)
        all_on = bool(on.all())
        for g in schema.groups:
            slots = g.slots
            kind = g.kind
            if kind == GroupKind.DELTA:
                nbits = bl[:, slots[0]] if len(slots) == 1 else bl[:, list(slots)].max(axis=1)
                if not all_on:
                    nbits = nbits * on
                changed = (nbits > 0).astype(np.int64)
                vals.append(changed)
                wids.append(on)
                vals.append(np.maximum(nbits - 1, 0))
                wids.append(changed * g.length_bits)
                for s in slots:
                    vals.append(z[:, s])
                    wids.append(nbits)
            elif kind == GroupKind.QUAT:
                i0 = slots[0]
                comps = list(slots[1:])
                changed = (bl[:, list(slots)].max(axis=1) > 0).astype(np.int64)
                if not all_on:
                    changed *= on
                same = (z[:, i0] == 0).astype(np.int64)
                nbits = bl[:, comps].max(axis=1)
                vals.append(changed)
                wids.append(on)
                vals.append(same)
                wids.append(changed)
                sc = same * changed
                rc = changed - sc
                is_same = same == 1
                vals.append(np.where(is_same, np.maximum(nbits - 1, 0), cur[:, i0]))
                wids.append(sc * g.length_bits + rc * 2)
                raw_bits = schema.slot_bits[comps[0]]
                for s in comps:
                    vals.append(np.where(is_same, z[:, s], cur[:, s]))
                    wids.append(sc * nbits + rc * raw_bits)
            else:
                s = slots[0]
                changed = (z[:, s] != 0).astype(np.int64)
                if not all_on:
                    changed *= on
                vals.append(changed)
                wids.append(on)
                if kind == GroupKind.RAW:
                    vals.append(cur[:, s])
                    wids.append(changed * schema.slot_bits[s])
                elif kind == GroupKind.STRING:
                    k = schema.string_fields.index(g.fields[0])
                    self._string_columns(tv.store, k, rows, changed, vals, wids)

    def _select(
        self, cands: list[_Candidates], removals: list[tuple[int, int]]
    ) -> list[_Candidates]:
        """Keep the highest accumulated priorities that fit the byte budget."""
        budget = self.view.budget_bytes_per_tick
        assert budget is not None
        if not cands:
            return cands
        accs = []
        for c in cands:
            tv = self._views[c.type_id]
            if self.view.priority is not None:
                inc = self.view.priority(tv.store, c.rows)
            else:
                inc = np.full(len(c.rows), tv.schema.priority)
            tv.acc[c.rows] += inc
            accs.append(tv.acc[c.rows])
        acc = np.concatenate(accs)
        cost = np.concatenate([c.bits for c in cands]) + 12  # + id gap, roughly
        order = np.argsort(-acc, kind="stable")
        avail = budget * 8 - 24 * len(removals) - 8 * PART_HEADER_BYTES
        take = order[: max(1, int(np.searchsorted(np.cumsum(cost[order]), avail, "right")))]
        keep = np.zeros(len(acc), dtype=bool)
        keep[take] = True
        out = []
        start = 0
        for c in cands:
            m = keep[start : start + len(c.rows)]
            start += len(c.rows)
            if m.any():
                out.append(
                    _Candidates(
                        c.type_id,
                        c.rows[m],
                        c.eids[m],
                        c.base_used[m],
                        c.values[m],
                        c.widths[m],
                        c.bits[m],
                    )
                )
        return out

    def _plan(
        self, common: int, removals: list[tuple[int, int]], cands: list[_Candidates]
    ) -> list[_PlannedPart]:
        """Split the records into parts and pack their bodies (nothing of the client's own:
        the same inputs give the same plan, whichever client it is for)."""
        capacity = (self.max_part_bytes - PART_HEADER_BYTES) * 8 - 1  # 1: the end bit
        # parts as lists of (candidate position, index array in send order, k); removals
        # go first
        parts: list[tuple[list[tuple[int, int]], list[tuple[int, I64, int]]]] = []
        rem_now, rem_bits = self._fit_removals(removals, capacity // 2)
        cur_secs: list[tuple[int, I64, int]] = []
        cur_rem = rem_now
        used = rem_bits
        for pos, c in enumerate(cands):
            order = np.argsort(c.eids, kind="stable")
            eids = c.eids[order]
            n = len(eids)
            gaps = _gaps(eids)
            mean_gap = float(gaps.sum()) / n
            k = min(7, max(0, int(mean_gap).bit_length() - 1))
            cost = c.bits[order] + eg_bits(gaps, k)
            first_extra = eg_bits(eids, k) - eg_bits(gaps, k)
            csum = np.cumsum(cost)
            i = 0
            while i < n:
                hdr = 1 + 8 + 3 + eg_bits_int(n - i - 1, 0)
                avail = capacity - used - hdr - int(first_extra[i])
                before = int(csum[i - 1]) if i else 0
                j = int(np.searchsorted(csum, before + avail, "right")) - i
                if j <= 0:
                    if not cur_secs and not cur_rem:
                        raise RuntimeError("a record does not fit an empty part")
                    parts.append((cur_rem, cur_secs))
                    cur_rem, cur_secs, used = [], [], 1  # 1: an empty removals count
                    continue
                cur_secs.append((pos, order[i : i + j], k))
                used += hdr + int(first_extra[i]) + int(csum[i + j - 1]) - before
                i += j
                if i < n:
                    parts.append((cur_rem, cur_secs))
                    cur_rem, cur_secs, used = [], [], 1  # 1: an empty removals count
        if cur_secs or cur_rem or (not parts and self.send_empty):
            parts.append((cur_rem, cur_secs))
        if len(parts) > 255:
            raise RuntimeError("more than 255 parts in one tick")
        plan = []
        for rem, secs in parts:
            body = self._body(rem, [(cands[pos], idx, k) for pos, idx, k in secs])
            if PART_HEADER_BYTES + len(body) > self.max_part_bytes:
                raise RuntimeError(
                    f"part of {PART_HEADER_BYTES + len(body)} bytes exceeds {self.max_part_bytes}"
                )
            sections = []
            for pos, idx, k in secs:
                c = cands[pos]
                rows = c.rows[idx]
                store = self._views[c.type_id].store
                sections.append(_PlannedSection(pos, idx, k, rows, c.base_used[idx], store.q[rows]))
            plan.append(_PlannedPart(body, len(rem), sections))
        return plan

    def _fit_removals(
        self, removals: list[tuple[int, int]], max_bits: int
    ) -> tuple[list[tuple[int, int]], int]:
        bits = 1  # EG(0) count of zero
        prev = -1
        taken: list[tuple[int, int]] = []
        for eid, serial in removals:
            b = eg_bits_int(eid - prev - 1, 0)
            if bits + b + 8 > max_bits:
                break
            taken.append((eid, serial))
            bits += b
            prev = eid
        return taken, bits + 2 * len(taken).bit_length()

    @staticmethod
    def _body(rem: list[tuple[int, int]], secs: list[tuple[_Candidates, I64, int]]) -> bytes:
        vals: list[Any] = []
        wids: list[Any] = []
        # scalars (counts, section headers, removals) go through plain lists: numpy's
        # per-call overhead would dominate for single values
        sv: list[int] = []
        sw: list[int] = []

        def put_eg(v: int, k: int) -> None:
            q = (v >> k) + 1
            n = q.bit_length()
            sv.extend((0, q, v & ((1 << k) - 1)))
            sw.extend((n - 1, n, k))

        put_eg(len(rem), 0)
        prev = -1
        for eid, _ in rem:
            put_eg(eid - prev - 1, 0)
            prev = eid
        for c, idx, k in secs:
            eids = c.eids[idx]
            sv.extend((1, c.type_id, k))
            sw.extend((1, 8, 3))
            put_eg(len(idx) - 1, 0)
            vals.append(sv)
            wids.append(sw)
            sv, sw = [], []
            zv, zw, qv, qw, lv, lw = eg_segments(_gaps(eids), k)
            vals.append(np.concatenate((np.array((zv, qv, lv)).T, c.values[idx]), axis=1).ravel())
            wids.append(np.concatenate((np.array((zw, qw, lw)).T, c.widths[idx]), axis=1).ravel())
        sv.append(0)  # no more sections
        sw.append(1)
        vals.append(sv)
        wids.append(sw)
        return pack_segments(np.concatenate(vals), np.concatenate(wids))

    def _emit(
        self,
        tick: int,
        common: int,
        flags: int,
        removals: list[tuple[int, int]],
        cands: list[_Candidates],
        plan: list[_PlannedPart],
    ) -> list[SnapshotPart]:
        """This client's parts of ``plan``: its header, and what it sent, recorded."""
        out: list[SnapshotPart] = []
        count = len(plan)
        version = self.world.version
        gen = self._gen
        views = self._views
        epoch = self.epoch
        for index, part in enumerate(plan):
            sections = []
            for sec in part.sections:
                tv = views[cands[sec.cand].type_id]
                rows = sec.rows
                sections.append(
                    _Section(
                        tv,
                        rows,
                        tv.vis[rows],
                        sec.base_used,
                        sec.q,
                        version,
                        gen,
                        tv.sends[rows],
                        tv.base_idx[rows],
                    )
                )
            rem = removals[: part.removals]
            header = encode_part_header(PartHeader(tick, epoch, index, count, common, flags))
            part_id = self._next_part_id
            self._next_part_id += 1
            self._inflight[(tick, index)] = _InFlight(tick, rem, sections)
            out.append(SnapshotPart(part_id, tick, epoch, index, header + part.body))
        for part in plan:
            for eid, serial in removals[: part.removals]:
                self._removals[eid] = (serial, tick)
        budget = self.view.budget_bytes_per_tick is not None
        for c in cands:
            tv = views[c.type_id]
            rows = c.rows
            tv.sends[rows] += 1
            if budget:
                tv.acc[rows] = 0.0
            full = c.base_used < 0
            if full.any():
                tv.last_full[rows[full]] = tick
        return out
