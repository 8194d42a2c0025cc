"""``netcode-bench floor``: what the WebRTC stack alone costs a server, per client and tick.

A server process holds ``--clients`` bare aiortc peer connections, each with one unreliable
data channel (unordered, ``maxRetransmits=0``: netcode's lossy channel), and nothing of
netcode above them: every tick it sends each client one message of ``--down-bytes`` (a
snapshot's size) and each client sends it one of ``--up-bytes`` (an input's size). That is
the least traffic a game at that tick rate moves: one datagram each way per client and
tick. The server's whole-process CPU (user + system, from ``/proc``) over the measured
window, divided by clients and ticks, is the floor under ``netcode-load``'s figure of the
same name: what no change above the transport can take away.

By default both ends use netcode's delayed, bundled SCTP acknowledgements
(:func:`netcode.transport.sctp.delay_acks`), as netcode's links do; ``--aiortc-acks`` keeps
aiortc's own (a SACK datagram for every packet).

The clients run in this process (one event loop), the server in a child process started
with ``python -m netcode_tools.bench_floor --serve``; offers and answers cross its stdin
and stdout as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from netcode.transport.sctp import delay_acks
from netcode.transport.webrtc import loopback_candidates, make_peer_connection
from netcode.wire import MAX_DATAGRAM_BYTES

from .load import ServerCpu

__all__ = ["add_arguments", "run"]

_CHANNEL_ID = 1
#: the largest message sent: netcode's datagram (one unfragmented SCTP DATA chunk)
MAX_MESSAGE_BYTES = MAX_DATAGRAM_BYTES


def _lossy_channel(pc: RTCPeerConnection) -> Any:
    return pc.createDataChannel(
        "floor", negotiated=True, id=_CHANNEL_ID, ordered=False, maxRetransmits=0
    )


class _Ticker:
    """Send ``size`` bytes on every open channel ``rate`` times a second, on time."""

    def __init__(self, rate: float, size: int) -> None:
        self.period = 1.0 / rate
        self.payload = bytes(size)
        self.channels: list[Any] = []
        self.received = 0
        self.late_ticks = 0

    def on_message(self, message: bytes | str) -> None:
        self.received += 1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.period
            for channel in self.channels:
                if channel.readyState == "open":
                    channel.send(self.payload)
            delay = due - loop.time()
            if delay < 0:
                self.late_ticks += 1
                due = loop.time()
            await asyncio.sleep(max(0.0, delay))


# --- the server process ---------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    ticker = _Ticker(args.tick_rate, args.down_bytes)
    tick_task = asyncio.create_task(ticker.run())
    pcs: list[RTCPeerConnection] = []
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            request = json.loads(line)
            if "offer" in request:
                pc = make_peer_connection()
                channel = _lossy_channel(pc)
                channel.on("message", ticker.on_message)
                await pc.setRemoteDescription(RTCSessionDescription(request["offer"], "offer"))
                if not args.aiortc_acks:
                    delay_acks(pc)
                with loopback_candidates():
                    await pc.setLocalDescription(await pc.createAnswer())
                pcs.append(pc)
                ticker.channels.append(channel)
                reply: dict[str, Any] = {"answer": pc.localDescription.sdp}
            else:  # a mark: the counts so far
                reply = {"received": ticker.received, "late_ticks": ticker.late_ticks}
            print(json.dumps(reply), flush=True)
    finally:
        tick_task.cancel()
        for pc in pcs:
            await pc.close()


# --- the clients, in this process -----------------------------------------------------------


class _Server:
    """The child server process and its JSON-line conversation."""

    def __init__(self, args: argparse.Namespace) -> None:
        command = [sys.executable, "-m", "netcode_tools.bench_floor", "--serve"]
        command += ["--tick-rate", str(args.tick_rate), "--down-bytes", str(args.down_bytes)]
        command += ["--loop", args.loop]
        if args.aiortc_acks:
            command.append("--aiortc-acks")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = await asyncio.to_thread(self.process.stdout.readline)
        if not line:
            raise RuntimeError("the floor server process ended early")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def _connect(server: _Server, ticker: _Ticker, aiortc_acks: bool) -> RTCPeerConnection:
    pc = make_peer_connection()
    channel = _lossy_channel(pc)
    channel.on("message", ticker.on_message)
    opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _open() -> None:
        if not opened.done():
            opened.set_result(None)

    channel.on("open", _open)
    if not aiortc_acks:
        delay_acks(pc)
    with loopback_candidates():
        await pc.setLocalDescription(await pc.createOffer())
    answer = await server.ask({"offer": pc.localDescription.sdp})
    await pc.setRemoteDescription(RTCSessionDescription(answer["answer"], "answer"))
    await asyncio.wait_for(opened, 15)
    ticker.channels.append(channel)
    return pc


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run; returns the report's figures."""
    server = _Server(args)
    ticker = _Ticker(args.tick_rate, args.up_bytes)
    tick_task = asyncio.create_task(ticker.run())
    pcs: list[RTCPeerConnection] = []
    try:
        for _ in range(args.clients):
            pcs.append(await _connect(server, ticker, args.aiortc_acks))
        await asyncio.sleep(args.warmup)
        start = await server.ask({"mark": 1})
        received = ticker.received
        window = ServerCpu(server.process.pid)
        await asyncio.sleep(args.duration)
        cpu, wall, steal = window.stop()
        end = await server.ask({"mark": 2})
        received = ticker.received - received
    finally:
        tick_task.cancel()
        for pc in pcs:
            await pc.close()
        server.close()
    if cpu is None:
        raise RuntimeError("cannot read the server's CPU from /proc")
    ticks = wall * args.tick_rate
    per_client_s = args.clients * wall
    return {
        "clients": args.clients,
        "loop": args.loop,
        "tick_rate": args.tick_rate,
        "down_bytes": args.down_bytes,
        "up_bytes": args.up_bytes,
        "acks": "aiortc" if args.aiortc_acks else "delayed",
        "duration_s": round(wall, 2),
        "server_cores": round(cpu / wall, 3),
        "server_cpu_per_client_tick_ms": round(cpu / (args.clients * ticks) * 1e3, 4),
        "clients_per_core": round(wall / cpu * args.clients, 1) if cpu else None,
        "delivered_down_per_client_s": round(received / per_client_s, 1),
        "delivered_up_per_client_s": round((end["received"] - start["received"]) / per_client_s, 1),
        "server_late_ticks": end["late_ticks"] - start["late_ticks"],
        "steal_s": None if steal is None else round(steal, 2),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=16, help="peer connections (default 16)")
    parser.add_argument("--tick-rate", type=float, default=30.0, help="ticks a second (30)")
    parser.add_argument(
        "--down-bytes", type=int, default=330, help="message to each client per tick (330)"
    )
    parser.add_argument("--up-bytes", type=int, default=24, help="message from each client (24)")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds (15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (2)")
    parser.add_argument(
        "--aiortc-acks", action="store_true", help="aiortc's own SACKs, not netcode's delayed ones"
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the server's event loop (uvloop: pip install uvloop; netcode does not need it)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace) -> int:
    if args.clients < 1 or args.tick_rate <= 0 or args.duration <= 0 or args.warmup < 0:
        raise SystemExit("--clients, --tick-rate and --duration must be positive")
    for name in ("down_bytes", "up_bytes"):
        if not 1 <= getattr(args, name) <= MAX_MESSAGE_BYTES:
            option = "--" + name.replace("_", "-")
            raise SystemExit(f"{option} must be 1 to {MAX_MESSAGE_BYTES} (one datagram)")
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        print(
            "netcode-bench floor: --loop uvloop needs uvloop (pip install uvloop)", file=sys.stderr
        )
        return 2
    result = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['clients']} clients, {result['tick_rate']:g} Hz, "
        f"{result['down_bytes']} B down / {result['up_bytes']} B up, {result['acks']} SACKs, "
        f"{result['loop']} loop"
    )
    for key in (
        "server_cpu_per_client_tick_ms",
        "server_cores",
        "clients_per_core",
        "delivered_down_per_client_s",
        "delivered_up_per_client_s",
        "server_late_ticks",
        "steal_s",
    ):
        print(f"  {key:32} {result[key]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        if args.loop == "uvloop":
            # an optional speed-up this benchmark measures, not a dependency of netcode's
            importlib.import_module("uvloop").run(_serve(args))
        else:
            asyncio.run(_serve(args))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
