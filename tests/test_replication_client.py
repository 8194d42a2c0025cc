"""Client-side replication, sans-IO: server clock, interpolation, inputs and prediction."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from netcode.errors import ProtocolError
from netcode.replication import SchemaRegistry, entity, qangle, qbool, qfloat, qint, qquat
from netcode.replication.clock import ServerClock, TickTimeline
from netcode.replication.inputs import (
    INPUT,
    INPUT_ACK,
    InputReceiver,
    InputSender,
    Predictor,
    decode_input_ack_untrusted,
    decode_inputs_untrusted,
    encode_input_ack,
    encode_inputs,
)
from netcode.replication.interpolation import lerp_entity, sample

REGISTRY = SchemaRegistry()


@entity(type_id=1, registry=REGISTRY)
class Body:
    x: float = qfloat(-10, 10, 0.01)
    heading: float = qangle(bits=12)
    spin: tuple[float, float, float, float] = qquat(bits=12, default=(0.0, 0.0, 0.0, 1.0))
    health: int = qint(0, 100, default=100)
    alive: bool = qbool(default=True)


SCHEMA = REGISTRY.of(Body)


def test_server_clock_slews_instead_of_jumping() -> None:
    clock = ServerClock(max_slew=0.05, snap_threshold=0.25)
    assert clock.server_time(0.0) is None
    clock.update(0.0, 100.0)
    assert clock.server_time(0.0) == 100.0
    clock.update(1.0, 100.1)  # a new measurement 100 ms later than the clock in use
    assert clock.server_time(1.0) == pytest.approx(101.0)  # no jump yet
    assert clock.server_time(2.0) == pytest.approx(102.05)  # slewed 50 ms over one second
    assert clock.server_time(10.0) == pytest.approx(110.1)  # and then holds the target
    clock.update(11.0, 105.0)  # a 5 s error: snap
    assert clock.server_time(11.0) == pytest.approx(116.0)
    assert clock.snaps == 1


def test_tick_timeline() -> None:
    timeline = TickTimeline(30.0, 50.0)
    assert timeline.time_of(30) == pytest.approx(51.0)
    assert timeline.tick_at(51.5) == pytest.approx(45.0)
    with pytest.raises(ValueError):
        TickTimeline(0.0, 0.0)


def test_interpolation_between_two_states() -> None:
    a = Body(x=0.0, heading=math.pi - 0.1, health=50, alive=True)
    b = Body(x=2.0, heading=-math.pi + 0.1, health=40, alive=False)
    mid = lerp_entity(SCHEMA, a, b, 0.5)
    assert mid.x == pytest.approx(1.0)
    assert abs(abs(mid.heading) - math.pi) < 1e-9  # across the wrap, not through zero
    assert (mid.health, mid.alive) == (50, True)  # discrete fields switch at the newer state
    end = lerp_entity(SCHEMA, a, b, 1.0)
    assert (end.health, end.alive) == (40, False)


def test_sample_interpolates_extrapolates_then_holds() -> None:
    history = [(10, Body(x=0.0)), (11, Body(x=1.0)), (13, Body(x=3.0))]
    assert sample(SCHEMA, history, 9.0).x == 0.0
    assert sample(SCHEMA, history, 10.5).x == pytest.approx(0.5)
    assert sample(SCHEMA, history, 12.0).x == pytest.approx(2.0)
    assert sample(SCHEMA, history, 14.0, max_extrapolation_ticks=3).x == pytest.approx(4.0)
    assert sample(SCHEMA, history, 16.0, max_extrapolation_ticks=3).x == pytest.approx(6.0)
    # past three ticks it comes back to the newest state, and holds that: nothing invented
    assert sample(SCHEMA, history, 17.5, max_extrapolation_ticks=3).x == pytest.approx(4.5)
    assert sample(SCHEMA, history, 30.0, max_extrapolation_ticks=3).x == pytest.approx(3.0)
    assert sample(SCHEMA, history, 100.0, max_extrapolation_ticks=3).x == pytest.approx(3.0)
    # known unchanged (at rest) up to tick 20: never drawn past its newest state
    for t in (13.5, 15.0, 20.0, 22.0, 40.0):
        rest = sample(SCHEMA, history, t, max_extrapolation_ticks=3, known_until=20)
        assert rest.x == pytest.approx(3.0)
    assert sample(SCHEMA, history, 200.0, max_extrapolation_ticks=100).x == 10.0  # clamped


def test_sample_decodes_only_what_it_uses() -> None:
    decoded: list[int] = []

    def decode(i: int) -> Body:
        decoded.append(i)
        return Body(x=i / 10)

    history = [(t, t) for t in range(32)]
    assert sample(SCHEMA, history, 20.25, decode=decode).x == pytest.approx(2.025)
    assert decoded == [20, 21]


def test_quaternion_interpolation_stays_unit_and_takes_the_short_way() -> None:
    a = Body(spin=(0.0, 0.0, 0.0, 1.0))
    b = Body(spin=(0.0, 0.0, -math.sin(0.5), -math.cos(0.5)))  # same as +1 rad, flipped sign
    q = lerp_entity(SCHEMA, a, b, 0.5).spin
    assert sum(c * c for c in q) == pytest.approx(1.0)
    assert q[3] > 0.9  # halfway along the short arc


@given(
    first=st.integers(0, 2**32 - 300),
    inputs=st.lists(st.binary(max_size=64), max_size=20),
)
def test_input_frames_round_trip_and_match_the_declaration(first: int, inputs: list[bytes]) -> None:
    payload = encode_inputs(first, inputs)
    assert INPUT.build({"first_tick": first, "inputs": inputs}) == payload
    assert decode_inputs_untrusted(payload) == (first, inputs)


@given(st.binary(max_size=80))
def test_input_decoders_raise_only_protocol_error(data: bytes) -> None:
    for decode in (decode_inputs_untrusted, decode_input_ack_untrusted):
        try:
            decode(data)
        except ProtocolError:
            pass


def test_input_ack_layout() -> None:
    assert INPUT_ACK.build({"snapshot_tick": 5, "last_input_tick": 9}) == encode_input_ack(5, 9)
    assert decode_input_ack_untrusted(encode_input_ack(5, None)) == (5, None)


def test_inputs_are_sent_redundantly_and_applied_once_in_order() -> None:
    sender = InputSender(redundancy=3)
    receiver = InputReceiver()
    frames = [sender.add(tick, bytes([tick])) for tick in range(10)]
    applied: list[int] = []
    for i, frame in enumerate(frames):
        if i in (3, 4, 7):  # lost datagrams: the next frames repeat their inputs
            continue
        applied += [tick for tick, _ in receiver.receive(frame)]
    assert applied == list(range(10))
    assert receiver.receive(frames[9]) == []  # a duplicate applies nothing
    assert receiver.duplicates > 0
    sender.acknowledge(8)
    assert [tick for tick, _ in sender.pending] == [9]


def test_input_receiver_refuses_forged_ticks() -> None:
    receiver = InputReceiver(max_jump=100)
    receiver.receive(encode_inputs(10, [b"a"]))
    with pytest.raises(ProtocolError, match="jumps"):
        receiver.receive(encode_inputs(5000, [b"b"]))
    with pytest.raises(ValueError, match="MAX_INPUT_BYTES"):
        InputSender().add(0, b"x" * 65)


@attrs.frozen
class Pos:
    x: int


def test_prediction_replays_unapplied_inputs_after_reconciliation() -> None:
    predictor: Predictor[Pos, int] = Predictor(lambda state, step: Pos(state.x + step))
    predictor.reset(Pos(0))
    for tick in range(1, 6):
        predictor.predict(tick, 1)  # move one unit per tick
    assert predictor.state == Pos(5)
    # the server applied inputs up to tick 3 and says the player is at 3: no correction
    assert predictor.reconcile(Pos(3), 3) == Pos(5)
    assert predictor.pending_inputs == 2
    # the server disagrees (the player was pushed back to 0 at tick 4): replay tick 5
    assert predictor.reconcile(Pos(0), 4) == Pos(1)
