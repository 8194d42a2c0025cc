"""netcode-trace's snapshot-size histogram spreads the data over the plot's width."""

from __future__ import annotations

from netcode_tools.trace import snapshot_size_bins

from netcode.wire import MAX_DATAGRAM_BYTES


def test_small_snapshots_fill_the_axis_and_the_limit_is_off_scale() -> None:
    sizes = [25.0] * 100 + [float(s) for s in range(80, 140)] + [217.0, 230.0]
    edges, limit_on_scale = snapshot_size_bins(sizes)
    assert not limit_on_scale
    data_share = (max(sizes) - min(sizes)) / (edges[-1] - edges[0])
    assert data_share > 0.9  # not squeezed into the left 10% by an axis running to 1160
    assert 10 <= len(edges) - 1 <= 60


def test_snapshots_near_the_limit_show_it() -> None:
    sizes = [float(s) for s in range(700, 1100, 5)]
    edges, limit_on_scale = snapshot_size_bins(sizes)
    assert limit_on_scale and edges[0] < 700 and edges[-1] > MAX_DATAGRAM_BYTES


def test_one_size_only() -> None:
    edges, _ = snapshot_size_bins([96.0] * 50)
    assert edges[0] < 96.0 < edges[-1] and len(edges) >= 2
