"""The reliable-ordered event channel: scripted loss and time, bad input, bounds, the EVENT
frame codec, a soak on the simulated link and the ``netcode-bench events`` command."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netcode_tools.bench import main as bench_main
from netcode_tools.bench_events import Scenario, run_netcode

from netcode.core import (
    Endpoint,
    EndpointConfig,
    FrameReceived,
    ReliableChannel,
    ReliableConfig,
    seq_add,
)
from netcode.errors import ProtocolError, SendQueueFull
from netcode.transport.memory import LinkConditions, client_and_server
from netcode.wire import (
    EVENT,
    MAX_EVENT_ID_SPAN,
    MAX_FRAME_PAYLOAD_BYTES,
    FrameType,
    decode_datagram_untrusted,
    decode_event_frame_untrusted,
    encode_event_frame,
    event_entry_bytes,
)

QUIET = EndpointConfig(ping_interval=None, datagram_events=False)
TICK = 1 / 30


class Scripted:
    """A sending and a receiving channel on two endpoints; datagrams change hands by hand."""

    def __init__(
        self,
        config: ReliableConfig | None = None,
        *,
        fallback: list[tuple[int, bytes]] | None = None,
    ) -> None:
        self.a = Endpoint(QUIET, name="a")
        self.b = Endpoint(QUIET, name="b")
        self.fallback_sent = fallback
        send_fallback = None if fallback is None else (lambda i, m: fallback.append((i, m)))
        self.tx = ReliableChannel(self.a, config, fallback=send_fallback, name="tx")
        self.rx = ReliableChannel(self.b, config, name="rx")

    def from_tx(self, now: float) -> list[bytes]:
        self.tx.flush(now)
        self.a.handle_timer(now)
        return self.a.datagrams_to_send(now)

    def from_rx(self, now: float) -> list[bytes]:
        self.rx.flush(now)
        self.b.handle_timer(now)
        return self.b.datagrams_to_send(now)

    def to_rx(self, datagrams: list[bytes], now: float) -> None:
        self._deliver(self.b, self.rx, datagrams, now)

    def to_tx(self, datagrams: list[bytes], now: float) -> None:
        self._deliver(self.a, self.tx, datagrams, now)

    @staticmethod
    def _deliver(
        endpoint: Endpoint, channel: ReliableChannel, datagrams: list[bytes], now: float
    ) -> None:
        for data in datagrams:
            endpoint.receive_datagram(data, now)
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, FrameReceived) and event.frame_type == FrameType.EVENT:
                channel.receive_frame(event.payload, now)

    def measure_rtt(self) -> None:
        """One message out at t=0, in at 0.05, ack back at 0.1: srtt 0.1 s, rttvar 0.05 s."""
        self.tx.send(b"hello")
        self.to_rx(self.from_tx(0.0), 0.05)
        self.to_tx(self.from_rx(0.07), 0.1)
        assert self.rx.received() == [b"hello"]
        assert self.tx.unacked_messages == 0


def event_ids(datagrams: list[bytes]) -> list[list[int]]:
    """Message ids of each EVENT frame in ``datagrams``."""
    return [
        [i for i, _ in decode_event_frame_untrusted(payload).messages]
        for data in datagrams
        for frame_type, payload in decode_datagram_untrusted(data).frames
        if frame_type == FrameType.EVENT
    ]


# ---------------------------------------------------------------------------- sending


def test_pending_messages_share_one_frame_and_arrive_in_order() -> None:
    s = Scripted()
    assert [s.tx.send(m) for m in (b"a", b"bb", b"")] == [0, 1, 2]
    datagrams = s.from_tx(0.0)
    assert event_ids(datagrams) == [[0, 1, 2]]
    assert s.tx.counters.messages_sent == 3
    s.to_rx(datagrams, 0.05)
    assert s.rx.next_message() == b"a"
    assert s.rx.received() == [b"bb", b""]
    assert s.rx.next_message() is None
    s.to_tx(s.from_rx(0.07), 0.1)
    assert s.tx.unacked_messages == 0 and s.tx.send_queue_bytes == 0
    assert s.tx.counters.messages_acked == 3


def test_nothing_is_resent_before_the_timeout_and_nothing_sent_when_idle() -> None:
    s = Scripted()
    assert s.from_tx(0.0) == []
    s.tx.send(b"x")
    assert len(s.from_tx(0.0)) == 1
    assert s.tx.flush(0.1) == 0  # not acked, but not yet due either
    assert s.tx.get_timer() == pytest.approx(0.25)  # initial_resend_s: no RTT sample yet


def test_resend_timeout_follows_the_measured_round_trip() -> None:
    s = Scripted()
    s.measure_rtt()
    assert s.tx.resend_timeout == pytest.approx(0.1 + 2 * 0.05)
    s.tx.send(b"lost")
    assert len(s.from_tx(1.0)) == 1  # dropped on the floor
    assert s.tx.get_timer() == pytest.approx(1.2)
    assert s.tx.flush(1.19) == 0
    assert s.tx.flush(1.2) == 1
    assert s.tx.counters.messages_resent == 1
    s.to_rx(s.a.datagrams_to_send(1.2), 1.25)
    assert s.rx.received() == [b"lost"]


def test_resend_timeout_is_clamped() -> None:
    low = Scripted(ReliableConfig(min_resend_s=0.5, max_resend_s=0.6))
    low.measure_rtt()
    assert low.tx.resend_timeout == 0.5
    high = Scripted(ReliableConfig(min_resend_s=0.01, max_resend_s=0.15))
    high.measure_rtt()
    assert high.tx.resend_timeout == 0.15


def test_lost_report_makes_a_message_due_at_once() -> None:
    # A resend timer longer than the endpoint's 1 s loss timeout: LOST comes first.
    s = Scripted(ReliableConfig(initial_resend_s=5.0, max_resend_s=5.0))
    s.tx.send(b"m")
    s.from_tx(0.0)  # lost
    assert s.tx.flush(0.9) == 0
    s.a.handle_timer(1.0)  # the endpoint's loss timeout declares the datagram LOST
    assert s.tx.counters.frames_lost == 1
    assert s.tx.get_timer() is not None and s.tx.get_timer() <= 1.0  # type: ignore[operator]
    assert s.tx.flush(1.0) == 1
    assert s.tx.counters.messages_resent == 1


def test_lost_report_of_an_older_transmission_is_ignored() -> None:
    s = Scripted(ReliableConfig(initial_resend_s=0.9))
    s.tx.send(b"m")
    s.from_tx(0.0)  # first transmission lost
    assert len(s.from_tx(0.9)) == 1  # resent by timer, in flight
    s.a.handle_timer(1.0)  # only the first datagram is past the loss timeout
    assert s.tx.counters.frames_lost == 1
    assert s.tx.flush(1.0) == 0  # the resend is still in flight and not yet due


def test_held_new_messages_wait_for_release_but_repairs_do_not() -> None:
    # A game host holds its events for the tick's datagram (hold_new): a flush that a
    # datagram from the peer starts between ticks sends none of them.
    s = Scripted(ReliableConfig(initial_resend_s=5.0, max_resend_s=5.0, redundant_copies=0))
    s.tx.send(b"old")
    assert event_ids(s.from_tx(0.0)) == [[0]]  # lost
    s.tx.hold_new = True
    s.tx.send(b"new1")
    s.tx.send(b"new2")
    assert s.tx.get_timer() == pytest.approx(5.0)  # the resend of "old", not "at once"
    assert s.tx.flush(0.5) == 0
    s.a.handle_timer(1.0)  # "old" LOST: its repair is not held, the new ones are
    assert event_ids(s.from_tx(1.0)) == [[0]]
    assert s.tx.release_new() is True
    assert s.tx.get_timer() is not None and s.tx.get_timer() <= 1.0  # type: ignore[operator]
    assert event_ids(s.from_tx(1.01)) == [[1, 2]]  # the tick's flush: both in one frame
    assert s.tx.release_new() is False  # nothing new left
    s.tx.send(b"new3")
    assert s.tx.flush(1.02) == 0
    s.tx.hold_new = False  # no more ticks: what was held goes at the next flush
    assert event_ids(s.from_tx(1.03)) == [[3]]
    s.tx.send(b"new4")  # and new messages go at once again
    assert event_ids(s.from_tx(1.04)) == [[4]]
    assert s.tx.counters.messages_sent == 5


def test_early_copy_rides_the_next_frame_so_one_loss_costs_a_tick() -> None:
    s = Scripted()
    s.tx.send(b"m0")
    assert event_ids(s.from_tx(0.0)) == [[0]]  # lost
    s.tx.send(b"m1")
    tick1 = s.from_tx(TICK)
    assert event_ids(tick1) == [[0, 1]]  # m0 rides along in the spare room
    s.to_rx(tick1, TICK + 0.05)
    assert s.rx.received() == [b"m0", b"m1"]
    s.tx.send(b"m2")
    # no ack yet: m0 rides a second time, m1 a first (up to redundant_copies = 3 each)
    assert event_ids(s.from_tx(2 * TICK)) == [[0, 1, 2]]
    assert s.tx.counters.messages_redundant == 3
    assert s.tx.counters.messages_resent == 0
    # The resend timer runs from the latest copy: m0 is due 0.25 s after its second copy.
    assert s.tx.get_timer() == pytest.approx(2 * TICK + 0.25)


def test_early_copies_stop_at_redundant_copies() -> None:
    s = Scripted(ReliableConfig(redundant_copies=1))
    s.tx.send(b"m0")
    s.from_tx(0.0)
    s.tx.send(b"m1")
    assert event_ids(s.from_tx(TICK)) == [[0, 1]]
    s.tx.send(b"m2")
    assert event_ids(s.from_tx(2 * TICK)) == [[1, 2]]  # m0 had its one early copy


def test_early_copies_ride_a_datagram_that_leaves_anyway() -> None:
    s = Scripted()
    s.tx.send(b"m0")
    s.from_tx(0.0)  # lost
    assert s.tx.get_timer() == pytest.approx(0.25)  # nothing queued: only the resend timer
    s.a.send_frame(FrameType.INPUT, b"input")  # a datagram will leave now
    assert s.tx.get_timer() == pytest.approx(0.015)  # copy_spacing_s after the first send
    assert event_ids(s.from_tx(TICK)) == [[0]]  # the copy rides the input's datagram
    assert len(s.from_tx(2 * TICK)) == 0  # nothing queued, nothing due: no datagram
    for tick in (3, 4, 5):
        s.a.send_frame(FrameType.INPUT, b"input")
        s.from_tx(tick * TICK)
    assert s.tx.counters.messages_redundant == 3  # redundant_copies, then only the timer
    assert s.tx.counters.messages_resent == 0


def test_the_resend_timer_follows_large_rtt_changes_and_ignores_jitter() -> None:
    s = Scripted(ReliableConfig(redundant_copies=0))
    s.measure_rtt()  # resend timeout 0.2 s
    s.tx.send(b"lost")
    s.from_tx(1.0)
    assert s.tx.get_timer() == pytest.approx(1.2)
    rtt = s.a.rtt
    rtt.smoothed = 0.102  # a timeout 1% longer: the answer stands (a resend 2 ms early)
    assert s.tx.get_timer() == pytest.approx(1.2)
    rtt.smoothed = 0.2  # a timeout half again as long: the deadline moves with it
    assert s.tx.get_timer() == pytest.approx(1.0 + 0.2 + 2 * 0.05)
    assert s.tx.flush(1.25) == 0
    assert s.tx.flush(1.3) == 1


def test_a_resend_earns_no_new_early_copies() -> None:
    s = Scripted(ReliableConfig(redundant_copies=1))
    s.tx.send(b"m0")
    s.from_tx(0.0)  # lost
    s.a.send_frame(FrameType.INPUT, b"input")
    assert event_ids(s.from_tx(TICK)) == [[0]]  # its one early copy, lost too
    resend_at = TICK + 0.25  # the resend timer runs from the copy
    assert s.tx.get_timer() == pytest.approx(resend_at)
    assert event_ids(s.from_tx(resend_at)) == [[0]]
    assert s.tx.counters.messages_resent == 1
    s.a.send_frame(FrameType.INPUT, b"input")
    assert event_ids(s.from_tx(resend_at + TICK)) == []  # no new copy after the resend
    assert s.tx.counters.messages_redundant == 1


def test_resends_after_timeouts_back_off() -> None:
    s = Scripted(ReliableConfig(initial_resend_s=0.1, redundant_copies=0))
    s.tx.send(b"m")
    sent_at = []
    for step in range(90):  # every datagram lost; before the endpoint's 1 s loss timeout
        now = step / 100
        if s.from_tx(now):
            sent_at.append(now)
    assert sent_at == pytest.approx([0.0, 0.1, 0.3, 0.7], abs=0.011)  # waits 0.1, 0.2, 0.4
    assert s.tx.counters.messages_resent == 3


def test_a_stalled_peer_is_probed_not_fed_its_whole_queue_again() -> None:
    s = Scripted(ReliableConfig(redundant_copies=0))
    s.measure_rtt()  # resend timeout 0.2 s
    for i in range(300):
        s.tx.send(i.to_bytes(2, "big") * 20)
    now = 1.0
    while now < 21.0:  # twenty seconds of silence: everything sent is lost
        s.from_tx(now)
        now += 0.05
    # Each message's first LOST report resends it once (300); after that, timer resends
    # come a few frames per doubling hold. Each message on its own backed-off timer was
    # resent every 4 s: over 1,700 resends.
    assert 300 <= s.tx.counters.messages_resent < 700
    # The peer answers again: its acknowledgement of any datagram (a PING) ends the hold,
    # and everything timed out is due at once.
    held = s.tx.get_timer()
    assert held is not None and held > now
    s.a.send_frame(FrameType.INPUT, b"input")
    s.to_rx(s.a.datagrams_to_send(now), now)
    s.to_tx(s.b.datagrams_to_send(now + 0.1), now + 0.1)
    now += 0.1
    assert s.tx.get_timer() <= now  # type: ignore[operator]
    for _ in range(40):
        s.to_rx(s.from_tx(now), now)
        s.to_tx(s.from_rx(now), now + 0.01)
        now += 0.05
    assert s.rx.received() == [i.to_bytes(2, "big") * 20 for i in range(300)]
    assert s.tx.unacked_messages == 0


def test_a_resends_lost_report_waits_for_the_backed_off_timer() -> None:
    s = Scripted(ReliableConfig(initial_resend_s=0.9, max_resend_s=5.0, redundant_copies=0))
    s.tx.send(b"m")
    s.from_tx(0.0)  # lost
    assert len(s.from_tx(0.9)) == 1  # resent by the timer, lost too
    s.a.handle_timer(1.95)  # both datagrams past the 1 s loss timeout: LOST
    assert s.tx.counters.frames_lost == 2
    assert s.tx.flush(1.95) == 0  # not due at once: the path is stalled or losing heavily
    assert s.tx.get_timer() == pytest.approx(0.9 + 1.8)  # the doubled wait
    assert s.tx.flush(2.7) == 1


def test_no_early_copies_when_disabled_or_when_no_frame_goes_out() -> None:
    s = Scripted(ReliableConfig(redundant_copies=0))
    s.tx.send(b"m0")
    s.from_tx(0.0)
    s.tx.send(b"m1")
    assert event_ids(s.from_tx(TICK)) == [[1]]
    t = Scripted()
    t.tx.send(b"m0")
    t.from_tx(0.0)
    assert t.from_tx(TICK) == []  # nothing due: no frame just for a copy


@pytest.mark.parametrize(
    "pattern",
    [
        [True, False] * 10,  # every other datagram lost
        [True] * 6 + [False] * 14,  # a burst of six
        [False, True, True, True, False, False, True, False, False, False] * 2,
    ],
)
def test_scripted_loss_patterns_deliver_everything_once_in_order(pattern: list[bool]) -> None:
    """pattern[i]: the i-th datagram from the sender is lost; later ones all arrive."""
    s = Scripted()
    messages = [f"event {i}".encode() for i in range(40)]
    delivered: list[bytes] = []
    in_transit: list[tuple[float, bytes]] = []
    sent = 0
    now = 0.0
    for tick in range(200):
        now = tick * TICK
        if tick < 20:
            s.tx.send(messages[2 * tick])
            s.tx.send(messages[2 * tick + 1])
        for data in s.from_tx(now):
            lost = pattern[sent] if sent < len(pattern) else False
            sent += 1
            if not lost:
                in_transit.append((now + 0.05, data))
        arrived = [d for t, d in in_transit if t <= now]
        in_transit = [(t, d) for t, d in in_transit if t > now]
        s.to_rx(arrived, now)
        s.to_tx(s.from_rx(now), now + 0.05)  # acks arrive 50 ms later (simplified)
        delivered += s.rx.received()
        if len(delivered) == len(messages) and s.tx.unacked_messages == 0:
            break
    assert delivered == messages
    assert s.tx.unacked_messages == 0
    assert s.rx.counters.messages_delivered == 40


def test_order_holds_across_the_id_wrap() -> None:
    config = ReliableConfig(initial_id=0xFFF0)
    s = Scripted(config)
    ids = [s.tx.send(bytes([i])) for i in range(40)]
    assert ids[0] == 0xFFF0 and ids[16] == 0 and ids[-1] == 23
    datagrams = s.from_tx(0.0)
    frame = decode_event_frame_untrusted(decode_datagram_untrusted(datagrams[0]).frames[0][1])
    assert frame.base_id == 0xFFF0
    # deliver the wrapped half first: it waits in the reorder buffer
    s.rx.receive_frame(encode_event_frame(0, [(i, bytes([16 + i])) for i in range(24)]), 0.0)
    assert s.rx.received() == [] and s.rx.stats().reorder_buffered == 24
    s.to_rx(datagrams, 0.05)
    assert s.rx.received() == [bytes([i]) for i in range(40)]
    assert s.rx.next_receive_id == seq_add(0xFFF0, 40)
    assert s.rx.counters.duplicates == 24


# ---------------------------------------------------------------------------- bad input


def test_duplicates_are_dropped_and_counted() -> None:
    rx = ReliableChannel(Endpoint(QUIET))
    frame = encode_event_frame(0, [(0, b"a"), (1, b"b")])
    rx.receive_frame(frame, 0.0)
    rx.receive_frame(frame, 0.1)
    rx.receive_frame(encode_event_frame(3, [(3, b"d")]), 0.2)
    rx.receive_frame(encode_event_frame(3, [(3, b"d")]), 0.3)  # buffered twice
    assert rx.received() == [b"a", b"b"]
    assert rx.counters.duplicates == 3
    assert rx.counters.messages_received == 3


def test_forged_and_out_of_window_ids_are_dropped_and_counted() -> None:
    rx = ReliableChannel(Endpoint(QUIET), ReliableConfig(window=64, max_send_queue_messages=64))
    rx.receive_frame(encode_event_frame(64, [(64, b"too far")]), 0.0)
    rx.receive_frame(encode_event_frame(30000, [(30000, b"forged")]), 0.0)
    rx.receive_frame(encode_event_frame(0xFF00, [(0xFF00, b"far behind")]), 0.0)
    rx.receive_frame(b"\x00", 0.0)
    rx.receive_frame(b"\x00\x00\x05ab", 0.0)
    assert rx.counters.out_of_window == 3
    assert rx.counters.frames_malformed == 2
    rx.receive_frame(encode_event_frame(63, [(63, b"edge")]), 0.0)  # last id in the window
    rx.receive_frame(encode_event_frame(0, [(0, b"first")]), 0.0)
    assert rx.received() == [b"first"]
    assert rx.stats().reorder_buffered == 1


def test_reorder_buffer_is_bounded_by_the_window() -> None:
    window = 32
    rx = ReliableChannel(
        Endpoint(QUIET), ReliableConfig(window=window, max_send_queue_messages=window)
    )
    for i in range(1, window + 5):
        rx.receive_frame(encode_event_frame(i, [(i, bytes([i]))]), 0.0)
    assert rx.stats().reorder_buffered == window - 1
    assert rx.counters.out_of_window == 5
    rx.receive_frame(encode_event_frame(0, [(0, b"\x00")]), 0.0)
    assert rx.received() == [bytes([i]) for i in range(window)]


def test_fallback_acks_for_ids_never_assigned_are_ignored() -> None:
    s = Scripted(fallback=[])
    s.tx.send(b"x" * 2000)  # id 0 by fallback
    s.tx.receive_frame(encode_event_frame(500, []), 0.0)
    assert s.tx.counters.fallback_acks_ignored == 1
    assert s.tx.stats().fallback_outstanding == 1


# ---------------------------------------------------------------------------- bounds


def test_send_queue_full_raises_and_leaves_the_queue_as_it_was() -> None:
    s = Scripted(ReliableConfig(max_send_queue_messages=4, max_send_queue_bytes=100))
    for _ in range(4):
        s.tx.send(b"m")
    with pytest.raises(SendQueueFull, match="max_send_queue_messages"):
        s.tx.send(b"m")
    assert s.tx.unacked_messages == 4 and s.tx.next_send_id == 4
    s.to_rx(s.from_tx(0.0), 0.05)
    s.to_tx(s.from_rx(0.07), 0.1)
    assert s.tx.unacked_messages == 0
    s.tx.send(b"x" * 60)
    with pytest.raises(SendQueueFull, match="max_send_queue_bytes"):
        s.tx.send(b"x" * 60)
    assert s.tx.counters.queue_full == 2
    # Another connection's channel is unaffected by this one's flood.
    other = Scripted()
    other.tx.send(b"fine")
    assert len(other.from_tx(0.0)) == 1


def test_a_backlog_drains_over_several_flushes() -> None:
    s = Scripted(ReliableConfig(max_frames_per_flush=2))
    for _ in range(40):
        s.tx.send(b"x" * 100)  # eleven fit one frame
    assert s.tx.flush(0.0) == 2
    assert s.tx.counters.messages_sent == 22
    assert s.tx.flush(TICK) == 2
    assert s.tx.counters.messages_sent == 40


def test_messages_fill_frames_up_to_max_frame_bytes() -> None:
    s = Scripted(ReliableConfig(max_frame_bytes=200, max_inline_bytes=100))
    for _ in range(5):
        s.tx.send(b"y" * 60)
    datagrams = s.from_tx(0.0)
    frames = [
        p for d in datagrams for t, p in decode_datagram_untrusted(d).frames if t == FrameType.EVENT
    ]
    assert [len(decode_event_frame_untrusted(p).messages) for p in frames] == [3, 2]
    assert all(len(p) <= 200 for p in frames)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="max_send_queue_messages"):
        ReliableConfig(window=16, max_send_queue_messages=32)
    with pytest.raises(ValueError, match="max_inline_bytes"):
        ReliableConfig(max_inline_bytes=MAX_FRAME_PAYLOAD_BYTES)
    with pytest.raises(ValueError, match="window"):
        ReliableConfig(window=MAX_EVENT_ID_SPAN)


# ---------------------------------------------------------------------------- fallback


def test_large_messages_take_the_fallback_path_and_keep_their_place() -> None:
    handed: list[tuple[int, bytes]] = []
    s = Scripted(fallback=handed)
    big = b"B" * 5000
    assert [s.tx.send(b"a"), s.tx.send(big), s.tx.send(b"c")] == [0, 1, 2]
    assert handed == [(1, big)]
    assert s.tx.counters.messages_fallback == 1
    datagrams = s.from_tx(0.0)
    assert event_ids(datagrams) == [[0, 2]]  # id 1 is skipped on the lossy path
    # The lossy frame arrives first: "c" waits for the fallback message.
    s.to_rx(datagrams, 0.05)
    assert s.rx.received() == [b"a"]
    s.rx.receive_fallback(*handed[0])
    assert s.rx.received() == [big, b"c"]
    s.rx.receive_fallback(1, big)
    assert s.rx.counters.duplicates == 1


def test_fallback_message_arriving_first_waits_for_the_ones_before_it() -> None:
    s = Scripted(fallback=[])
    s.tx.send(b"a")
    s.tx.send(b"B" * 2000)
    s.rx.receive_fallback(1, b"B" * 2000)
    assert s.rx.received() == []
    s.to_rx(s.from_tx(0.0), 0.05)
    assert s.rx.received() == [b"a", b"B" * 2000]


def test_fallback_ids_hold_the_send_window_until_the_receiver_passes_them() -> None:
    handed: list[tuple[int, bytes]] = []
    s = Scripted(ReliableConfig(window=8, max_send_queue_messages=8), fallback=handed)
    s.tx.send(b"F" * 2000)  # id 0, by fallback
    for i in range(7):
        s.tx.send(bytes([i]))  # ids 1..7
    s.to_rx(s.from_tx(0.0), 0.05)
    s.to_tx(s.from_rx(0.07), 0.1)
    assert s.tx.unacked_messages == 0 and s.tx.stats().fallback_outstanding == 1
    assert s.tx.send(b"late") == 8
    assert s.tx.flush(0.2) == 0  # id 8 is a window past id 0, which may not have arrived
    s.rx.receive_fallback(*handed[0])
    assert len(s.rx.received()) == 8
    s.to_tx(s.from_rx(0.3), 0.35)  # the fallback acknowledgement
    assert s.tx.stats().fallback_outstanding == 0
    s.to_rx(s.from_tx(0.4), 0.45)
    assert s.rx.received() == [b"late"]


def test_lost_fallback_acknowledgement_is_sent_again() -> None:
    s = Scripted(fallback=[])
    s.tx.send(b"F" * 2000)
    s.rx.receive_fallback(0, b"F" * 2000)
    assert s.rx.received() == [b"F" * 2000]
    assert len(s.from_rx(0.0)) == 1  # lost
    assert s.rx.counters.fallback_acks_sent == 1
    s.b.handle_timer(1.0)  # LOST
    s.to_tx(s.from_rx(1.0), 1.05)
    assert s.rx.counters.fallback_acks_sent == 2
    assert s.tx.stats().fallback_outstanding == 0


def test_large_message_without_fallback_or_too_large_is_refused() -> None:
    s = Scripted()
    with pytest.raises(ValueError, match="no fallback"):
        s.tx.send(b"x" * 1001)
    t = Scripted(ReliableConfig(max_message_bytes=4096), fallback=[])
    with pytest.raises(ValueError, match="max_message_bytes"):
        t.tx.send(b"x" * 4097)
    t.rx.receive_fallback(0, b"x" * 4097)
    assert t.rx.counters.fallback_oversized == 1
    t.rx.receive_fallback(70000, b"x")
    assert t.rx.counters.out_of_window == 1


def test_a_refusing_fallback_does_not_consume_an_id() -> None:
    def refuse(message_id: int, message: bytes) -> None:
        raise SendQueueFull("reliable channel full")

    tx = ReliableChannel(Endpoint(QUIET), fallback=refuse)
    with pytest.raises(SendQueueFull):
        tx.send(b"x" * 2000)
    assert tx.send(b"small") == 0


# ---------------------------------------------------------------------------- wire


FIXTURE = bytes.fromhex("fffe0001610000030378797a")


def test_event_frame_fixture_parse_then_build_gives_the_same_bytes() -> None:
    # base 0xFFFE: "a" at 0xFFFE, "" at 0xFFFF, "xyz" at 0xFFFF + 1 + 3 = 3
    frame = decode_event_frame_untrusted(FIXTURE)
    assert frame == (0xFFFE, [(0xFFFE, b"a"), (0xFFFF, b""), (3, b"xyz")])
    assert encode_event_frame(*frame) == FIXTURE
    assert EVENT.build(EVENT.parse(FIXTURE)) == FIXTURE
    assert event_entry_bytes(3, 3) == 5 and event_entry_bytes(200, 200) == 204


def _declared(base_id: int, messages: list[tuple[int, bytes]]) -> bytes:
    entries = []
    previous = base_id - 1
    for message_id, data in messages:
        entries.append(
            {"skip": (message_id - previous - 1) & 0xFFFF, "length": len(data), "data": data}
        )
        previous = message_id
    return bytes(EVENT.build({"base_id": base_id, "messages": entries}))


@given(
    base_id=st.integers(0, 0xFFFF),
    entries=st.lists(st.tuples(st.integers(0, 300), st.binary(max_size=200)), max_size=6),
)
def test_fast_codec_agrees_with_the_declaration(
    base_id: int, entries: list[tuple[int, bytes]]
) -> None:
    messages = []
    message_id = base_id - 1
    for skip, data in entries:
        message_id = (message_id + 1 + skip) & 0xFFFF
        messages.append((message_id, data))
    data = encode_event_frame(base_id, messages)
    assert data == _declared(base_id, messages)
    assert decode_event_frame_untrusted(data) == (base_id, messages)
    parsed = EVENT.parse(data)
    assert [m.data for m in parsed.messages] == [d for _, d in messages]


@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    try:
        frame = decode_event_frame_untrusted(data)
    except ProtocolError:
        return
    assert encode_event_frame(*frame) == data  # canonical


@given(
    entries=st.lists(st.binary(max_size=150), min_size=1, max_size=5),
    flip=st.integers(0, 1000),
    cut=st.integers(0, 1000),
)
def test_mutated_frames_decode_or_raise_protocol_error(
    entries: list[bytes], flip: int, cut: int
) -> None:
    data = bytearray(encode_event_frame(7, list(enumerate(entries, start=7))))
    data[flip % len(data)] ^= 0xFF
    for candidate in (bytes(data), bytes(data[: cut % (len(data) + 1)])):
        with contextlib.suppress(ProtocolError):
            decode_event_frame_untrusted(candidate)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "shorter"),
        (b"\x00", "shorter"),
        (b"\x00\x00\x00", "before its length"),
        (b"\x00\x00\x80", "inside its skip"),
        (b"\x00\x00\x80\x00\x00", "canonical"),
        (b"\x00\x00\x00\x81\x80", "canonical"),
        (b"\x00\x00\x00\x05ab", "past the frame"),
        (b"\x00\x00" + b"\xff\x7f\x00" * 3, "span"),
    ],
)
def test_specific_bad_frames_name_their_fault(payload: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_event_frame_untrusted(payload)


def test_encoder_refuses_ids_out_of_order() -> None:
    with pytest.raises(ValueError, match="increasing"):
        encode_event_frame(10, [(10, b""), (9, b"")])


# ---------------------------------------------------------------------------- soak


def test_ten_thousand_events_at_five_percent_loss_arrive_once_in_order_fast() -> None:
    scenario = Scenario(events=10_000, loss=0.05, rtt_ms=100, jitter_ms=10, rate_hz=30, seed=7)
    result = run_netcode(scenario)
    assert result.order == list(range(10_000))
    summary = result.summary()
    assert summary["p99_ms"] <= scenario.rtt_ms + 100
    assert summary["resent"] > 0  # loss happened and was repaired


def test_soak_with_duplication_reordering_and_wrap() -> None:
    conditions = LinkConditions(latency_ms=50, jitter_ms=20, loss=0.05, duplicate=0.05, reorder=0.2)
    config = EndpointConfig(datagram_events=False, ping_interval=0.25)
    pair = client_and_server(conditions, seed=3, config=config)
    reliable = ReliableConfig(initial_id=0xFFFF - 1000)
    tx = ReliableChannel(pair.client, reliable)
    rx = ReliableChannel(pair.server, reliable)
    delivered: list[bytes] = []

    def on_server_event(event: object) -> None:
        if isinstance(event, FrameReceived) and event.frame_type == FrameType.EVENT:
            rx.receive_frame(event.payload, pair.now)

    pair.on_server_event = on_server_event
    sent = [i.to_bytes(4, "big") for i in range(3000)]
    for tick in range(1000):
        for message in sent[3 * tick : 3 * tick + 3]:
            tx.send(message)
        tx.flush(pair.now)
        for _ in range(33):
            pair.step(0.001)
        delivered += rx.received()
    for _ in range(200):
        tx.flush(pair.now)
        for _ in range(33):
            pair.step(0.001)
        delivered += rx.received()
        if len(delivered) == len(sent):
            break
    assert delivered == sent
    assert rx.counters.duplicates > 0
    assert tx.next_send_id == seq_add(0xFFFF - 1000, 3000)


# ---------------------------------------------------------------------------- bench


def test_bench_events_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["events", "--simulated", "--events", "500", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for r in (result, result["sctp"]):
        assert r["delivered"] == 500 and r["in_order"] and r["unique"] == 500
        assert r["sent"] >= 500
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert result["p99_ms"] <= 200


def test_bench_events_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["events", "--simulated", "--events", "200", "--loss", "10"]) == 0
    out = capsys.readouterr().out
    assert "netcode events" in out and "SCTP model" in out


def test_a_peer_cannot_pin_memory_in_the_reorder_buffer() -> None:
    """Large fallback messages ahead of a gap that never fills stay within the bound."""
    config = ReliableConfig()
    receiver = ReliableChannel(Endpoint(QUIET), config, name="receiver")
    big = b"x" * 16 * 1024
    first = config.initial_id
    for k in range(1, 1024):  # the first id never comes
        receiver.receive_fallback((first + k) & 0xFFFF, big)
    bound = config.max_send_queue_bytes + config.max_message_bytes
    assert receiver._buffered_bytes <= bound
    assert receiver.counters.reorder_overflow > 0
    receiver.receive_fallback(first, b"first")  # the gap fills: what was kept is delivered
    delivered = receiver.received()
    assert delivered[0] == b"first" and all(m == big for m in delivered[1:])
    assert receiver._buffered_bytes == 0


@given(st.floats(min_value=0.01, max_value=10.0))
def test_the_queue_walks_wait_as_each_message_backs_off(timeout: float) -> None:
    from netcode.core.reliable import _backoff, _backoffs

    waits = _backoffs(timeout)
    assert waits == [_backoff(timeout, timeouts) for timeouts in range(9)]
    assert waits[0] == timeout and waits == sorted(waits)
    assert waits[-1] == max(timeout, 4.0) or waits[-1] == timeout * 256
