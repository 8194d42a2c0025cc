"""Client inputs sent redundantly on the lossy channel, and prediction with reconciliation.

Theory of operation
-------------------
Each client tick the game produces one input (opaque bytes the game encodes, at most
``MAX_INPUT_BYTES``). :class:`InputSender` keeps the inputs the server has not yet applied
and sends the newest ``redundancy`` of them in every INPUT frame, so a lost datagram costs
nothing as long as one of the next few arrives. :class:`InputReceiver` (one per client on
the server) hands each input to the game exactly once, in tick order, and ignores repeats.

The server applies inputs as they come and, with every snapshot tick, tells the client the
last input it had applied when it took that snapshot (an INPUT_ACK frame). The client's
:class:`Predictor` runs its own player ahead with the same deterministic ``apply_input`` the
server uses; when the authoritative state of its player for snapshot tick T arrives, it
resets to that state and replays the inputs after the one the server reported for T. With
deterministic rules and quantization-exact state the replay lands where prediction was, and
the correction is zero.

Wire layouts (big-endian):

- INPUT (client to server): ``first_tick: u32, count: u8``, then ``count`` inputs of
  ``length: u8, bytes``, for ticks ``first_tick .. first_tick + count - 1``.
- INPUT_ACK (server to client): ``snapshot_tick: u32, last_input_tick: u32``
  (``0xFFFFFFFF``: no input applied yet).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from construct import GreedyBytes, Int8ub, Int32ub, Prefixed, PrefixedArray, Struct

from netcode.errors import ProtocolError

__all__ = [
    "INPUT",
    "INPUT_ACK",
    "MAX_INPUT_BYTES",
    "NO_INPUT",
    "InputReceiver",
    "InputSender",
    "Predictor",
    "decode_input_ack_untrusted",
    "decode_inputs_untrusted",
    "encode_input_ack",
    "encode_inputs",
]

#: Largest single input a game may send.
MAX_INPUT_BYTES = 64
#: INPUT_ACK value meaning "no input applied yet".
NO_INPUT = 0xFFFFFFFF

INPUT = Struct(
    "first_tick" / Int32ub,
    "inputs" / PrefixedArray(Int8ub, Prefixed(Int8ub, GreedyBytes)),
)
INPUT_ACK = Struct("snapshot_tick" / Int32ub, "last_input_tick" / Int32ub)

_HEAD = struct.Struct("!IB")
_ACK = struct.Struct("!II")


def encode_inputs(first_tick: int, inputs: list[bytes]) -> bytes:
    parts = [_HEAD.pack(first_tick, len(inputs))]
    for data in inputs:
        parts.append(bytes((len(data),)))
        parts.append(data)
    return b"".join(parts)


def decode_inputs_untrusted(payload: bytes) -> tuple[int, list[bytes]]:
    """(first_tick, inputs); raises ProtocolError on bad input."""
    if len(payload) < _HEAD.size:
        raise ProtocolError("INPUT frame shorter than its header")
    first_tick, count = _HEAD.unpack_from(payload)
    if count and first_tick + count - 1 >= NO_INPUT:
        # an INPUT_ACK names the last tick in 32 bits, NO_INPUT excluded
        raise ProtocolError(f"INPUT ticks {first_tick}+{count} run past {NO_INPUT - 1}")
    inputs = []
    i = _HEAD.size
    for _ in range(count):
        if i >= len(payload):
            raise ProtocolError("INPUT frame truncated")
        n = payload[i]
        if n > MAX_INPUT_BYTES or i + 1 + n > len(payload):
            raise ProtocolError(f"INPUT of {n} bytes is too long or truncated")
        inputs.append(payload[i + 1 : i + 1 + n])
        i += 1 + n
    if i != len(payload):
        raise ProtocolError("INPUT frame has trailing bytes")
    return first_tick, inputs


def encode_input_ack(snapshot_tick: int, last_input_tick: int | None) -> bytes:
    return _ACK.pack(snapshot_tick, NO_INPUT if last_input_tick is None else last_input_tick)


def decode_input_ack_untrusted(payload: bytes) -> tuple[int, int | None]:
    if len(payload) != _ACK.size:
        raise ProtocolError(f"INPUT_ACK of {len(payload)} bytes, expected {_ACK.size}")
    snapshot_tick, last = _ACK.unpack(payload)
    return snapshot_tick, None if last == NO_INPUT else last


class InputSender:
    """The client side: remembers unacknowledged inputs and sends them redundantly."""

    def __init__(self, *, redundancy: int = 8, max_pending: int = 256) -> None:
        if not 1 <= redundancy <= 255:
            raise ValueError("redundancy must be within 1..255")
        self.redundancy = redundancy
        self._pending: deque[tuple[int, bytes]] = deque(maxlen=max_pending)

    def add(self, tick: int, data: bytes) -> bytes:
        """Record the input for ``tick`` and return the INPUT frame payload to send."""
        if len(data) > MAX_INPUT_BYTES:
            raise ValueError(
                f"input of {len(data)} bytes exceeds MAX_INPUT_BYTES={MAX_INPUT_BYTES}"
            )
        if self._pending and tick != self._pending[-1][0] + 1:
            self._pending.clear()  # ticks must be consecutive for the frame's layout
        self._pending.append((tick, data))
        recent = list(self._pending)[-self.redundancy :]
        return encode_inputs(recent[0][0], [d for _, d in recent])

    def acknowledge(self, last_applied_tick: int) -> None:
        """The server applied every input up to ``last_applied_tick``: stop sending them."""
        while self._pending and self._pending[0][0] <= last_applied_tick:
            self._pending.popleft()

    @property
    def pending(self) -> list[tuple[int, bytes]]:
        return list(self._pending)


class InputReceiver:
    """The server side, one per client: each input once, in tick order."""

    def __init__(self, *, max_jump: int = 1024) -> None:
        self.max_jump = max_jump
        self.last_received: int | None = None
        #: last input the game applied (the host reports it in INPUT_ACK)
        self.last_applied: int | None = None
        self.duplicates = 0

    def receive(self, payload: bytes) -> list[tuple[int, bytes]]:
        """The new inputs in an INPUT frame, oldest first; raises ProtocolError."""
        first_tick, inputs = decode_inputs_untrusted(payload)
        last = self.last_received
        if last is not None and first_tick + len(inputs) - 1 > last + self.max_jump:
            raise ProtocolError(f"input tick {first_tick} jumps too far ahead of {last}")
        fresh = []
        for offset, data in enumerate(inputs):
            tick = first_tick + offset
            if last is not None and tick <= last:
                self.duplicates += 1
                continue
            fresh.append((tick, data))
        if fresh:
            self.last_received = fresh[-1][0]
        return fresh


S = TypeVar("S")
I = TypeVar("I")  # noqa: E741 - the conventional name for an input type


class Predictor(Generic[S, I]):
    """Client-side prediction of the local player, reconciled with the server's state.

    ``apply_input(state, input) -> state`` must be the same deterministic function the
    server runs.
    """

    def __init__(self, apply_input: Callable[[S, I], S], *, max_pending: int = 256) -> None:
        self.apply_input = apply_input
        self.state: S | None = None
        self._inputs: deque[tuple[int, I]] = deque(maxlen=max_pending)
        #: replays done, and the last correction's size as the caller measures it
        self.reconciliations = 0

    def reset(self, state: S) -> None:
        self.state = state
        self._inputs.clear()

    def predict(self, tick: int, player_input: I) -> S | None:
        """Apply the local input for ``tick`` at once; returns the predicted state."""
        self._inputs.append((tick, player_input))
        if self.state is not None:
            self.state = self.apply_input(self.state, player_input)
        return self.state

    def reconcile(self, server_state: S, last_applied_tick: int | None) -> S:
        """Restart from the server's state and replay the inputs it had not applied."""
        while (
            self._inputs
            and last_applied_tick is not None
            and self._inputs[0][0] <= last_applied_tick
        ):
            self._inputs.popleft()
        state = server_state
        for _, player_input in self._inputs:
            state = self.apply_input(state, player_input)
        self.state = state
        self.reconciliations += 1
        return state

    @property
    def pending_inputs(self) -> int:
        return len(self._inputs)
