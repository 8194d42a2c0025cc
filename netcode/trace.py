"""Traces: what connections did, recorded as JSON lines, and read back.

Theory of operation
-------------------
A :class:`TraceWriter` appends one JSON object per record to a file::

    {"t":12.345678,"kind":"send","conn":"alice","seq":812,"bytes":640,"frames":[[17,600]]}

``t`` is seconds since the writer's origin (by default the monotonic clock when it opened,
which is also what asyncio's ``loop.time()`` reads), ``kind`` names the record and ``conn``
the connection it belongs to ("" for records of the process as a whole). The first line is a
``"header"`` record with the format version, the netcode version, the wall-clock time the
trace started and the clock used.

Recording is cheap so that a game server can trace thousands of records a second: ``record``
appends a tuple to a list; every ``flush_interval`` seconds (of the records' own ``now``), or
when ``max_buffered`` records are waiting, the batch is serialised with the C JSON encoder
and written in one call. Memory is bounded by ``max_buffered``. A writer never raises from
the tracing path: if the file cannot be written it logs the error once and stops recording.

Record kinds (fields beyond ``t``, ``kind`` and ``conn``):

- written by :class:`~netcode.core.Endpoint` (see :data:`netcode.core.endpoint.Tracer`):
  ``"send"``, ``"recv"``, ``"ack"``, ``"lost"``, ``"rtt"``;
- written by the rooms layer: ``"open"`` (``room``, ``pid``) and ``"close"`` when a
  connection starts and ends; ``"topic_send"`` / ``"topic_recv"`` (``topic``, ``bytes`` of
  application payload, ``lossy``) for data packets, so bandwidth can be told per topic;
- written by a game host: ``"tick"`` (``tick``, ``duration_ms``, and anything else useful).

A :class:`TraceReader` reads a trace back, tolerating a last line cut short (a process that
died mid-write), and rebases the ``t`` of traces appended after a restart onto the first
header's origin.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from json import encoder as _json_encoder
from typing import IO, Any

from netcode.core.endpoint import Tracer

__all__ = [
    "TRACE_FORMAT",
    "TraceFormatError",
    "TraceReader",
    "TraceSink",
    "TraceTarget",
    "TraceWriter",
    "read_trace",
]

logger = logging.getLogger(__name__)

#: Version of the record layout; bumped when a field changes meaning.
TRACE_FORMAT = 1


def _json_default(value: Any) -> Any:
    """Encode what JSON cannot: numpy scalars and arrays, enums, anything else as str."""
    item = getattr(value, "tolist", None) or getattr(value, "item", None)
    if item is not None:
        return item()
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _make_encoder() -> Callable[[Any], str]:
    """The fastest compact JSON encoder available (the C one, called without its wrapper)."""
    c_make_encoder = getattr(_json_encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - only without CPython's _json
        return json.JSONEncoder(separators=(",", ":"), default=_json_default).encode
    make = c_make_encoder(
        None,  # no circular-reference markers: records are plain trees
        _json_default,
        _json_encoder.encode_basestring_ascii,
        None,  # no indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
    return lambda value: "".join(make(value, 0))


class TraceWriter:
    """Writes trace records to a JSON-lines file. See the module docstring.

    ::

        with TraceWriter("server.trace.jsonl") as trace:
            room = RoomServer(key, secret, trace=trace)
            ...
            trace.record("tick", trace.now(), {"tick": n, "duration_ms": 3.1})

    ``clock`` is the clock the records' ``now`` come from (asyncio's ``loop.time()`` is
    ``time.monotonic``); ``origin`` is the reading that becomes ``t = 0`` (default: the
    clock when the writer opens). ``append`` adds to an existing trace, with a new header.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 1.0,
        max_buffered: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        origin: float | None = None,
        append: bool = False,
    ) -> None:
        if flush_interval <= 0 or max_buffered < 1:
            raise ValueError("flush_interval must be > 0 and max_buffered >= 1")
        self.path = os.fspath(path)
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.clock = clock
        self.origin = clock() if origin is None else origin
        #: records accepted since the writer opened
        self.records = 0
        self._file: IO[str] | None = open(  # noqa: SIM115 - closed by close()
            self.path, "a" if append else "w", encoding="utf-8"
        )
        self._pending: list[tuple[float, str, str, Mapping[str, Any] | None]] = []
        self._flush_at = self.origin + flush_interval
        self._prefixes: dict[tuple[str, str], str] = {}
        self._encode = _make_encoder()
        clock_name = getattr(clock, "__qualname__", type(clock).__name__)
        module = getattr(clock, "__module__", None)
        self.record(
            "header",
            self.origin,
            {
                "format": TRACE_FORMAT,
                "netcode_version": _netcode_version(),
                "wall_time": time.time(),
                "wall_time_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "clock": f"{module}.{clock_name}" if module else clock_name,
                "origin": self.origin,
                "pid": os.getpid(),
            },
        )
        self.flush()
        self.records = 0  # the header does not count

    # ------------------------------------------------------------------ recording

    def now(self) -> float:
        """The writer's clock, for callers that have no ``now`` of their own."""
        return self.clock()

    def record(
        self, kind: str, now: float, fields: Mapping[str, Any] | None = None, *, conn: str = ""
    ) -> None:
        """Record one event at ``now`` (seconds on the writer's clock).

        ``fields`` is kept until the next flush: pass a fresh mapping, not one you will
        change. Its keys must not be ``t``, ``kind`` or ``conn``. Ignored once closed.
        """
        pending = self._pending
        if self._file is None:
            return
        pending.append((now, kind, conn, fields))
        self.records += 1
        if len(pending) >= self.max_buffered or now >= self._flush_at:
            self.flush(now)

    def tracer(self, conn: str) -> Tracer:
        """A tracer for :class:`~netcode.core.Endpoint` that tags its records ``conn``."""
        pending = self._pending  # flush clears this list in place, never replaces it

        def trace(kind: str, now: float, fields: dict[str, Any]) -> None:
            if self._file is None:
                return
            pending.append((now, kind, conn, fields))
            self.records += 1
            if len(pending) >= self.max_buffered or now >= self._flush_at:
                self.flush(now)

        return trace

    # ------------------------------------------------------------------ output

    def flush(self, now: float | None = None) -> None:
        """Write the buffered records to the file now."""
        file = self._file
        pending = self._pending
        if file is None:
            pending.clear()
            return
        self._flush_at = (self.clock() if now is None else now) + self.flush_interval
        if not pending:
            return
        try:
            file.write(self._serialise(pending))
            file.flush()
        except (OSError, ValueError) as exc:
            logger.error("trace %s: cannot write (%s); tracing stops", self.path, exc)
            self._file = None
            try:
                file.close()
            except OSError:
                pass
        finally:
            pending.clear()

    def _serialise(self, records: list[tuple[float, str, str, Mapping[str, Any] | None]]) -> str:
        encode = self._encode
        prefixes = self._prefixes
        origin = self.origin
        lines: list[str] = []
        append = lines.append
        for now, kind, conn, fields in records:
            prefix = prefixes.get((kind, conn))
            if prefix is None:
                prefix = prefixes[(kind, conn)] = f',"kind":{encode(kind)},"conn":{encode(conn)}'
            t = round(now - origin, 6)
            if fields:
                append(f'{{"t":{t!r}{prefix},{encode(fields)[1:]}\n')
            else:
                append(f'{{"t":{t!r}{prefix}}}\n')
        return "".join(lines)

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self) -> None:
        """Flush and close the file. Further records are ignored."""
        if self._file is None:
            return
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.records} records"
        return f"TraceWriter({self.path!r}, {state})"


#: What ``Room(trace=...)`` and ``RoomServer(trace=...)`` accept.
TraceTarget = str | os.PathLike[str] | TraceWriter | None


def _netcode_version() -> str:
    from netcode import __version__

    return __version__


class TraceSink:
    """The ``trace=`` argument of Room and RoomServer, opened when they connect.

    Given a :class:`TraceWriter`, it uses it and leaves closing it to its owner. Given a
    path, it opens a writer at each ``open()`` (the first truncates the file, later ones
    append to it) and closes it at ``close()``.
    """

    def __init__(self, target: TraceTarget) -> None:
        self._target = target
        self._opened_before = False
        self.writer: TraceWriter | None = target if isinstance(target, TraceWriter) else None

    def open(self) -> TraceWriter | None:
        """The writer to record to (None when not tracing)."""
        target = self._target
        if target is None or isinstance(target, TraceWriter):
            return self.writer
        if self.writer is None or self.writer.closed:
            self.writer = TraceWriter(target, append=self._opened_before)
            self._opened_before = True
        return self.writer

    def close(self) -> None:
        """Close a writer this sink opened; flush one it was given."""
        writer = self.writer
        if writer is None:
            return
        if isinstance(self._target, TraceWriter):
            writer.flush()
        else:
            writer.close()


# ---------------------------------------------------------------------- reading


class TraceFormatError(ValueError):
    """The file is not a netcode trace, or a line in it (other than the last) is not JSON."""


class TraceReader:
    """Reads a trace written by :class:`TraceWriter`, record by record.

    ::

        reader = TraceReader("server.trace.jsonl")
        print(reader.header["netcode_version"])
        for record in reader:
            ...
        if reader.truncated:
            print("the last line was cut short")

    Raises FileNotFoundError for a missing file and :class:`TraceFormatError` when the first
    line is not a trace header or a complete line is not a JSON object. A last line without
    its newline that does not parse (a writer killed mid-write) is skipped and sets
    ``truncated``. Records of traces appended later (after a new header) have their ``t``
    moved onto the first header's origin, when both used the same clock.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        #: size of the file when opened, and bytes consumed so far (for progress bars)
        self.size = os.fstat(self._file.fileno()).st_size
        self.bytes_read = 0
        #: the last line was incomplete and was skipped
        self.truncated = False
        self._lineno = 0
        self._offset = 0.0
        try:
            first = self._next_line()
        except TraceFormatError:
            first = None
        if first is None or first.get("kind") != "header":
            self.close()
            raise TraceFormatError(f"{self.path}: not a netcode trace (no header record)")
        #: the first header record
        self.header: dict[str, Any] = first
        self.headers = [first]

    def _next_line(self) -> dict[str, Any] | None:
        """The next record as parsed, or None at the end of the file."""
        while True:
            raw = self._file.readline()
            if not raw:
                return None
            self.bytes_read += len(raw)
            self._lineno += 1
            complete = raw.endswith(b"\n")
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as exc:
                if not complete:
                    self.truncated = True
                    return None
                raise TraceFormatError(f"{self.path}:{self._lineno}: not JSON ({exc})") from None
            if not isinstance(record, dict) or "kind" not in record or "t" not in record:
                if not complete:
                    self.truncated = True
                    return None
                raise TraceFormatError(
                    f"{self.path}:{self._lineno}: not a trace record (needs 't' and 'kind')"
                )
            return record

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every record after the first header, in file order."""
        first_origin = self.header.get("origin")
        first_clock = self.header.get("clock")
        while (record := self._next_line()) is not None:
            if record["kind"] == "header":
                self.headers.append(record)
                origin = record.get("origin")
                same_clock = record.get("clock") == first_clock
                if same_clock and isinstance(origin, float) and isinstance(first_origin, float):
                    self._offset = origin - first_origin
                else:
                    self._offset = 0.0
                continue
            if self._offset:
                record["t"] += self._offset
            yield record
        self.close()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_trace(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and every other record of a trace (see :class:`TraceReader`)."""
    with TraceReader(path) as reader:
        return reader.header, list(reader)
