"""``netcode-trace``: summarise a netcode trace and plot it.

Reads a trace written by :class:`netcode.trace.TraceWriter` (``Room(trace=...)``,
``RoomServer(trace=...)``) and reports, per connection and in total: datagrams and bytes
sent and received, bytes per frame type and per topic, loss, round-trip time percentiles,
snapshot sizes (when SNAPSHOT frames appear) and tick durations (when ``tick`` records
appear). ``--json`` prints the same as one JSON object; ``--plots DIR`` renders PNGs:

- ``bandwidth_topics.png``: kbit/s over time per topic, sent and received;
- ``bandwidth_frames.png``: kbit/s over time per frame type (and datagram headers);
- ``rtt_loss.png``: smoothed round-trip time and loss over time per connection;
- ``snapshot_sizes.png``: histogram of SNAPSHOT frame sizes against the datagram limit;
- ``tick_durations.png``: the game host's tick durations over time.

Byte counts: datagram ``bytes`` are whole datagrams; per frame type they are frame payloads
(the rest, headers and frame headers, shows as ``(headers)``); per topic they are
application payloads of data packets, on both the lossy and the reliable channel.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from netcode.trace import TraceFormatError, TraceReader
from netcode.wire import MAX_DATAGRAM_BYTES, FrameType

__all__ = ["TraceSummary", "main", "render_plots", "snapshot_size_bins", "summarise_file"]

#: Resolution of the time series kept while reading (seconds); plots merge bins further.
FINE_BIN_S = 0.1
#: Plots show at most about this many points along the time axis.
MAX_PLOT_BINS = 300
#: Beyond this many connections, plots show their median and spread instead of one line each.
MAX_PLOTTED_CONNECTIONS = 8
#: Files bigger than this get a progress bar (on a terminal).
PROGRESS_MIN_BYTES = 4 * 1024 * 1024

_SNAPSHOT = int(FrameType.SNAPSHOT)
_HEADERS = "(headers)"


def frame_type_name(frame_type: int) -> str:
    try:
        return FrameType(frame_type).name
    except ValueError:
        return str(frame_type)


def _percentiles(values: Iterable[float]) -> dict[str, Any] | None:
    import numpy as np

    data = np.fromiter(values, dtype=float)
    if data.size == 0:
        return None
    p50, p99 = np.percentile(data, [50, 99])
    return {
        "count": int(data.size),
        "p50": float(p50),
        "p99": float(p99),
        "max": float(data.max()),
        "mean": float(data.mean()),
    }


class _Connection:
    """Everything counted for one ``conn``."""

    def __init__(self) -> None:
        self.datagrams_out = 0
        self.bytes_out = 0
        self.ack_only_out = 0
        self.datagrams_in = 0
        self.bytes_in = 0
        self.accepted = 0
        self.accepted_bytes_in = 0
        self.dropped: Counter[str] = Counter()
        self.acked = 0
        self.lost = 0
        self.lost_by_reason: Counter[str] = Counter()
        self.frames_out: Counter[int] = Counter()
        self.frame_bytes_out: Counter[int] = Counter()
        self.frames_in: Counter[int] = Counter()
        self.frame_bytes_in: Counter[int] = Counter()
        self.topic_packets_out: Counter[str] = Counter()
        self.topic_bytes_out: Counter[str] = Counter()
        self.topic_packets_in: Counter[str] = Counter()
        self.topic_bytes_in: Counter[str] = Counter()
        self.rtt_samples_ms = array("d")
        self.rtt_smoothed_ms: float | None = None
        self.rtt_variation_ms: float | None = None
        self.first_t: float | None = None
        self.last_t = 0.0
        self.room = ""
        self.pid: int | None = None
        # time series, by fine bin
        self.acked_bins: Counter[int] = Counter()
        self.lost_bins: Counter[int] = Counter()
        self.rtt_bins: dict[int, float] = {}  # last smoothed RTT in the bin


class TraceSummary:
    """Accumulates a trace record by record; ``result()`` gives the summary as plain data."""

    def __init__(self) -> None:
        self.connections: dict[str, _Connection] = {}
        self.records = 0
        self.first_t: float | None = None
        self.last_t = 0.0
        self.ticks = 0
        self.tick_t = array("d")
        self.tick_ms = array("d")
        self.tick_budget_ms: float | None = None
        self.snapshot_out = array("d")
        self.snapshot_in = array("d")
        self.other_kinds: Counter[str] = Counter()
        # time series: (series name) -> fine bin -> bytes
        self.topic_out_bins: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.topic_in_bins: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.frame_out_bins: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.frame_in_bins: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self._handlers = {
            "send": self._send,
            "recv": self._recv,
            "ack": self._ack,
            "lost": self._lost,
            "rtt": self._rtt,
            "topic_send": self._topic_send,
            "topic_recv": self._topic_recv,
            "tick": self._tick,
            "open": self._open,
        }

    def add(self, record: dict[str, Any]) -> None:
        """Count one record (any kind; unknown kinds are only tallied)."""
        self.records += 1
        t = float(record["t"])
        if self.first_t is None:
            self.first_t = t
        if t > self.last_t:
            self.last_t = t
        kind = record["kind"]
        handler = self._handlers.get(kind)
        if handler is None:
            self.other_kinds[kind] += 1
            return
        handler(t, record)

    def _conn(self, record: dict[str, Any], t: float) -> _Connection:
        name = str(record.get("conn", ""))
        conn = self.connections.get(name)
        if conn is None:
            conn = self.connections[name] = _Connection()
        if conn.first_t is None:
            conn.first_t = t
        conn.last_t = t
        return conn

    def _send(self, t: float, record: dict[str, Any]) -> None:
        conn = self._conn(record, t)
        size = int(record["bytes"])
        conn.datagrams_out += 1
        conn.bytes_out += size
        frames = record.get("frames") or []
        if not frames:
            conn.ack_only_out += 1
        b = int(t / FINE_BIN_S)
        payload = 0
        for frame_type, nbytes in frames:
            conn.frames_out[frame_type] += 1
            conn.frame_bytes_out[frame_type] += nbytes
            self.frame_out_bins[frame_type_name(frame_type)][b] += nbytes
            payload += nbytes
            if frame_type == _SNAPSHOT:
                self.snapshot_out.append(nbytes)
        self.frame_out_bins[_HEADERS][b] += size - payload

    def _recv(self, t: float, record: dict[str, Any]) -> None:
        conn = self._conn(record, t)
        size = int(record["bytes"])
        conn.datagrams_in += 1
        conn.bytes_in += size
        result = record.get("result", "accepted")
        if result != "accepted":
            conn.dropped[result] += 1
            return
        conn.accepted += 1
        conn.accepted_bytes_in += size
        b = int(t / FINE_BIN_S)
        payload = 0
        for frame_type, nbytes in record.get("frames") or []:
            conn.frames_in[frame_type] += 1
            conn.frame_bytes_in[frame_type] += nbytes
            self.frame_in_bins[frame_type_name(frame_type)][b] += nbytes
            payload += nbytes
            if frame_type == _SNAPSHOT:
                self.snapshot_in.append(nbytes)
        self.frame_in_bins[_HEADERS][b] += size - payload

    def _ack(self, t: float, record: dict[str, Any]) -> None:
        conn = self._conn(record, t)
        conn.acked += 1
        conn.acked_bins[int(t / FINE_BIN_S)] += 1
        rtt = record.get("rtt_ms")
        if rtt is not None:
            conn.rtt_samples_ms.append(rtt)

    def _lost(self, t: float, record: dict[str, Any]) -> None:
        conn = self._conn(record, t)
        conn.lost += 1
        conn.lost_by_reason[str(record.get("reason", ""))] += 1
        conn.lost_bins[int(t / FINE_BIN_S)] += 1

    def _rtt(self, t: float, record: dict[str, Any]) -> None:
        conn = self._conn(record, t)
        conn.rtt_smoothed_ms = float(record["smoothed_ms"])
        conn.rtt_variation_ms = float(record["variation_ms"])
        conn.rtt_bins[int(t / FINE_BIN_S)] = conn.rtt_smoothed_ms

    def _topic_send(self, t: float, record: dict[str, Any]) -> None:
        conn = self._conn(record, t)
        topic = str(record.get("topic", ""))
        nbytes = int(record.get("bytes", 0))
        conn.topic_packets_out[topic] += 1
        conn.topic_bytes_out[topic] += nbytes
        self.topic_out_bins[topic][int(t / FINE_BIN_S)] += nbytes

    def _topic_recv(self, t: float, record: dict[str, Any]) -> None:
        conn = self._conn(record, t)
        topic = str(record.get("topic", ""))
        nbytes = int(record.get("bytes", 0))
        conn.topic_packets_in[topic] += 1
        conn.topic_bytes_in[topic] += nbytes
        self.topic_in_bins[topic][int(t / FINE_BIN_S)] += nbytes

    def _tick(self, t: float, record: dict[str, Any]) -> None:
        self.ticks += 1
        duration = record.get("duration_ms")
        if duration is not None:
            self.tick_t.append(t)
            self.tick_ms.append(float(duration))
        budget = record.get("budget_ms")
        if budget is not None:
            self.tick_budget_ms = float(budget)

    def _open(self, t: float, record: dict[str, Any]) -> None:
        conn = self._conn(record, t)
        conn.room = str(record.get("room", ""))
        pid = record.get("pid")
        conn.pid = int(pid) if pid is not None else None

    # ------------------------------------------------------------------ results

    @property
    def duration_s(self) -> float:
        return 0.0 if self.first_t is None else self.last_t - self.first_t

    def result(self) -> dict[str, Any]:
        """The summary as one JSON-serialisable dict."""
        connections = {name: self._connection_result(c) for name, c in self.connections.items()}
        total = _Connection()
        for c in self.connections.values():
            for attribute in (
                "datagrams_out",
                "bytes_out",
                "ack_only_out",
                "datagrams_in",
                "bytes_in",
                "accepted",
                "accepted_bytes_in",
                "acked",
                "lost",
            ):
                setattr(total, attribute, getattr(total, attribute) + getattr(c, attribute))
            for attribute in (
                "dropped",
                "lost_by_reason",
                "frames_out",
                "frame_bytes_out",
                "frames_in",
                "frame_bytes_in",
                "topic_packets_out",
                "topic_bytes_out",
                "topic_packets_in",
                "topic_bytes_in",
            ):
                getattr(total, attribute).update(getattr(c, attribute))
            total.rtt_samples_ms.extend(c.rtt_samples_ms)
        totals = self._connection_result(total)
        for key in ("rtt_smoothed_ms", "rtt_variation_ms", "room", "pid", "first_t", "last_t"):
            totals.pop(key, None)
        snapshot_sizes = self.snapshot_out if self.snapshot_out else self.snapshot_in
        snapshots = _percentiles(snapshot_sizes)
        if snapshots is not None:
            snapshots["direction"] = "sent" if self.snapshot_out else "received"
        ticks = _percentiles(self.tick_ms)
        if ticks is not None:
            ticks["ticks"] = self.ticks
            ticks["budget_ms"] = self.tick_budget_ms
        return {
            "duration_s": self.duration_s,
            "records": self.records,
            "connections": connections,
            "totals": totals,
            "snapshot_bytes": snapshots,
            "tick_ms": ticks,
            "other_records": dict(self.other_kinds),
        }

    def _connection_result(self, c: _Connection) -> dict[str, Any]:
        reported = c.acked + c.lost
        frame_types = sorted(set(c.frames_out) | set(c.frames_in))
        topics = sorted(set(c.topic_packets_out) | set(c.topic_packets_in))
        return {
            "room": c.room,
            "pid": c.pid,
            "first_t": c.first_t,
            "last_t": c.last_t,
            "datagrams_out": c.datagrams_out,
            "bytes_out": c.bytes_out,
            "ack_only_out": c.ack_only_out,
            "datagrams_in": c.datagrams_in,
            "bytes_in": c.bytes_in,
            "datagrams_accepted": c.accepted,
            "bytes_accepted": c.accepted_bytes_in,
            "dropped": dict(c.dropped),
            "acked": c.acked,
            "lost": c.lost,
            "lost_by_reason": dict(c.lost_by_reason),
            "loss": c.lost / reported if reported else 0.0,
            "rtt_ms": _percentiles(c.rtt_samples_ms),
            "rtt_smoothed_ms": c.rtt_smoothed_ms,
            "rtt_variation_ms": c.rtt_variation_ms,
            "frame_types": {
                frame_type_name(t): {
                    "frames_out": c.frames_out[t],
                    "bytes_out": c.frame_bytes_out[t],
                    "frames_in": c.frames_in[t],
                    "bytes_in": c.frame_bytes_in[t],
                }
                for t in frame_types
            },
            "topics": {
                topic: {
                    "packets_out": c.topic_packets_out[topic],
                    "bytes_out": c.topic_bytes_out[topic],
                    "packets_in": c.topic_packets_in[topic],
                    "bytes_in": c.topic_bytes_in[topic],
                }
                for topic in topics
            },
        }


def summarise_file(path: str, *, progress: bool = False) -> tuple[dict[str, Any], TraceSummary]:
    """Read a trace; returns the JSON summary and the accumulator (for plots).

    Raises FileNotFoundError, IsADirectoryError and TraceFormatError (see TraceReader).
    """
    summary = TraceSummary()
    with TraceReader(path) as reader:
        if progress:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

            columns = (
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task(f"reading {os.path.basename(path)}", total=reader.size)
                for i, record in enumerate(reader):
                    summary.add(record)
                    if i % 20_000 == 0:
                        bar.update(task, completed=reader.bytes_read)
        else:
            for record in reader:
                summary.add(record)
        header = reader.header
        result: dict[str, Any] = {
            "file": path,
            "netcode_version": header.get("netcode_version"),
            "started": header.get("wall_time_iso"),
            "clock": header.get("clock"),
            "truncated": reader.truncated,
            "segments": len(reader.headers),
        }
    result.update(summary.result())
    return result, summary


# ---------------------------------------------------------------------- table


def _kb(nbytes: int) -> str:
    return f"{nbytes / 1000:,.1f}"


def _ms(stats: dict[str, Any] | None, key: str) -> str:
    return "-" if stats is None else f"{stats[key]:.1f}"


def print_table(result: dict[str, Any]) -> None:
    """Print the summary with rich."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    duration = result["duration_s"]
    console.print(
        f"[bold]{result['file']}[/]: netcode {result['netcode_version']}, started "
        f"{result['started']}, {duration:.2f} s, {result['records']:,} records, "
        f"{len(result['connections'])} connection(s)"
        + (", [yellow]last line truncated[/]" if result["truncated"] else "")
    )
    kbps = (lambda nbytes: nbytes * 8 / duration / 1000) if duration > 0 else (lambda _: 0.0)

    table = Table(title="connections")
    table.add_column("conn")
    for column in (
        "dgrams out",
        "kB out",
        "kbit/s out",
        "dgrams in",
        "kB in",
        "kbit/s in",
        "dropped in",
        "acked",
        "lost",
        "loss %",
        "RTT p50 ms",
        "RTT p99 ms",
    ):
        table.add_column(column, justify="right")
    rows = [*result["connections"].items(), ("[bold]total[/]", result["totals"])]
    for name, c in rows:
        table.add_row(
            name or "(none)",
            f"{c['datagrams_out']:,}",
            _kb(c["bytes_out"]),
            f"{kbps(c['bytes_out']):,.1f}",
            f"{c['datagrams_in']:,}",
            _kb(c["bytes_in"]),
            f"{kbps(c['bytes_in']):,.1f}",
            f"{sum(c['dropped'].values()):,}",
            f"{c['acked']:,}",
            f"{c['lost']:,}",
            f"{c['loss'] * 100:.2f}",
            _ms(c["rtt_ms"], "p50"),
            _ms(c["rtt_ms"], "p99"),
        )
    console.print(table)

    totals = result["totals"]
    if totals["frame_types"]:
        table = Table(title="frame types (payload bytes, all connections)")
        table.add_column("frame type")
        for column in ("frames out", "kB out", "frames in", "kB in"):
            table.add_column(column, justify="right")
        payload_out = payload_in = 0
        for name, f in totals["frame_types"].items():
            payload_out += f["bytes_out"]
            payload_in += f["bytes_in"]
            table.add_row(
                name,
                f"{f['frames_out']:,}",
                _kb(f["bytes_out"]),
                f"{f['frames_in']:,}",
                _kb(f["bytes_in"]),
            )
        table.add_row(
            _HEADERS,
            "",
            _kb(totals["bytes_out"] - payload_out),
            "",
            _kb(totals["bytes_accepted"] - payload_in),
        )
        console.print(table)
    if totals["topics"]:
        table = Table(title="topics (application payload bytes, all connections)")
        table.add_column("topic")
        for column in ("packets out", "kB out", "kbit/s out", "packets in", "kB in", "kbit/s in"):
            table.add_column(column, justify="right")
        for name, f in totals["topics"].items():
            table.add_row(
                name or "(no topic)",
                f"{f['packets_out']:,}",
                _kb(f["bytes_out"]),
                f"{kbps(f['bytes_out']):,.1f}",
                f"{f['packets_in']:,}",
                _kb(f["bytes_in"]),
                f"{kbps(f['bytes_in']):,.1f}",
            )
        console.print(table)
    snapshots = result["snapshot_bytes"]
    if snapshots is not None:
        console.print(
            f"snapshot frames ({snapshots['direction']}): {snapshots['count']:,}, "
            f"p50 {snapshots['p50']:.0f} B, p99 {snapshots['p99']:.0f} B, "
            f"max {snapshots['max']:.0f} B (datagram limit {MAX_DATAGRAM_BYTES} B)"
        )
    ticks = result["tick_ms"]
    if ticks is not None:
        console.print(
            f"ticks: {ticks['ticks']:,}, duration p50 {ticks['p50']:.2f} ms, "
            f"p99 {ticks['p99']:.2f} ms, max {ticks['max']:.2f} ms"
        )


# ---------------------------------------------------------------------- plots


#: Plotted bin widths, in fine bins: 0.1 s to 10 min.
_NICE_BINS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 600, 1200, 3000, 6000)


def _plot_bin(duration: float) -> int:
    """How many fine bins make one plotted bin: a round width, about 20 to 300 per plot."""
    want = max(duration / MAX_PLOT_BINS, min(1.0, duration / 20)) / FINE_BIN_S
    for n in _NICE_BINS:
        if n >= want - 1e-9:
            return n
    return math.ceil(want)


def _series(
    bins: Counter[int], t0: float, t1: float, merge: int
) -> tuple[list[float], list[float], list[float]]:
    """Sum the fine bins between ``t0`` and ``t1`` (seconds) in groups of ``merge``.

    Returns each group's centre, sum and the seconds of the trace it covers; groups at the
    edges that cover less than half their width are left out (their rate would mislead).
    """
    centres, sums, covered = [], [], []
    width = merge * FINE_BIN_S
    first = int(t0 / width) * merge
    for start in range(first, int(t1 / FINE_BIN_S) + 1, merge):
        begin, end = start * FINE_BIN_S, (start + merge) * FINE_BIN_S
        seconds = min(end, t1) - max(begin, t0)
        if seconds < width / 2:
            continue
        centres.append((begin + end) / 2)
        sums.append(float(sum(bins.get(b, 0) for b in range(start, start + merge))))
        covered.append(seconds)
    return centres, sums, covered


def snapshot_size_bins(sizes: list[float], max_bins: int = 60) -> tuple[list[float], bool]:
    """Histogram bin edges fitted to the sizes' range, and whether the datagram limit is
    on that scale (it is drawn when within half again of the largest size).

    Fitting the range to the data keeps the bars readable: snapshot frames are usually a
    small fraction of the limit, and an axis running to the limit would squeeze them all
    into its left edge.
    """
    lo, hi = min(sizes), max(sizes)
    on_scale = 1.5 * hi >= MAX_DATAGRAM_BYTES
    right = max(hi, MAX_DATAGRAM_BYTES) if on_scale else hi
    span = max(right - lo, 1.0)
    bins = max(1, min(max_bins, max(10, int(len(sizes) ** 0.5)), math.ceil(span)))
    left, right = lo - 0.02 * span, right + 0.02 * span
    width = (right - left) / bins
    return [left + i * width for i in range(bins + 1)], on_scale


def render_plots(summary: TraceSummary, directory: str, *, title: str = "") -> list[str]:
    """Write the PNGs described in the module docstring to ``directory``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    written: list[str] = []
    first, last = summary.first_t or 0.0, summary.last_t
    merge = _plot_bin(summary.duration_s)
    bin_s = merge * FINE_BIN_S
    suffix = f" ({title})" if title else ""

    def save(fig: Any, name: str) -> None:
        path = os.path.join(directory, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    def kbps_panels(
        name: str, heading: str, series: list[tuple[str, defaultdict[str, Counter[int]]]]
    ) -> None:
        panels = [(label, data) for label, data in series if data]
        if not panels:
            return
        fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.4 * len(panels)), squeeze=False)
        for ax, (label, data) in zip(axes[:, 0], panels, strict=True):
            ranked = sorted(data.items(), key=lambda item: -sum(item[1].values()))
            shown, rest = ranked[:10], ranked[10:]
            if rest:
                other: Counter[int] = Counter()
                for _, bins in rest:
                    other.update(bins)
                shown.append((f"{len(rest)} others", other))
            for key, bins in shown:
                times, sums, seconds = _series(bins, first, last, merge)
                rates = [b * 8 / 1000 / s for b, s in zip(sums, seconds, strict=True)]
                ax.plot(times, rates, label=key or "(no topic)", marker=".", markersize=3)
            ax.set_title(f"{label}{suffix}")
            ax.set_xlabel("time (s)")
            ax.set_ylabel("kbit/s")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        fig.suptitle(heading + f", {bin_s:g} s bins")
        fig.tight_layout()
        save(fig, name)

    kbps_panels(
        "bandwidth_topics.png",
        "Bandwidth per topic (application payload)",
        [("sent", summary.topic_out_bins), ("received", summary.topic_in_bins)],
    )
    kbps_panels(
        "bandwidth_frames.png",
        "Bandwidth per frame type (frame payload; headers apart)",
        [("sent", summary.frame_out_bins), ("received", summary.frame_in_bins)],
    )
    _plot_rtt_loss(plt, summary, first, last, merge, suffix, save)
    sizes = summary.snapshot_out if summary.snapshot_out else summary.snapshot_in
    if sizes:
        import numpy as np

        data = np.asarray(sizes)
        fig, ax = plt.subplots(figsize=(11, 4))
        edges, limit_on_scale = snapshot_size_bins(list(sizes))
        ax.hist(data, bins=edges, color="tab:blue", alpha=0.8)
        ax.set_xlim(edges[0], edges[-1])
        p50, p99 = np.percentile(data, [50, 99])
        ax.axvline(p50, color="tab:green", linestyle="--", label=f"p50 {p50:.0f} B")
        ax.axvline(p99, color="tab:orange", linestyle="--", label=f"p99 {p99:.0f} B")
        limit = f"datagram limit {MAX_DATAGRAM_BYTES} B"
        if limit_on_scale:
            ax.axvline(MAX_DATAGRAM_BYTES, color="tab:red", label=limit)
        else:  # far off to the right: say so rather than squeeze the data to the left
            share = float(data.max()) / MAX_DATAGRAM_BYTES
            ax.plot([], [], color="tab:red", label=f"{limit} (off scale; max is {share:.0%})")
        direction = "sent" if summary.snapshot_out else "received"
        ax.set_title(f"Snapshot frame sizes ({direction}, {data.size:,} frames){suffix}")
        ax.set_xlabel("frame payload (bytes)")
        ax.set_ylabel("frames")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        fig.tight_layout()
        save(fig, "snapshot_sizes.png")
    if summary.tick_ms:
        import numpy as np

        durations = np.asarray(summary.tick_ms)
        fig, ax = plt.subplots(figsize=(11, 4))
        ax.plot(summary.tick_t, durations, linewidth=0.8, label="tick duration")
        p50, p99 = np.percentile(durations, [50, 99])
        ax.axhline(p50, color="tab:green", linestyle="--", label=f"p50 {p50:.2f} ms")
        ax.axhline(p99, color="tab:orange", linestyle="--", label=f"p99 {p99:.2f} ms")
        if summary.tick_budget_ms is not None:
            ax.axhline(
                summary.tick_budget_ms,
                color="tab:red",
                label=f"budget {summary.tick_budget_ms:.1f} ms",
            )
        ax.set_title(f"Server tick duration ({durations.size:,} ticks){suffix}")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("duration (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        fig.tight_layout()
        save(fig, "tick_durations.png")
    return written


def _plot_rtt_loss(
    plt: Any, summary: TraceSummary, first: float, last: float, merge: int, suffix: str, save: Any
) -> None:
    import numpy as np

    conns = [
        (name or "(none)", c)
        for name, c in summary.connections.items()
        if c.rtt_bins or c.acked or c.lost
    ]
    if not conns:
        return
    bin_s = merge * FINE_BIN_S
    fig, (ax_rtt, ax_loss) = plt.subplots(2, 1, figsize=(11, 6.4), sharex=True)
    loss_series: list[tuple[str, list[float], list[float]]] = []
    for name, c in conns:
        times, acked, _ = _series(c.acked_bins, first, last, merge)
        _, lost, _ = _series(c.lost_bins, first, last, merge)
        loss = [
            100 * lo / (a + lo) if a + lo else math.nan for a, lo in zip(acked, lost, strict=True)
        ]
        loss_series.append((name, times, loss))
    if len(conns) <= MAX_PLOTTED_CONNECTIONS:
        for name, c in conns:
            if c.rtt_bins:
                keys = sorted(c.rtt_bins)
                ax_rtt.plot(
                    [k * FINE_BIN_S for k in keys], [c.rtt_bins[k] for k in keys], label=name
                )
        for name, times, loss in loss_series:
            ax_loss.plot(times, loss, label=name, marker=".", markersize=3)
        ax_rtt.set_title(f"Smoothed round-trip time per connection{suffix}")
        ax_loss.set_title(f"Datagram loss per connection, {bin_s:g} s bins")
    else:
        # Too many lines to read: median and 10th-90th percentile band across connections.
        grid = np.arange(int(first / FINE_BIN_S), int(last / FINE_BIN_S) + 1) * FINE_BIN_S
        rtts = []
        for _, c in conns:
            if c.rtt_bins:
                keys = sorted(c.rtt_bins)
                rtts.append(
                    np.interp(
                        grid,
                        [k * FINE_BIN_S for k in keys],
                        [c.rtt_bins[k] for k in keys],
                        left=np.nan,
                        right=np.nan,
                    )
                )
        if rtts:
            stack = np.vstack(rtts)
            with warnings.catch_warnings():  # all-NaN columns before a connection's first RTT
                warnings.simplefilter("ignore", RuntimeWarning)
                lo, mid, hi = np.nanpercentile(stack, [10, 50, 90], axis=0)
            ax_rtt.fill_between(grid, lo, hi, alpha=0.3, label="10th-90th percentile")
            ax_rtt.plot(grid, mid, label="median")
        times = loss_series[0][1]
        losses = np.array([loss for _, _, loss in loss_series])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, mid, hi = np.nanpercentile(losses, [10, 50, 90], axis=0)
        ax_loss.fill_between(times, lo, hi, alpha=0.3, label="10th-90th percentile")
        ax_loss.plot(times, mid, label="median", marker=".", markersize=3)
        ax_rtt.set_title(f"Smoothed round-trip time, {len(conns)} connections{suffix}")
        ax_loss.set_title(f"Datagram loss, {len(conns)} connections, {bin_s:g} s bins")
    ax_rtt.set_ylabel("RTT (ms)")
    ax_rtt.set_ylim(bottom=0)
    ax_loss.set_ylabel("lost (% of datagrams)")
    ax_loss.set_xlabel("time (s)")
    peak = max((v for _, _, loss in loss_series for v in loss if not math.isnan(v)), default=0.0)
    ax_loss.set_ylim(0, min(100.0, max(5.0, peak * 1.15)))  # typical loss is a few percent
    for ax in (ax_rtt, ax_loss):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    save(fig, "rtt_loss.png")


# ---------------------------------------------------------------------- command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netcode-trace", description="Summarise a netcode trace and plot it."
    )
    parser.add_argument("file", metavar="FILE", help="a trace written by netcode.trace")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots to DIR")
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar while reading (auto: files over 4 MiB, on a terminal)",
    )
    args = parser.parse_args(argv)
    progress = args.progress == "always" or (
        args.progress == "auto"
        and sys.stderr.isatty()
        and os.path.isfile(args.file)
        and os.path.getsize(args.file) >= PROGRESS_MIN_BYTES
    )
    try:
        result, summary = summarise_file(args.file, progress=progress)
    except FileNotFoundError:
        print(f"netcode-trace: error: {args.file}: no such file", file=sys.stderr)
        return 2
    except TraceFormatError as exc:
        print(f"netcode-trace: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"netcode-trace: error: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if result["truncated"]:
        print(
            f"netcode-trace: warning: {args.file}: the last line was incomplete and was skipped",
            file=sys.stderr,
        )
    if args.plots:
        title = os.path.basename(args.file)
        result["plots"] = render_plots(summary, args.plots, title=title)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
        for path in result.get("plots", []):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
