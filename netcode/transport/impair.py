"""Network impairment under aiortc: latency, jitter, loss, duplication, reordering, a bandwidth
cap and blackouts applied to every UDP datagram of a peer connection.

Theory of operation
-------------------
aiortc's ICE transport is an ``aioice.Connection``; every datagram the peer connection sends
or receives (STUN connectivity and consent checks, DTLS, SCTP data and SACKs) goes through
one of that connection's ``StunProtocol`` objects: out through ``protocol.transport.sendto``
and in through ``protocol.datagram_received``. An :class:`ImpairedPath` attached to the
connection replaces, on those protocol *instances* only, the transport by a proxy whose
``sendto`` passes through the outgoing queue, and ``datagram_received`` by a function that
passes through the incoming queue before aioice sees the datagram. Nothing is patched at
module or class level, so other peer connections in the process are untouched.

The protocols exist only once candidates are gathered (inside ``setLocalDescription``), so
:meth:`ImpairedPath.attach` also overrides ``get_component_candidates`` on that one
``Connection`` instance, wrapping the new protocols as soon as gathering returns, before any
connectivity check is sent. Attach after the peer connection has its data-channel transport
(after ``createDataChannel`` on the offerer, after ``setRemoteDescription`` on the answerer)
and before ``setLocalDescription``; :class:`~netcode.transport.peerlink.PeerLink` does this
when given ``impairment=``. Traffic to STUN/TURN servers made *during* gathering (server
reflexive queries, TURN allocation) is not impaired; everything between the two peers is,
including traffic relayed through TURN.

Both directions are impaired at the side that has the path: impairing only the client
impairs the client->server path (``outgoing``) and the server->client path (``incoming``).
Each direction has its own :class:`Impairment` (the same one by default) and its own RNG.

The decisions are sans-IO: :class:`ImpairmentQueue` takes ``push(now, item, size)`` and
gives back due items from ``pop_due(now)``, so tests drive it with a scripted clock. The
asyncio part only arms one ``loop.call_later`` timer per direction for the earliest due
datagram.

Per datagram, in order: a blackout drops it; the bandwidth bottleneck (if any) queues it
behind earlier datagrams, dropping it if the queue holds more than ``queue_bytes``; loss
drops it on the wire; it then arrives after ``latency_ms`` +- ``jitter_ms`` (uniform), never
before an earlier datagram (jitter alone does not reorder); with probability ``reorder`` it
is held back ``reorder_delay_ms`` more so later datagrams overtake it; with probability
``duplicate`` a second copy arrives too. Blackouts and the loss decision apply when a datagram
enters the path: datagrams already in flight when a blackout starts still arrive.

Example::

    path = ImpairedPath(Impairment.from_spec("latency=50,jitter=5,loss=5%,seed=3"))
    link = await connect_peer(url, token, impairment=path)
    path.blackout(2.0)                              # both ways, starting now
    path.configure(Impairment(latency_ms=50))       # runtime change (RNG state kept)
    path.stats()["outgoing"].bytes_delivered        # UDP payload bytes on the wire
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import attrs

from netcode.transport.ice import ice_connections

__all__ = [
    "DEFAULT_QUEUE_BYTES",
    "DirectionStats",
    "ImpairedPath",
    "Impairment",
    "ImpairmentQueue",
]

logger = logging.getLogger(__name__)

#: Default bound of the bandwidth bottleneck's queue; more queued bytes are tail-dropped.
DEFAULT_QUEUE_BYTES = 64 * 1024

_Blackouts = tuple[tuple[float, float], ...]


def _finite_at_least_zero(name: str) -> Callable[[Any, Any, float], None]:
    def check(_instance: Any, _attribute: Any, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"Impairment.{name} must be a number, got {value!r}")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"Impairment.{name} must be a finite number >= 0, got {value!r}")

    return check


def _probability(name: str) -> Callable[[Any, Any, float], None]:
    def check(_instance: Any, _attribute: Any, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"Impairment.{name} must be a number, got {value!r}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Impairment.{name} must be a probability in [0, 1], got {value!r}")

    return check


def _check_bandwidth(_instance: Any, _attribute: Any, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Impairment.bandwidth_kbps must be a number or None, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"Impairment.bandwidth_kbps must be > 0 (None: unlimited), got {value!r}")


def _check_queue_bytes(_instance: Any, _attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Impairment.queue_bytes must be an integer >= 1, got {value!r}")


def _check_seed(_instance: Any, _attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Impairment.seed must be an int, got {value!r}")


def _to_blackouts(value: Iterable[tuple[float, float]]) -> _Blackouts:
    windows = []
    for window in value:
        try:
            start, duration = window
        except (TypeError, ValueError):
            raise ValueError(
                f"Impairment.blackouts: each entry must be (start_s, duration_s), got {window!r}"
            ) from None
        start, duration = float(start), float(duration)
        if not (math.isfinite(start) and start >= 0):
            raise ValueError(f"Impairment.blackouts: start must be >= 0 s, got {start!r}")
        if not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"Impairment.blackouts: duration must be > 0 s, got {duration!r}")
        windows.append((start, duration))
    return tuple(sorted(windows))


@attrs.frozen
class Impairment:
    """How one direction of a path (or both) mistreats UDP datagrams. Probabilities are 0..1.

    Build one directly, or from a command-line style spec with :meth:`from_spec`.
    """

    #: one-way base delay
    latency_ms: float = attrs.field(default=0.0, validator=_finite_at_least_zero("latency_ms"))
    #: each datagram's delay varies uniformly within +-jitter_ms (never below zero)
    jitter_ms: float = attrs.field(default=0.0, validator=_finite_at_least_zero("jitter_ms"))
    #: probability a datagram is lost
    loss: float = attrs.field(default=0.0, validator=_probability("loss"))
    #: probability a datagram arrives twice
    duplicate: float = attrs.field(default=0.0, validator=_probability("duplicate"))
    #: probability a datagram is held back ``reorder_delay_ms`` so later ones overtake it
    reorder: float = attrs.field(default=0.0, validator=_probability("reorder"))
    #: extra delay of a reordered datagram
    reorder_delay_ms: float = attrs.field(
        default=20.0, validator=_finite_at_least_zero("reorder_delay_ms")
    )
    #: bottleneck rate in kilobits per second (1000 bits); None is unlimited
    bandwidth_kbps: float | None = attrs.field(default=None, validator=_check_bandwidth)
    #: bytes the bottleneck may hold waiting to be serialised; more are tail-dropped
    queue_bytes: int = attrs.field(default=DEFAULT_QUEUE_BYTES, validator=_check_queue_bytes)
    #: seed of the path's random.Random streams (each direction derives its own)
    seed: int = attrs.field(default=0, validator=_check_seed)
    #: scheduled blackouts, ``(start_s, duration_s)`` relative to the time the path attached
    blackouts: _Blackouts = attrs.field(default=(), converter=_to_blackouts)

    def __attrs_post_init__(self) -> None:
        if self.reorder > 0 and self.reorder_delay_ms <= 0:
            raise ValueError(
                f"Impairment.reorder={self.reorder} needs reorder_delay_ms > 0, "
                f"got {self.reorder_delay_ms}"
            )

    @property
    def is_identity(self) -> bool:
        """True if it delays, drops, duplicates and reorders nothing (a path that only
        counts what crosses it)."""
        return (
            self.latency_ms == 0
            and self.jitter_ms == 0
            and self.loss == 0
            and self.duplicate == 0
            and self.reorder == 0
            and self.bandwidth_kbps is None
            and not self.blackouts
        )

    def replace(self, **changes: Any) -> Impairment:
        """A copy with some fields changed (validated again)."""
        return attrs.evolve(self, **changes)

    @classmethod
    def from_spec(cls, spec: str) -> Impairment:
        """Parse ``"latency=50,jitter=5,loss=0.05,dup=0.01,reorder=0.02,bw=1000,seed=3"``.

        Keys (comma separated ``key=value``, whitespace ignored, each at most once except
        ``blackout``):

        - ``latency``, ``jitter``, ``reorder_delay``: milliseconds (``50`` or ``50ms``);
        - ``loss``, ``dup`` (or ``duplicate``), ``reorder``: probabilities, ``0.05`` or ``5%``;
        - ``bw`` (or ``bandwidth``): kilobits per second (``1000`` or ``1000kbps``);
        - ``queue``: bottleneck queue bound in bytes;
        - ``seed``: an integer;
        - ``blackout``: ``START+DURATION`` in seconds after attach, e.g. ``blackout=5+2``.

        An empty spec is no impairment. Raises ValueError naming the bad part.
        """
        values: dict[str, Any] = {}
        blackouts: list[tuple[float, float]] = []
        for raw_part in spec.split(","):
            part = raw_part.strip()
            if not part:
                continue
            key, sep, text = part.partition("=")
            key, text = key.strip().lower(), text.strip()
            if not sep or not text:
                raise ValueError(f"impairment spec: {part!r} is not key=value")
            field = _SPEC_KEYS.get(key)
            if field is None:
                known = ", ".join(sorted(_SPEC_KEYS))
                raise ValueError(f"impairment spec: unknown key {key!r} (known: {known})")
            if field == "blackouts":
                blackouts.append(_parse_blackout(text))
                continue
            if field in values:
                raise ValueError(f"impairment spec: {key!r} given twice")
            values[field] = _parse_spec_value(field, key, text)
        if blackouts:
            values["blackouts"] = blackouts
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(f"impairment spec {spec!r}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"impairment spec {spec!r}: {exc}") from None

    def __str__(self) -> str:
        """The spec form (round-trips through :meth:`from_spec`), only non-default keys."""
        parts = []
        if self.latency_ms:
            parts.append(f"latency={self.latency_ms:g}")
        if self.jitter_ms:
            parts.append(f"jitter={self.jitter_ms:g}")
        if self.loss:
            parts.append(f"loss={self.loss:g}")
        if self.duplicate:
            parts.append(f"dup={self.duplicate:g}")
        if self.reorder:
            parts.append(f"reorder={self.reorder:g}")
        if self.reorder_delay_ms != 20.0:
            parts.append(f"reorder_delay={self.reorder_delay_ms:g}")
        if self.bandwidth_kbps is not None:
            parts.append(f"bw={self.bandwidth_kbps:g}")
        if self.queue_bytes != DEFAULT_QUEUE_BYTES:
            parts.append(f"queue={self.queue_bytes}")
        if self.seed:
            parts.append(f"seed={self.seed}")
        parts.extend(f"blackout={start:g}+{duration:g}" for start, duration in self.blackouts)
        return ",".join(parts)


_SPEC_KEYS = {
    "latency": "latency_ms",
    "jitter": "jitter_ms",
    "loss": "loss",
    "dup": "duplicate",
    "duplicate": "duplicate",
    "reorder": "reorder",
    "reorder_delay": "reorder_delay_ms",
    "bw": "bandwidth_kbps",
    "bandwidth": "bandwidth_kbps",
    "queue": "queue_bytes",
    "seed": "seed",
    "blackout": "blackouts",
}
_SUFFIXES = {
    "latency_ms": "ms",
    "jitter_ms": "ms",
    "reorder_delay_ms": "ms",
    "bandwidth_kbps": "kbps",
}


def _parse_number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"impairment spec: {key}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"impairment spec: {key}={text!r} is not a finite number")
    return value


def _parse_spec_value(field: str, key: str, text: str) -> float | int:
    lowered = text.lower()
    if field in ("loss", "duplicate", "reorder"):
        if lowered.endswith("%"):
            value = _parse_number(key, lowered[:-1].strip()) / 100.0
        else:
            value = _parse_number(key, lowered)
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"impairment spec: {key}={text!r} is not a probability in [0, 1] (or 0%..100%)"
            )
        return value
    if field in ("seed", "queue_bytes"):
        try:
            return int(lowered)
        except ValueError:
            raise ValueError(f"impairment spec: {key}={text!r} is not an integer") from None
    suffix = _SUFFIXES[field]
    if lowered.endswith(suffix):
        lowered = lowered[: -len(suffix)].strip()
    return _parse_number(key, lowered)


def _parse_blackout(text: str) -> tuple[float, float]:
    start, sep, duration = text.partition("+")
    if not sep:
        raise ValueError(
            f"impairment spec: blackout={text!r} must be START+DURATION in seconds, e.g. 5+2"
        )
    return (_parse_number("blackout", start.strip()), _parse_number("blackout", duration.strip()))


# --- the sans-IO queue ------------------------------------------------------------------------


@attrs.define
class DirectionStats:
    """Counters of one direction of a path. Bytes are UDP payload bytes (DTLS, SCTP, STUN)."""

    #: datagrams (and their bytes) that entered the path
    datagrams_seen: int = 0
    bytes_seen: int = 0
    #: datagrams (and bytes) dropped, for any of the reasons below
    datagrams_dropped: int = 0
    bytes_dropped: int = 0
    #: dropped by random loss
    dropped_loss: int = 0
    #: dropped by a blackout
    dropped_blackout: int = 0
    #: tail-dropped by the bandwidth bottleneck's full queue
    dropped_queue: int = 0
    #: extra copies made by duplication
    datagrams_duplicated: int = 0
    #: datagrams held back to be overtaken
    datagrams_reordered: int = 0
    #: datagrams (copies included) and bytes handed on: to the socket, or to aioice
    datagrams_delivered: int = 0
    bytes_delivered: int = 0


T = TypeVar("T")


class ImpairmentQueue(Generic[T]):
    """One direction of an impaired path, sans IO: decides each datagram's fate and holds it.

    ``push(now, item, size)`` returns the times the item is due (empty if dropped, two
    entries if duplicated); ``pop_due(now)`` returns the due items in delivery order.
    ``now`` is any monotonic clock in seconds; scheduled blackouts are relative to
    :attr:`origin`. Randomness comes only from ``rng`` (default ``random.Random(seed)``).
    """

    def __init__(
        self,
        config: Impairment | None = None,
        *,
        rng: random.Random | None = None,
        origin: float = 0.0,
    ) -> None:
        self._config = config if config is not None else Impairment()
        self._identity = self._config.is_identity
        self._rng = rng if rng is not None else random.Random(self._config.seed)
        #: time the scheduled blackouts are relative to
        self.origin = origin
        #: counters
        self.stats = DirectionStats()
        self._heap: list[tuple[float, int, int, T]] = []
        self._seq = itertools.count()
        self._last_due = -math.inf
        self._busy_until = -math.inf
        self._blackout_until = -math.inf
        self._blackout_on = False

    @property
    def config(self) -> Impairment:
        """The current impairment; assign a new one to change it at runtime.

        The RNG, the bottleneck's backlog and datagrams in flight are kept (a new seed
        does not reseed).
        """
        return self._config

    @config.setter
    def config(self, value: Impairment) -> None:
        if not isinstance(value, Impairment):
            raise TypeError(f"config must be an Impairment, got {type(value).__name__}")
        self._config = value
        self._identity = value.is_identity

    # blackouts

    def set_blackout(self, on: bool) -> None:
        """Start (True) or end (False) a manual blackout; False also ends :meth:`blackout_until`."""
        self._blackout_on = bool(on)
        if not on:
            self._blackout_until = -math.inf

    def blackout_until(self, until: float) -> None:
        """Drop everything entering before ``until`` (same clock as ``now``)."""
        self._blackout_until = max(self._blackout_until, until)

    def in_blackout(self, now: float) -> bool:
        """True if a datagram entering at ``now`` would be dropped by a blackout."""
        if self._blackout_on or now < self._blackout_until:
            return True
        elapsed = now - self.origin
        return any(
            start <= elapsed < start + duration for start, duration in self._config.blackouts
        )

    # the queue

    @property
    def in_flight(self) -> int:
        """Datagrams scheduled and not yet popped."""
        return len(self._heap)

    @property
    def next_due(self) -> float | None:
        """When the earliest held datagram is due, or None if none is held."""
        return self._heap[0][0] if self._heap else None

    def backlog_bytes(self, now: float) -> int:
        """Bytes waiting in the bandwidth bottleneck at ``now`` (0 without a cap)."""
        rate = self._config.bandwidth_kbps
        if rate is None or self._busy_until <= now:
            return 0
        return math.ceil((self._busy_until - now) * rate * 125.0)

    def pass_through(self, now: float, size: int) -> bool:
        """Count a datagram of ``size`` bytes as seen and delivered at once, if the path
        would do nothing else with it (no impairment, no blackout, nothing held before it);
        else False, and it is for :meth:`push`. The caller delivers it: no heap, no timer."""
        if not self._identity or self._heap or self.in_blackout(now):
            return False
        stats = self.stats
        stats.datagrams_seen += 1
        stats.bytes_seen += size
        stats.datagrams_delivered += 1
        stats.bytes_delivered += size
        return True

    def push(self, now: float, item: T, size: int) -> list[float]:
        """A datagram of ``size`` bytes enters at ``now``; returns when it (and a copy) are due."""
        config, rng, stats = self._config, self._rng, self.stats
        stats.datagrams_seen += 1
        stats.bytes_seen += size
        if self.in_blackout(now):
            stats.dropped_blackout += 1
            return self._drop(size)

        depart = now
        rate = config.bandwidth_kbps
        if rate is not None:
            if self.backlog_bytes(now) + size > config.queue_bytes:
                stats.dropped_queue += 1
                return self._drop(size)
            self._busy_until = max(now, self._busy_until) + size / (rate * 125.0)
            depart = self._busy_until

        if config.loss and rng.random() < config.loss:
            stats.dropped_loss += 1
            return self._drop(size)

        dues = [self._schedule(depart, item, size, reorder=True)]
        if config.duplicate and rng.random() < config.duplicate:
            stats.datagrams_duplicated += 1
            dues.append(self._schedule(depart, item, size, reorder=False))
        return dues

    def pop_due(self, now: float) -> list[T]:
        """Remove and return the items due at or before ``now``, earliest first."""
        heap, stats = self._heap, self.stats
        due: list[T] = []
        while heap and heap[0][0] <= now:
            _, _, size, item = heapq.heappop(heap)
            stats.datagrams_delivered += 1
            stats.bytes_delivered += size
            due.append(item)
        return due

    def clear(self) -> int:
        """Forget every held datagram (not counted as delivered); returns how many."""
        count = len(self._heap)
        self._heap.clear()
        return count

    def _drop(self, size: int) -> list[float]:
        self.stats.datagrams_dropped += 1
        self.stats.bytes_dropped += size
        return []

    def _schedule(self, depart: float, item: T, size: int, *, reorder: bool) -> float:
        config, rng = self._config, self._rng
        delay = config.latency_ms
        if config.jitter_ms:
            delay += rng.uniform(-config.jitter_ms, config.jitter_ms)
        due = depart + max(0.0, delay) / 1000.0
        if reorder and config.reorder and rng.random() < config.reorder:
            # Held back: later datagrams overtake it, and it does not hold them up.
            self.stats.datagrams_reordered += 1
            due = max(due, self._last_due) + config.reorder_delay_ms / 1000.0
        else:
            due = max(due, self._last_due)
            self._last_due = due
        heapq.heappush(self._heap, (due, next(self._seq), size, item))
        return due


# --- the asyncio part -------------------------------------------------------------------------

#: A timer may fire a little before the time it was armed for; items due this close count.
_EARLY_S = 1e-4

_Deliver = Callable[[Any, Any], object]
# (deliver function, transport whose closing cancels delivery, data, address)
_Item = tuple[_Deliver, Any, Any, Any]


def _is_closing(transport: Any) -> bool:
    is_closing = getattr(transport, "is_closing", None)
    return bool(is_closing()) if is_closing is not None else False


def _deliver_one(deliver: _Deliver, transport: Any, data: Any, addr: Any) -> None:
    if _is_closing(transport):
        return
    try:
        deliver(data, addr)
    except Exception:
        logger.exception("impaired path: delivering a datagram raised")


class _Pipe:
    """Feeds one direction's queue from asyncio callbacks and delivers due datagrams."""

    def __init__(self, queue: ImpairmentQueue[_Item], clock: Callable[[], float]) -> None:
        self.queue = queue
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf

    def push(self, deliver: _Deliver, transport: Any, data: Any, addr: Any) -> None:
        now = self._clock()
        if self.queue.pass_through(now, len(data)):  # a path that only counts: deliver now
            _deliver_one(deliver, transport, data, addr)
            return
        self.queue.push(now, (deliver, transport, data, addr), len(data))
        self._run(now)

    def _run(self, now: float) -> None:
        for deliver, transport, data, addr in self.queue.pop_due(now + _EARLY_S):
            _deliver_one(deliver, transport, data, addr)
        due = self.queue.next_due
        if due is None or due >= self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = asyncio.get_running_loop().call_later(max(0.0, due - now), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_due = math.inf
        self._run(self._clock())


class _ImpairedTransport:
    """Stands in for a StunProtocol's transport: ``sendto`` goes through the outgoing pipe."""

    def __init__(self, inner: Any, pipe: _Pipe) -> None:
        self._netcode_inner = inner
        self._netcode_pipe = pipe

    def sendto(self, data: bytes, addr: Any = None) -> None:
        inner = self._netcode_inner
        self._netcode_pipe.push(inner.sendto, inner, data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._netcode_inner, name)

    def __repr__(self) -> str:
        return f"<impaired {self._netcode_inner!r}>"


def _derive_rng(seed: int, *labels: str) -> random.Random:
    # A str seed is hashed with SHA-512 (not hash()), so this is repeatable across runs.
    return random.Random("/".join((str(seed), *labels)))


class ImpairedPath:
    """Impairment of both directions of one peer connection's UDP path, at one side.

    ``ImpairedPath(impairment)`` applies the same :class:`Impairment` to ``outgoing``
    (datagrams this side sends) and ``incoming`` (datagrams it receives);
    ``ImpairedPath(outgoing=..., incoming=...)`` sets them apart (an omitted one is
    ``impairment``, or none). Each direction draws from its own RNG derived from its seed,
    ``salt`` (e.g. a peer number) and the direction name.

    Attach it with :meth:`attach` (or ``PeerLink(..., impairment=path)``); one path may serve
    several connections (they then share its bottleneck and blackouts).
    """

    def __init__(
        self,
        impairment: Impairment | None = None,
        *,
        outgoing: Impairment | None = None,
        incoming: Impairment | None = None,
        salt: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        base = impairment if impairment is not None else Impairment()
        out_config = outgoing if outgoing is not None else base
        in_config = incoming if incoming is not None else base
        for name, value in (
            ("impairment", base),
            ("outgoing", out_config),
            ("incoming", in_config),
        ):
            if not isinstance(value, Impairment):
                raise TypeError(f"{name} must be an Impairment, got {type(value).__name__}")
        self._clock = clock
        origin = clock()
        #: datagrams this side sends
        self.outgoing: ImpairmentQueue[Any] = ImpairmentQueue(
            out_config, rng=_derive_rng(out_config.seed, salt, "outgoing"), origin=origin
        )
        #: datagrams this side receives
        self.incoming: ImpairmentQueue[Any] = ImpairmentQueue(
            in_config, rng=_derive_rng(in_config.seed, salt, "incoming"), origin=origin
        )
        self._out_pipe = _Pipe(self.outgoing, clock)
        self._in_pipe = _Pipe(self.incoming, clock)
        self._attached = False
        self._connections = 0

    # configuration

    def configure(
        self,
        impairment: Impairment | None = None,
        *,
        outgoing: Impairment | None = None,
        incoming: Impairment | None = None,
    ) -> None:
        """Change the impairment at runtime: ``impairment`` both ways, or one direction."""
        if impairment is not None:
            self.outgoing.config = impairment
            self.incoming.config = impairment
        if outgoing is not None:
            self.outgoing.config = outgoing
        if incoming is not None:
            self.incoming.config = incoming

    def blackout(self, seconds: float) -> None:
        """Drop every datagram, both ways, for ``seconds`` from now."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"blackout seconds must be a finite number >= 0, got {seconds!r}")
        until = self._clock() + seconds
        self.outgoing.blackout_until(until)
        self.incoming.blackout_until(until)

    def set_blackout(self, on: bool) -> None:
        """Start (True) or end (False) a blackout both ways; False also ends :meth:`blackout`."""
        self.outgoing.set_blackout(on)
        self.incoming.set_blackout(on)

    @property
    def blacked_out(self) -> bool:
        """True while datagrams entering now would be dropped by a blackout (either way)."""
        now = self._clock()
        return self.outgoing.in_blackout(now) or self.incoming.in_blackout(now)

    def stats(self) -> dict[str, DirectionStats]:
        """Counters per direction: ``{"outgoing": ..., "incoming": ...}``."""
        return {"outgoing": self.outgoing.stats, "incoming": self.incoming.stats}

    # attaching

    @property
    def connections(self) -> int:
        """How many ICE connections this path is attached to."""
        return self._connections

    def attach(self, pc: Any) -> None:
        """Impair every ICE transport of the aiortc ``RTCPeerConnection`` ``pc``.

        Call it once ``pc`` has its data-channel transport (after ``createDataChannel`` or
        ``setRemoteDescription``) and before ``setLocalDescription``, so that the first
        connectivity check is impaired too. Raises ValueError if ``pc`` has no ICE transport.
        """
        connections = ice_connections(pc)
        if not connections:
            raise ValueError(
                "the peer connection has no ICE transport yet: attach the impairment after "
                "createDataChannel() or setRemoteDescription()"
            )
        for connection in connections:
            self.attach_connection(connection)

    def attach_connection(self, connection: Any) -> None:
        """Impair one ``aioice.Connection`` (its current and future protocols)."""
        owner = getattr(connection, "_netcode_impaired_path", None)
        if owner is self:
            return
        if owner is not None:
            raise ValueError("this ICE connection is already impaired by another path")
        if not self._attached:
            # Scheduled blackouts count from the first attach.
            self._attached = True
            origin = self._clock()
            self.outgoing.origin = origin
            self.incoming.origin = origin
        connection._netcode_impaired_path = self
        self._connections += 1
        original = connection.get_component_candidates

        async def get_component_candidates(*args: Any, **kwargs: Any) -> Any:
            candidates = await original(*args, **kwargs)
            self._wrap_protocols(connection)
            return candidates

        # An instance attribute: only this connection's gathering is affected.
        connection.get_component_candidates = get_component_candidates
        self._wrap_protocols(connection)

    def _wrap_protocols(self, connection: Any) -> None:
        for protocol in list(connection._protocols):
            if getattr(protocol, "_netcode_impaired_path", None) is None:
                self._wrap_protocol(protocol)

    def _wrap_protocol(self, protocol: Any) -> None:
        # Instance attributes shadow StunProtocol's method and transport for this protocol
        # only; asyncio (and aioice's TURN client) look datagram_received up on the instance.
        inner = protocol.transport
        received = protocol.datagram_received
        in_pipe = self._in_pipe

        def datagram_received(data: Any, addr: Any) -> None:
            in_pipe.push(received, inner, data, addr)

        protocol.transport = _ImpairedTransport(inner, self._out_pipe)
        protocol.datagram_received = datagram_received
        protocol._netcode_impaired_path = self

    def __repr__(self) -> str:
        out, inc = self.outgoing.config, self.incoming.config
        if out == inc:
            return f"<ImpairedPath {out}>"
        return f"<ImpairedPath outgoing={out} incoming={inc}>"
