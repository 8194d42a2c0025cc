"""The server's world: entities stored as quantized slots in one numpy array per type.

Entities are spawned, updated and despawned by the game each tick. Each is quantized as it
is written, so the snapshot encoders (one per client) compare integer arrays only, and a
world holding mostly resting entities costs them a few vectorised comparisons per tick.

Entity ids are small ints, handed out from a FIFO free list so that a freed id comes back as
late as possible; reuse is safe in any case because each client's encoder holds a reused id
back until that client has acknowledged the removal of its previous owner.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from netcode.replication.schema import (
    DEFAULT_REGISTRY,
    EntitySchema,
    SchemaRegistry,
    Slot,
    StringCodec,
)

__all__ = ["TypeStore", "World"]

I64 = npt.NDArray[np.int64]


def _max_bytes(schema: EntitySchema, field: int) -> int:
    codec = schema.codecs[field]
    assert isinstance(codec, StringCodec)
    return codec.max_bytes


class TypeStore:
    """All entities of one type: row r holds one entity's slots.

    ``gen[r]`` counts the spawns into row r, so a client view can tell a reused row from the
    entity it knew. String fields keep their text and UTF-8 bytes on the side; their slot
    holds a version number from a world-wide counter, so "changed" is an int comparison.
    ``changed[r]`` is the world's version when row r's state last changed (a write of the
    same values changes nothing), and ``serial`` counts spawns and despawns in this store.
    """

    def __init__(self, schema: EntitySchema, capacity: int = 64) -> None:
        self.schema = schema
        self.capacity = 0
        self.q: I64 = np.zeros((0, schema.slot_count), dtype=np.int64)
        self.alive: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self.gen: I64 = np.zeros(0, dtype=np.int64)
        self.eid: I64 = np.zeros(0, dtype=np.int64)
        self.changed: I64 = np.zeros(0, dtype=np.int64)
        self.serial = 0
        self.text: list[list[str]] = [[] for _ in schema.string_fields]
        self.str_bytes: list[npt.NDArray[np.uint8]] = []
        self.str_len: list[I64] = []
        self.free_rows: list[int] = []
        self.count = 0
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        schema = self.schema

        def grow(a: Any, shape: tuple[int, ...]) -> Any:
            out = np.zeros(shape, dtype=a.dtype)
            out[:old] = a
            return out

        self.q = grow(self.q, (capacity, schema.slot_count))
        self.alive = grow(self.alive, (capacity,))
        self.gen = grow(self.gen, (capacity,))
        self.eid = grow(self.eid, (capacity,))
        self.eid[old:] = -1
        self.changed = grow(self.changed, (capacity,))
        self.str_bytes = [
            grow(a, (capacity, _max_bytes(schema, f)))
            for a, f in zip(self._str_bytes_or_empty(), schema.string_fields, strict=True)
        ]
        self.str_len = [grow(a, (capacity,)) for a in self._str_len_or_empty()]
        for t in self.text:
            t.extend([""] * (capacity - old))
        self.free_rows.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    def _str_bytes_or_empty(self) -> list[npt.NDArray[np.uint8]]:
        if self.str_bytes:
            return self.str_bytes
        return [
            np.zeros((0, _max_bytes(self.schema, f)), dtype=np.uint8)
            for f in self.schema.string_fields
        ]

    def _str_len_or_empty(self) -> list[I64]:
        if self.str_len:
            return self.str_len
        return [np.zeros(0, dtype=np.int64) for _ in self.schema.string_fields]

    def alloc(self, eid: int) -> int:
        if not self.free_rows:
            self._grow(max(64, self.capacity * 2))
        row = self.free_rows.pop()
        self.alive[row] = True
        self.gen[row] += 1
        self.eid[row] = eid
        self.count += 1
        self.serial += 1
        return row

    def free(self, row: int) -> None:
        self.alive[row] = False
        self.eid[row] = -1
        self.count -= 1
        self.serial += 1
        self.free_rows.append(row)


@attrs.define
class _Entry:
    store: TypeStore
    row: int


class World:
    """The authoritative set of entities, quantized, for the snapshot encoders to read.

    The game calls :meth:`spawn`, :meth:`update` and :meth:`despawn` during a tick, then each
    client's :class:`~netcode.replication.encoder.SnapshotEncoder` encodes that tick.
    """

    def __init__(self, registry: SchemaRegistry | None = None, *, max_entities: int = 65536):
        self.registry = registry or DEFAULT_REGISTRY
        self.max_entities = max_entities
        #: one store per entity type, created on first spawn; encoders iterate over these
        self.stores: dict[int, TypeStore] = {}
        self._entries: dict[int, _Entry] = {}
        self._free_ids: deque[int] = deque()
        self._next_id = 0
        self._string_version = 0
        #: counts every change (spawn, despawn, and updates that change a value): two reads
        #: at one version see the same world, which lets the encoders of many clients share
        #: their work
        self.version = 0
        #: scratch space of the snapshot encoders reading this world (encodings they share)
        self.encodings: Any = None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._entries

    def entity_ids(self) -> Iterator[int]:
        return iter(self._entries)

    def store_for(self, schema: EntitySchema) -> TypeStore:
        store = self.stores.get(schema.type_id)
        if store is None:
            store = self.stores[schema.type_id] = TypeStore(schema)
        return store

    def spawn(self, obj: object) -> int:
        """Add an entity (an instance of a registered entity class); returns its id."""
        schema = self.registry.of(obj)
        values = self._quantize(schema, {n: getattr(obj, n) for n in schema.names})
        if self._free_ids:
            eid = self._free_ids.popleft()
        elif self._next_id < self.max_entities:
            eid = self._next_id
            self._next_id += 1
        else:
            raise ValueError(f"world is full ({self.max_entities} entities)")
        store = self.store_for(schema)
        row = store.alloc(eid)
        self._entries[eid] = _Entry(store, row)
        self._write(store, row, values)
        self.version += 1
        store.changed[row] = self.version
        return eid

    def update(self, entity_id: int, **fields: Any) -> None:
        """Change some fields of an entity. All are quantized before any is written, so an
        out-of-range value (with ``on_out_of_range="raise"``) leaves the entity untouched."""
        entry = self._entries[entity_id]
        self._write(entry.store, entry.row, self._quantize(entry.store.schema, fields))

    def set(self, entity_id: int, obj: object) -> None:
        """Replace an entity's whole state (same type)."""
        entry = self._entries[entity_id]
        schema = entry.store.schema
        if self.registry.of(obj) is not schema:
            raise TypeError(f"entity {entity_id} is a {schema.cls.__name__}")
        values = self._quantize(schema, {n: getattr(obj, n) for n in schema.names})
        self._write(entry.store, entry.row, values)

    def despawn(self, entity_id: int) -> None:
        """Remove an entity; its id is reused later (after the other free ids)."""
        entry = self._entries.pop(entity_id)
        entry.store.free(entry.row)
        self.version += 1
        self._free_ids.append(entity_id)

    def get(self, entity_id: int) -> Any:
        """The entity as clients see it: an instance holding the dequantized values."""
        return self.schema_of(entity_id).from_slots(self.quantized(entity_id))

    def schema_of(self, entity_id: int) -> EntitySchema:
        return self._entries[entity_id].store.schema

    def quantized(self, entity_id: int) -> list[Slot]:
        """The entity's slots as a client holds them (strings as text)."""
        entry = self._entries[entity_id]
        store, row = entry.store, entry.row
        out: list[Slot] = [int(v) for v in store.q[row]]
        for k, f in enumerate(store.schema.string_fields):
            out[store.schema.first_slot[f]] = store.text[k][row]
        return out

    def _quantize(self, schema: EntitySchema, fields: dict[str, Any]) -> list[tuple[int, Any]]:
        index = {n: i for i, n in enumerate(schema.names)}
        out: list[tuple[int, Any]] = []
        for name, value in fields.items():
            try:
                i = index[name]
            except KeyError:
                raise AttributeError(f"{schema.cls.__name__} has no field {name!r}") from None
            codec = schema.codecs[i]
            if isinstance(codec, StringCodec):
                out.append((i, codec.normalize(value)))
            else:
                out.append((i, codec.to_slots(value)))
        return out

    def _write(self, store: TypeStore, row: int, values: list[tuple[int, Any]]) -> None:
        schema = store.schema
        q = store.q
        changed = False
        for i, v in values:
            first = schema.first_slot[i]
            if isinstance(v, bytes):
                k = schema.string_fields.index(i)
                text = v.decode("utf-8")
                if store.text[k][row] == text and q[row, first] != 0:
                    continue
                self._string_version += 1
                q[row, first] = self._string_version
                store.text[k][row] = text
                store.str_len[k][row] = len(v)
                store.str_bytes[k][row, :] = 0
                store.str_bytes[k][row, : len(v)] = np.frombuffer(v, dtype=np.uint8)
                changed = True
            elif len(v) == 1:
                if q[row, first] != v[0]:
                    q[row, first] = v[0]
                    changed = True
            elif (q[row, first : first + len(v)] != v).any():
                q[row, first : first + len(v)] = v
                changed = True
        if changed:
            self.version += 1
            store.changed[row] = self.version
