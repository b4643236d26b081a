"""The topology map of a large run stays readable: bounded labels, shrunken markers."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

from matplotlib.text import Annotation

from nmoe_sim.plots import make_topology_figure
from nmoe_sim.plots.maps import LABEL_MAX


def ring_run(n: int) -> SimpleNamespace:
    nodes = [{"id": "bs", "kind": "bs", "x_m": 0.0, "y_m": 0.0}]
    nodes += [{"id": i, "kind": "client", "x_m": 50 * math.cos(2 * math.pi * i / n),
               "y_m": 50 * math.sin(2 * math.pi * i / n)} for i in range(n)]
    edges = [{"u": i, "v": "bs", "kind": "bs", "mean_snr_db": 10.0 + i % 7} for i in range(n)]
    edges += [{"u": i, "v": (i + 1) % n, "kind": "d2d", "mean_snr_db": 20.0} for i in range(n)]
    return SimpleNamespace(topology={"nodes": nodes, "edges": edges}, metrics={"scenario": "ring"},
                           run_dir=Path("ring"))


def labels(n: int) -> list[str]:
    ax = make_topology_figure(ring_run(n)).axes[0]
    return [c.get_text() for c in ax.get_children() if isinstance(c, Annotation)]


def test_small_maps_label_every_client_large_ones_about_label_max() -> None:
    assert labels(10) == [str(i) for i in range(10)]
    big = labels(1000)
    assert LABEL_MAX // 2 <= len(big) <= LABEL_MAX and big[0] == "0"


def test_client_markers_shrink_past_label_max_and_links_are_all_drawn() -> None:
    def client_size(n: int) -> float:
        ax = make_topology_figure(ring_run(n)).axes[0]
        return float(ax.collections[-1].get_sizes()[0])  # clients are drawn last
    assert client_size(10) == 60.0
    assert client_size(1000) == 60.0 * LABEL_MAX / 1000
    ax = make_topology_figure(ring_run(1000)).axes[0]
    assert sum(len(c.get_segments()) for c in ax.collections[:2]) == 2000
