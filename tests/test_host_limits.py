"""The game host serves each participant on its own: inputs at the tick rate, and a failure
that costs only the participant it belongs to."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from netcode.errors import SendQueueFull
from netcode.replication import SchemaRegistry, entity, qint
from netcode.replication.inputs import encode_inputs
from netcode.rooms.host import GameHost, HostedClient
from netcode.rooms.topics import OutgoingTopics
from netcode.wire import FrameType

REGISTRY = SchemaRegistry()


@entity(type_id=1, registry=REGISTRY)
class Marker:
    n: int = qint(0, 100)


class Connection:
    """The parts of a DatagramConnection the game host uses."""

    def __init__(self) -> None:
        self.endpoint = SimpleNamespace(config=None)
        #: seconds since the client last acknowledged one of our datagrams
        self.unacked_s = 0.0

    def now(self) -> float:
        return 0.0

    def unacked_for(self, now: float) -> float:
        return self.unacked_s


class Participant:
    """The parts of a ServerParticipant the game host uses, recording what it is sent."""

    def __init__(self, pid: int, identity: str) -> None:
        self.pid = pid
        self.identity = identity
        self.connection = Connection()
        self.left = asyncio.Event()
        self.reconnecting = False
        self.frames: list[int] = []
        self.fail_with: Exception | None = None
        self.disconnected: tuple[str, str] | None = None
        self.topics_out = OutgoingTopics()

    def subscribes_to(self, topic: str) -> bool:
        return True

    def send_frame(self, frame_type: int, payload: bytes, **options: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.frames.append(frame_type)

    def release_events(self) -> None:
        pass  # no game events here

    def send_extension(self, channel: int, body: bytes, sender_pid: int = 0) -> None:
        pass

    def disconnect(self, code: str = "", message: str = "") -> None:
        self.disconnected = (code, message)


def host_with(*participants: Participant, **options: Any) -> GameHost:
    host = GameHost(tick_rate=30, **options)
    for participant in participants:
        host.clients[participant.pid] = HostedClient(participant)  # type: ignore[arg-type]
    return host


def test_sending_inputs_faster_does_not_apply_them_faster(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cheat = Participant(1, "cheat")
    host = host_with(cheat)
    applied: list[int] = []
    host.on_input = lambda participant, tick, data: applied.append(tick)
    next_tick = 0
    per_tick = []
    for tick in range(60):
        # three inputs every tick, each for a tick of its own: a speed hack
        host.frame_received(cheat, FrameType.INPUT, encode_inputs(next_tick, [b"w"] * 3))  # type: ignore[arg-type]
        next_tick += 3
        before = len(applied)
        host.tick = tick
        host.run_tick(float(tick) / 30)
        per_tick.append(len(applied) - before)
    assert max(per_tick) <= host.max_inputs_per_tick
    assert len(applied) <= 60 + 1  # one a tick on average (one banked at the start)
    assert applied == sorted(applied)  # in order, each once
    assert len(set(applied)) == len(applied)
    assert host.clients[1].inputs_dropped > 0
    # the server log says whom it throttled, once
    throttled = [r for r in caplog.records if "sends inputs faster" in r.getMessage()]
    assert len(throttled) == 1 and throttled[0].getMessage().startswith("cheat:")


def test_a_late_input_is_caught_up_the_next_tick() -> None:
    player = Participant(1, "player")
    host = host_with(player)
    applied: list[int] = []
    host.on_input = lambda participant, tick, data: applied.append(tick)
    host.run_tick(0.0)  # no input arrived this tick: one input banked
    host.frame_received(player, FrameType.INPUT, encode_inputs(0, [b"a", b"b"]))  # type: ignore[arg-type]
    host.run_tick(1 / 30)
    assert applied == [0, 1]


def test_one_participants_failure_costs_only_that_participant() -> None:
    stuck, fine = Participant(1, "stuck"), Participant(2, "fine")
    host = host_with(stuck, fine)
    stuck.fail_with = SendQueueFull("queue full")
    for tick in range(5):
        host.tick = tick
        host.run_tick(tick / 30)
    assert fine.frames.count(FrameType.INPUT_ACK) == 5  # every tick reached the other one
    assert host.client_failures >= 3
    assert stuck.disconnected is not None and stuck.disconnected[0] == "slow_consumer"
    assert fine.disconnected is None


def test_a_client_that_acknowledges_nothing_is_sent_a_probe_not_every_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deaf, fine = Participant(1, "deaf"), Participant(2, "fine")
    host = host_with(deaf, fine, unacked_after=2.0, unacked_every=8, registry=REGISTRY)
    host.world.spawn(Marker())  # something to replicate

    def run(ticks: range) -> None:
        for tick in ticks:
            host.tick = tick
            host.run_tick(tick / 30)

    run(range(0, 30))  # both acknowledge: both are sent every tick
    assert deaf.frames.count(FrameType.INPUT_ACK) == fine.frames.count(FrameType.INPUT_ACK) == 30
    deaf.connection.unacked_s = 2.5  # it stopped acknowledging 2.5 s ago
    deaf.frames.clear()
    fine.frames.clear()
    run(range(30, 94))  # 64 ticks
    assert fine.frames.count(FrameType.INPUT_ACK) == 64
    assert fine.frames.count(FrameType.SNAPSHOT) >= 64
    assert deaf.frames.count(FrameType.INPUT_ACK) == 8  # one tick in 8: a probe
    assert 1 <= deaf.frames.count(FrameType.SNAPSHOT) <= 8 * 2
    assert host.clients[1].ticks_held_back == 56
    assert deaf.disconnected is None  # the server, not the host, lets its link go
    throttled = [r for r in caplog.records if "acknowledged none" in r.getMessage()]
    assert len(throttled) == 1 and throttled[0].getMessage().startswith("deaf:")
    deaf.connection.unacked_s = 0.0  # it acknowledged again: every tick
    deaf.frames.clear()
    run(range(94, 104))
    assert deaf.frames.count(FrameType.INPUT_ACK) == 10


def test_an_exception_from_the_game_for_one_participant_is_contained() -> None:
    a, b = Participant(1, "a"), Participant(2, "b")
    host = host_with(a, b)

    def on_input(participant: Any, tick: int, data: bytes) -> None:
        if participant is a:
            raise RuntimeError("game bug for a")

    host.on_input = on_input
    for tick in range(3):
        for p in (a, b):
            host.frame_received(p, FrameType.INPUT, encode_inputs(tick, [b"x"]))  # type: ignore[arg-type]
        host.tick = tick
        host.run_tick(tick / 30)
    assert b.frames.count(FrameType.INPUT_ACK) == 3
    assert b.disconnected is None
    assert a.disconnected is not None and a.disconnected[0] == "server_error"


def test_the_demo_player_sending_inputs_faster_moves_no_faster() -> None:
    from demo_game.messages import encode_input
    from demo_game.server import ArenaServer
    from demo_game.sim import PlayerInput

    arena = ArenaServer(npc_count=0)
    host = arena.host
    honest, cheat = Participant(1, "honest"), Participant(2, "cheat")
    for participant in (honest, cheat):
        participant.name = participant.identity  # type: ignore[attr-defined]
        host.clients[participant.pid] = HostedClient(participant)  # type: ignore[arg-type]
        host.on_join(participant)  # type: ignore[arg-type]
    right = encode_input(PlayerInput(0, 1.0, 0.0))
    start = {p.pid: arena.sim.players[arena.players[p.pid].sim_id].x for p in (honest, cheat)}
    sent = {1: 0, 2: 0}
    for tick in range(45):
        for participant, per_tick in ((honest, 1), (cheat, 3)):
            first = sent[participant.pid]
            payload = encode_inputs(first, [right] * per_tick)
            host.frame_received(participant, FrameType.INPUT, payload)  # type: ignore[arg-type]
            sent[participant.pid] += per_tick
        host.tick = tick
        host.run_tick(tick / 30)
    moved = {
        p.pid: arena.sim.players[arena.players[p.pid].sim_id].x - start[p.pid]
        for p in (honest, cheat)
    }
    assert moved[1] > 0
    assert moved[2] <= moved[1] * 1.05 + 1e-6, moved
