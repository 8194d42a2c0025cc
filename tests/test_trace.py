"""Traces: recording from endpoints and rooms, reading back, and the netcode-trace command."""

from __future__ import annotations

import asyncio
import json
import pathlib
import tomllib
from collections.abc import Callable

import numpy as np
import pytest
from netcode_tools import trace as trace_tool

from netcode.cli import make_token
from netcode.core import Endpoint, EndpointConfig
from netcode.rooms import DataPacket, Room, RoomServer
from netcode.trace import TraceFormatError, TraceReader, TraceSink, TraceWriter, read_trace
from netcode.transport.memory import EndpointPair, LinkConditions, SimulatedLink
from netcode.wire import FrameType

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONDITIONS = LinkConditions(latency_ms=40, jitter_ms=5, loss=0.1, duplicate=0.02, reorder=0.05)


def traced_pair(path: pathlib.Path, *, seed: int = 7) -> tuple[EndpointPair, TraceWriter]:
    """A client and a server endpoint over a lossy simulated link, both traced to ``path``."""
    writer = TraceWriter(path, origin=0.0)
    config = EndpointConfig(ping_interval=0.5)
    client = Endpoint(config, name="client", tracer=writer.tracer("client"))
    server = Endpoint(config, name="server", tracer=writer.tracer("server"))
    return EndpointPair(client, server, SimulatedLink(CONDITIONS, seed=seed)), writer


def play(pair: EndpointPair, seconds: float = 4.0) -> None:
    """A small game: 60 Hz inputs up, 30 Hz snapshots of varying size and some data down."""
    tick = 0
    while pair.now < seconds:
        pair.client.send_frame(FrameType.INPUT, bytes(24))
        if tick % 2 == 0:
            pair.server.send_frame(FrameType.SNAPSHOT, bytes(200 + (tick * 37) % 900))
        if tick % 15 == 0:
            pair.server.send_frame(FrameType.DATA, bytes(50))
        pair.step(1 / 60)
        tick += 1
    pair.roundtrip()


@pytest.fixture
def simulated_trace(tmp_path: pathlib.Path) -> tuple[pathlib.Path, EndpointPair]:
    path = tmp_path / "sim.trace.jsonl"
    pair, writer = traced_pair(path)
    play(pair)
    writer.close()
    return path, pair


def test_summary_counts_match_the_endpoints_counters(
    simulated_trace: tuple[pathlib.Path, EndpointPair],
) -> None:
    path, pair = simulated_trace
    result, _ = trace_tool.summarise_file(str(path))
    assert set(result["connections"]) == {"client", "server"}
    for name, endpoint in (("client", pair.client), ("server", pair.server)):
        c = result["connections"][name]
        counters = endpoint.counters
        assert c["datagrams_out"] == counters.datagrams_sent
        assert c["bytes_out"] == counters.bytes_sent
        assert c["datagrams_in"] == counters.datagrams_received
        assert c["bytes_in"] == counters.bytes_received
        assert c["datagrams_accepted"] == counters.datagrams_accepted
        assert c["acked"] == counters.datagrams_acked
        assert c["lost"] == counters.datagrams_lost
        assert c["dropped"].get("duplicate", 0) == counters.datagrams_duplicate
        assert c["dropped"].get("stale", 0) == counters.datagrams_stale
        for frame_type in FrameType:
            f = c["frame_types"].get(frame_type.name)
            sent = (f or {}).get("frames_out", 0), (f or {}).get("bytes_out", 0)
            received = (f or {}).get("frames_in", 0), (f or {}).get("bytes_in", 0)
            assert sent == (counters.frames_sent[frame_type], counters.frame_bytes_sent[frame_type])
            assert received == (
                counters.frames_received[frame_type],
                counters.frame_bytes_received[frame_type],
            )
        # the loss and RTT figures are the endpoint's own
        assert c["loss"] == endpoint.loss.total
        assert c["rtt_ms"]["count"] == endpoint.rtt.samples
        assert c["rtt_smoothed_ms"] == pytest.approx(endpoint.rtt.smoothed * 1000, rel=1e-12)
        assert c["rtt_variation_ms"] == pytest.approx(endpoint.rtt.variation * 1000, rel=1e-12)
    # the link dropped ~10% each way, duplicated and reordered some: all of it shows
    assert pair.client.counters.datagrams_duplicate > 0
    for name in ("client", "server"):
        assert 0.05 < result["connections"][name]["loss"] < 0.16
        rtt = result["connections"][name]["rtt_ms"]
        assert 70 < rtt["p50"] < 110  # 2 x 40 ms +- jitter, plus up to 17 ms waiting for an ack
        assert rtt["p50"] <= rtt["p99"] <= rtt["max"]
    totals = result["totals"]
    assert totals["datagrams_out"] == (
        pair.client.counters.datagrams_sent + pair.server.counters.datagrams_sent
    )
    # snapshot sizes are the frames the server sent
    snapshots = result["snapshot_bytes"]
    assert snapshots["direction"] == "sent"
    assert snapshots["count"] == pair.server.counters.frames_sent[FrameType.SNAPSHOT]
    assert 200 <= snapshots["p50"] <= snapshots["p99"] <= 1100
    assert result["tick_ms"] is None


def test_rtt_percentiles_are_those_of_the_ack_samples(
    simulated_trace: tuple[pathlib.Path, EndpointPair],
) -> None:
    path, pair = simulated_trace
    _, records = read_trace(path)
    acks = [r for r in records if r["kind"] == "ack" and r["conn"] == "client"]
    samples = [r["rtt_ms"] for r in acks if "rtt_ms" in r]
    assert 0 < len(samples) < len(acks)  # one sample per ack header, not per datagram acked
    result, _ = trace_tool.summarise_file(str(path))
    rtt = result["connections"]["client"]["rtt_ms"]
    assert rtt["p50"] == pytest.approx(float(np.percentile(samples, 50)))
    assert rtt["p99"] == pytest.approx(float(np.percentile(samples, 99)))
    assert min(samples) == pytest.approx(pair.client.rtt.min * 1000)


def test_record_layout_and_header(simulated_trace: tuple[pathlib.Path, EndpointPair]) -> None:
    path, _ = simulated_trace
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["kind"] == "header" and header["t"] == 0.0 and header["format"] == 1
    assert header["netcode_version"] and header["wall_time"] > 1.6e9 and header["clock"]
    send = next(json.loads(line) for line in lines if '"kind":"send"' in line)
    assert list(send)[:3] == ["t", "kind", "conn"]
    assert set(send) == {"t", "kind", "conn", "seq", "bytes", "frames"}
    kinds = {json.loads(line)["kind"] for line in lines}
    assert {"send", "recv", "ack", "lost", "rtt"} <= kinds
    times = [json.loads(line)["t"] for line in lines]
    assert times == sorted(times)  # one writer, scripted time: in order


def test_tracer_off_records_nothing_and_calls_nothing(tmp_path: pathlib.Path) -> None:
    calls: list[str] = []
    config = EndpointConfig(ping_interval=0.5)
    traced = Endpoint(config, name="traced", tracer=lambda kind, now, fields: calls.append(kind))
    quiet = Endpoint(config, name="quiet")
    pair = EndpointPair(traced, quiet, SimulatedLink(CONDITIONS, seed=3))
    play(pair, seconds=1.0)
    # Only the traced side's events arrive; the other endpoint has no tracer to call.
    assert calls and quiet._tracer is None
    assert len([k for k in calls if k == "send"]) == traced.counters.datagrams_sent
    assert len([k for k in calls if k == "recv"]) == traced.counters.datagrams_received
    # A Room or RoomServer without trace= opens nothing.
    sink = TraceSink(None)
    assert sink.open() is None and sink.writer is None
    sink.close()
    assert Room().trace is None
    assert list(tmp_path.iterdir()) == []


def test_writer_buffers_bounded_and_flushes_on_time(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "w.jsonl"
    now = [100.0]
    writer = TraceWriter(path, flush_interval=1.0, max_buffered=50, clock=lambda: now[0])
    header_only = path.read_text()
    for i in range(49):
        writer.record("tick", 100.0 + i * 0.001, {"tick": i, "duration_ms": 1.5})
    assert path.read_text() == header_only  # buffered
    writer.record("tick", 100.05, {"tick": 49, "duration_ms": 1.5})
    assert path.read_text().count("\n") == 51  # the 50th record flushed the batch
    writer.record("tick", 100.1, {"tick": 50})
    assert path.read_text().count("\n") == 51
    writer.record("tick", 101.2, {"tick": 51})  # past the flush interval
    assert path.read_text().count("\n") == 53
    writer.record("note", 101.3, conn="x")
    writer.close()
    writer.record("tick", 102.0, {"tick": 52})  # ignored once closed
    header, records = read_trace(path)
    assert header["origin"] == 100.0
    assert [r["t"] for r in records[-3:]] == [pytest.approx(0.1), pytest.approx(1.2), 1.3]
    assert records[-1] == {"t": 1.3, "kind": "note", "conn": "x"}
    assert writer.records == 53 and writer.closed


def test_writer_encodes_numpy_values_and_survives_a_full_disk(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "n.jsonl"
    with TraceWriter(path) as writer:
        writer.record("tick", writer.now(), {"duration_ms": np.float32(2.5), "n": np.int64(3)})
    _, records = read_trace(path)
    assert records[0]["duration_ms"] == 2.5 and records[0]["n"] == 3
    full = TraceWriter("/dev/full", max_buffered=1) if pathlib.Path("/dev/full").exists() else None
    if full is not None:  # writing fails: the writer logs, stops, and never raises
        assert full.closed
        full.record("tick", 0.0, {"tick": 1})
        full.close()


def test_truncated_last_line_is_tolerated(
    simulated_trace: tuple[pathlib.Path, EndpointPair], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = simulated_trace
    data = path.read_bytes()
    complete = data.count(b"\n") - 1  # records after the header
    path.write_bytes(data[:-25])  # a writer killed mid-line
    with TraceReader(path) as reader:
        records = list(reader)
        assert reader.truncated
    assert len(records) == complete - 1
    assert trace_tool.main([str(path), "--json"]) == 0
    out = capsys.readouterr()
    assert "incomplete" in out.err
    assert json.loads(out.out)["truncated"] is True


def test_missing_and_malformed_files_give_clear_errors(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trace_tool.main([str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    not_a_trace = tmp_path / "data.json"
    not_a_trace.write_text('{"hello": 1}\n')
    assert trace_tool.main([str(not_a_trace)]) == 2
    assert "not a netcode trace" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    with TraceWriter(broken) as writer:
        writer.record("tick", writer.now(), {"tick": 1})
    broken.write_text(broken.read_text() + "garbage\n" + '{"t":1,"kind":"tick"}\n')
    assert trace_tool.main([str(broken)]) == 2
    assert ":3: not JSON" in capsys.readouterr().err
    with pytest.raises(TraceFormatError):
        read_trace(broken)
    assert trace_tool.main([str(tmp_path)]) == 2  # a directory
    assert "error" in capsys.readouterr().err


def test_json_and_table_output(
    simulated_trace: tuple[pathlib.Path, EndpointPair], capsys: pytest.CaptureFixture[str]
) -> None:
    path, pair = simulated_trace
    assert trace_tool.main([str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["duration_s"] == pytest.approx(pair.now, abs=0.05)
    assert result["connections"]["client"]["datagrams_out"] == pair.client.counters.datagrams_sent
    assert result["netcode_version"] and result["truncated"] is False
    assert trace_tool.main([str(path)]) == 0
    table = capsys.readouterr().out
    for text in ("client", "server", "SNAPSHOT", "INPUT", "loss %", "RTT p99 ms", "snapshot"):
        assert text in table


def _check_png(path: pathlib.Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 10_000, path  # axes, lines and text: not an empty canvas


def test_plots(
    tmp_path: pathlib.Path,
    simulated_trace: tuple[pathlib.Path, EndpointPair],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = simulated_trace
    # add a host's ticks and some topic records, as the rooms layer writes them
    with TraceWriter(path, append=True, origin=0.0) as writer:
        for tick in range(120):
            now = tick / 30
            writer.record("tick", now, {"tick": tick, "duration_ms": 2 + (tick % 7) * 0.3})
            for topic, nbytes in (("position", 600), ("chat", 40 * (tick % 3 == 0))):
                if nbytes:
                    writer.record(
                        "topic_send", now, {"topic": topic, "bytes": nbytes}, conn="server"
                    )
    plots = tmp_path / "plots"
    assert trace_tool.main([str(path), "--plots", str(plots), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    names = {pathlib.Path(p).name for p in result["plots"]}
    assert names == {
        "bandwidth_topics.png",
        "bandwidth_frames.png",
        "rtt_loss.png",
        "snapshot_sizes.png",
        "tick_durations.png",
    }
    for name in names:
        _check_png(plots / name)
    assert result["tick_ms"]["ticks"] == 120
    assert result["totals"]["topics"]["position"]["packets_out"] == 120


def test_many_connections_plot_as_median_and_band(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "many.jsonl"
    with TraceWriter(path, origin=0.0) as writer:
        for i in range(12):
            trace = writer.tracer(f"bot{i}")
            for k in range(200):
                now = k * 0.05
                trace("send", now, {"seq": k, "bytes": 100, "frames": [[18, 80]]})
                if k % 10 == i % 10:
                    trace("lost", now + 0.2, {"seq": k, "bytes": 100, "reason": "timeout"})
                else:
                    trace("ack", now + 0.1, {"seq": k, "bytes": 100, "rtt_ms": 50.0 + i})
                    trace("rtt", now + 0.1, {"smoothed_ms": 50.0 + i, "variation_ms": 2.0})
    result, summary = trace_tool.summarise_file(str(path))
    assert result["totals"]["loss"] == pytest.approx(0.1)
    written = trace_tool.render_plots(summary, str(tmp_path / "p"))
    assert {pathlib.Path(p).name for p in written} == {"bandwidth_frames.png", "rtt_loss.png"}
    for p in written:
        _check_png(pathlib.Path(p))


def test_appended_trace_is_rebased_onto_the_first_origin(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.jsonl"
    clock = [10.0]
    with TraceWriter(path, clock=lambda: clock[0]) as writer:
        writer.record("tick", 11.0, {"tick": 1})
    clock[0] = 20.0
    with TraceWriter(path, clock=lambda: clock[0], append=True) as writer:
        writer.record("tick", 21.0, {"tick": 2})
    with TraceReader(path) as reader:
        records = list(reader)
        assert len(reader.headers) == 2
    assert [r["t"] for r in records] == [1.0, 11.0]


def test_console_script_is_declared() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["netcode-trace"] == "netcode_tools.trace:main"


# ---------------------------------------------------------------------- over real WebRTC

KEY = "trace-key"
SECRET = "trace-secret-that-is-long-enough-for-hs256!"


def _token(identity: str) -> str:
    return make_token(KEY, SECRET, identity, "arena")


async def _eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.webrtc
async def test_room_session_over_webrtc_is_traced(tmp_path: pathlib.Path) -> None:
    server_path, alice_path = tmp_path / "server.jsonl", tmp_path / "alice.jsonl"
    bob_writer = TraceWriter(tmp_path / "bob.jsonl")
    server = RoomServer(KEY, SECRET, trace=server_path)
    await server.start("127.0.0.1", 0)
    alice, bob = Room(trace=alice_path), Room(trace=bob_writer)
    received: list[DataPacket] = []
    bob.on("data_received", received.append)
    try:
        await alice.connect(server.url, _token("alice"))
        await bob.connect(server.url, _token("bob"))
        await _eventually(lambda: "bob" in alice.remote_participants)
        participants = {p.identity: p for p in server.rooms["arena"].participants.values()}
        assert server.trace is not None
        for i in range(60):
            await alice.local_participant.publish_data(bytes(100), reliable=False, topic="position")
            if i % 10 == 0:
                await alice.local_participant.publish_data("hi", topic="chat")
                now = server.trace.now()
                server.trace.record("tick", now, {"tick": i, "duration_ms": 1.0 + i / 100})
            await asyncio.sleep(0.01)
        await _eventually(lambda: len([p for p in received if p.topic == "chat"]) == 6)
        await _eventually(lambda: len(received) >= 60)
        await asyncio.sleep(0.3)  # let the last acks come back
    finally:
        await alice.disconnect()
        await bob.disconnect()
        await _eventually(lambda: not server.rooms.get("arena"))
        await server.stop()
    assert bob_writer.closed is False  # a writer we passed in stays ours to close
    bob_writer.close()

    server_result, _ = trace_tool.summarise_file(str(server_path))
    assert set(server_result["connections"]) == {"alice", "bob"}
    for identity, participant in participants.items():
        counters = participant.connection.endpoint.counters
        c = server_result["connections"][identity]
        assert c["room"] == "arena"
        assert (c["datagrams_out"], c["bytes_out"]) == (
            counters.datagrams_sent,
            counters.bytes_sent,
        )
        assert (c["datagrams_in"], c["bytes_in"]) == (
            counters.datagrams_received,
            counters.bytes_received,
        )
        assert c["acked"] == counters.datagrams_acked and c["lost"] == counters.datagrams_lost
    # the server tags what it relays with the topic: received from alice, sent to bob
    topics_in = server_result["connections"]["alice"]["topics"]
    assert topics_in["position"]["packets_in"] == 60 and topics_in["chat"]["packets_in"] == 6
    topics_out = server_result["connections"]["bob"]["topics"]
    assert topics_out["position"]["packets_out"] == 60
    assert topics_out["position"]["bytes_out"] == 6000
    assert topics_out["chat"]["packets_out"] == 6
    assert server_result["tick_ms"]["ticks"] == 6
    assert server_result["totals"]["rtt_ms"]["p50"] < 100  # loopback

    alice_result, _ = trace_tool.summarise_file(str(alice_path))
    assert set(alice_result["connections"]) == {"alice"}
    alice_conn = alice_result["connections"]["alice"]
    assert alice_conn["topics"]["position"]["packets_out"] == 60
    assert alice_conn["frame_types"]["DATA"]["frames_out"] == 60
    # what alice sent is what the server received from her, datagram for datagram
    server_alice = server_result["connections"]["alice"]
    assert 0.95 * alice_conn["datagrams_out"] <= server_alice["datagrams_in"]
    assert server_alice["datagrams_in"] <= alice_conn["datagrams_out"]
    bob_result, _ = trace_tool.summarise_file(str(tmp_path / "bob.jsonl"))
    assert bob_result["connections"]["bob"]["topics"]["position"]["packets_in"] == len(
        [p for p in received if p.topic == "position"]
    )
