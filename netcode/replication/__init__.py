"""Snapshot replication, sans-IO: quantized entity schemas, the server world, a per-client
delta encoder that packs snapshots into single-datagram parts, and the client decoder.

Time and ticks come in as arguments; nothing here reads a clock or does IO.
"""

from netcode.replication.decoder import (
    DecodedPart,
    DecodedRecord,
    EntityDespawned,
    EntitySpawned,
    PartReceived,
    SnapshotDecoder,
    decode_part_untrusted,
)
from netcode.replication.encoder import (
    ClientView,
    InterestFn,
    PriorityFn,
    SnapshotEncoder,
    SnapshotPart,
)
from netcode.replication.schema import (
    DEFAULT_REGISTRY,
    EntitySchema,
    QuantizationError,
    SchemaRegistry,
    entity,
    qangle,
    qbool,
    qcolor,
    qenum,
    qfloat,
    qint,
    qquat,
    qstring,
    schema_of,
)
from netcode.replication.wire import Receipt, decode_receipt_untrusted, encode_receipt
from netcode.replication.world import TypeStore, World

__all__ = [
    "DEFAULT_REGISTRY",
    "ClientView",
    "DecodedPart",
    "DecodedRecord",
    "EntityDespawned",
    "EntitySchema",
    "EntitySpawned",
    "InterestFn",
    "PartReceived",
    "PriorityFn",
    "QuantizationError",
    "Receipt",
    "SchemaRegistry",
    "SnapshotDecoder",
    "SnapshotEncoder",
    "SnapshotPart",
    "TypeStore",
    "World",
    "decode_part_untrusted",
    "decode_receipt_untrusted",
    "encode_receipt",
    "entity",
    "qangle",
    "qbool",
    "qcolor",
    "qenum",
    "qfloat",
    "qint",
    "qquat",
    "qstring",
    "schema_of",
]
