"""Delayed and bundled SCTP acknowledgements (netcode.transport.sctp) on real aiortc links."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import linked_pair

from netcode.transport.impair import ImpairedPath, Impairment
from netcode.transport.peerlink import PeerLink
from netcode.transport.sctp import MAX_MISORDERED, SackPolicy, delay_acks

pytestmark = pytest.mark.webrtc


@pytest.fixture
async def links() -> AsyncIterator[tuple[PeerLink, PeerLink, ImpairedPath]]:
    path = ImpairedPath(Impairment())  # a zero impairment: counts a's UDP datagrams
    a, b = await linked_pair(path, settle=0.3)
    try:
        yield a, b, path
    finally:
        await asyncio.gather(a.close(), b.close())


def _datagrams(path: ImpairedPath) -> tuple[int, int]:
    stats = path.stats()
    return stats["outgoing"].datagrams_seen, stats["incoming"].datagrams_seen


async def test_a_game_exchange_sends_one_datagram_per_message(
    links: tuple[PeerLink, PeerLink, ImpairedPath],
) -> None:
    """Both ends send every tick: each acknowledgement rides the other end's next data."""
    a, b, path = links
    assert isinstance(a.sack_policy, SackPolicy) and isinstance(b.sack_policy, SackPolicy)
    got: list[bytes] = []
    b.on_lossy(lambda m: b.send_lossy(m))  # the server answers every input
    a.on_lossy(got.append)
    up0, down0 = _datagrams(path)
    for _ in range(100):
        a.send_lossy(b"input" * 20)
        await asyncio.sleep(1 / 60)
    await asyncio.sleep(0.4)
    up, down = _datagrams(path)
    assert len(got) == 100
    # aiortc alone: 200 each way (a DATA packet and a SACK per message)
    assert up - up0 <= 110 and down - down0 <= 110
    assert a.sack_policy.sacks_bundled >= 90 and b.sack_policy.sacks_bundled >= 90


async def test_one_way_data_is_acknowledged_every_second_packet(
    links: tuple[PeerLink, PeerLink, ImpairedPath],
) -> None:
    a, b, path = links
    got: list[bytes] = []
    b.on_lossy(got.append)
    up0, down0 = _datagrams(path)
    for _ in range(100):
        a.send_lossy(b"x" * 100)
        await asyncio.sleep(1 / 200)
    await asyncio.sleep(0.4)
    up, down = _datagrams(path)
    assert len(got) == 100 and up - up0 >= 100
    assert 45 <= down - down0 <= 60  # a SACK for every second packet, and a last one
    sctp = a.pc.sctp
    assert sctp is not None and not sctp._sent_queue  # everything acknowledged


async def test_a_lone_packet_is_acknowledged_within_the_delay(
    links: tuple[PeerLink, PeerLink, ImpairedPath],
) -> None:
    a, b, _path = links
    b.on_lossy(lambda m: None)
    sctp = a.pc.sctp
    assert sctp is not None
    a.send_lossy(b"alone")
    await asyncio.sleep(0.05)
    assert sctp._sent_queue  # not acknowledged yet: the SACK waits for company
    await asyncio.sleep(0.3)
    assert not sctp._sent_queue  # the delay (200 ms) ran out, the SACK went alone


async def test_reliable_data_under_loss_arrives_whole_and_in_order() -> None:
    """Gaps and duplicates are acknowledged at once: fast retransmission still works."""
    path = ImpairedPath(Impairment(seed=3))
    a, b = await linked_pair(path, settle=0.3)
    try:
        path.configure(Impairment(latency_ms=5, loss=0.1, seed=3))
        got: list[bytes | str] = []
        b.on_reliable(got.append)
        sent = [bytes([i % 256]) * 900 for i in range(200)]
        for message in sent:
            a.send_reliable(message)
        for _ in range(200):
            if len(got) == len(sent):
                break
            await asyncio.sleep(0.05)
        assert got == sent
        assert path.stats()["outgoing"].dropped_loss > 0
        assert b.sack_policy is not None and b.sack_policy.sacks_alone > 0
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_messages_queued_in_one_turn_share_packets(
    links: tuple[PeerLink, PeerLink, ImpairedPath],
) -> None:
    """A burst (a relay's fan-out, say) leaves as few packets as fit, not one per message."""
    a, b, path = links
    got: list[bytes | str] = []
    lossy: list[bytes] = []
    b.on_reliable(got.append)
    b.on_lossy(lossy.append)
    sent = [f"message {i}".encode() * 3 for i in range(60)]  # 30-33 bytes each
    up0, _ = _datagrams(path)
    for message in sent:
        a.send_reliable(message)
    a.send_reliable("text rides too")
    a.send_lossy(b"and the lossy channel")
    for _ in range(100):
        if len(got) == len(sent) + 1 and lossy:
            break
        await asyncio.sleep(0.02)
    up, _ = _datagrams(path)
    assert got == [*sent, "text rides too"] and lossy == [b"and the lossy channel"]
    # 62 DATA chunks of 48-52 bytes: 3 packets of at most 1189 bytes (aiortc alone: 62)
    assert up - up0 <= 4
    assert a.sack_policy is not None and a.sack_policy.data_bundled >= 58


async def test_bundled_bursts_under_loss_arrive_whole_and_in_order() -> None:
    path = ImpairedPath(Impairment(seed=5))
    a, b = await linked_pair(path, settle=0.3)
    try:
        path.configure(Impairment(latency_ms=5, loss=0.1, seed=5))
        got: list[bytes | str] = []
        b.on_reliable(got.append)
        sent = [bytes([i % 256]) * (1 + i * 7 % 300) for i in range(400)]
        for start in range(0, len(sent), 40):  # bursts of 40, each bundled
            for message in sent[start : start + 40]:
                a.send_reliable(message)
            await asyncio.sleep(0.01)
        for _ in range(300):
            if len(got) == len(sent):
                break
            await asyncio.sleep(0.05)
        assert got == sent
        assert path.stats()["outgoing"].dropped_loss > 0
        assert a.sack_policy is not None and a.sack_policy.data_bundled > 300
        assert b.sack_policy is not None and b.sack_policy.data_refused == 0  # in the window
    finally:
        await asyncio.gather(a.close(), b.close())


def _chunk(tsn: int, stream_id: int, flags: int, data: bytes) -> Any:
    from aiortc.rtcsctptransport import WEBRTC_BINARY, DataChunk

    chunk = DataChunk(flags=flags)
    chunk.tsn, chunk.stream_id, chunk.stream_seq = tsn, stream_id, 0
    chunk.protocol = WEBRTC_BINARY
    chunk.user_data = data
    return chunk


async def _spray(b: PeerLink, chunks: list[Any]) -> None:
    """Hand-made DATA chunks to ``b``'s association, as if they came from a peer that
    ignores the window (straight into aiortc's receive path: no socket buffer to drop
    them on the way)."""
    sctp = b.pc.sctp
    assert sctp is not None
    for chunk in chunks:
        await sctp._receive_chunk(chunk)


async def test_a_message_that_never_ends_cannot_outgrow_the_receive_window() -> None:
    path = ImpairedPath(Impairment())
    a, b = await linked_pair(path, settle=0.3)
    try:
        sctp_a, sctp_b = a.pc.sctp, b.pc.sctp
        assert sctp_a is not None and sctp_b is not None and b.sack_policy is not None
        stream = a.reliable.id
        assert stream is not None
        first = sctp_a._local_tsn
        # one message opened (FIRST_FRAG) and continued forever, in order: 1.3 MB
        chunks = [_chunk(first, stream, 0x02, b"a" * 1100)]
        chunks += [_chunk((first + i) % 2**32, stream, 0, b"b" * 1100) for i in range(1, 1200)]
        await _spray(b, chunks)
        held = sum(len(c.user_data) for c in sctp_b._inbound_streams[stream].reassembly)
        assert held <= 1024 * 1024 + 1100  # the window (1 MiB), not the 1.3 MB sent
        assert b.sack_policy.data_refused == 1200 - (1024 * 1024) // 1100
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_data_sprayed_past_a_gap_is_bounded() -> None:
    path = ImpairedPath(Impairment())
    a, b = await linked_pair(path, settle=0.3)
    try:
        sctp_a, sctp_b = a.pc.sctp, b.pc.sctp
        assert sctp_a is not None and sctp_b is not None and b.sack_policy is not None
        stream = a.reliable.id
        assert stream is not None
        first = sctp_a._local_tsn
        # TSN ``first`` never comes; 3000 one-byte messages wait above the gap
        chunks = [_chunk((first + i) % 2**32, stream, 0x03, b"x") for i in range(1, 3001)]
        await _spray(b, chunks)
        assert len(sctp_b._sack_misordered) <= MAX_MISORDERED
        assert b.sack_policy.data_refused == 3000 - MAX_MISORDERED
        # the chunk that fills the gap still gets in, and the association moves on
        await _spray(b, [_chunk(first, stream, 0x03, b"y")])
        assert sctp_b._last_received_tsn == (first + MAX_MISORDERED) % 2**32
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_delay_acks_is_idempotent_and_bounded() -> None:
    path = ImpairedPath(Impairment())
    a, b = await linked_pair(path, settle=0.3)
    try:
        assert delay_acks(a.pc) is a.sack_policy  # installed once per association
        with pytest.raises(ValueError):
            SackPolicy(a.pc.sctp, delay=0.5)  # RFC 4960 6.2: at most 200 ms (500 ms MUST)
    finally:
        await asyncio.gather(a.close(), b.close())
