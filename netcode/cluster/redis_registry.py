"""Many machines: room servers ("nodes") that find each other through Redis.

::

    registry = RedisRegistry("redis://10.0.0.5:6379", forward_key=shared_secret)
    node = ClusterNode(server, registry)               # server: a started RoomServer
    await node.start()                                 # registers it, keeps its leases
    router = SignalingRouter(registry, forward_key=shared_secret)
    await router.start("0.0.0.0", 7880)                # any node's router is an entry

(``netcode-server --redis URL`` does this.) What Redis holds, under ``prefix``
(``netcode:``):

- ``node:<instance_id>``: a live node's URL and load (participants, rooms), a *lease*: set
  with a TTL of ``lease_s`` and refreshed every ``refresh_s``; ``nodes``: the set of node
  ids (stale ids are dropped by whoever reads them);
- ``room:<name>``: the id of the node hosting the room, a lease too (``SET NX`` semantics:
  a room is placed once; its node refreshes it while the room exists there).

A join sent to any node's router is routed with one Redis round trip (a script: the room's
node if it and its node are alive, else place the room on the node with the fewest
participants and record it). The router proxies the request to that node (see
:mod:`netcode.transport.router`); the WebRTC traffic then flows between the client and that
node. A resume is routed by its session id's prefix (the node's ``instance_id``); a node
whose lease has expired is gone, and the resume is refused as ``node_lost``, which the client
reports as ``disconnected("node_lost")``. The room's lease expires with its node, and the
next join places it again on a live node.

Server-side code anywhere can send into a room wherever it lives
(:meth:`RedisRegistry.send_data`, :meth:`RedisRegistry.send_event`): a Redis PUBLISH on the
room's channel ``room:<name>``, which the hosting node subscribes to while the room exists
there and relays with :meth:`ServerRoom.send_data` / :meth:`ServerRoom.send_event`.

Redis operations are counted in docs/SCALE.md. Redis is optional: without it nothing here is
imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

import attrs
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from netcode.rooms.events import DEFAULT_EVENT_TYPES, EventRegistry
from netcode.rooms.protocol import identity_list
from netcode.rooms.server import RoomServer
from netcode.transport.router import Route

__all__ = ["ClusterNode", "NodeInfo", "RedisRegistry"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "netcode:"
DEFAULT_LEASE_S = 10.0

# KEYS: room key, nodes set. ARGV: node key prefix, room lease (ms).
# Returns {node id, node record} or false (no live node).
_ROUTE_JOIN = """
local owner = redis.call('GET', KEYS[1])
if owner then
  local node = redis.call('GET', ARGV[1] .. owner)
  if node then return {owner, node} end
end
local best, best_node, best_load = nil, nil, nil
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local node = redis.call('GET', ARGV[1] .. id)
  if node then
    local load = tonumber(cjson.decode(node)['participants']) or 0
    if best_load == nil or load < best_load then best, best_node, best_load = id, node, load end
  else
    redis.call('SREM', KEYS[2], id)
  end
end
if not best then return false end
redis.call('SET', KEYS[1], best, 'PX', ARGV[2])
local info = cjson.decode(best_node)
info['participants'] = best_load + 1
redis.call('SET', ARGV[1] .. best, cjson.encode(info), 'KEEPTTL')
return {best, best_node}
"""

# KEYS: node key, nodes set, then the node's room keys. ARGV: node id, node record, lease (ms).
# Refreshes the node's lease and its rooms' (claiming the free ones); returns the room keys
# another node holds.
_REFRESH = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
local taken = {}
for i = 3, #KEYS do
  local owner = redis.call('GET', KEYS[i])
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
  elseif not owner then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[3])
  else
    table.insert(taken, KEYS[i])
  end
end
return taken
"""

# KEYS: node key, nodes set, then room keys. ARGV: node id. Deletes what the node holds.
_DEREGISTER = """
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1
"""


@attrs.frozen
class NodeInfo:
    """A live node as Redis has it."""

    node_id: str
    url: str
    participants: int
    rooms: int


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisRegistry:
    """The cluster's state in Redis: routes joins and resumes (a router's
    :class:`~netcode.transport.router.Directory`), and sends into rooms on any node.

    ``forward_key``: the secret every node's signaling server and every router share (the
    routers' ``X-Netcode-Forward-Key``). ``lease_s``: how long a node or room record lives
    without a refresh (a dead node is noticed after at most this long).
    """

    def __init__(
        self,
        url: str,
        *,
        forward_key: str = "",
        prefix: str = DEFAULT_PREFIX,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive, got {lease_s!r}")
        self.url = url
        self.forward_key = forward_key
        self.prefix = prefix
        self.lease_s = lease_s
        self.redis: aioredis.Redis = aioredis.from_url(url)
        self._route_join = self.redis.register_script(_ROUTE_JOIN)
        self._refresh = self.redis.register_script(_REFRESH)
        self._deregister = self.redis.register_script(_DEREGISTER)
        self._any: tuple[float, list[NodeInfo]] = (0.0, [])
        #: Redis round trips made, by purpose (for docs/SCALE.md's counts)
        self.round_trips: dict[str, int] = {}

    async def close(self) -> None:
        await self.redis.aclose()

    # keys

    def node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def room_key(self, room: str) -> str:
        return f"{self.prefix}room:{room}"

    def room_channel(self, room: str) -> str:
        return f"{self.prefix}room:{room}"

    @property
    def nodes_key(self) -> str:
        return f"{self.prefix}nodes"

    def _count(self, purpose: str) -> None:
        self.round_trips[purpose] = self.round_trips.get(purpose, 0) + 1

    # reading

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes (two round trips)."""
        self._count("nodes")
        ids = sorted(_text(i) for i in await self.redis.smembers(self.nodes_key))
        if not ids:
            return []
        self._count("nodes")
        records = await self.redis.mget([self.node_key(i) for i in ids])
        return [_node_info(i, r) for i, r in zip(ids, records, strict=True) if r is not None]

    async def room_node(self, room: str) -> str | None:
        """The id of the node hosting ``room`` (None: nowhere yet, or its lease expired)."""
        self._count("room_node")
        owner = await self.redis.get(self.room_key(room))
        return None if owner is None else _text(owner)

    # Directory (for a SignalingRouter)

    async def route_join(self, room: str) -> Route:
        self._count("route_join")
        try:
            found = await self._route_join(
                keys=[self.room_key(room), self.nodes_key],
                args=[f"{self.prefix}node:", int(self.lease_s * 1000)],
            )
        except RedisError as exc:
            logger.warning("Redis: routing a join failed: %s", exc)
            return Route.refuse(503, "unavailable", "the cluster registry is unreachable")
        if not found:
            return Route.refuse(503, "unavailable", "no node is running")
        return Route.to(_node_info(_text(found[0]), found[1]).url)

    async def route_resume(self, session_id: str) -> Route:
        node_id = session_id.partition(".")[0]
        self._count("route_resume")
        try:
            record = await self.redis.get(self.node_key(node_id))
        except RedisError as exc:
            logger.warning("Redis: routing a resume failed: %s", exc)
            return Route.refuse(503, "unavailable", "the cluster registry is unreachable")
        if record is None:
            return Route.refuse(
                410, "node_lost", "the node that held this session is gone: join again"
            )
        return Route.to(_node_info(node_id, record).url)

    async def route_any(self) -> Route:
        cached_at, nodes = self._any
        if time.monotonic() - cached_at > 1.0:
            try:
                nodes = await self.nodes()
            except RedisError as exc:
                logger.warning("Redis: listing nodes failed: %s", exc)
                return Route.refuse(503, "unavailable", "the cluster registry is unreachable")
            self._any = (time.monotonic(), nodes)
        if not nodes:
            return Route.refuse(503, "unavailable", "no node is running")
        return Route.to(min(nodes, key=lambda n: (n.participants, n.node_id)).url)

    def unreachable(self, url: str) -> None:
        self._any = (0.0, [])  # its lease expires soon: until then, joins to it fail fast

    # sending into rooms anywhere

    async def send_data(
        self,
        room: str,
        payload: bytes | str,
        *,
        topic: str = "",
        reliable: bool = True,
        destination_identities: str | Iterable[str] = (),
    ) -> int:
        """Send a data packet from the server (sender pid 0) into ``room`` on whichever node
        hosts it, as :meth:`ServerRoom.send_data` would there. Returns the number of nodes
        that received it: 0 if no node hosts the room (nothing is queued)."""
        text = isinstance(payload, str)
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        header = {
            "kind": "data",
            "topic": topic,
            "reliable": reliable,
            "text": text,
            "to": identity_list(destination_identities),
        }
        return await self._publish(room, header, data)

    async def send_event(
        self,
        room: str,
        event: Any,
        *,
        topic: str = "",
        destination_identities: str | Iterable[str] = (),
        registry: EventRegistry | None = None,
    ) -> int:
        """Send a game event from the server into ``room`` on whichever node hosts it, as
        :meth:`ServerRoom.send_event` would there (the node decodes it with the same event
        type registry). Returns the number of nodes that received it (0: none hosts it)."""
        codec = (registry or DEFAULT_EVENT_TYPES).of(event)
        header = {
            "kind": "event",
            "type_id": codec.type_id,
            "topic": topic,
            "to": identity_list(destination_identities),
        }
        return await self._publish(room, header, codec.encode(event))

    async def _publish(self, room: str, header: dict[str, Any], body: bytes) -> int:
        self._count("publish")
        message = json.dumps(header).encode() + b"\n" + body
        return int(await self.redis.publish(self.room_channel(room), message))


def _node_info(node_id: str, record: bytes | str) -> NodeInfo:
    fields = json.loads(record)
    return NodeInfo(
        node_id=node_id,
        url=str(fields.get("url", "")),
        participants=int(fields.get("participants", 0)),
        rooms=int(fields.get("rooms", 0)),
    )


class ClusterNode:
    """Makes a started :class:`RoomServer` a node of a Redis cluster (see the module).

    ``url``: where the routers reach this server (default :attr:`RoomServer.url`, which must
    then be reachable from the other machines). ``refresh_s``: how often the node's lease,
    its load and its rooms' leases are refreshed (default a third of the lease). The
    server's signaling trusts the routers' forwarded client addresses (the registry's
    ``forward_key``).
    """

    def __init__(
        self,
        server: RoomServer,
        registry: RedisRegistry,
        *,
        url: str = "",
        refresh_s: float | None = None,
        event_registry: EventRegistry | None = None,
    ) -> None:
        self.server = server
        self.registry = registry
        self.url = url
        self.node_id = server.instance_id
        self.refresh_s = registry.lease_s / 3 if refresh_s is None else refresh_s
        if not 0 < self.refresh_s < registry.lease_s:
            raise ValueError("refresh_s must be positive and shorter than the lease")
        self.event_registry = event_registry or DEFAULT_EVENT_TYPES
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: Any = None
        self._subscribed: set[str] = set()
        #: messages relayed into local rooms, and those for rooms no longer here
        self.relayed = 0
        self.dropped = 0
        #: lease refreshes that failed (Redis unreachable)
        self.refresh_failures = 0
        if registry.forward_key:
            server.signaling.forward_key = registry.forward_key

    async def start(self) -> None:
        """Register (the server must be started) and keep the leases and subscriptions."""
        self.url = self.url or self.server.url
        await self._refresh_once()
        self._pubsub = self.registry.redis.pubsub()
        # a channel of the node's own keeps the subscription open while it hosts no room
        await self._pubsub.subscribe(self.registry.node_key(self.node_id))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep_leases()), loop.create_task(self._relay())]
        logger.info("cluster node %s registered at %s", self.node_id, self.url)

    async def stop(self) -> None:
        """Stop refreshing and remove the node and its rooms from Redis."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
            self._pubsub = None
        registry = self.registry
        keys = [registry.node_key(self.node_id), registry.nodes_key]
        keys += [registry.room_key(name) for name in self.server.rooms]
        with contextlib.suppress(RedisError, OSError):
            await registry._deregister(keys=keys, args=[self.node_id])

    def _record(self) -> str:
        rooms = self.server.rooms
        participants = sum(len(room.participants) for room in rooms.values())
        return json.dumps({"url": self.url, "participants": participants, "rooms": len(rooms)})

    async def _refresh_once(self) -> None:
        registry = self.registry
        keys = [registry.node_key(self.node_id), registry.nodes_key]
        keys += [registry.room_key(name) for name in self.server.rooms]
        registry._count("refresh")
        taken = await registry._refresh(
            keys=keys, args=[self.node_id, self._record(), int(registry.lease_s * 1000)]
        )
        for key in taken:
            logger.warning("%s is held by another node, yet hosted here too", _text(key))

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self._refresh_once()
            except Exception as exc:  # Redis down, or anything else: try again next time
                self.refresh_failures += 1
                logger.warning(
                    "cluster node %s: refreshing its leases failed: %s", self.node_id, exc
                )

    async def _relay(self) -> None:
        pubsub = self._pubsub
        registry = self.registry
        while True:
            try:
                wanted = {registry.room_channel(name) for name in self.server.rooms}
                if wanted - self._subscribed:
                    await pubsub.subscribe(*(wanted - self._subscribed))
                if self._subscribed - wanted:
                    await pubsub.unsubscribe(*(self._subscribed - wanted))
                self._subscribed = wanted
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            except Exception as exc:  # Redis down, or anything else: try again in a second
                logger.warning("cluster node %s: pub/sub failed: %s", self.node_id, exc)
                await asyncio.sleep(1.0)
                continue
            if message is not None and message.get("type") == "message":
                channel = _text(message["channel"])
                try:
                    self._deliver(channel.removeprefix(registry.prefix + "room:"), message["data"])
                except Exception:  # a bad message is never the node's end
                    logger.exception(
                        "cluster node %s: relaying into %s failed", self.node_id, channel
                    )

    def _deliver(self, room_name: str, data: bytes) -> None:
        room = self.server.rooms.get(room_name)
        if room is None:
            self.dropped += 1
            return
        head, _, body = data.partition(b"\n")
        header = json.loads(head)
        to = [str(i) for i in header.get("to", ())]
        topic = str(header.get("topic", ""))
        if header.get("kind") == "data":
            payload: bytes | str = body.decode() if header.get("text") else body
            room.send_data(
                payload,
                reliable=bool(header.get("reliable", True)),
                topic=topic,
                destination_identities=to,
            )
        elif header.get("kind") == "event":
            codec = self.event_registry.by_id[int(header["type_id"])]
            room.send_event(codec.decode_untrusted(body), topic=topic, destination_identities=to)
        else:
            self.dropped += 1
            return
        self.relayed += 1
