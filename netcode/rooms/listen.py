"""Listen servers: a participant of a peer-to-peer room hosts the game for the others.

::

    room = Room()
    await room.connect(url, host_token)  # Grants(room_join=True, room="duel", room_host=True)
    game = GameHost(tick_rate=30)
    game.on_join = ...                   # the same game code as on a room server
    room.host_game(game)                 # starts ticking; the others' Replicas follow it

The room server makes the first participant admitted with the ``room_host`` grant the
room's host and tells everyone (PEER_INFO). That participant's process runs the
authoritative :class:`~netcode.rooms.host.GameHost` (or any
:class:`~netcode.rooms.server.RoomHost`), and each other participant's
:class:`~netcode.rooms.replica.Replica` replicates from it over their direct link: the
same HELLO, SNAPSHOT, INPUT, INPUT_ACK and RECEIPT a room server's game host exchanges with
its clients, on the pair's endpoint, so prediction, interpolation, receipts and resync work
unchanged. On a client, a HOST or HOST_ENTITY message, an event or data with sender pid 0
is the game host's only when it comes over the host's pair (0 stands for the game host, as
it stands for the server in a group room); the host's game layer sends with pid 0, its
participant with its own pid.

The host sees each peer as a :class:`HostedPeer`: the part of
:class:`~netcode.rooms.server.ServerParticipant` a game host uses (``pid``, ``identity``,
``name``, ``metadata``, ``claims``, ``room``, ``connection``, ``topics_out``,
``subscribes_to``, ``send_frame``, ``send_extension``, ``release_events``, ``disconnect``,
``left``, ``reconnecting``), and the room as a :class:`ListenRoom` (``participants``,
``send_event``, ``send_data``, ``by_identity``). A peer joins the game when its direct
link first opens; a dropped link makes it *reconnecting* until the pair is rebuilt; it
leaves when it leaves the room. The host receives the game events sent to it (to everyone,
or naming the host's identity), not those two other participants exchange.

When the host leaves the room, the room server disconnects everyone else with
``host_left``: the game is over. Host migration (not built) would let the server name a
new host instead (PEER_INFO with the host flag) and have the new host rebuild the world:
the clients' Replicas hold the newest snapshot, so the new host could start from its own
replica's entities, re-assign each participant's entity and start a new snapshot epoch;
what only the old host knew (inputs not yet applied, hidden state) is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from netcode.auth import Claims, Grants
from netcode.errors import NetcodeError, ProtocolError
from netcode.rooms.protocol import wanted_pids

if TYPE_CHECKING:
    from netcode.rooms.client import Room
    from netcode.rooms.p2p import Mesh, PeerPair
    from netcode.rooms.server import RoomHost, ServerParticipant, ServerRoom
    from netcode.rooms.topics import OutgoingTopics
    from netcode.trace import TraceWriter
    from netcode.transport.connection import DatagramConnection

__all__ = ["HostedPeer", "ListenRoom", "host_game"]

logger = logging.getLogger(__name__)


def _participant(peer: HostedPeer) -> ServerParticipant:
    # A HostedPeer offers the part of ServerParticipant a RoomHost uses (module docstring).
    return cast("ServerParticipant", peer)


class _NoServer:
    """What a game host reads of ``room.server`` on a listen server (no trace)."""

    trace: TraceWriter | None = None


class HostedPeer:
    """A participant as a listen host's game sees it (see the module docstring)."""

    def __init__(self, room: ListenRoom, pair: PeerPair) -> None:
        self.room = room
        self.pair = pair
        self.pid = pair.pid
        participant = pair.participant
        self.identity: str = participant.identity if participant is not None else ""
        self.name: str = participant.name if participant is not None else ""
        self.metadata: str = participant.metadata if participant is not None else ""
        #: the peer's rights as the room server announced them (no expiry is known here)
        self.claims = Claims(
            identity=self.identity,
            name=self.name,
            metadata=self.metadata,
            grants=Grants(
                room_join=True,
                room=room.name,
                can_publish_data=pair.can_publish,
                can_subscribe=pair.can_subscribe,
            ),
            expires_at=0.0,
        )
        #: set once the peer left the room
        self.left = asyncio.Event()
        #: True while the direct link is down and being rebuilt
        self.reconnecting = False
        #: the game stopped serving this peer (see :meth:`disconnect`)
        self.end_reason = ""

    @property
    def connection(self) -> DatagramConnection:
        return self.pair.connection

    @property
    def topics_out(self) -> OutgoingTopics:
        return self.pair.topics_out

    @property
    def can_publish(self) -> bool:
        return self.pair.can_publish

    @property
    def can_subscribe(self) -> bool:
        return self.pair.can_subscribe

    def subscribes_to(self, topic: str) -> bool:
        return self.pair.wants(topic)

    def send_frame(
        self, frame_type: int, payload: bytes, *, topic: str = "", **options: Any
    ) -> None:
        """A frame of the game to this peer (``topic`` only labels it, as on a server)."""
        self.pair.connection.send_frame(frame_type, payload, **options)

    def release_events(self) -> None:
        """Let the events held for the host's tick leave at the next flush (as
        ServerParticipant.release_events)."""
        if self.pair.events.channel.release_new():
            self.pair.connection.schedule_flush()

    def send_extension(self, channel: int, body: bytes, sender_pid: int = 0) -> None:
        """An EXTENSION message from the game host (pid 0) to this peer."""
        self.pair.send_extension(channel, body, pid=sender_pid)

    def send_data(
        self, sender_pid: int, topic: str, text: bool, payload: bytes, lossy: bool
    ) -> None:
        self.pair.send_data(sender_pid, topic, text, payload, lossy)

    def disconnect(self, code: str = "", message: str = "") -> None:
        """Stop serving this peer in the game (it stays in the room; a listen host cannot
        remove it from the room server)."""
        if self.end_reason:
            return
        self.end_reason = code or "disconnected"
        logger.warning("listen host: no longer serving %s (%s: %s)", self.identity, code, message)
        self.room._drop(self)

    def __repr__(self) -> str:
        return f"<HostedPeer {self.identity!r} pid={self.pid}>"


class ListenRoom:
    """The room as a listen host's game sees it (see the module docstring)."""

    def __init__(self, room: Room, mesh: Mesh) -> None:
        self.client = room
        self.mesh = mesh
        self.name = room.name
        self.server = _NoServer()
        #: the peers in the game, by pid
        self.participants: dict[int, HostedPeer] = {}
        self.host: RoomHost | None = None

    def by_identity(self, identity: str) -> HostedPeer | None:
        for peer in self.participants.values():
            if peer.identity == identity:
                return peer
        return None

    def attach_host(self, host: RoomHost) -> None:
        """Attach the game; it is told of the peers already connected."""
        self.host = host
        for pair in list(self.mesh.pairs.values()):
            if pair.is_open:
                self._peer_ready(pair)

    def _wanted(
        self, pids: int | Iterable[int], identities: str | Iterable[str]
    ) -> set[int] | None:
        """The pids named (empty: everyone); None if only identities not here were named."""
        return wanted_pids(self.participants.values(), pids, identities)

    def _targets(self, wanted: set[int], topic: str) -> list[HostedPeer]:
        return [
            peer
            for peer in self.participants.values()
            if (not wanted or peer.pid in wanted) and peer.subscribes_to(topic)
        ]

    def send_event(
        self,
        event: Any,
        *,
        topic: str = "",
        destination_pids: int | Iterable[int] = (),
        destination_identities: str | Iterable[str] = (),
    ) -> None:
        """A game event from the game host (pid 0) to the peers named (default: all)."""
        wanted = self._wanted(destination_pids, destination_identities)
        if wanted is None:
            return
        for peer in self._targets(wanted, topic):
            pair = peer.pair
            codec = pair.events.registry.of(event)
            pair.events.send_down(codec.type_id, 0, topic, codec.encode(event))
            host = self.host
            paced = host is not None and host.sends_every_tick
            pair.events.channel.hold_new = paced  # until the tick (HostedPeer.release_events)
            if not paced:
                pair.connection.schedule_flush()

    def send_data(
        self,
        payload: bytes | str,
        *,
        reliable: bool = True,
        topic: str = "",
        destination_pids: int | Iterable[int] = (),
        destination_identities: str | Iterable[str] = (),
    ) -> None:
        """A data packet from the game host (pid 0) to the peers named (default: all)."""
        text = isinstance(payload, str)
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        wanted = self._wanted(destination_pids, destination_identities)
        if wanted is None:
            return
        for peer in self._targets(wanted, topic):
            peer.send_data(0, topic, text, data, lossy=not reliable)

    # ------------------------------------------------------------------ from the mesh

    def _peer_ready(self, pair: PeerPair) -> None:
        peer = self.participants.get(pair.pid)
        host = self.host
        if peer is not None:
            if peer.reconnecting and not peer.end_reason:
                peer.reconnecting = False
                if host is not None:
                    host.participant_reconnected(_participant(peer))
            return
        peer = self.participants[pair.pid] = HostedPeer(self, pair)
        if host is not None:
            host.participant_joined(_participant(peer))

    def _peer_lost(self, pair: PeerPair) -> None:
        peer = self.participants.get(pair.pid)
        if peer is None or peer.reconnecting:
            return
        peer.reconnecting = True
        if self.host is not None and not peer.end_reason:
            self.host.participant_reconnecting(_participant(peer))

    def _peer_left(self, pair: PeerPair) -> None:
        peer = self.participants.pop(pair.pid, None)
        if peer is None:
            return
        peer.left.set()
        if self.host is not None and not peer.end_reason:
            self.host.participant_left(_participant(peer))

    def _drop(self, peer: HostedPeer) -> None:
        if self.participants.get(peer.pid) is peer:
            del self.participants[peer.pid]
            peer.left.set()
            if self.host is not None:
                self.host.participant_left(_participant(peer))

    def _served(self, pair: PeerPair) -> HostedPeer | None:
        peer = self.participants.get(pair.pid)
        return None if peer is None or peer.end_reason else peer

    def _frame_received(self, pair: PeerPair, frame_type: int, payload: bytes) -> None:
        peer = self._served(pair)
        if peer is None or self.host is None:
            return
        self.host.frame_received(_participant(peer), frame_type, payload)  # ProtocolError: counted

    def _extension_received(self, pair: PeerPair, channel: int, body: bytes) -> None:
        peer = self._served(pair)
        if peer is not None and self.host is not None:
            self.host.extension_received(_participant(peer), channel, body)

    def _event_received(self, pair: PeerPair, event: Any, topic: str) -> None:
        peer = self._served(pair)
        if peer is not None and self.host is not None:
            try:
                self.host.event_received(_participant(peer), event, topic)
            except ProtocolError:
                raise
            except Exception:
                logger.exception("the game host's event_received raised")

    def _close(self) -> None:
        host, self.host = self.host, None
        if host is not None:
            host.close()
        for peer in self.participants.values():
            peer.left.set()
        self.participants.clear()


def host_game(room: Room, host: RoomHost) -> ListenRoom:
    """Host ``host`` (a GameHost, or any RoomHost) for the other participants of ``room``.

    ``room`` must be connected to a peer-to-peer room as its host (its token has the
    ``room_host`` grant and it was the first with it). A GameHost starts ticking at once.
    Raises NetcodeError otherwise.
    """
    from netcode.rooms.host import GameHost

    mesh = room.mesh
    if mesh is None:
        raise NetcodeError("only a peer-to-peer room can have a listen host")
    if not mesh.is_host:
        raise NetcodeError(
            "this participant is not the room's host (its token needs the room_host grant, "
            "and another participant may host already)"
        )
    if mesh.listen is not None:
        raise NetcodeError("this room already hosts a game")
    listen = mesh.listen = ListenRoom(room, mesh)
    if isinstance(host, GameHost):
        # A ListenRoom and its HostedPeers offer the surface of ServerRoom and
        # ServerParticipant that a GameHost uses (see the module docstring).
        host.attach(cast("ServerRoom", listen))
    else:
        listen.attach_host(host)
    return listen
