"""The replay log and receive counter that let reliable messages survive a link change."""

from __future__ import annotations

import random

import pytest

from netcode.core import ReceiveCounter, ReplayLog
from netcode.errors import ProtocolError, SendQueueFull


def test_replay_gives_exactly_what_the_peer_is_missing() -> None:
    log = ReplayLog()
    for n in range(10):
        log.append(bytes([n]))
    log.confirm(3)
    assert log.confirmed == 3 and len(log) == 7
    assert log.replay_from(6) == [bytes([n]) for n in range(6, 10)]
    assert log.confirmed == 6
    assert log.replay_from(10) == []


def test_counts_that_cannot_be_true_are_protocol_errors() -> None:
    log = ReplayLog()
    log.append(b"x")
    with pytest.raises(ProtocolError):
        log.confirm(2)
    log.confirm(1)
    log.confirm(0)  # an older ACK overtaken by a newer one changes nothing
    with pytest.raises(ProtocolError):
        log.replay_from(0)  # already confirmed: gone


def test_the_log_is_bounded_in_bytes() -> None:
    log = ReplayLog(max_bytes=100)
    log.append(b"x" * 150)  # an empty log always takes one message
    with pytest.raises(SendQueueFull, match="limit 100"):
        log.append(b"y")
    log.confirm(1)
    assert log.bytes == 0
    log.append(b"y" * 60)
    assert log.bytes == 60


def test_random_drops_and_resumes_deliver_every_message_once_in_order() -> None:
    """Two peers, a link that dies at random: each resume replays from the received count."""
    rng = random.Random(7)
    log, counter = ReplayLog(), ReceiveCounter(ack_every=8)
    delivered: list[int] = []
    in_flight: list[bytes] = []  # what the current link carries, in order
    sent = 0
    for _step in range(5000):
        action = rng.random()
        if action < 0.5:
            message = sent.to_bytes(4, "big")
            log.append(message)
            in_flight.append(message)
            sent += 1
        elif action < 0.9 and in_flight:
            message = in_flight.pop(0)
            delivered.append(int.from_bytes(message, "big"))
            if counter.count():
                log.confirm(counter.take_ack())
        elif action < 0.95:
            in_flight.clear()  # the link dies with what it held
            in_flight.extend(log.replay_from(counter.take_ack()))  # RESUMED, then replay
    for message in in_flight:  # the last link lives: it delivers what it holds
        delivered.append(int.from_bytes(message, "big"))
    assert delivered == list(range(sent))
