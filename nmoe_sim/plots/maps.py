"""Run plots of structure: the client x expert gating heatmaps and the topology map."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from nmoe_sim.plots.base import DEFAULT_FORMATS, PLOTS, PlotSkipped, draw
from nmoe_sim.plots.rundata import RunData

ANNOTATE_MAX = 12  # beyond this many clients/experts the numbers are unreadable
LABEL_MAX = 40  # topology map: clients labelled (about this many) and drawn at full size


# --------------------------------------------------------------------------- gating
MAX_SIDE_IN = 14.0


def _pct(value: object) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, (int, float)) else "n/a"


def _ticks(n: int, most: int = 25) -> range:
    """Every index up to ``most`` of them, else every k-th so that about ``most`` are shown."""
    return range(0, n, max(1, -(-n // most)))


def make_gating_figure(run: RunData, system: str) -> Figure:
    """Client x expert routing shares, like Figure 3 of the NMoE paper."""
    share = run.gating_matrix(system)
    if share.size == 0:
        raise PlotSkipped(f"system {system!r} has no gating matrix")
    n_clients, n_experts = share.shape
    m = run.systems.get(system) or {}
    # 0.45 inch a cell up to 26 cells a side, then the image's pixels carry the matrix: a
    # 1,000-client run gives a 14-inch figure, not a 450-inch one.
    side = min(max(4.0, 0.45 * max(n_clients, n_experts) + 2.0), MAX_SIDE_IN)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, label="share of the client's routing slots (0-1)")
    if max(n_clients, n_experts) <= ANNOTATE_MAX:
        for (i, j), value in np.ndenumerate(share):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="small",
                    color="black" if value > 0.6 else "white")
    ax.set_xticks(_ticks(n_experts))
    ax.set_yticks(_ticks(n_clients))
    ax.set_xlabel("expert (index of its client)")
    ax.set_ylabel("client (index)")
    ax.set_title(f"{system} gating: F1 {_pct(m.get('f1_macro'))}, LR {_pct(m.get('local_ratio'))}")
    return fig


def gating_systems(run: RunData) -> list[str]:
    names = list(run.systems)
    if run.gating is not None:
        names += [s for s in run.gating.values("system") if s not in names]
    return names


@PLOTS.register("gating")
def plot_gating(run: RunData, out_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    """One ``gating_<system>`` file per system with a non-empty matrix."""
    written: list[Path] = []
    for system in gating_systems(run):
        make = lambda s=system: make_gating_figure(run, s)  # noqa: E731 (bind the loop value)
        written += draw(f"gating_{system}", make, out_dir, formats)
    return written


# --------------------------------------------------------------------------- topology
def make_topology_figure(run: RunData) -> Figure:
    """Node positions, base station as a triangle, links coloured by mean SNR."""
    if run.topology is None:
        raise PlotSkipped("no topology.json")
    nodes = {str(n["id"]): n for n in run.topology.get("nodes", [])}
    if not nodes:
        raise PlotSkipped("topology.json has no nodes")
    pos = {nid: (float(n["x_m"]), float(n["y_m"])) for nid, n in nodes.items()}
    edges = [e for e in run.topology.get("edges", []) if str(e["u"]) in pos and str(e["v"]) in pos]
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    # JSON has no inf: an ideal link's infinite SNR is written as null; draw it uncoloured.
    snrs = np.array([np.nan if e.get("mean_snr_db") is None else float(e["mean_snr_db"]) for e in edges])
    finite = snrs[np.isfinite(snrs)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = Normalize(lo, hi if hi > lo else lo + 1.0)  # one SNR value still needs a range
    cmap = matplotlib.colormaps["plasma"]
    n_clients = sum(1 for n in nodes.values() if n.get("kind") == "client")
    # Many base-station links converge on one point: past LABEL_MAX clients they are drawn
    # solid, thin and translucent, so they read as a fan rather than a moire of dashes.
    crowd = min(1.0, LABEL_MAX / max(n_clients, 1))
    for kind, style, width, z in (("bs", "--" if crowd == 1.0 else "-", max(0.8 * crowd, 0.3), 1), ("d2d", "-", 2.0, 2)):
        chosen = [(e, s) for e, s in zip(edges, snrs) if e.get("kind") == kind]
        if not chosen:
            continue
        segs = [[pos[str(e["u"])], pos[str(e["v"])]] for e, _ in chosen]
        lines = LineCollection(segs, cmap=cmap, norm=norm, linestyles=style,
                               linewidths=width, zorder=z, alpha=None if kind == "d2d" or crowd == 1.0 else 0.6)
        lines.set_array(np.array([s for _, s in chosen]))
        ax.add_collection(lines)
    if edges:
        mappable = ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(mappable, ax=ax, label="mean SNR (dB)")
    handles = []
    clients = [nid for nid, n in nodes.items() if n.get("kind") == "client"]
    # Beyond LABEL_MAX clients, markers shrink with their number and only about LABEL_MAX of
    # them are labelled: a 1,000-client ring stays a ring of dots rather than a black band,
    # and the figure does not lay out 1,000 overlapping labels.
    crowded = crowd < 1.0
    client_size = 60.0 * crowd
    for kind, marker, color, size, label in (("bs", "^", "black", 160, "base station"),
                                             ("client", "o", "C0", client_size, "client")):
        xy = np.array([pos[nid] for nid, n in nodes.items() if n.get("kind") == kind])
        if xy.size:
            ax.scatter(xy[:, 0], xy[:, 1], marker=marker, s=size, color=color, zorder=3,
                       edgecolors="white" if kind == "bs" or not crowded else "none")
            handles.append(Line2D([], [], marker=marker, color=color, ls="", label=label))
    for i in _ticks(len(clients), LABEL_MAX):
        ax.annotate(clients[i], pos[clients[i]], xytext=(4, 4), textcoords="offset points",
                    fontsize="small", zorder=4)
    handles += [Line2D([], [], color="gray", ls="-", lw=2.0, label="D2D link"),
                Line2D([], [], color="gray", ls="-" if crowded else "--", lw=0.8, label="BS link")]
    # "best" tests every corner against every artist's data: costly with thousands of links.
    ax.legend(handles=handles, loc="upper right" if crowded else "best", fontsize="small")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.margins(0.1)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(f"{run.metrics.get('scenario', run.run_dir.name)}: topology")
    return fig


@PLOTS.register("topology")
def plot_topology(run: RunData, out_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    return draw("topology", lambda: make_topology_figure(run), out_dir, formats)
