"""The sans-IO endpoint, driven by hand with scripted time and scripted loss."""

from __future__ import annotations

import pytest

from netcode.core import (
    ACK_WINDOW,
    FRAGMENT_DATA_BYTES,
    DatagramAcked,
    DatagramLost,
    Delivery,
    Endpoint,
    EndpointConfig,
    FrameReceived,
    seq_add,
    seq_diff,
    seq_newer,
)
from netcode.errors import SendQueueFull
from netcode.wire import (
    MAX_DATAGRAM_BYTES,
    MAX_FRAME_PAYLOAD_BYTES,
    FragmentHeader,
    FrameType,
    decode_datagram_untrusted,
    encode_datagram,
    encode_fragment,
)

QUIET = EndpointConfig(ping_interval=None)


def events(endpoint: Endpoint) -> list[object]:
    out = []
    while (event := endpoint.next_event()) is not None:
        out.append(event)
    return out


def frames(endpoint: Endpoint) -> list[FrameReceived]:
    return [e for e in events(endpoint) if isinstance(e, FrameReceived)]


def test_sequence_arithmetic_wraps() -> None:
    assert seq_diff(0, 0xFFFF) == 1
    assert seq_diff(0xFFFF, 0) == -1
    assert seq_newer(5, 0xFFF0)
    assert not seq_newer(0xFFF0, 5)
    assert seq_add(0xFFFF, 2) == 1
    assert seq_diff(0x8000, 0) == -0x8000


def test_frames_are_packed_and_delivered_in_order() -> None:
    a, b = Endpoint(QUIET), Endpoint(QUIET)
    for i in range(3):
        a.send_frame(FrameType.DATA, bytes([i]) * 10)
    (datagram,) = a.datagrams_to_send(0.0)
    assert len(datagram) == 9 + 3 * 12
    b.receive_datagram(datagram, 0.01)
    assert [f.payload for f in frames(b)] == [bytes([i]) * 10 for i in range(3)]


def test_packing_never_exceeds_the_datagram_limit() -> None:
    a = Endpoint(QUIET)
    for size in (700, 700, 400, 1148, 30, 1, 0, 999):
        a.send_frame(FrameType.DATA, b"x" * size)
    out = a.datagrams_to_send(0.0)
    assert all(len(d) <= MAX_DATAGRAM_BYTES for d in out)
    assert sorted(len(p) for d in out for _, p in decode_datagram_untrusted(d).frames) == sorted(
        (700, 700, 400, 1148, 30, 1, 0, 999)
    )
    assert len(out) == 4  # first fit: 700+400+30+1+0 | 700 | 1148 | 999


def test_ack_reports_delivery_once_and_measures_rtt() -> None:
    a, b = Endpoint(QUIET), Endpoint(QUIET)
    outcomes: list[Delivery] = []
    a.send_frame(FrameType.DATA, b"hi", on_delivery=outcomes.append)
    (d,) = a.datagrams_to_send(0.0)
    b.receive_datagram(d, 0.05)
    assert b.datagrams_to_send(0.055) == []  # the ack waits max_ack_delay for company
    (ack_only,) = b.datagrams_to_send(0.05 + QUIET.max_ack_delay)
    assert decode_datagram_untrusted(ack_only).frames == []
    a.receive_datagram(ack_only, 0.1)
    assert outcomes == [Delivery.ACKED]
    assert [type(e) for e in events(a)] == [DatagramAcked]
    assert a.rtt.smoothed == pytest.approx(0.1)
    a.receive_datagram(ack_only, 0.2)  # a duplicate ack changes nothing
    assert outcomes == [Delivery.ACKED] and events(a) == []
    assert a.counters.datagrams_duplicate == 1
    assert a.in_flight == 0


def test_ack_only_datagrams_are_not_tracked_and_not_answered() -> None:
    a, b = Endpoint(QUIET), Endpoint(QUIET)
    a.send_frame(FrameType.DATA, b"x")
    b.receive_datagram(a.datagrams_to_send(0.0)[0], 0.0)
    (ack_only,) = b.datagrams_to_send(1.0)
    assert b.in_flight == 0
    a.receive_datagram(ack_only, 1.0)
    assert a.datagrams_to_send(5.0) == []  # no ack for an ack


def test_loss_pattern_is_reported_exactly() -> None:
    """Scripted loss: datagrams 1, 2 and 5 of 0..9 never arrive."""
    a, b = Endpoint(QUIET), Endpoint(QUIET)
    outcomes: dict[int, Delivery] = {}
    lost = {1, 2, 5}
    now = 0.0
    for i in range(10):
        a.send_frame(
            FrameType.DATA, bytes([i]), on_delivery=lambda r, i=i: outcomes.setdefault(i, r)
        )
        (d,) = a.datagrams_to_send(now)
        if i not in lost:
            b.receive_datagram(d, now)
        now += 0.01
    b.send_frame(FrameType.DATA, b"ack carrier")
    a.receive_datagram(b.datagrams_to_send(now)[0], now)
    acked = {i for i, r in outcomes.items() if r is Delivery.ACKED}
    assert acked == set(range(10)) - lost
    assert a.in_flight == 3
    assert a.loss_timeout == pytest.approx(EndpointConfig().min_loss_timeout)  # RTT is ~10 ms
    a.handle_timer(0.105)  # datagram 1 left at 0.01: 95 ms ago
    assert a.in_flight == 3
    a.handle_timer(now + 0.2)
    assert {i for i, r in outcomes.items() if r is Delivery.LOST} == lost
    reports = [e for e in events(a) if isinstance(e, DatagramLost)]
    assert sorted(e.sequence for e in reports) == [1, 2, 5]
    assert a.loss.total == pytest.approx(0.3)


def test_datagrams_behind_the_ack_window_are_lost_at_once() -> None:
    a, b = Endpoint(QUIET), Endpoint(QUIET)
    sent = []
    for i in range(ACK_WINDOW + 1):  # sequences 0..33: 0 is just outside the window
        a.send_frame(FrameType.DATA, b"x")
        sent.append(a.datagrams_to_send(i * 0.001)[0])
    for d in sent[1:]:  # the first never arrives
        b.receive_datagram(d, 0.1)
    b.send_frame(FrameType.DATA, b"y")
    a.receive_datagram(b.datagrams_to_send(0.1)[0], 0.1)
    reported = events(a)
    assert [e.sequence for e in reported if isinstance(e, DatagramLost)] == [0]
    assert a.in_flight == 0


def test_duplicates_and_stale_datagrams_are_dropped_and_counted() -> None:
    a, b = Endpoint(QUIET), Endpoint(QUIET)
    sent = []
    for i in range(40):
        a.send_frame(FrameType.DATA, bytes([i]))
        sent.append(a.datagrams_to_send(0.0)[0])
    b.receive_datagram(sent[39], 0.0)
    b.receive_datagram(sent[39], 0.0)  # duplicate of the newest
    b.receive_datagram(sent[10], 0.0)  # 29 behind: within the window
    b.receive_datagram(sent[10], 0.0)  # duplicate inside the window
    b.receive_datagram(sent[0], 0.0)  # 39 behind: too old to deduplicate
    assert [f.payload for f in frames(b)] == [bytes([39]), bytes([10])]
    c = b.counters
    assert (c.datagrams_duplicate, c.datagrams_stale, c.datagrams_accepted) == (2, 1, 2)


def test_sequences_far_ahead_are_dropped_not_trusted() -> None:
    a, b = Endpoint(QUIET), Endpoint(QUIET)
    a.send_frame(FrameType.DATA, b"ok")
    b.receive_datagram(a.datagrams_to_send(0.0)[0], 0.0)
    hostile = encode_datagram(20000, None, 0, [(FrameType.DATA, b"evil")])
    b.receive_datagram(hostile, 0.0)
    assert [f.payload for f in frames(b)] == [b"ok"]
    assert b.counters.datagrams_out_of_window == 1


def test_acks_for_sequences_never_sent_are_ignored() -> None:
    a = Endpoint(QUIET)
    outcomes: list[Delivery] = []
    a.send_frame(FrameType.DATA, b"x", on_delivery=outcomes.append)
    a.datagrams_to_send(0.0)
    a.receive_datagram(encode_datagram(0, 500, 0xFFFFFFFF, []), 0.1)
    assert outcomes == [] and a.in_flight == 1
    assert a.counters.acks_ignored == 1


def test_malformed_and_unknown_frame_datagrams_are_dropped_and_counted() -> None:
    b = Endpoint(QUIET)
    b.receive_datagram(b"\x11garbage", 0.0)
    b.receive_datagram(encode_datagram(0, None, 0, [(250, b"?")]), 0.0)
    assert b.counters.datagrams_malformed == 2
    assert b.counters.datagrams_accepted == 0
    # a dropped datagram leaves no trace: its sequence is still accepted later
    b.receive_datagram(encode_datagram(0, None, 0, [(FrameType.DATA, b"ok")]), 0.0)
    assert [f.payload for f in frames(b)] == [b"ok"]


def test_sequence_wraps_around() -> None:
    config = EndpointConfig(ping_interval=None, initial_sequence=0xFFFE)
    a, b = Endpoint(config), Endpoint(QUIET)
    outcomes: list[Delivery] = []
    for i in range(5):
        a.send_frame(FrameType.DATA, bytes([i]), on_delivery=outcomes.append)
        b.receive_datagram(a.datagrams_to_send(0.0)[0], 0.0)
    assert [f.sequence for f in frames(b)] == [0xFFFE, 0xFFFF, 0, 1, 2]
    b.send_frame(FrameType.DATA, b"ack")
    a.receive_datagram(b.datagrams_to_send(0.0)[0], 0.01)
    assert outcomes == [Delivery.ACKED] * 5


def test_fragmented_message_is_reassembled_in_any_order() -> None:
    a, b = Endpoint(QUIET), Endpoint(QUIET)
    payload = bytes(range(256)) * 12  # 3072 bytes: three fragments
    outcomes: list[Delivery] = []
    a.send_frame(FrameType.DATA, payload, on_delivery=outcomes.append)
    datagrams = a.datagrams_to_send(0.0)
    assert len(datagrams) == 3 and all(len(d) <= MAX_DATAGRAM_BYTES for d in datagrams)
    for d in reversed(datagrams):
        b.receive_datagram(d, 0.0)
    (message,) = frames(b)
    assert (message.frame_type, message.payload) == (FrameType.DATA, payload)
    b.send_frame(FrameType.DATA, b"")
    a.receive_datagram(b.datagrams_to_send(0.0)[0], 0.0)
    assert outcomes == [Delivery.ACKED]


def test_fragmented_message_is_lost_whole_if_a_piece_is_lost() -> None:
    a, b = Endpoint(QUIET), Endpoint(QUIET)
    outcomes: list[Delivery] = []
    a.send_frame(FrameType.DATA, b"z" * 3000, on_delivery=outcomes.append)
    first, _second, third = a.datagrams_to_send(0.0)
    b.receive_datagram(first, 0.0)
    b.receive_datagram(third, 0.0)
    assert frames(b) == []
    b.send_frame(FrameType.DATA, b"")
    a.receive_datagram(b.datagrams_to_send(0.0)[0], 0.0)
    assert outcomes == []
    a.handle_timer(2.0)
    assert outcomes == [Delivery.LOST]  # reported once, although only one piece was lost
    b.handle_timer(2.0)
    assert b.counters.messages_expired == 1


def test_payload_limits_name_the_limit() -> None:
    a = Endpoint(QUIET)
    limit = QUIET.max_message_bytes
    assert limit == 8 * FRAGMENT_DATA_BYTES
    a.send_frame(FrameType.DATA, b"x" * limit)
    with pytest.raises(ValueError, match=f"limit of {limit} bytes"):
        a.send_frame(FrameType.DATA, b"x" * (limit + 1))
    with pytest.raises(ValueError, match="frame type"):
        a.send_frame(FrameType.FRAGMENT, b"x")


def test_send_queue_is_bounded() -> None:
    a = Endpoint(EndpointConfig(ping_interval=None, max_send_queue_bytes=10_000))
    for _ in range(9):
        a.send_frame(FrameType.DATA, b"x" * 1000)
    with pytest.raises(SendQueueFull, match="max_send_queue_bytes=10000"):
        a.send_frame(FrameType.DATA, b"x" * 1000)
    a.datagrams_to_send(0.0)
    a.send_frame(FrameType.DATA, b"x" * 1000)  # draining makes room again


def test_superseded_and_expired_frames_are_dropped_unsent() -> None:
    a, b = Endpoint(QUIET), Endpoint(QUIET)
    outcomes: list[tuple[str, Delivery]] = []
    a.send_frame(
        FrameType.SNAPSHOT,
        b"old",
        supersede_key="snap",
        on_delivery=lambda r: outcomes.append(("old", r)),
    )
    a.send_frame(
        FrameType.SNAPSHOT,
        b"new",
        supersede_key="snap",
        on_delivery=lambda r: outcomes.append(("new", r)),
    )
    a.send_frame(
        FrameType.DATA,
        b"stale",
        expires_at=0.5,
        on_delivery=lambda r: outcomes.append(("stale", r)),
    )
    assert outcomes == [("old", Delivery.LOST)]
    for d in a.datagrams_to_send(1.0):
        b.receive_datagram(d, 1.0)
    assert [f.payload for f in frames(b)] == [b"new"]
    assert outcomes == [("old", Delivery.LOST), ("stale", Delivery.LOST)]
    assert a.counters.frames_dropped == 2 and a.send_queue_bytes == 0


def test_ping_pong_measure_round_trip_and_clock_offset() -> None:
    config = EndpointConfig(ping_interval=0.5)
    a, b = Endpoint(config), Endpoint(EndpointConfig(ping_interval=None))
    skew = 100.0  # b's clock reads 100 s ahead of a's
    (ping,) = a.datagrams_to_send(0.0)
    b.receive_datagram(ping, 0.040 + skew)
    (pong,) = b.datagrams_to_send(0.045 + skew)  # held 5 ms before it left
    a.receive_datagram(pong, 0.085)
    assert a.clock.round_trip == pytest.approx(0.080, abs=2e-6)  # hold_us rounds
    assert a.clock.offset == pytest.approx(skew, abs=2e-6)
    assert a.get_timer() == pytest.approx(0.095)  # a owes b an ack for the PONG
    assert len(a.datagrams_to_send(0.095)) == 1
    assert a.get_timer() == pytest.approx(0.5)  # then the next PING is due


def test_reassembly_memory_is_bounded() -> None:
    config = EndpointConfig(ping_interval=None, max_reassembly_messages=4)
    b = Endpoint(config)
    for message_id in range(10):
        piece = encode_fragment(
            FragmentHeader(FrameType.DATA, message_id, 0, 2), b"x" * FRAGMENT_DATA_BYTES
        )
        b.receive_datagram(encode_datagram(message_id, None, 0, [(FrameType.FRAGMENT, piece)]), 0.0)
    assert b._reassembler.buffered_bytes == 4 * FRAGMENT_DATA_BYTES
    assert b._reassembler.dropped == 6
    too_many = encode_fragment(FragmentHeader(FrameType.DATA, 99, 0, 200), b"x")
    b.receive_datagram(encode_datagram(11, None, 0, [(FrameType.FRAGMENT, too_many)]), 0.0)
    assert b.counters.fragments_malformed == 1


def test_max_frame_payload_fills_exactly_one_datagram() -> None:
    a = Endpoint(QUIET)
    a.send_frame(FrameType.DATA, b"x" * MAX_FRAME_PAYLOAD_BYTES)
    (d,) = a.datagrams_to_send(0.0)
    assert len(d) == MAX_DATAGRAM_BYTES
