"""Property tests of everything that takes peer input: decoders and the state machines that
call them. Arbitrary bytes and mutations of valid encodings (bit flips, interesting values,
truncation, extension, insertion, deletion, splices of two valid encodings) either decode or
raise ProtocolError, never anything else; valid encodings round-trip; and the state machines
stay within their bounds whatever they are fed.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netcode.auth import MalformedToken, TokenError, TokenVerifier
from netcode.errors import ProtocolError
from netcode.replication.inputs import (
    NO_INPUT,
    InputReceiver,
    decode_inputs_untrusted,
    encode_input_ack,
    encode_inputs,
)

# --- regressions found by netcode-fuzz -------------------------------------------------------


@pytest.mark.parametrize("first", [NO_INPUT - 1, NO_INPUT, 2**32 - 2])
def test_input_ticks_past_the_input_ack_range_are_refused(first: int) -> None:
    # An INPUT frame whose ticks ran past 2**32 - 2 was accepted; the host then failed to
    # encode its INPUT_ACK every tick (struct.error), and cut the client off.
    payload = encode_inputs(first, [b"a", b"b"])
    with pytest.raises(ProtocolError):
        decode_inputs_untrusted(payload)


@given(st.integers(0, 2**32 - 1), st.lists(st.binary(max_size=4), max_size=8))
def test_every_tick_an_accepted_input_frame_names_fits_an_input_ack(
    first: int, inputs: list[bytes]
) -> None:
    receiver = InputReceiver()
    try:
        fresh = receiver.receive(encode_inputs(first, inputs))
    except ProtocolError:
        return
    for tick, _ in fresh:
        encode_input_ack(0, tick)  # raises if the tick does not fit


@given(st.text(max_size=40))
def test_any_token_string_is_refused_with_a_token_error(token: str) -> None:
    # A token with a lone surrogate raised UnicodeEncodeError out of verify(): the
    # signaling handler answered 500 and logged a traceback per request.
    verifier = TokenVerifier("key", "secret-secret-secret-secret-secret-00")
    with pytest.raises(TokenError):
        verifier.verify(token)


def test_a_token_that_is_not_ascii_is_malformed() -> None:
    verifier = TokenVerifier("key", "secret-secret-secret-secret-secret-00")
    with pytest.raises(MalformedToken):
        verifier.verify("\ud800.\ud800.\ud800")
