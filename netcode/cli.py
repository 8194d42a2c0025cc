"""Commands: ``netcode-server`` (a room server) and ``netcode-token`` (an access token).

The argument helpers here (TLS, ICE servers, CORS, loss percentages, logging) are shared by
every command of the project, so an option means the same everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any

from netcode.auth import MIN_SECRET_CHARS, AccessToken, Grants, check_api_secret

__all__ = [
    "add_client_network_arguments",
    "add_logging_arguments",
    "add_server_network_arguments",
    "check_secret_argument",
    "client_network_options",
    "configure_logging",
    "make_token",
    "percent",
    "port",
    "positive_seconds",
    "seconds",
    "server_main",
    "server_network_options",
    "token_main",
]

DEV_API_KEY = "devkey"

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level: str, *, timestamps: bool = False) -> None:
    """Log at ``level`` to stderr (``timestamps``: each line with its time); aioice's
    per-candidate INFO lines only at DEBUG.

    aioice logs about a dozen INFO lines per connection (each candidate pair's state
    changes), which would bury the server's own INFO lines.
    """
    head = "%(asctime)s " if timestamps else ""
    logging.basicConfig(level=level.upper(), format=head + "%(levelname)s %(name)s: %(message)s")
    if logging.getLevelName(level.upper()) > logging.DEBUG:
        logging.getLogger("aioice").setLevel(logging.WARNING)


def add_logging_arguments(parser: argparse.ArgumentParser, default: str = "INFO") -> None:
    """``--log-level`` (one of DEBUG, INFO, WARNING, ERROR)."""
    parser.add_argument(
        "--log-level",
        default=default,
        type=str.upper,
        choices=_LOG_LEVELS,
        help=f"logging level ({default}; DEBUG adds aioice's ICE details)",
    )


def percent(max_percent: float = 100.0) -> Callable[[str], float]:
    """An argparse type: a percentage in 0..``max_percent``, as ``5`` or ``5%`` (returns 5.0).

    Every command's ``--loss`` is a percentage: ``--loss 5`` and ``--loss 5%`` are 5%.
    """

    def parse(text: str) -> float:
        try:
            value = float(text.strip().removesuffix("%"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a percentage (write 5 or 5%)"
            ) from None
        if not 0 <= value <= max_percent:
            raise argparse.ArgumentTypeError(f"{text} is not within 0..{max_percent:g}%")
        return value

    parse.__name__ = "percentage"  # argparse names the type so in its error message
    return parse


def _ice_server(text: str) -> Any:
    from netcode.transport.ice import IceServer

    try:
        return IceServer.from_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_ice_argument(parser: argparse.ArgumentParser, whose: str) -> None:
    parser.add_argument(
        "--ice-server",
        dest="ice_servers",
        action="append",
        type=_ice_server,
        metavar="URL",
        help=f"STUN or TURN server for {whose}, repeatable: stun:HOST[:PORT] or "
        "turn:USER:PASS@HOST[:PORT][?transport=tcp] (default: $NETCODE_ICE_SERVERS, URLs "
        "separated by spaces; aiortc uses the first STUN and the first TURN server)",
    )


def _ice_servers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Any]:
    if args.ice_servers is not None:
        return list(args.ice_servers)
    from netcode.transport.ice import ice_servers_from_env

    try:
        return list(ice_servers_from_env())
    except ValueError as exc:
        parser.error(f"$NETCODE_ICE_SERVERS: {exc}")


def add_server_network_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls-cert``, ``--tls-key``, ``--ice-server`` and ``--cors-origin``."""
    parser.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=_env("NETCODE_TLS_CERT"),
        help="serve HTTPS with this certificate chain (PEM; default $NETCODE_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        metavar="PEM",
        default=_env("NETCODE_TLS_KEY"),
        help="the certificate's private key (PEM; default $NETCODE_TLS_KEY)",
    )
    _add_ice_argument(parser, "the server's end of each connection")
    parser.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        metavar="ORIGIN",
        help="web origin whose pages may call the signaling endpoint, repeatable, e.g. "
        "https://game.example.org, or * for any (default: $NETCODE_CORS_ORIGINS, separated "
        "by spaces; none)",
    )


def server_network_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> dict[str, Any]:
    """``ssl``, ``ice_servers`` and ``cors_origins`` for RoomServer, or a usage error."""
    context = None
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            parser.error(f"--tls-cert/--tls-key: cannot load {args.tls_cert}: {exc}")
    origins = args.cors_origins
    if origins is None:
        origins = (_env("NETCODE_CORS_ORIGINS") or "").split()
    from netcode.transport.signaling import _check_origin

    for origin in origins:
        try:
            _check_origin(origin)
        except ValueError as exc:
            parser.error(f"--cors-origin: {exc}")
    return {"ssl": context, "ice_servers": _ice_servers(parser, args), "cors_origins": origins}


def add_client_network_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ca-file`` and ``--ice-server``, for commands that join a server."""
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        default=_env("NETCODE_CA_FILE"),
        help="trust this certificate (PEM) for an https:// server with a self-signed or "
        "private-CA certificate (default: $NETCODE_CA_FILE; else the system's CAs)",
    )
    _add_ice_argument(parser, "this client")


def client_network_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> dict[str, Any]:
    """``ca_file`` and ``ice_servers`` for Room.connect, or a usage error."""
    if args.ca_file and not os.path.isfile(args.ca_file):
        parser.error(f"--ca-file: no such file: {args.ca_file}")
    return {"ca_file": args.ca_file or None, "ice_servers": _ice_servers(parser, args)}


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _add_key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-key",
        default=_env("NETCODE_API_KEY"),
        help="API key (default: $NETCODE_API_KEY)",
    )
    parser.add_argument(
        "--api-secret",
        default=_env("NETCODE_API_SECRET"),
        help=f"API secret, at least {MIN_SECRET_CHARS} characters (default: $NETCODE_API_SECRET)",
    )


def check_secret_argument(parser: argparse.ArgumentParser, api_secret: str) -> None:
    """A usage error if ``api_secret`` is too short."""
    try:
        check_api_secret(api_secret)
    except ValueError as exc:
        parser.error(f"--api-secret: {exc}")


def make_token(
    api_key: str,
    api_secret: str,
    identity: str,
    room: str,
    *,
    name: str = "",
    metadata: str = "",
    ttl_s: float = 6 * 3600,
    can_publish_data: bool = True,
    can_subscribe: bool = True,
    room_admin: bool = False,
    room_host: bool = False,
) -> str:
    """A room-join token, as ``netcode-token`` prints it."""
    grants = Grants(
        room_join=True,
        room=room,
        can_publish_data=can_publish_data,
        can_subscribe=can_subscribe,
        room_admin=room_admin,
        room_host=room_host,
    )
    token = AccessToken(api_key, api_secret).with_identity(identity).with_grants(grants)
    return token.with_name(name).with_metadata(metadata).with_ttl(ttl_s).to_jwt()


def token_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netcode-token", description="Print an access token that joins a room."
    )
    _add_key_arguments(parser)
    parser.add_argument("--identity", required=True, help="participant identity (unique)")
    parser.add_argument("--room", required=True, help="room the token may join")
    parser.add_argument("--name", default="", help="display name")
    parser.add_argument("--metadata", default="", help="participant metadata")
    parser.add_argument(
        "--ttl", type=_ttl_seconds, default=6 * 3600, help="seconds valid (21600: 6 h)"
    )
    parser.add_argument("--no-publish", action="store_true", help="deny can_publish_data")
    parser.add_argument("--no-subscribe", action="store_true", help="deny can_subscribe")
    parser.add_argument("--admin", action="store_true", help="grant room_admin")
    parser.add_argument(
        "--room-host",
        action="store_true",
        help="grant room_host: in a peer-to-peer room, host the game (a listen server)",
    )
    args = parser.parse_args(argv)
    if not args.api_key or not args.api_secret:
        parser.error("--api-key and --api-secret (or NETCODE_API_KEY/SECRET) are required")
    check_secret_argument(parser, args.api_secret)
    try:
        print(
            make_token(
                args.api_key,
                args.api_secret,
                args.identity,
                args.room,
                name=args.name,
                metadata=args.metadata,
                ttl_s=args.ttl,
                can_publish_data=not args.no_publish,
                can_subscribe=not args.no_subscribe,
                room_admin=args.admin,
                room_host=args.room_host,
            )
        )
    except ValueError as exc:
        parser.error(str(exc))
    return 0


async def _until_signalled(ready: str) -> None:
    """Print ``ready`` (if any), then wait for SIGINT or SIGTERM."""
    if ready:
        print(ready, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve(
    host: str, port: int, api_key: str, api_secret: str, ready: str, **options: Any
) -> None:
    from netcode.rooms import RoomServer

    server = RoomServer(api_key, api_secret, **options)
    await server.start(host, port)
    print(f"netcode-server listening on {server.url}", flush=True)
    try:
        await _until_signalled(ready)
    finally:
        await server.stop()
        print("netcode-server stopped", flush=True)


async def _serve_workers(
    host: str,
    port: int,
    workers: int,
    api_key: str,
    api_secret: str,
    ready: str,
    ssl: Any = None,
    cors_origins: Any = None,
    cluster: dict[str, Any] | None = None,
    node_host: str = "127.0.0.1",
    node_port: int = 0,
    **options: Any,
) -> None:
    import functools

    from netcode.auth import TokenVerifier
    from netcode.cluster import ClusterConfig, WorkerPool
    from netcode.rooms import RoomServer

    factory = functools.partial(
        RoomServer, api_key, api_secret, cors_origins=cors_origins, **options
    )
    verifier = TokenVerifier(api_key, api_secret)
    config = None
    if cluster is not None:
        config = ClusterConfig(forward_key=_forward_key(api_secret), **cluster)
    pool = WorkerPool(
        factory,
        workers,
        ssl=ssl,
        verifier=verifier,
        cluster=config,
        worker_host=node_host,
        worker_port=node_port,
    )
    await pool.start(host, port)
    print(
        f"netcode-server listening on {pool.url} ({workers} worker{'s' * (workers > 1)}"
        + (f", cluster {cluster['redis_url']})" if cluster else ")"),
        flush=True,
    )
    try:
        await _until_signalled(ready)
    finally:
        await pool.stop()
        print("netcode-server stopped", flush=True)


def _forward_key(api_secret: str) -> str:
    """The routers' forward key: every node of a cluster holds the API secret, so every node
    derives the same key."""
    import hashlib
    import hmac

    return hmac.new(api_secret.encode(), b"netcode router forward key", hashlib.sha256).hexdigest()


async def _serve_node(
    host: str,
    port: int,
    api_key: str,
    api_secret: str,
    ready: str,
    cluster: dict[str, Any],
    node_host: str = "127.0.0.1",
    node_port: int = 0,
    ssl: Any = None,
    **options: Any,
) -> None:
    """One process, one node: its room server, its registration and a router."""
    from netcode.auth import TokenVerifier
    from netcode.cluster.redis_registry import ClusterNode, RedisRegistry
    from netcode.rooms import RoomServer
    from netcode.transport.router import SignalingRouter

    key = _forward_key(api_secret)
    registry = RedisRegistry(cluster["redis_url"], forward_key=key, lease_s=cluster["lease_s"])
    server = RoomServer(api_key, api_secret, **options)
    router = SignalingRouter(
        registry, forward_key=key, ssl=ssl, verifier=TokenVerifier(api_key, api_secret)
    )
    node: ClusterNode | None = None
    try:
        await server.start(node_host, node_port)
        url = server.url
        if cluster["advertise_host"]:
            url = f"http://{cluster['advertise_host']}:{url.rpartition(':')[2]}"
        node = ClusterNode(server, registry, url=url)
        await node.start()
        await router.start(host, port)
        print(
            f"netcode-server listening on {router.url} (node {node.node_id} at {url}, "
            f"cluster {cluster['redis_url']})",
            flush=True,
        )
        await _until_signalled(ready)
    finally:
        await router.stop()
        if node is not None:
            await node.stop()
        await server.stop()
        await registry.close()
        print("netcode-server stopped", flush=True)


def workers_count(text: str) -> int:
    """An argparse type: a number of worker processes, 1..256, or ``auto`` (one per core)."""
    if text == "auto":
        return os.cpu_count() or 1
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"{text} is not within 1..256 workers")
    return value


def seconds(text: str) -> float:
    """An argparse type: seconds in 0..86400."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < 86400:
        raise argparse.ArgumentTypeError(f"{text} is not in 0..86400 seconds")
    return value


def _ttl_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 366 * 86400:
        raise argparse.ArgumentTypeError(
            f"{text} must be more than 0 and at most {366 * 86400} seconds (366 days)"
        )
    return value


def port(text: str) -> int:
    """An argparse type: a port number in 0..65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port in 0..65535")
    return value


def positive_seconds(text: str) -> float:
    """An argparse type: seconds in (0, 86400)."""
    value = seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 seconds")
    return value


def server_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netcode-server",
        description="Run a netcode room server (WebRTC data channels, HTTP(S) signaling). "
        "Deploying on the internet: docs/DEPLOY.md.",
    )
    parser.add_argument(
        "--host",
        default=_env("NETCODE_HOST", "127.0.0.1"),
        help="bind address (127.0.0.1; 0.0.0.0 for every interface; default $NETCODE_HOST)",
    )
    parser.add_argument(
        "--port",
        type=port,
        default=_env("NETCODE_PORT", "7880"),
        help="signaling port, TCP (7880; 0 picks a free one; default $NETCODE_PORT)",
    )
    _add_key_arguments(parser)
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: make up a key and secret if none given, print a ready token",
    )
    parser.add_argument(
        "--dead-after",
        type=positive_seconds,
        default=3.0,
        metavar="S",
        help="seconds without a datagram before a client's link counts as dead (3)",
    )
    parser.add_argument(
        "--grace-period",
        type=seconds,
        default=20.0,
        metavar="S",
        help="seconds a dropped client's session is held for it to resume (20)",
    )
    parser.add_argument(
        "--workers",
        type=workers_count,
        default=1,
        metavar="N",
        help="worker processes, one room server each, behind the one address; each room "
        "lives on one worker, new rooms go to the least-loaded one (1: this process serves "
        "alone; auto: one per core; docs/SCALE.md)",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=_env("NETCODE_REDIS_URL"),
        help="join the cluster of nodes sharing this Redis (redis://HOST:PORT[/DB]): rooms go "
        "to the least-loaded node of any machine, and this address routes a join or resume "
        "to its room's node (default $NETCODE_REDIS_URL; none: no cluster)",
    )
    parser.add_argument(
        "--lease",
        type=positive_seconds,
        default=10.0,
        metavar="S",
        help="with --redis: seconds a node's and its rooms' records outlive the node (10)",
    )
    parser.add_argument(
        "--node-host",
        default="127.0.0.1",
        help="with --workers or --redis: where the room servers listen (127.0.0.1; with "
        "--redis on many machines, an address the other machines reach)",
    )
    parser.add_argument(
        "--node-port",
        type=port,
        default=0,
        metavar="P",
        help="with --workers or --redis: worker i listens on P+i (0: any free port)",
    )
    parser.add_argument(
        "--advertise-host",
        default="",
        metavar="HOST",
        help="with --redis: the host other machines reach the room servers at (default: "
        "--node-host)",
    )
    parser.add_argument(
        "--p2p-room",
        action="append",
        default=[],
        metavar="NAME",
        help="make room NAME peer to peer: participants connect to each other directly and "
        "the server only admits them and brokers their connections (repeatable; "
        "docs/ROOM-TYPES.md)",
    )
    add_server_network_arguments(parser)
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    network = server_network_options(parser, args)
    if args.p2p_room:
        network["room_types"] = dict.fromkeys(args.p2p_room, "p2p")
    configure_logging(args.log_level)
    ready = ""
    if args.dev:
        args.api_key = args.api_key or DEV_API_KEY
        args.api_secret = args.api_secret or secrets.token_urlsafe(32)
        token = make_token(args.api_key, args.api_secret, "dev-user", "dev", name="Dev User")
        ready = (
            f"development key:    {args.api_key}\n"
            f"development secret: {args.api_secret}\n"
            f"token (identity dev-user, room dev):\n{token}"
        )
    if not args.api_key or not args.api_secret:
        parser.error(
            "--api-key and --api-secret (or NETCODE_API_KEY/SECRET, or --dev) are required"
        )
    check_secret_argument(parser, args.api_secret)
    cluster = None
    if args.redis:
        if args.node_host in ("0.0.0.0", "::") and not args.advertise_host:
            parser.error("--node-host is a wildcard: give --advertise-host (how others reach it)")
        cluster = {
            "redis_url": args.redis,
            "lease_s": args.lease,
            "advertise_host": args.advertise_host,
        }
    try:
        if args.workers == 1 and cluster is not None:
            asyncio.run(
                _serve_node(
                    args.host,
                    args.port,
                    args.api_key,
                    args.api_secret,
                    ready,
                    cluster,
                    node_host=args.node_host,
                    node_port=args.node_port,
                    dead_after=args.dead_after,
                    grace_period=args.grace_period,
                    **network,
                )
            )
            return 0
        if args.workers > 1:
            asyncio.run(
                _serve_workers(
                    args.host,
                    args.port,
                    args.workers,
                    args.api_key,
                    args.api_secret,
                    ready,
                    cluster=cluster,
                    node_host=args.node_host,
                    node_port=args.node_port,
                    dead_after=args.dead_after,
                    grace_period=args.grace_period,
                    **network,
                )
            )
            return 0
        asyncio.run(
            _serve(
                args.host,
                args.port,
                args.api_key,
                args.api_secret,
                ready,
                dead_after=args.dead_after,
                grace_period=args.grace_period,
                **network,
            )
        )
    except OSError as exc:
        print(f"netcode-server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
