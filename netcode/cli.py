"""Commands: ``netcode-server`` (a room server) and ``netcode-token`` (an access token)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from typing import Any

from netcode.auth import AccessToken, Grants

__all__ = ["server_main", "token_main"]

DEV_API_KEY = "devkey"


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
        help="API secret, at least 32 characters (default: $NETCODE_API_SECRET)",
    )


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
) -> str:
    """A room-join token, as ``netcode-token`` prints it."""
    grants = Grants(
        room_join=True,
        room=room,
        can_publish_data=can_publish_data,
        can_subscribe=can_subscribe,
        room_admin=room_admin,
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
    parser.add_argument("--ttl", type=float, default=6 * 3600, help="seconds valid (6 h)")
    parser.add_argument("--no-publish", action="store_true", help="deny can_publish_data")
    parser.add_argument("--no-subscribe", action="store_true", help="deny can_subscribe")
    parser.add_argument("--admin", action="store_true", help="grant room_admin")
    args = parser.parse_args(argv)
    if not args.api_key or not args.api_secret:
        parser.error("--api-key and --api-secret (or NETCODE_API_KEY/SECRET) are required")
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
            )
        )
    except ValueError as exc:
        parser.error(str(exc))
    return 0


async def _serve(
    host: str, port: int, api_key: str, api_secret: str, ready: str, **options: Any
) -> None:
    from netcode.rooms import RoomServer

    server = RoomServer(api_key, api_secret, **options)
    await server.start(host, port)
    print(f"netcode-server listening on {server.url}", flush=True)
    if ready:
        print(ready, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
        print("netcode-server stopped", flush=True)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < 86400:
        raise argparse.ArgumentTypeError(f"{text} is not in 0..86400 seconds")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 seconds")
    return value


def server_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netcode-server", description="Run a netcode room server (WebRTC, HTTP signaling)."
    )
    parser.add_argument("--host", default=_env("NETCODE_HOST", "127.0.0.1"), help="bind address")
    parser.add_argument(
        "--port", type=int, default=int(_env("NETCODE_PORT", "7880") or 7880), help="HTTP port"
    )
    _add_key_arguments(parser)
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: make up a key and secret if none given, print a ready token",
    )
    parser.add_argument(
        "--dead-after",
        type=_positive_seconds,
        default=3.0,
        metavar="S",
        help="seconds without a datagram before a client's link counts as dead (3)",
    )
    parser.add_argument(
        "--grace-period",
        type=_seconds,
        default=20.0,
        metavar="S",
        help="seconds a dropped client's session is held for it to resume (20)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
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
    try:
        asyncio.run(
            _serve(
                args.host,
                args.port,
                args.api_key,
                args.api_secret,
                ready,
                dead_after=args.dead_after,
                grace_period=args.grace_period,
            )
        )
    except OSError as exc:
        print(f"netcode-server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
