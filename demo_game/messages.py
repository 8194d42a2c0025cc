"""The arena's game events and its input encoding.

Events travel on netcode's reliable, ordered event channel. Pickups use the built-in
:class:`~netcode.rooms.events.Spawn` and :class:`~netcode.rooms.events.Despawn` (``kind`` is
the pickup kind's name, e.g. ``"gem"``); a client says something with the built-in
:class:`~netcode.rooms.events.Chat` on the ``say`` topic, which only the server reads (no
client subscribes to it), and the server broadcasts the sanitised line as a
:class:`ChatLine` with the sender's player. Topics: ``game`` for pickups and scores,
``chat`` for chat lines.

An input (:class:`~demo_game.sim.PlayerInput`) is two signed bytes, the movement axes in
1/127 steps; the tick travels in netcode's INPUT frame. The client predicts with the
decoded input, so the server and the prediction apply exactly the same movement.
"""

from __future__ import annotations

import struct

import attrs

from demo_game.sim import PickupKind, PickupState, PlayerInput
from netcode.rooms.events import Chat, Despawn, Spawn, event_type

__all__ = [
    "CHAT_TOPIC",
    "GAME_TOPIC",
    "SAY_TOPIC",
    "SUBSCRIBED_TOPICS",
    "Chat",
    "ChatLine",
    "Despawn",
    "PickupTaken",
    "Spawn",
    "decode_input",
    "decode_input_untrusted",
    "encode_input",
    "pickup_from_spawn",
    "spawn_of_pickup",
]

GAME_TOPIC = "game"
CHAT_TOPIC = "chat"
SAY_TOPIC = "say"
#: What a client subscribes to (everything but ``say``, which is for the server only).
SUBSCRIBED_TOPICS = ("position", "environment", GAME_TOPIC, CHAT_TOPIC)

_AXIS_STEPS = 127
_INPUT = struct.Struct("!bb")


@event_type(type_id=16)
@attrs.frozen
class ChatLine:
    """A chat line as the server posts it to everyone (``player_id`` 0: the server)."""

    player_id: int  #: the sender's player entity id
    name: str  #: the sender's name
    text: str  #: sanitised text


@event_type(type_id=17)
@attrs.frozen
class PickupTaken:
    """A player collected a pickup (a Despawn of the pickup follows)."""

    pickup_id: int  #: the pickup
    player_id: int  #: the collector's player entity id
    kind: str  #: "coin", "gem" or "heart"
    points: int  #: points gained
    score: int  #: the collector's new score


def encode_input(inp: PlayerInput) -> bytes:
    """The movement of ``inp`` in two bytes."""
    mx = max(-1.0, min(1.0, inp.move_x))
    my = max(-1.0, min(1.0, inp.move_y))
    return _INPUT.pack(round(mx * _AXIS_STEPS), round(my * _AXIS_STEPS))


def decode_input_untrusted(tick: int, data: bytes) -> PlayerInput | None:
    """The input for ``tick`` from a client's bytes; None if malformed."""
    if len(data) != _INPUT.size:
        return None
    qx, qy = _INPUT.unpack(data)
    return PlayerInput(tick=tick, move_x=qx / _AXIS_STEPS, move_y=qy / _AXIS_STEPS)


def decode_input(tick: int, data: bytes) -> PlayerInput:
    """Decode an input this side encoded (raises ValueError if malformed)."""
    inp = decode_input_untrusted(tick, data)
    if inp is None:
        raise ValueError(f"an input is {_INPUT.size} bytes, not {len(data)}")
    return inp


def spawn_of_pickup(pickup: PickupState) -> Spawn:
    """The Spawn event announcing ``pickup``."""
    return Spawn(entity_id=pickup.id, kind=pickup.kind.name.lower(), x=pickup.x, y=pickup.y)


def pickup_from_spawn(event: Spawn) -> PickupState | None:
    """The pickup a Spawn event announces; None for an unknown kind."""
    try:
        kind = PickupKind[event.kind.upper()]
    except KeyError:
        return None
    return PickupState(id=event.entity_id, kind=kind, x=event.x, y=event.y)
