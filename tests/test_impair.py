"""The UDP impairment under aiortc: the sans-IO queue under a scripted clock, then real
aiortc connections on 127.0.0.1 with the impairment on every datagram."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from netcode.auth import AccessToken, Claims, Grants, TokenVerifier
from netcode.transport.impair import DEFAULT_QUEUE_BYTES, ImpairmentQueue
from netcode.transport.peerlink import make_peer_connection
from netcode.transport.webrtc import (
    ImpairedPath,
    Impairment,
    PeerLink,
    SignalingServer,
    connect_peer,
)
from tests.helpers import eventually

# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"loss": 1.5}, r"Impairment.loss must be a probability in \[0, 1\], got 1.5"),
        ({"duplicate": -0.1}, r"Impairment.duplicate must be a probability"),
        ({"reorder": 2}, r"Impairment.reorder must be a probability"),
        ({"latency_ms": -1}, r"Impairment.latency_ms must be a finite number >= 0, got -1"),
        ({"jitter_ms": float("nan")}, r"Impairment.jitter_ms must be a finite number >= 0"),
        ({"bandwidth_kbps": 0}, r"Impairment.bandwidth_kbps must be > 0 \(None: unlimited\)"),
        ({"queue_bytes": 0}, r"Impairment.queue_bytes must be an integer >= 1, got 0"),
        ({"blackouts": [(1.0, 0.0)]}, r"duration must be > 0 s, got 0.0"),
        ({"blackouts": [(-1.0, 1.0)]}, r"start must be >= 0 s, got -1.0"),
        ({"reorder": 0.1, "reorder_delay_ms": 0}, r"reorder=0.1 needs reorder_delay_ms > 0"),
    ],
)
def test_impairment_rejects_bad_values(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Impairment(**changes)


def test_impairment_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match=r"Impairment\.loss must be a number, got 'x'"):
        Impairment(loss="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Impairment\.seed must be an int"):
        Impairment(seed=1.5)  # type: ignore[arg-type]


def test_from_spec_parses_every_key() -> None:
    spec = "latency=50,jitter=5,loss=0.05,dup=0.01,reorder=0.02,bw=1000,seed=3"
    assert Impairment.from_spec(spec) == Impairment(
        latency_ms=50,
        jitter_ms=5,
        loss=0.05,
        duplicate=0.01,
        reorder=0.02,
        bandwidth_kbps=1000,
        seed=3,
    )
    assert Impairment.from_spec(
        " latency = 20ms , loss=5% , duplicate=1%, bandwidth=64kbps, queue=3000,"
        " reorder_delay=7, blackout=5+2, blackout=1+0.5"
    ) == Impairment(
        latency_ms=20,
        loss=0.05,
        duplicate=0.01,
        bandwidth_kbps=64,
        queue_bytes=3000,
        reorder_delay_ms=7,
        blackouts=((1.0, 0.5), (5.0, 2.0)),
    )
    assert Impairment.from_spec("") == Impairment()


def test_spec_round_trips_through_str() -> None:
    impairment = Impairment(
        latency_ms=50, jitter_ms=2.5, loss=0.05, bandwidth_kbps=500, seed=9, blackouts=[(3, 1)]
    )
    assert Impairment.from_spec(str(impairment)) == impairment
    assert str(Impairment()) == ""


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("latency", r"'latency' is not key=value"),
        ("latency=", r"'latency=' is not key=value"),
        ("lag=5", r"unknown key 'lag' \(known: .*latency"),
        ("latency=fast", r"latency='fast' is not a number"),
        ("loss=150%", r"loss='150%' is not a probability in \[0, 1\]"),
        ("loss=1.2", r"loss='1.2' is not a probability"),
        ("loss=0.1,loss=0.2", r"'loss' given twice"),
        ("seed=x", r"seed='x' is not an integer"),
        ("latency=-5", r"Impairment.latency_ms must be a finite number >= 0, got -5"),
        ("bw=0", r"Impairment.bandwidth_kbps must be > 0"),
        ("blackout=5", r"blackout='5' must be START\+DURATION"),
        ("latency=inf", r"latency='inf' is not a finite number"),
    ],
)
def test_from_spec_errors_name_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Impairment.from_spec(spec)


# --- the sans-IO queue ---------------------------------------------------------------------------


def run(
    queue: ImpairmentQueue[int], count: int, *, step: float = 0.001, size: int = 100
) -> list[tuple[float, int]]:
    """Push ``count`` datagrams ``step`` apart, then drain; returns (pop time, item)."""
    arrivals: list[tuple[float, int]] = []
    now = 0.0
    for item in range(count):
        queue.push(now, item, size)
        arrivals.extend((now, popped) for popped in queue.pop_due(now))
        now += step
    while queue.next_due is not None:
        now = queue.next_due
        arrivals.extend((now, popped) for popped in queue.pop_due(now))
    return arrivals


def test_latency_delays_each_datagram_exactly() -> None:
    queue: ImpairmentQueue[str] = ImpairmentQueue(Impairment(latency_ms=50))
    assert queue.push(10.0, "a", 100) == [pytest.approx(10.05)]
    assert queue.pop_due(10.0499) == []
    assert queue.next_due == pytest.approx(10.05)
    assert queue.pop_due(10.05) == ["a"]
    assert queue.next_due is None
    stats = queue.stats
    assert (stats.datagrams_seen, stats.datagrams_delivered, stats.bytes_delivered) == (1, 1, 100)


def test_no_impairment_delivers_at_once() -> None:
    queue: ImpairmentQueue[int] = ImpairmentQueue()
    assert queue.push(1.0, 7, 10) == [1.0]
    assert queue.pop_due(1.0) == [7]


def test_a_path_that_only_counts_passes_datagrams_through_and_counts_them() -> None:
    queue: ImpairmentQueue[int] = ImpairmentQueue()
    assert queue.pass_through(1.0, 10)
    assert queue.pass_through(1.0, 20)
    stats = queue.stats
    assert (stats.datagrams_seen, stats.bytes_seen) == (2, 30)
    assert (stats.datagrams_delivered, stats.bytes_delivered) == (2, 30)
    assert queue.in_flight == 0
    # a blackout, a datagram held before it, or an impairment send it through push
    queue.blackout_until(2.0)
    assert not queue.pass_through(1.5, 10)
    assert queue.pass_through(2.0, 10)
    queue.set_blackout(True)
    assert not queue.pass_through(3.0, 10)
    queue.set_blackout(False)
    queue.config = Impairment(latency_ms=5)
    assert not queue.pass_through(3.0, 10)
    queue.push(3.0, 1, 10)
    queue.config = Impairment()
    assert not queue.pass_through(3.001, 10)  # it would overtake the datagram held
    assert queue.pop_due(3.005) == [1]
    assert queue.pass_through(3.006, 10)
    assert not ImpairmentQueue(Impairment(loss=0.01)).pass_through(0.0, 10)
    assert not ImpairmentQueue(Impairment(blackouts=[(0, 1)])).pass_through(0.0, 10)


def test_jitter_varies_delay_within_bounds_without_reordering() -> None:
    queue: ImpairmentQueue[int] = ImpairmentQueue(
        Impairment(latency_ms=40, jitter_ms=10), rng=random.Random(1)
    )
    dues = [queue.push(i * 0.02, i, 100)[0] - i * 0.02 for i in range(500)]
    assert all(0.030 - 1e-9 <= delay <= 0.050 + 1e-9 for delay in dues)
    assert statistics.pstdev(dues) > 0.004  # it does vary
    popped = queue.pop_due(100.0)
    assert popped == sorted(popped)


def test_loss_fraction_is_close_to_the_probability() -> None:
    queue: ImpairmentQueue[int] = ImpairmentQueue(Impairment(loss=0.2), rng=random.Random(5))
    delivered = [item for _, item in run(queue, 10_000)]
    # 10000 Bernoulli(0.2) trials: standard deviation 40; allow 5 of them.
    assert 7800 <= len(delivered) <= 8200
    stats = queue.stats
    assert stats.dropped_loss == stats.datagrams_dropped == 10_000 - len(delivered)
    assert stats.bytes_dropped == 100 * stats.datagrams_dropped
    assert stats.datagrams_delivered == len(delivered)
    assert delivered == sorted(delivered)


def test_duplicate_delivers_copies() -> None:
    queue: ImpairmentQueue[int] = ImpairmentQueue(
        Impairment(latency_ms=5, duplicate=0.1), rng=random.Random(2)
    )
    delivered = [item for _, item in run(queue, 5000)]
    extra = len(delivered) - 5000
    assert 400 <= extra <= 600
    assert queue.stats.datagrams_duplicated == extra
    assert set(delivered) == set(range(5000))
    assert queue.stats.datagrams_delivered == len(delivered)


def test_reorder_lets_later_datagrams_overtake() -> None:
    queue: ImpairmentQueue[int] = ImpairmentQueue(
        Impairment(latency_ms=10, reorder=0.1, reorder_delay_ms=20), rng=random.Random(3)
    )
    delivered = [item for _, item in run(queue, 2000, step=0.001)]
    assert sorted(delivered) == list(range(2000))  # nothing lost, nothing duplicated
    overtaken = sum(1 for a, b in itertools.pairwise(delivered) if a > b)
    assert 150 <= queue.stats.datagrams_reordered <= 250
    assert overtaken >= queue.stats.datagrams_reordered // 2
    # A reordered datagram is held reorder_delay_ms longer than the latency.
    held = ImpairmentQueue[int](Impairment(latency_ms=10, reorder=1.0, reorder_delay_ms=20))
    assert held.push(0.0, 0, 100) == [pytest.approx(0.030)]


def test_bandwidth_cap_spaces_datagrams_and_drops_the_tail() -> None:
    # 1000 kbps = 125000 bytes/s: a 1000-byte datagram takes 8 ms to serialise.
    queue: ImpairmentQueue[int] = ImpairmentQueue(
        Impairment(latency_ms=10, bandwidth_kbps=1000, queue_bytes=5000)
    )
    dues = [queue.push(0.0, i, 1000) for i in range(7)]
    assert [d[0] for d in dues[:5]] == pytest.approx([0.018, 0.026, 0.034, 0.042, 0.050])
    assert dues[5:] == [[], []]  # 5000 bytes queued: the tail is dropped
    assert queue.stats.dropped_queue == 2
    assert queue.backlog_bytes(0.0) == 5000
    assert queue.backlog_bytes(0.024) == 2000
    # Once the queue drained, datagrams pass again, paced from where the link is free.
    assert queue.push(0.024, 7, 1000) == [pytest.approx(0.058)]
    assert queue.push(1.0, 8, 1000) == [pytest.approx(1.018)]
    assert DEFAULT_QUEUE_BYTES == Impairment().queue_bytes == 64 * 1024


def test_bandwidth_cap_limits_throughput() -> None:
    queue: ImpairmentQueue[int] = ImpairmentQueue(Impairment(bandwidth_kbps=800))
    # Offer 1200-byte datagrams at 1 ms intervals (9.6 Mbps) for one second.
    arrivals = run(queue, 1000, step=0.001, size=1200)
    in_first_second = [item for when, item in arrivals if when <= 1.0]
    # 800 kbps carries 100000 bytes a second: 83 datagrams (plus what was queued).
    assert 80 <= len(in_first_second) <= 84
    assert queue.stats.dropped_queue > 800


def test_scheduled_blackout_drops_exactly_its_window() -> None:
    queue: ImpairmentQueue[float] = ImpairmentQueue(Impairment(blackouts=[(1.0, 2.0)]), origin=10.0)
    times = [10.999, 11.0, 11.5, 12.999, 13.0, 14.0]
    fates = [bool(queue.push(t, t, 100)) for t in times]
    assert fates == [True, False, False, False, True, True]
    assert queue.stats.dropped_blackout == 3
    assert queue.in_blackout(11.0) and not queue.in_blackout(13.0)


def test_path_blackout_drops_both_ways_for_its_duration() -> None:
    now = [100.0]
    path = ImpairedPath(Impairment(latency_ms=5), clock=lambda: now[0])
    in_flight = path.outgoing.push(now[0], "before", 100)
    path.blackout(2.0)
    assert path.blacked_out
    for direction in (path.outgoing, path.incoming):
        assert direction.push(100.0, "during", 100) == []
        assert direction.push(101.999, "during", 100) == []
        assert direction.push(102.0, "after", 100) != []
    assert in_flight == [pytest.approx(100.005)]  # already on its way: still arrives
    now[0] = 102.0
    assert not path.blacked_out
    path.set_blackout(True)
    assert path.outgoing.push(500.0, "manual", 100) == []
    assert path.incoming.push(500.0, "manual", 100) == []
    path.set_blackout(False)
    assert path.incoming.push(500.0, "back", 100) != []
    stats = path.stats()
    assert stats["outgoing"].dropped_blackout == 3
    assert stats["incoming"].dropped_blackout == 3
    with pytest.raises(ValueError, match="blackout seconds"):
        path.blackout(-1)


def test_runtime_change_takes_effect_for_the_next_datagram() -> None:
    path = ImpairedPath(Impairment(loss=1.0))
    assert path.outgoing.push(0.0, 1, 10) == []
    path.configure(Impairment())
    assert path.outgoing.push(0.0, 2, 10) == [0.0]
    assert path.incoming.push(0.0, 3, 10) == [0.0]
    path.configure(incoming=Impairment(latency_ms=30))
    assert path.outgoing.push(1.0, 4, 10) == [1.0]
    assert path.incoming.push(1.0, 5, 10) == [pytest.approx(1.03)]
    with pytest.raises(TypeError, match="must be an Impairment"):
        path.outgoing.config = "loss=1"  # type: ignore[assignment]


def test_directions_have_their_own_configs_and_seeded_rngs() -> None:
    path = ImpairedPath(outgoing=Impairment(latency_ms=10), incoming=Impairment(latency_ms=30))
    assert path.outgoing.push(0.0, 1, 10) == [pytest.approx(0.01)]
    assert path.incoming.push(0.0, 1, 10) == [pytest.approx(0.03)]

    def fates(path: ImpairedPath) -> list[bool]:
        return [bool(path.outgoing.push(0.0, i, 10)) for i in range(200)] + [
            bool(path.incoming.push(0.0, i, 10)) for i in range(200)
        ]

    lossy = Impairment(loss=0.5, seed=3)
    assert fates(ImpairedPath(lossy)) == fates(ImpairedPath(lossy))  # repeatable
    assert fates(ImpairedPath(lossy)) != fates(ImpairedPath(lossy, salt="peer2"))
    assert fates(ImpairedPath(lossy)) != fates(ImpairedPath(lossy.replace(seed=4)))
    one = fates(ImpairedPath(lossy))
    assert one[:200] != one[200:]  # the two directions draw from different streams


async def test_attach_needs_an_ice_transport() -> None:
    pc = make_peer_connection()
    try:
        with pytest.raises(ValueError, match="no ICE transport yet"):
            ImpairedPath().attach(pc)
    finally:
        await pc.close()


# --- on the real stack -------------------------------------------------------------------------

KEY = "devkey"
SECRET = "devsecret-devsecret-devsecret-devsecret"
ROOM = "arena"


def token(identity: str) -> str:
    grants = Grants(room_join=True, room=ROOM)
    return AccessToken(KEY, SECRET).with_identity(identity).with_grants(grants).to_jwt()


async def echo_peer(link: PeerLink, claims: Claims) -> None:
    link.on_reliable(link.send_reliable)
    link.on_lossy(link.send_lossy)


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., Awaitable[SignalingServer]]]:
    servers: list[SignalingServer] = []
    verifier = TokenVerifier(KEY, SECRET)

    async def authorize(token: str, room: str = "") -> Claims:
        return verifier.verify(token, room=ROOM)

    async def make(**kwargs: Any) -> SignalingServer:
        server = SignalingServer(authorize, echo_peer, **kwargs)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


async def reliable_rtts_ms(link: PeerLink, count: int = 10) -> list[float]:
    """Round trips of small reliable messages, one at a time, through an echoing server."""
    arrived: asyncio.Queue[float] = asyncio.Queue()
    link.on_reliable(lambda _message: arrived.put_nowait(time.perf_counter()))
    rtts = []
    for _ in range(count):
        sent = time.perf_counter()
        link.send_reliable(b"ping")
        rtts.append((await asyncio.wait_for(arrived.get(), 5.0) - sent) * 1e3)
    return rtts


@pytest.mark.webrtc
async def test_latency_on_the_client_raises_the_round_trip_and_spares_other_peers(
    make_server: Callable[..., Awaitable[SignalingServer]],
) -> None:
    server = await make_server()
    plain, impaired = await asyncio.gather(
        connect_peer(server.url, token("plain")),
        connect_peer(server.url, token("slow"), impairment=Impairment(latency_ms=50)),
    )
    try:
        assert plain.impairment is None
        assert isinstance(impaired.impairment, ImpairedPath)
        plain_rtt = statistics.median(await reliable_rtts_ms(plain))
        impaired_rtt = statistics.median(await reliable_rtts_ms(impaired))
        assert plain_rtt < 20
        assert 95 <= impaired_rtt - plain_rtt <= 130
        stats = impaired.impairment.stats()
        # Everything went through it: ICE checks, DTLS and SCTP, both ways.
        assert stats["outgoing"].datagrams_delivered >= 20
        assert stats["incoming"].datagrams_delivered >= 20
        assert stats["outgoing"].bytes_delivered > stats["outgoing"].datagrams_delivered * 28
    finally:
        await asyncio.gather(plain.close(), impaired.close())


@pytest.mark.webrtc
async def test_reliable_messages_all_arrive_through_20_percent_loss(
    make_server: Callable[..., Awaitable[SignalingServer]],
) -> None:
    server = await make_server()
    path = ImpairedPath(Impairment(seed=1))
    link = await connect_peer(server.url, token("alice"), impairment=path)
    try:
        path.configure(Impairment(loss=0.2, seed=1))
        received: list[bytes | str] = []
        link.on_reliable(received.append)
        sent = [f"message {i}" for i in range(40)]
        for message in sent:
            link.send_reliable(message)
            await asyncio.sleep(0.005)
        await eventually(lambda: len(received) >= len(sent), timeout=20.0)
        assert received == sent  # every one, in order, by SCTP retransmissions
        stats = path.stats()
        dropped = stats["outgoing"].dropped_loss + stats["incoming"].dropped_loss
        assert dropped >= 3
        assert stats["outgoing"].datagrams_dropped == stats["outgoing"].dropped_loss
    finally:
        await link.close()


@pytest.mark.webrtc
async def test_blackout_stops_delivery_and_the_link_recovers(
    make_server: Callable[..., Awaitable[SignalingServer]],
) -> None:
    server = await make_server()
    path = ImpairedPath()
    link = await connect_peer(server.url, token("alice"), impairment=path)
    echoes: list[float] = []
    link.on_lossy(lambda _datagram: echoes.append(time.monotonic()))

    async def ping() -> None:
        while True:
            link.send_lossy(b"tick")
            await asyncio.sleep(0.02)

    pinger = asyncio.get_running_loop().create_task(ping())
    try:
        await eventually(lambda: len(echoes) >= 5)
        start = time.monotonic()
        path.blackout(2.0)
        await asyncio.sleep(2.0)
        # Loopback: nothing in flight lasts more than a few ms.
        during = [t for t in echoes if start + 0.05 <= t < start + 2.0]
        assert during == []
        assert path.stats()["outgoing"].dropped_blackout >= 50
        count = len(echoes)
        await eventually(lambda: len(echoes) >= count + 5, timeout=8.0)
        rtts = await reliable_rtts_ms(link, count=3)
        assert max(rtts) < 1000
        assert link.is_open
    finally:
        pinger.cancel()
        await link.close()


@pytest.mark.webrtc
async def test_server_side_impairment_per_peer(
    make_server: Callable[..., Awaitable[SignalingServer]],
) -> None:
    def impairment_for(claims: Claims) -> Impairment | None:
        return Impairment(latency_ms=25, seed=7) if claims.identity == "far" else None

    server = await make_server(impairment=impairment_for)
    near, far = await asyncio.gather(
        connect_peer(server.url, token("near")), connect_peer(server.url, token("far"))
    )
    try:
        near_rtt = statistics.median(await reliable_rtts_ms(near))
        far_rtt = statistics.median(await reliable_rtts_ms(far))
        assert near_rtt < 20
        assert 45 <= far_rtt - near_rtt <= 75  # 25 ms each way, applied at the server
        paths = {link.name.split(":")[1].split("#")[0]: link.impairment for link in server.links}
        assert paths["near"] is None
        far_path = paths["far"]
        assert isinstance(far_path, ImpairedPath)
        assert far_path.stats()["incoming"].datagrams_delivered > 0
    finally:
        await asyncio.gather(near.close(), far.close())


@pytest.mark.webrtc
async def test_one_server_impairment_gives_each_peer_its_own_path(
    make_server: Callable[..., Awaitable[SignalingServer]],
) -> None:
    server = await make_server(impairment=Impairment(latency_ms=10, seed=3))
    links = await asyncio.gather(*(connect_peer(server.url, token(f"p{i}")) for i in range(2)))
    try:
        paths = [link.impairment for link in server.links]
        assert len(paths) == 2
        assert all(isinstance(path, ImpairedPath) for path in paths)
        assert paths[0] is not paths[1]
        for link in links:
            assert 19 <= statistics.median(await reliable_rtts_ms(link, 5)) <= 60
    finally:
        await asyncio.gather(*(link.close() for link in links))


@pytest.mark.webrtc
async def test_the_congestion_window_stays_above_its_floor_under_loss(
    make_server: Callable[..., Awaitable[SignalingServer]],
) -> None:
    """aiortc halves SCTP's window on loss and drops it to one packet on a timeout; the
    floor held on netcode's links keeps the game's channels from queueing behind it."""
    import aiortc.rtcsctptransport

    from netcode.transport.peerlink import DEFAULT_CWND_FLOOR_PACKETS

    floor = DEFAULT_CWND_FLOOR_PACKETS * aiortc.rtcsctptransport.USERDATA_MAX_LENGTH
    server = await make_server()
    path = ImpairedPath(Impairment(seed=5))
    link = await connect_peer(server.url, token("alice"), impairment=path)
    try:
        path.configure(Impairment(latency_ms=10, loss=0.2, seed=5))
        sctp = link.pc.sctp
        assert sctp is not None and sctp._cwnd >= floor
        windows = []
        for n in range(300):
            link.send_reliable(b"x" * 1000)
            if n % 10 == 0:
                await asyncio.sleep(0.01)
                windows.append(sctp._cwnd)
        sctp._t3_expired()  # a retransmission timeout, as a long loss burst causes
        windows.append(sctp._cwnd)
        assert min(windows) >= floor
        assert path.stats()["outgoing"].dropped_loss > 0  # there was loss to react to
    finally:
        await link.close()
