"""Run plots of cost and quality: communication vs accuracy, stage costs, latency CDF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from nmoe_sim.plots.base import MB, PLOTS, PlotSkipped, draw, system_color
from nmoe_sim.plots.rundata import RunData
from nmoe_sim.table import system_stages



# --------------------------------------------------------------------------- comm vs accuracy
def make_comm_vs_accuracy_figure(run: RunData) -> Figure:
    """Macro-F1 against cumulative bytes and simulated time, one line per system.

    Systems whose rounds carry no evaluation (FedSC, RanGate, local) but that have a final
    F1 appear as one marker at the total cost of their own training stages.
    """
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_b, ax_t = fig.subplots(1, 2, sharey=True)
    drawn = 0
    curved: set[str] = set()
    if run.rounds is not None:
        for i, system in enumerate(run.rounds.values("system")):
            rows = run.rounds.where("system", system)
            f1 = rows.floats("f1_macro")
            keep = ~np.isnan(f1)
            if not keep.any():
                continue
            color = system_color(system, i)
            for ax, col, scale in ((ax_b, "cum_bytes", MB), (ax_t, "cum_sim_time_s", 1.0)):
                ax.plot(rows.floats(col)[keep] / scale, f1[keep] * 100, "o-", ms=4,
                        color=color, label=system)
            curved.add(system)
            drawn += 1
    for i, (system, m) in enumerate(run.systems.items()):
        f1_final = m.get("f1_macro")
        if system in curved or not isinstance(f1_final, (int, float)):
            continue
        # Training stages only, like the curves' cum_* columns: inference is a later phase.
        own = [n for n in system_stages(system, run.stages) if not n.startswith("inference_")]
        color = system_color(system, i)
        label = f"{system} (final)"
        ax_b.plot([run.stage_total(own, "bytes") / MB], [f1_final * 100], "D", color=color,
                  ms=7, label=label)
        ax_t.plot([run.stage_total(own, "sim_time_s")], [f1_final * 100], "D", color=color,
                  ms=7, label=label)
        drawn += 1
    if not drawn:
        raise PlotSkipped("no system has an F1 (no evaluated rounds, no final F1)")
    ax_b.set_xlabel("cumulative communication (MB)")
    ax_t.set_xlabel("cumulative simulated time (s)")
    ax_b.set_ylabel("macro-F1 (%)")
    ax_b.set_title("Macro-F1 vs communication")
    ax_t.set_title("Macro-F1 vs simulated time")
    for ax in (ax_b, ax_t):
        ax.grid(alpha=0.3)
    ax_t.legend(loc="best", fontsize="small")
    fig.suptitle(f"{run.metrics.get('scenario', run.run_dir.name)}: communication vs accuracy")
    return fig


@PLOTS.register("comm_vs_accuracy")
def plot_comm_vs_accuracy(run: RunData, out_dir: Path) -> list[Path]:
    return draw("comm_vs_accuracy", lambda: make_comm_vs_accuracy_figure(run), out_dir)


# --------------------------------------------------------------------------- stage costs
def make_stage_costs_figure(run: RunData) -> Figure:
    """Bytes (up/down/D2D stacked), simulated time and energy of every stage."""
    names = list(run.stages)
    if not names:
        raise PlotSkipped("metrics.json has no stages")

    def col(field: str) -> np.ndarray:
        return np.array([run.stage_total([n], field) for n in names])

    x = np.arange(len(names))
    fig = Figure(figsize=(max(10.0, 3 * (0.45 * len(names) + 1.5)), 4.8), layout="constrained")
    ax_b, ax_t, ax_e = fig.subplots(1, 3)
    bottom = np.zeros(len(names))
    parts = (("bytes_up", "up (client→BS)"), ("bytes_down", "down (BS→client)"),
             ("bytes_d2d", "D2D (client→client)"))
    for i, (field, label) in enumerate(parts):
        values = col(field) / MB
        ax_b.bar(x, values, bottom=bottom, color=f"C{i}", label=label)
        bottom += values
    ax_b.set_ylabel("payload (MB)")
    ax_b.set_title("Bytes per stage")
    ax_b.legend(fontsize="small")
    ax_t.bar(x, col("sim_time_s"), color="C4")
    ax_t.set_ylabel("simulated time (s)")
    ax_t.set_title("Simulated time per stage")
    compute, radio = col("compute_energy_j"), col("radio_energy_j")
    if (compute + radio).any():
        ax_e.bar(x, compute, color="C5", label="compute")
        ax_e.bar(x, radio, bottom=compute, color="C6", label="radio")
        ax_e.legend(fontsize="small")
    else:
        ax_e.bar(x, col("energy_j"), color="C5")
    ax_e.set_ylabel("energy (J)")
    ax_e.set_title("Energy per stage")
    for ax in (ax_b, ax_t, ax_e):
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize="small")
        ax.set_xlabel("stage")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{run.metrics.get('scenario', run.run_dir.name)}: cost per stage")
    return fig


@PLOTS.register("stage_costs")
def plot_stage_costs(run: RunData, out_dir: Path) -> list[Path]:
    return draw("stage_costs", lambda: make_stage_costs_figure(run), out_dir)


# --------------------------------------------------------------------------- latency CDF
def make_latency_cdf_figure(run: RunData) -> Figure:
    """Empirical CDF of the delivered queries' latency, per system, with p50/p95/p99."""
    if run.queries is None:
        raise PlotSkipped("no queries.csv")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    positive: list[np.ndarray] = []
    for i, system in enumerate(run.queries.values("system")):
        rows = run.queries.where("system", system)
        lat = rows.floats("latency_s")
        ok = rows.flags("delivered") & ~np.isnan(lat)
        lat = np.sort(lat[ok])
        if not lat.size:
            continue
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        lost = int((~ok).sum())
        label = f"{system}: p50 {p50:.3g} s, p95 {p95:.3g} s, p99 {p99:.3g} s"
        label += f" ({lost} undelivered)" if lost else ""
        # Start at (first latency, 0) so a constant latency still shows as a step.
        ax.step(np.r_[lat[0], lat], np.arange(lat.size + 1) / lat.size, where="post",
                color=system_color(system, i), label=label)
        positive.append(lat[lat > 0])
    if not positive:
        raise PlotSkipped("queries.csv has no delivered query")
    pos = np.concatenate(positive)
    if pos.size and pos.max() / pos.min() > 100:  # > 2 decades: a linear axis hides the body
        ax.set_xscale("log")
    ax.set_xlabel("query latency (s)")
    ax.set_ylabel("fraction of queries (CDF)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{run.metrics.get('scenario', run.run_dir.name)}: inference latency CDF")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", fontsize="small")  # below: never hides a curve
    return fig


@PLOTS.register("latency_cdf")
def plot_latency_cdf(run: RunData, out_dir: Path) -> list[Path]:
    return draw("latency_cdf", lambda: make_latency_cdf_figure(run), out_dir)
