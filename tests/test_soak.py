"""Long soaks over many seeds (``pytest -m slow``; a few minutes on 2 cores)."""

from __future__ import annotations

import argparse

import pytest
from netcode_tools.bench_events import Scenario, run_netcode
from netcode_tools.bench_link import measure
from test_replication_link import REG, Game, check_converged, make_client, simulate

from netcode.replication import World

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("loss", [0.05, 0.2])
@pytest.mark.parametrize("seed", range(1, 6))
def test_link_reports_each_datagram_once_and_estimates_loss(seed: int, loss: float) -> None:
    args = argparse.Namespace(
        datagrams=50_000,
        loss=loss,
        reorder=0.2,
        duplicate=0.05,
        latency_ms=50.0,
        jitter_ms=20.0,
        rate_hz=100.0,
        seed=seed,
    )
    result = measure(args)
    assert result["reported_once"] and result["crossed_wrap"]
    assert result["acked_but_not_received"] == 0
    assert result["acked"] + result["lost"] == result["ack_eliciting"]
    assert abs(result["loss_estimate"] - result["link_dropped_fraction"]) < 0.005


@pytest.mark.parametrize("seed", range(40))
def test_replication_converges_under_twenty_percent_loss(seed: int) -> None:
    world = World(REG)
    game = Game(seed, world)
    clients = [make_client(world, seed * 10 + i, 0.2) for i in range(3)]
    simulate(seed, 300, clients, game)
    for client in clients:
        check_converged(world, client)
        assert client.encoder.pending_removals == 0


@pytest.mark.parametrize("seed", range(1, 6))
def test_events_arrive_once_in_order_within_rtt_plus_100ms(seed: int) -> None:
    scenario = Scenario(events=10_000, loss=0.05, rtt_ms=100, jitter_ms=10, rate_hz=30, seed=seed)
    result = run_netcode(scenario)
    assert result.order == list(range(10_000))
    assert result.summary()["p99_ms"] <= scenario.rtt_ms + 100
