"""Entity interpolation: render remote entities a little in the past, between two states.

A client renders remote entities ``delay`` seconds behind the server (about 100 ms at 30 Hz:
three ticks, so one or two lost snapshots leave a state on each side of the render time).
:func:`sample` takes an entity's received states by tick and returns its state at a
fractional tick: between two states it interpolates field by field, as the field's
quantization says (floats linearly, angles along the shorter arc, quaternions by normalised
lerp, everything else switching at the newer state).

Past the newest state two cases differ. An entity the server reported unchanged up to tick
``known_until`` (a COMPLETE tick that did not mention it) is at rest there: it is drawn at
its newest state, never past it. An entity merely not heard of is extrapolated along its last
motion for at most ``max_extrapolation_ticks``, then drawn back to its newest state over as
many ticks, and held there: extrapolation is bounded and nothing invented persists.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

from netcode.replication.schema import (
    AngleCodec,
    EntitySchema,
    FloatCodec,
    QuatCodec,
)

__all__ = ["lerp_entity", "sample"]


def _lerp_angle(a: float, b: float, t: float) -> float:
    d = (b - a + math.pi) % math.tau - math.pi
    return (a + d * t + math.pi) % math.tau - math.pi


def _nlerp(a: Sequence[float], b: Sequence[float], t: float) -> tuple[float, ...]:
    if sum(x * y for x, y in zip(a, b, strict=True)) < 0:  # q and -q are the same rotation
        b = [-y for y in b]
    q = [x + (y - x) * t for x, y in zip(a, b, strict=True)]
    n = math.sqrt(sum(x * x for x in q)) or 1.0
    return tuple(x / n for x in q)


def lerp_entity(schema: EntitySchema, a: Any, b: Any, t: float) -> Any:
    """The state ``t`` of the way from ``a`` to ``b`` (t may exceed 1 to extrapolate)."""
    values = {}
    for name, codec in zip(schema.names, schema.codecs, strict=True):
        va, vb = getattr(a, name), getattr(b, name)
        if isinstance(codec, FloatCodec):
            values[name] = min(max(va + (vb - va) * t, codec.lo), codec.hi)
        elif isinstance(codec, AngleCodec):
            values[name] = _lerp_angle(va, vb, t)
        elif isinstance(codec, QuatCodec):
            values[name] = _nlerp(va, vb, min(t, 1.0))
        else:
            values[name] = vb if t >= 1.0 else va
    return schema.cls(**values)


def sample(
    schema: EntitySchema,
    history: Sequence[tuple[int, Any]],
    tick: float,
    *,
    max_extrapolation_ticks: float = 3.0,
    decode: Callable[[Any], Any] | None = None,
    known_until: float | None = None,
) -> Any:
    """The entity's state at fractional ``tick`` from its states by tick (oldest first).

    ``decode`` turns a stored state into an entity (e.g. ``schema.from_slots``); only the one
    or two states used are decoded. ``known_until``: the server reported the entity
    unchanged since its newest state up to that tick (no extrapolation before it).
    """
    if not history:
        raise ValueError("no states to sample")
    d = decode or (lambda state: state)
    ticks = [t for t, _ in history]
    t_last = ticks[-1]
    if tick <= ticks[0] or len(history) == 1:
        return d(history[0][1] if tick <= ticks[0] else history[-1][1])
    i = bisect.bisect_left(ticks, tick)
    if i < len(ticks):
        (t0, s0), (t1, s1) = history[i - 1], history[i]
        return lerp_entity(schema, d(s0), d(s1), (tick - t0) / (t1 - t0))
    if known_until is not None and known_until > t_last:
        # at rest up to known_until (the server said so); unheard of since, and the motion
        # before that was none: nothing to extrapolate
        return d(history[-1][1])
    (t0, s0), (t1, s1) = history[-2], history[-1]
    m = max_extrapolation_ticks
    ahead = tick - t1
    # extrapolate a little, then come back to the newest state, then hold it there
    ahead = ahead if ahead <= m else max(0.0, 2 * m - ahead)
    if ahead <= 0:
        return d(s1)
    return lerp_entity(schema, d(s0), d(s1), 1.0 + ahead / (t1 - t0))
