"""The room server's side of peer-to-peer rooms: admission, roles and signaling, no data.

In a peer-to-peer room (``RoomServer(room_types={"duel": "p2p"})`` or
``server.room("duel", p2p=True)``) participants join the room server exactly as in a group
room: the token is checked at signaling, the participant gets JOINED, the others
PARTICIPANT_JOINED, and the server link carries the session (resume, dead-link detection,
track bookkeeping). What changes is the data path: every pair of participants holds its own
peer connection, and the room server relays nothing but the offers and answers that make
them.

- PEER_INFO tells each participant the others' rights on the mesh (may publish, may
  subscribe, is the room's listen host), so a receiver can refuse what a peer's token does
  not allow. A newcomer gets one for itself first (its own rights, and the sign that the
  room is peer-to-peer), then one per participant already there; the others get one for the
  newcomer after its PARTICIPANT_JOINED.
- PEER_OFFER / PEER_ANSWER carry SDP between two participants. The client names the
  participant the SDP is for; the server replaces that pid with the sender's before
  forwarding, so the SDP (and the DTLS fingerprint in it) that reaches a participant is
  bound to the identity the server admitted. Of each pair the participant with the lower
  pid offers; the server refuses the other direction.
- The room's *listen host* is the first participant admitted with the ``room_host`` grant;
  another one with the grant is refused while the host is in the room. When the host
  leaves, the game is over: every other participant is disconnected with ``host_left``.
- Data sent to the server in a peer-to-peer room (DATA, TOPIC, game events, RPC and stream
  messages, data-track channels) is a protocol error: nothing is relayed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from netcode.auth import Claims, MissingGrant
from netcode.errors import ProtocolError
from netcode.rooms.protocol import (
    PEER_HOST,
    PEER_PUBLISH,
    PEER_SUBSCRIBE,
    ExtensionChannel,
    Kind,
)

if TYPE_CHECKING:
    from netcode.rooms.server import ServerParticipant, ServerRoom

__all__ = [
    "MAX_SDP_CHARS",
    "ROOM_TYPES",
    "announce_join",
    "check_join",
    "peer_flags",
    "peer_left",
    "refuse_data",
    "refuse_relayed_extension",
    "relay_answer",
    "relay_offer",
]

logger = logging.getLogger(__name__)

#: Room types a RoomServer knows.
ROOM_TYPES = frozenset({"group", "p2p"})
#: Longest SDP the server forwards (an offer with a few candidates is about 1 KB).
MAX_SDP_CHARS = 12 * 1024
#: EXTENSION channels whose messages go peer to peer in a P2P room.
_PEER_CHANNELS = frozenset(
    {ExtensionChannel.EVENTS, ExtensionChannel.RPC, ExtensionChannel.STREAMS}
)


def peer_flags(room: ServerRoom, participant: ServerParticipant) -> int:
    """The PEER_INFO flags of ``participant``."""
    grants = participant.claims.grants
    return (
        (PEER_PUBLISH if grants.can_publish_data else 0)
        | (PEER_SUBSCRIBE if grants.can_subscribe else 0)
        | (PEER_HOST if participant.pid == room.host_pid else 0)
    )


def check_join(room: ServerRoom, claims: Claims) -> None:
    """Refuse a second listen host while the room has one (MissingGrant ``room_host``)."""
    if claims.grants.room_host and room.host_pid:
        host = room.participants.get(room.host_pid)
        if host is not None and host.identity != claims.identity:
            raise MissingGrant(
                f"room {room.name!r} already has a host ({host.identity!r})", grant="room_host"
            )


def announce_join(room: ServerRoom, participant: ServerParticipant) -> None:
    """After JOINED and PARTICIPANT_JOINED: the PEER_INFO messages of a P2P room."""
    if participant.claims.grants.room_host and not room.host_pid:
        room.host_pid = participant.pid
        logger.info("%s hosts room %r", participant.identity, room.name)
    participant.send_message(
        Kind.PEER_INFO, pid=participant.pid, flags=peer_flags(room, participant)
    )
    for other in list(room.participants.values()):
        if other is participant:
            continue
        participant.send_message(Kind.PEER_INFO, pid=other.pid, flags=peer_flags(room, other))
        other.send_message(Kind.PEER_INFO, pid=participant.pid, flags=peer_flags(room, participant))


def peer_left(room: ServerRoom, participant: ServerParticipant) -> None:
    """A participant left a P2P room: if it was the listen host, the game is over."""
    if participant.pid != room.host_pid:
        return
    room.host_pid = 0
    logger.info("room %r: the host %s left; ending the game", room.name, participant.identity)
    for other in list(room.participants.values()):
        other.disconnect("host_left", f"the game host {participant.identity!r} left the room")


def _relay(sender: ServerParticipant, kind: Kind, body: Any) -> None:
    room = sender.room
    if not room.p2p:
        raise ProtocolError(f"{kind.name} outside a peer-to-peer room")
    if len(body.sdp) > MAX_SDP_CHARS:
        raise ProtocolError(f"{kind.name} with an SDP over {MAX_SDP_CHARS} characters")
    target = room.participants.get(body.pid)
    if target is None or target is sender:
        return  # it left meanwhile (or never was): nothing to connect to
    offering = kind is Kind.PEER_OFFER
    if (sender.pid < target.pid) != offering:
        raise ProtocolError(f"{kind.name}: of a pair, the lower pid offers and the other answers")
    room.signals_relayed += 1
    target.send_message(kind, pid=sender.pid, attempt=body.attempt, sdp=body.sdp)


def relay_offer(sender: ServerParticipant, body: Any) -> None:
    """PEER_OFFER from ``sender``: forward it, stamped with the sender's pid."""
    _relay(sender, Kind.PEER_OFFER, body)


def relay_answer(sender: ServerParticipant, body: Any) -> None:
    """PEER_ANSWER from ``sender``: forward it, stamped with the sender's pid."""
    _relay(sender, Kind.PEER_ANSWER, body)


def refuse_data(sender: ServerParticipant, body: Any) -> None:
    """DATA and TOPIC in a P2P room: the server relays no data."""
    raise ProtocolError("data goes peer to peer in a P2P room, not through the server")


def refuse_relayed_extension(sender: ServerParticipant, body: Any) -> None:
    """EXTENSION in a P2P room: events, RPC and streams go peer to peer."""
    if body.channel in _PEER_CHANNELS:
        raise ProtocolError(
            f"EXTENSION channel {body.channel} goes peer to peer in a P2P room, not through "
            "the server"
        )
    sender._on_extension(body)
