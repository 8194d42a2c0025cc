"""The asyncio adapter between an Endpoint and a link, with a link that can report a full
send buffer: superseded snapshots are dropped while it is full, never delivered late."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from netcode.core import Delivery, Endpoint, EndpointConfig, FrameReceived
from netcode.transport.connection import DatagramConnection
from netcode.wire import FrameType


class FakeLink:
    """Records datagrams; reports whatever backlog the test sets."""

    def __init__(self) -> None:
        self.backlog_limit = 8 * 1160
        self.backlog = 0
        self.sent: list[bytes] = []
        self.handler: Callable[[bytes], object] | None = None

    def send_lossy(self, data: bytes) -> bool:
        if self.backlog > self.backlog_limit:
            return False
        self.sent.append(data)
        return True

    def datagram_backlog(self) -> int:
        return self.backlog

    def on_lossy(self, handler: Callable[[bytes], object] | None) -> None:
        self.handler = handler


def received_payloads(datagrams: list[bytes]) -> list[bytes]:
    peer = Endpoint(EndpointConfig(ping_interval=None))
    for datagram in datagrams:
        peer.receive_datagram(datagram, 0.0)
    out = []
    while (event := peer.next_event()) is not None:
        if isinstance(event, FrameReceived):
            out.append(event.payload)
    return out


async def test_superseded_snapshots_are_dropped_while_the_link_is_full() -> None:
    link = FakeLink()
    connection = DatagramConnection(link, lambda e: None, config=EndpointConfig(ping_interval=None))
    fates: dict[int, Delivery] = {}

    def snapshot(tick: int) -> None:
        connection.send_frame(
            FrameType.SNAPSHOT,
            tick.to_bytes(4, "big"),
            supersede_key="snapshot",
            on_delivery=lambda result, tick=tick: fates.setdefault(tick, result),
        )

    snapshot(1)
    await asyncio.sleep(0)
    assert received_payloads(link.sent) == [(1).to_bytes(4, "big")]
    link.sent.clear()

    link.backlog = 10 * 1160  # the SCTP queue is backed up
    for tick in range(2, 12):
        snapshot(tick)
        await asyncio.sleep(0.01)
    assert link.sent == []  # nothing was handed to the link while it was full
    assert connection.flushes_deferred > 0
    assert all(fates[tick] is Delivery.LOST for tick in range(2, 11))  # superseded, unsent
    assert connection.endpoint.counters.frames_dropped == 9

    link.backlog = 0
    await asyncio.sleep(0.02)
    assert received_payloads(link.sent) == [(11).to_bytes(4, "big")]  # only the newest
    connection.close()


async def test_received_datagrams_are_processed_and_acked() -> None:
    link = FakeLink()
    events: list[object] = []
    connection = DatagramConnection(link, events.append, config=EndpointConfig(ping_interval=None))
    peer = Endpoint(EndpointConfig(ping_interval=None))
    peer.send_frame(FrameType.DATA, b"hello")
    (datagram,) = peer.datagrams_to_send(0.0)
    assert link.handler is not None
    link.handler(datagram)
    assert [e.payload for e in events if isinstance(e, FrameReceived)] == [b"hello"]
    await asyncio.sleep(0.05)  # the ack-only datagram goes after max_ack_delay
    assert len(link.sent) == 1
    peer.receive_datagram(link.sent[0], 0.1)
    assert peer.counters.datagrams_acked == 1
    connection.close()


async def test_malformed_datagrams_are_reported() -> None:
    link = FakeLink()
    bad: list[int] = []
    connection = DatagramConnection(link, lambda e: None, on_malformed=lambda: bad.append(1))
    assert link.handler is not None
    link.handler(b"\x00garbage")
    link.handler(b"\x11" + bytes(8) + b"\xfa\x00")
    assert len(bad) == 2
    connection.close()
    assert link.handler is None


async def test_sends_are_paced() -> None:
    link = FakeLink()
    clock = [0.0]
    connection = DatagramConnection(
        link,
        lambda e: None,
        config=EndpointConfig(ping_interval=None),
        clock=lambda: clock[0],
        pacing_rate=1000.0,
        pacing_burst=10,
    )
    for i in range(50):  # a burst: 50 datagrams' worth of frames at once
        connection.send_frame(FrameType.DATA, bytes([i]) * 1000)
    connection.flush()
    assert len(link.sent) == 10  # the burst allowance
    assert connection.flushes_paced == 1
    clock[0] = 0.005  # five milliseconds refill five tokens
    connection.flush()
    assert len(link.sent) == 15
    clock[0] = 1.0  # a long pause refills the bucket only up to its burst
    connection.flush()
    assert len(link.sent) == 25
    while len(link.sent) < 50:
        clock[0] += 0.01
        connection.flush()
    assert clock[0] == pytest.approx(1.03)  # 25 more at 1000 a second after the burst
    assert received_payloads(link.sent) == [bytes([i]) * 1000 for i in range(50)]
    connection.close()


async def test_reliable_messages_wait_for_a_link_and_leave_on_the_next() -> None:
    from netcode.core import ReliableChannel

    first, second = FakeLink(), FakeLink()
    connection = DatagramConnection(
        first, lambda e: None, config=EndpointConfig(ping_interval=None)
    )
    channel = ReliableChannel(connection.endpoint)
    connection.add_flush_hook(channel)
    connection.detach()  # the link dropped: the session is held
    for i in range(100):
        channel.send(bytes([i]) * 100)
    connection.flush()
    await asyncio.sleep(0.3)  # past the resend timeout: nothing is sent, or resent, to nowhere
    assert channel.counters.frames_sent == 0 and channel.counters.messages_resent == 0
    assert first.sent == []
    connection.attach(second)
    await asyncio.sleep(0.05)
    peer = Endpoint(EndpointConfig(ping_interval=None))
    receiver = ReliableChannel(peer)
    for datagram in second.sent:
        peer.receive_datagram(datagram, 0.0)
        while (event := peer.next_event()) is not None:
            if isinstance(event, FrameReceived) and event.frame_type == FrameType.EVENT:
                receiver.receive_frame(event.payload, 0.0)
    assert receiver.received() == [bytes([i]) * 100 for i in range(100)]
    connection.close()
