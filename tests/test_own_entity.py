"""A client learns which entity is its own: GameHost.assign_entity -> Replica.own_entity_id."""

from __future__ import annotations

import pytest
from helpers import eventually

from netcode import (
    GameHost,
    Replica,
    Room,
    RoomServer,
    SchemaRegistry,
    ServerParticipant,
    entity,
    qfloat,
)
from netcode.cli import make_token
from netcode.errors import ProtocolError
from netcode.rooms.protocol import decode_own_entity_untrusted, encode_own_entity

KEY, SECRET = "own-key", "own-secret-own-secret-own-secret-own!"
REGISTRY = SchemaRegistry()


@entity(type_id=1, registry=REGISTRY)
class Pawn:
    x: float = qfloat(0, 10, 0.01)


def test_own_entity_message_round_trips_and_refuses_garbage() -> None:
    for topic, eid in (("position", 7), ("environment", None), ("position", 2**32 - 1)):
        assert decode_own_entity_untrusted(encode_own_entity(topic, eid)) == (topic, eid)
    assert encode_own_entity("position", 7) == b"\x01\x00\x00\x00\x07position"
    for bad in (
        b"",
        b"\x01\x00\x00\x00\x07",
        b"\x03\x00\x00\x00\x07position",
        b"\x01\0\0\0\x07\xff",
    ):
        with pytest.raises(ProtocolError):
            decode_own_entity_untrusted(bad)


@pytest.mark.webrtc
async def test_each_client_is_told_its_own_entity() -> None:
    async with RoomServer(KEY, SECRET) as server:
        await server.start("127.0.0.1", 0)
        host = GameHost(tick_rate=30, registry=REGISTRY)
        entities: dict[str, int] = {}

        def on_join(participant: ServerParticipant) -> None:
            eid = host.world.spawn(Pawn(x=1))
            entities[participant.identity] = eid
            host.assign_entity(participant, eid)

        host.on_join = on_join
        host.attach(server.room("game"))
        rooms, replicas, told = [], [], []
        for name in ("ann", "ben"):
            room = Room()
            replica = Replica(room, registry=REGISTRY)
            replica.on("own_entity", lambda eid, name=name: told.append((name, eid)))
            await room.connect(server.url, make_token(KEY, SECRET, name, "game"))
            rooms.append(room)
            replicas.append(replica)
        await eventually(lambda: all(r.own_entity() is not None for r in replicas))
        assert [r.own_entity_id for r in replicas] == [entities["ann"], entities["ben"]]
        assert sorted(told) == sorted(entities.items())
        assert replicas[0].own_entity() == Pawn(x=1)
        (ann,) = [p for p in server.rooms["game"].participants.values() if p.identity == "ann"]
        assert host.entity_of(ann) == entities["ann"]
        with pytest.raises(ValueError, match="not in the 'position' world"):
            host.assign_entity(ann, 999)
        with pytest.raises(ValueError, match="'position' or 'environment'"):
            host.assign_entity(ann, entities["ann"], topic="chat")
        host.assign_entity(ann, None)
        await eventually(lambda: replicas[0].own_entity_id is None)
        assert told[-1] == ("ann", None) and host.entity_of(ann) is None
        await rooms[1].disconnect()
        await eventually(lambda: list(host.own_entities) == [])  # ben left: forgotten
        await rooms[0].disconnect()
        await host.stop()
