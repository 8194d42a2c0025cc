"""The core over the seeded simulated link: delivery reports, loss estimate, impairments."""

from __future__ import annotations

import pytest

from netcode.core import DatagramAcked, DatagramLost, Delivery, EndpointConfig
from netcode.transport.memory import LinkConditions, SimulatedLink, client_and_server
from netcode.wire import FrameType, decode_datagram_untrusted

SOAK = LinkConditions(latency_ms=50, jitter_ms=20, loss=0.05, duplicate=0.05, reorder=0.20)


def soak(datagrams: int, seed: int) -> None:
    """Both sides send one DATA frame per 10 ms tick; check the client's delivery reports."""
    config = EndpointConfig(initial_sequence=0xFFFF - datagrams // 2, ping_interval=0.25)
    pair = client_and_server(SOAK, seed=seed, config=config)
    received_by_server: set[int] = set()
    server_receive = pair.server.receive_datagram

    def recording_receive(data: bytes, now: float) -> None:
        received_by_server.add(decode_datagram_untrusted(data).sequence)
        server_receive(data, now)

    pair.server.receive_datagram = recording_receive  # type: ignore[method-assign]
    for i in range(datagrams):
        pair.client.send_frame(FrameType.DATA, i.to_bytes(4, "big"))
        pair.server.send_frame(FrameType.DATA, b"s")
        pair.step(0.010)
    # keep stepping until the client has heard the fate of everything it sent
    pair.run_until(lambda: pair.client.in_flight == 0, max_steps=500, dt=0.010)
    sent = pair.client.counters.datagrams_sent

    acked = [e.sequence for e in pair.client_reports if isinstance(e, DatagramAcked)]
    lost = [e.sequence for e in pair.client_reports if isinstance(e, DatagramLost)]
    reported = acked + lost
    assert len(reported) == len(set(reported)), "a datagram was reported twice"
    ack_only = sent - len(reported)
    assert 0 <= ack_only < datagrams * 0.01  # ack-only datagrams are never reported
    assert set(acked) <= received_by_server, "ACKED a datagram the peer never received"
    wrapped = {s for s in acked if s < 1000}
    assert wrapped, "the run did not cross the sequence wrap"
    assert abs(pair.client.loss.total - SOAK.loss) < 0.01
    assert pair.client.stats().rtt_ms == pytest.approx(100, abs=25)
    assert pair.server.counters.datagrams_duplicate > 0  # duplication happened and was absorbed
    payloads = [int.from_bytes(f.payload, "big") for f in pair.server_frames]
    assert len(payloads) == len(set(payloads)), "a frame was delivered twice"


def test_ten_thousand_datagrams_under_loss_reorder_and_duplication() -> None:
    soak(10_000, seed=7)


@pytest.mark.parametrize("seed", range(1, 6))
def test_soak_other_seeds(seed: int) -> None:
    soak(20_000, seed=seed)


def test_per_frame_callbacks_match_datagram_reports() -> None:
    conditions = LinkConditions(latency_ms=20, jitter_ms=5, loss=0.2, reorder=0.1)
    pair = client_and_server(conditions, seed=3, config=EndpointConfig(ping_interval=None))
    outcomes: dict[int, Delivery] = {}
    for i in range(500):
        pair.client.send_frame(
            FrameType.DATA, i.to_bytes(2, "big"), on_delivery=lambda r, i=i: outcomes.update({i: r})
        )
        pair.server.send_frame(FrameType.DATA, b"")
        pair.step(0.02)
    pair.run_until(lambda: len(outcomes) == 500, max_steps=300, dt=0.02)
    arrived = {int.from_bytes(f.payload, "big") for f in pair.server_frames}
    assert {i for i, r in outcomes.items() if r is Delivery.ACKED} <= arrived
    assert 0.15 < pair.client.loss.total < 0.25


def test_simulated_link_is_deterministic_per_seed() -> None:
    def run(seed: int) -> list[tuple[float, bytes]]:
        link = SimulatedLink(SOAK, seed=seed)
        out = []
        for i in range(200):
            link.a_to_b.send(i.to_bytes(2, "big"), i * 0.005)
            out += [(i * 0.005, d) for d in link.a_to_b.receive(i * 0.005)]
        return out

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_link_impairments_match_their_settings() -> None:
    link = SimulatedLink(SOAK, seed=11)
    path = link.a_to_b
    arrivals: list[int] = []
    for i in range(20_000):
        path.send(i.to_bytes(4, "big"), i * 0.001)
        arrivals += [int.from_bytes(d, "big") for d in path.receive(i * 0.001)]
    arrivals += [int.from_bytes(d, "big") for d in path.receive(100.0)]
    c = path.counters
    assert c.lost / c.sent == pytest.approx(0.05, abs=0.005)
    assert c.duplicated / (c.sent - c.lost) == pytest.approx(0.05, abs=0.005)
    assert c.reordered / (c.sent - c.lost + c.duplicated) == pytest.approx(0.20, abs=0.01)
    assert len(arrivals) == c.sent - c.lost + c.duplicated
    assert arrivals != sorted(arrivals)


def test_bandwidth_cap_delays_then_tail_drops() -> None:
    capped = LinkConditions(latency_ms=10, bandwidth_kbps=800, max_queue_ms=100)
    path = SimulatedLink(capped, seed=0).a_to_b
    for _ in range(20):  # 20 x 1000 B at 800 kbit/s: 10 ms each
        path.send(b"x" * 1000, 0.0)
    assert path.counters.queue_dropped == 9  # only 100 ms of queue is allowed
    assert len(path.receive(0.0199)) == 0
    assert len(path.receive(0.0201)) == 1  # 10 ms on the wire + 10 ms latency
    assert len(path.receive(1.0)) == 10


def test_conditions_are_validated() -> None:
    with pytest.raises(ValueError, match="loss"):
        LinkConditions(loss=1.5)
    with pytest.raises(ValueError, match="jitter"):
        LinkConditions(latency_ms=5, jitter_ms=10)


def test_run_until_fails_loudly() -> None:
    pair = client_and_server()
    with pytest.raises(AssertionError, match="after 5 steps"):
        pair.run_until(lambda: False, max_steps=5)
