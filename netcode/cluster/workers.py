"""Every core of one machine: N worker processes, each a RoomServer, behind one address.

::

    pool = WorkerPool(functools.partial(RoomServer, api_key, api_secret), workers=4)
    await pool.start("0.0.0.0", 7880)      # clients connect to pool.url as to one server
    ...
    await pool.stop()

(``netcode-server --workers 4`` does this.) Each worker is a separate process (``spawn``)
running the RoomServer that ``factory()`` returns, listening on its own loopback port. Each
room lives on one worker. The pool's process runs a
:class:`~netcode.transport.router.SignalingRouter` on the public address: a join goes to the
worker hosting its room, a new room to the worker with the fewest participants (each worker
reports its rooms and participants every ``report_interval_s``, and a placement counts as one
participant until the next report), a resume to the worker its session id names (session ids
start with the worker's ``instance_id``). The router proxies only the signaling request: the
SDP answer carries the worker's own ICE candidates, so the datagrams flow straight between
the client and the worker.

``factory`` must be picklable (a module-level function, or ``functools.partial`` of one or
of :class:`~netcode.rooms.RoomServer`): it runs in each worker. A server it returns may
define ``worker_query(name: str) -> object`` (a picklable answer) for :meth:`WorkerPool.query`,
to gather figures from every worker. A worker that dies is replaced (``restart=True``); the
sessions it held are gone, and their resumes are refused as ``node_lost``.

With ``cluster=ClusterConfig(redis_url, forward_key)`` the workers are nodes of a Redis
cluster instead (see :mod:`netcode.cluster.redis_registry`): each registers itself, and the
router places and finds rooms through Redis, across every machine of the cluster. The
workers then listen on ``worker_host`` (an address the other machines reach).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import ssl as ssl_module
import time
from collections.abc import Callable
from typing import Any

import attrs

from netcode.auth import TokenVerifier
from netcode.rooms.server import RoomServer
from netcode.transport.router import Directory, Route, SignalingRouter
from netcode.transport.signaling import SignalingLimits

__all__ = ["ClusterConfig", "WorkerInfo", "WorkerPool", "run_worker"]

logger = logging.getLogger(__name__)

#: A new room whose worker has not reported it yet stays placed there this long, seconds.
_PLACEMENT_HOLD_S = 15.0
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 5.0

ServerFactory = Callable[[], RoomServer]


@attrs.frozen
class ClusterConfig:
    """How the workers join a Redis cluster (see :mod:`netcode.cluster.redis_registry`)."""

    #: ``redis://host:port/db``
    redis_url: str
    #: a secret every node and router of the cluster shares (at least 16 characters)
    forward_key: str
    #: prefix of every key and channel
    prefix: str = "netcode:"
    #: seconds a node's or room's record lives without a refresh
    lease_s: float = 10.0
    #: the host other machines reach the workers at ("": the address they listen on)
    advertise_host: str = ""

    def __attrs_post_init__(self) -> None:
        if len(self.forward_key) < 16:
            raise ValueError("forward_key must be at least 16 characters")


@attrs.define
class WorkerInfo:
    """One worker process as the pool sees it."""

    index: int
    process: Any  # multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    url: str = ""
    instance_id: str = ""
    #: from the worker's latest report
    participants: int = 0
    rooms: dict[str, int] = attrs.Factory(dict)
    #: participants routed here since the latest report (counts towards the load)
    routed: int = 0
    alive: bool = True

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    @property
    def load(self) -> int:
        return self.participants + self.routed


class WorkerPool:
    """N worker processes behind one signaling address (see the module)."""

    def __init__(
        self,
        factory: ServerFactory,
        workers: int = 2,
        *,
        ssl: ssl_module.SSLContext | None = None,
        limits: SignalingLimits | None = None,
        verifier: TokenVerifier | None = None,
        report_interval_s: float = 0.25,
        restart: bool = True,
        cluster: ClusterConfig | None = None,
        worker_host: str = "127.0.0.1",
        worker_port: int = 0,
    ) -> None:
        """``ssl``: the public address serves HTTPS (the workers plain HTTP).
        ``limits``: per-client-address signaling limits at the public address (the workers
        apply theirs to the client's address too). ``verifier``: refuse bad tokens at the
        public address before any worker sees them. ``worker_host``, ``worker_port``:
        where the workers listen (worker i on ``worker_port + i``; 0: any free port).
        ``cluster``: the workers are nodes of a Redis cluster (see the module)."""
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.factory = factory
        self.size = workers
        self.report_interval_s = report_interval_s
        self.restart = restart
        self.cluster = cluster
        self.worker_host = worker_host
        self.worker_port = worker_port
        self.forward_key = cluster.forward_key if cluster is not None else secrets.token_hex(16)
        self.workers: list[WorkerInfo] = []
        #: room -> (worker index, when placed)
        self._placed: dict[str, tuple[int, float]] = {}
        #: instance ids of workers that died: their sessions' resumes get node_lost
        self._lost: set[str] = set()
        self._queries: dict[int, asyncio.Future[Any]] = {}
        self._query_ids = 0
        self._context = multiprocessing.get_context("spawn")
        self._ready: dict[int, asyncio.Future[None]] = {}
        self._stopping = False
        directory: Directory = self
        self._registry: Any = None
        if cluster is not None:
            from netcode.cluster.redis_registry import RedisRegistry

            directory = self._registry = RedisRegistry(
                cluster.redis_url,
                forward_key=cluster.forward_key,
                prefix=cluster.prefix,
                lease_s=cluster.lease_s,
            )
        self.router = SignalingRouter(
            directory, forward_key=self.forward_key, ssl=ssl, limits=limits, verifier=verifier
        )
        #: workers started again after dying
        self.restarts = 0

    @property
    def url(self) -> str:
        """The public URL clients pass to ``Room.connect``."""
        return self.router.url

    async def start(self, host: str = "127.0.0.1", port: int = 7880) -> None:
        """Start the workers (in parallel), then listen on ``host``:``port``."""
        try:
            self.workers = [self._launch(index) for index in range(self.size)]
            await asyncio.gather(*(self._started(worker) for worker in self.workers))
            await self.router.start(host, port)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening and stop every worker (their clients get ``server_shutdown``)."""
        self._stopping = True
        await self.router.stop()
        for worker in self.workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send({"op": "stop"})
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for worker in self.workers:
            await asyncio.to_thread(worker.process.join, max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, 2.0)
            self._close_conn(worker)
        for future in self._queries.values():
            if not future.done():
                future.cancel()
        self._queries.clear()
        if self._registry is not None:
            await self._registry.close()

    async def __aenter__(self) -> WorkerPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ processes

    def _launch(self, index: int) -> WorkerInfo:
        parent, child = self._context.Pipe()
        root = logging.getLogger()
        log_level = root.getEffectiveLevel() if root.handlers else None
        process = self._context.Process(
            target=run_worker,
            args=(
                child,
                self.factory,
                self.forward_key,
                self.report_interval_s,
                log_level,
                self.worker_host,
                self.worker_port + index if self.worker_port else 0,
                self.cluster,
            ),
            name=f"netcode-worker-{index}",
            daemon=True,
        )
        process.start()
        child.close()
        worker = WorkerInfo(index, process, parent)
        loop = asyncio.get_running_loop()
        self._ready[index] = loop.create_future()
        loop.add_reader(parent.fileno(), self._on_readable, worker)
        return worker

    async def _started(self, worker: WorkerInfo) -> None:
        try:
            await asyncio.wait_for(self._ready[worker.index], _START_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(
                f"worker {worker.index} did not start within {_START_TIMEOUT_S} s"
            ) from None
        logger.info(
            "worker %d (pid %d, instance %s) on %s",
            worker.index,
            worker.pid,
            worker.instance_id,
            worker.url,
        )

    async def _respawn(self, index: int) -> None:
        worker = self.workers[index] = self._launch(index)
        await self._started(worker)

    def _close_conn(self, worker: WorkerInfo) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())
        with contextlib.suppress(OSError):
            worker.conn.close()

    def _on_readable(self, worker: WorkerInfo) -> None:
        try:
            while worker.conn.poll():
                self._on_message(worker, worker.conn.recv())
        except (EOFError, OSError):
            self._worker_died(worker)

    def _on_message(self, worker: WorkerInfo, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ready":
            worker.url = str(message["url"])
            worker.instance_id = str(message["instance_id"])
            ready = self._ready.pop(worker.index, None)
            if ready is not None and not ready.done():
                ready.set_result(None)
        elif op == "load":
            worker.participants = int(message["participants"])
            worker.rooms = dict(message["rooms"])
            worker.routed = 0
            now = time.monotonic()
            for room, (index, placed_at) in list(self._placed.items()):
                held = now - placed_at <= _PLACEMENT_HOLD_S
                if index == worker.index and room not in worker.rooms and not held:
                    del self._placed[room]  # the room ended (or never began) there
            for room in worker.rooms:
                self._placed.setdefault(room, (worker.index, now))
        elif op == "reply":
            future = self._queries.pop(int(message["id"]), None)
            if future is not None and not future.done():
                future.set_result(message.get("value"))
        elif op == "error":
            ready = self._ready.pop(worker.index, None)
            if ready is not None and not ready.done():
                ready.set_exception(RuntimeError(f"worker {worker.index}: {message['message']}"))

    def _worker_died(self, worker: WorkerInfo) -> None:
        if not worker.alive:
            return
        worker.alive = False
        self._close_conn(worker)
        ready = self._ready.pop(worker.index, None)
        if ready is not None and not ready.done():
            ready.set_exception(RuntimeError(f"worker {worker.index} exited while starting"))
        if worker.instance_id:
            self._lost.add(worker.instance_id)
        for room, (index, _) in list(self._placed.items()):
            if index == worker.index:
                del self._placed[room]
        if self._stopping:
            return
        logger.error(
            "worker %d (pid %d) died with %d participants in %d rooms",
            worker.index,
            worker.pid,
            worker.participants,
            len(worker.rooms),
        )
        if self.restart:
            self.restarts += 1
            task = asyncio.get_running_loop().create_task(self._respawn(worker.index))
            task.add_done_callback(_log_restart)

    async def query(self, name: str, timeout: float = 10.0) -> list[Any]:
        """Call ``worker_query(name)`` on every live worker's server; their answers, in
        worker order (None from a server without ``worker_query``)."""
        loop = asyncio.get_running_loop()
        futures = []
        for worker in self.workers:
            if not worker.alive:
                continue
            self._query_ids += 1
            future = self._queries[self._query_ids] = loop.create_future()
            worker.conn.send({"op": "query", "id": self._query_ids, "name": name})
            futures.append(future)
        return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))

    # ------------------------------------------------------------------ Directory

    def room_worker(self, room: str) -> int | None:
        """The index of the worker hosting (or chosen for) ``room``, if any."""
        placed = self._placed.get(room)
        return None if placed is None else placed[0]

    def _live(self) -> list[WorkerInfo]:
        return [w for w in self.workers if w.alive and w.url]

    async def route_join(self, room: str) -> Route:
        placed = self._placed.get(room)
        if placed is not None:
            worker = self.workers[placed[0]]
            if worker.alive and worker.url:
                worker.routed += 1
                return Route.to(worker.url)
        live = self._live()
        if not live:
            return Route.refuse(503, "unavailable", "no worker is running")
        worker = min(live, key=lambda w: (w.load, len(w.rooms), w.index))
        self._placed[room] = (worker.index, time.monotonic())
        worker.routed += 1
        return Route.to(worker.url)

    async def route_resume(self, session_id: str) -> Route:
        instance = session_id.partition(".")[0]
        for worker in self._live():
            if worker.instance_id == instance:
                return Route.to(worker.url)
        if instance in self._lost:
            return Route.refuse(
                410, "node_lost", "the worker that held this session stopped: join again"
            )
        return Route.refuse(
            410, "server_restarted", "the server restarted; the session is gone: join again"
        )

    async def route_any(self) -> Route:
        live = self._live()
        if not live:
            return Route.refuse(503, "unavailable", "no worker is running")
        return Route.to(min(live, key=lambda w: (w.load, w.index)).url)

    def unreachable(self, url: str) -> None:
        pass  # a dying worker's pipe closes too: _worker_died does the rest


def _log_restart(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("restarting a worker failed: %s", task.exception())


# --------------------------------------------------------------------------- worker side


def run_worker(
    conn: multiprocessing.connection.Connection,
    factory: ServerFactory,
    forward_key: str,
    report_interval_s: float,
    log_level: int | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    cluster: ClusterConfig | None = None,
) -> None:
    """A worker process's main: serve ``factory()`` on ``host``:``port`` until told to stop
    (or until the pool's process is gone). ``log_level``: log to stderr at that level.
    ``cluster``: register as a node of that Redis cluster."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the pool, which stops us
    if log_level is not None:
        name = multiprocessing.current_process().name
        logging.basicConfig(level=log_level, format=f"%(levelname)s %(name)s [{name}]: %(message)s")
        if log_level > logging.DEBUG:
            logging.getLogger("aioice").setLevel(logging.WARNING)
    try:
        asyncio.run(
            _serve_worker(conn, factory, forward_key, report_interval_s, host, port, cluster)
        )
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send({"op": "error", "message": f"{type(exc).__name__}: {exc}"})
        raise


async def _serve_worker(
    conn: multiprocessing.connection.Connection,
    factory: ServerFactory,
    forward_key: str,
    report_interval_s: float,
    host: str,
    port: int,
    cluster: ClusterConfig | None,
) -> None:
    server = factory()
    server.signaling.forward_key = forward_key
    await server.start(host, port)
    node: Any = None
    if cluster is not None:
        from netcode.cluster.redis_registry import ClusterNode, RedisRegistry

        registry = RedisRegistry(
            cluster.redis_url,
            forward_key=cluster.forward_key,
            prefix=cluster.prefix,
            lease_s=cluster.lease_s,
        )
        url = server.url
        if cluster.advertise_host:
            url = f"http://{cluster.advertise_host}:{url.rpartition(':')[2]}"
        node = ClusterNode(server, registry, url=url)
        try:
            await node.start()
        except BaseException:
            await server.stop()
            await registry.close()
            raise
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def on_command() -> None:
        try:
            while conn.poll():
                message = conn.recv()
                if message.get("op") == "stop":
                    stop.set()
                elif message.get("op") == "query":
                    answer = getattr(server, "worker_query", None)
                    value = None if answer is None else answer(str(message["name"]))
                    conn.send({"op": "reply", "id": message["id"], "value": value})
        except (EOFError, OSError):
            stop.set()  # the pool's process is gone

    loop.add_reader(conn.fileno(), on_command)
    conn.send(
        {"op": "ready", "url": server.url, "instance_id": server.instance_id, "pid": os.getpid()}
    )
    last: dict[str, int] | None = None
    last_sent = 0.0
    try:
        while not stop.is_set():
            rooms = {name: len(room.participants) for name, room in server.rooms.items()}
            now = loop.time()
            if rooms != last or now - last_sent >= 1.0:
                conn.send({"op": "load", "participants": sum(rooms.values()), "rooms": rooms})
                last, last_sent = rooms, now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), report_interval_s)
    finally:
        loop.remove_reader(conn.fileno())
        if node is not None:
            await node.stop()
            await node.registry.close()
        await server.stop()
