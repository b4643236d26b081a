"""Run plots of quality against cost: communication vs accuracy, and the latency CDF."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from nmoe_sim.plots.base import (
    DEFAULT_FORMATS,
    MB,
    PLOTS,
    PlotSkipped,
    draw,
    system_color,
    system_style,
)
from nmoe_sim.plots.rundata import RunData


# --------------------------------------------------------------------------- comm vs accuracy
def make_comm_vs_accuracy_figure(run: RunData) -> Figure:
    """Macro-F1 against cumulative delivered bytes and simulated time, one line per system.

    Delivered, not offered: a lost upload costs airtime but taught the server nothing, so
    offered bytes would flatter a system on a bad channel. Systems whose rounds carry no
    evaluation (FedSC, RanGate, local) but that have a final F1 appear as one marker at the
    delivered total of their own declared training stages.
    """
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_b, ax_t = fig.subplots(1, 2, sharey=True)
    drawn = 0
    curved: set[str] = set()
    if run.rounds is not None:
        run.rounds.require("system", "f1_macro", "cum_bytes_delivered", "cum_sim_time_s")
        for i, system in enumerate(run.rounds.values("system")):
            rows = run.rounds.where("system", system)
            f1 = rows.floats("f1_macro")
            keep = ~np.isnan(f1)
            if not keep.any():
                continue
            ls, marker = system_style(system, i)
            for ax, col, scale in ((ax_b, "cum_bytes_delivered", MB),
                                   (ax_t, "cum_sim_time_s", 1.0)):
                ax.plot(rows.floats(col)[keep] / scale, f1[keep] * 100, ls=ls, marker=marker,
                        ms=4, color=system_color(system, i), label=system)
            curved.add(system)
            drawn += 1
    for i, (system, m) in enumerate(run.systems.items()):
        f1_final = m.get("f1_macro")
        if system in curved or not isinstance(f1_final, (int, float)):
            continue
        # Training stages only, like the curves' cum_* columns: inference is a later phase.
        own = [n for n in run.system_stages(system) if not run.is_inference(n)]
        _, marker = system_style(system, i)
        color, label = system_color(system, i), f"{system} (final)"
        ax_b.plot([run.stage_total(own, "bytes_delivered") / MB], [f1_final * 100], marker,
                  color=color, ms=7, label=label)
        ax_t.plot([run.stage_total(own, "sim_time_s")], [f1_final * 100], marker, color=color,
                  ms=7, label=label)
        drawn += 1
    if not drawn:
        raise PlotSkipped("no system has an F1 (no evaluated rounds, no final F1)")
    ax_b.set_xlabel("cumulative delivered communication (MB)")
    ax_t.set_xlabel("cumulative simulated time (s)")
    ax_b.set_ylabel("macro-F1 (%)")
    ax_b.set_title("Macro-F1 vs delivered communication")
    ax_t.set_title("Macro-F1 vs simulated time")
    for ax in (ax_b, ax_t):
        ax.grid(alpha=0.3)
    ax_t.legend(loc="best", fontsize="small")
    fig.suptitle(f"{run.title}: communication vs accuracy")
    return fig


@PLOTS.register("comm_vs_accuracy")
def plot_comm_vs_accuracy(run: RunData, out_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    return draw("comm_vs_accuracy", lambda: make_comm_vs_accuracy_figure(run), out_dir, formats)


# --------------------------------------------------------------------------- latency CDF
def latency_percentiles(latency_s: np.ndarray) -> tuple[float, float, float]:
    """p50, p95, p99 exactly as metrics.json's ``latency_s`` (numpy's linear interpolation)."""
    p50, p95, p99 = np.percentile(latency_s, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def _identical_groups(curves: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """system -> the other systems whose sorted latencies are exactly the same."""
    return {s: [o for o, other in curves.items() if o != s and np.array_equal(lat, other)]
            for s, lat in curves.items()}


def make_latency_cdf_figure(run: RunData) -> Figure:
    """Empirical CDF of every query's latency per system, with the summary's p50/p95/p99.

    All queries, delivered or not, as in metrics.json: an undelivered query's latency runs
    until the client's fallback answer, and leaving it out would hide the slow tail the
    failures cause (and the legend would disagree with the summary table).
    """
    if run.queries is None:
        raise PlotSkipped("no queries.csv")
    run.queries.require("system", "latency_s", "delivered")
    curves: dict[str, np.ndarray] = {}
    lost: dict[str, int] = {}
    for system in run.queries.values("system"):
        rows = run.queries.where("system", system)
        lat = rows.floats("latency_s")
        finite = ~np.isnan(lat)
        if finite.any():
            curves[system] = np.sort(lat[finite])
            lost[system] = int((~rows.flags("delivered")).sum())
    if not curves:
        raise PlotSkipped(f"{run.queries.source} has no query with a latency")
    same = _identical_groups(curves)
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    for i, (system, lat) in enumerate(curves.items()):
        p50, p95, p99 = latency_percentiles(lat)
        name = f"{system} (identical to {', '.join(same[system])})" if same[system] else system
        label = f"{name}: p50 {p50:.3g} s, p95 {p95:.3g} s, p99 {p99:.3g} s"
        label += f" ({lost[system]} undelivered)" if lost[system] else ""
        # A curve identical to one drawn earlier goes on top, thinner, with its markers
        # shifted, so that both stay visible where they coincide.
        shadowed = any(other in list(curves)[:i] for other in same[system])
        ls, marker = system_style(system, i)
        every = max(1, lat.size // 6)  # about six markers per curve, staggered per system
        offset = (i * max(1, every // 4)) % every
        # Start at (first latency, 0) so a constant latency still shows as a step.
        ax.step(np.r_[lat[0], lat], np.arange(lat.size + 1) / lat.size, where="post",
                color=system_color(system, i), ls=ls, marker=marker, ms=5,
                markevery=(offset, every),
                lw=1.2 if shadowed else 2.2, zorder=3 if shadowed else 2, label=label)
    everything = np.concatenate(list(curves.values()))
    pos = everything[everything > 0]
    if pos.size and pos.max() / pos.min() > 100:  # > 2 decades: a linear axis hides the body
        ax.set_xscale("log")
    ax.set_xlabel("query latency (s), arrival to answer at the client")
    ax.set_ylabel("fraction of queries (CDF)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{run.title}: inference latency CDF\n"
                 "(all queries; an undelivered one counts until its fallback answer)",
                 fontsize="medium")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", fontsize="small")  # below: never hides a curve
    return fig


@PLOTS.register("latency_cdf")
def plot_latency_cdf(run: RunData, out_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    return draw("latency_cdf", lambda: make_latency_cdf_figure(run), out_dir, formats)
