"""The cost of every stage: payload per link direction, simulated time, energy by payer.

Three choices keep the figure from misleading:

* Bytes are the **delivered** payload per link direction (a transfer relayed through the
  base station loads the up and the down link), with what was offered drawn as an outline
  above it, so that lost traffic shows as the gap between the two.
* Energy is split by who pays it (client batteries vs infrastructure), beside the same
  energy split by kind (compute vs radio, hatched).
* An inference stage's length is mostly its Poisson query arrivals, not service: its bar
  is the time with at least one query in service (``busy_time_s``), and the arrival window
  is a separate, lighter bar, clipped with its value printed when it would stretch the
  axis far beyond every other bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nmoe_sim.plots.base import DEFAULT_FORMATS, MB, PLOTS, PlotSkipped, draw
from nmoe_sim.plots.rundata import RunData

DIRECTIONS = (("bytes_up_delivered", "up (client→BS)", "C0"),
              ("bytes_down_delivered", "down (BS→client)", "C1"),
              ("bytes_d2d_delivered", "D2D (client→client)", "C2"))
OFFERED_PER_LINK = ("bytes_up", "bytes_down", "bytes_d2d")
# An arrival window longer than this many times the tallest other bar is clipped.
CLIP_RATIO = 2.0
OFFERED_STYLE = dict(fill=False, edgecolor="black", ls="--", lw=1.0)
END_TO_END = "offered end to end (once per transfer)"


def _column(run: RunData, names: list[str], field: str) -> np.ndarray:
    return np.array([run.stage_value(n, field) for n in names])


def _bytes_panel(ax: Axes, run: RunData, names: list[str], x: np.ndarray) -> None:
    bottom = np.zeros(len(names))
    for field, label, color in DIRECTIONS:
        values = _column(run, names, field) / MB
        ax.bar(x, values, bottom=bottom, color=color, label=f"delivered {label}")
        bottom += values
    offered = sum(_column(run, names, f) for f in OFFERED_PER_LINK) / MB
    ax.bar(x, offered, **OFFERED_STYLE, label="offered, same links (outline)")
    ax.plot(x, _column(run, names, "bytes") / MB, "_", color="black", ms=14, mew=2,
            ls="", label=END_TO_END)
    ax.set_ylabel("payload per link direction (MB)")
    ax.set_title("Delivered payload per link direction\n"
                 "(a relayed transfer loads two directions)", fontsize="medium")
    # Legend in drawing order (matplotlib lists the end-to-end marks, a line, first).
    pairs = sorted(zip(*ax.get_legend_handles_labels()), key=lambda hl: hl[1] == END_TO_END)
    ax.legend(*zip(*pairs), fontsize="x-small")


def _time_panel(ax: Axes, run: RunData, names: list[str], x: np.ndarray) -> None:
    inference = np.array([run.is_inference(n) for n in names])
    train = np.where(inference, 0.0, _column(run, names, "sim_time_s"))
    inf_names = [n for n, is_inf in zip(names, inference) if is_inf]
    busy = np.array([run.stage_value(n, "busy_time_s") for n in inf_names])
    window = np.array([run.stage_value(n, "arrival_window_s") for n in inf_names])
    xi = x[inference]
    if (~inference).any():
        ax.bar(x[~inference], train[~inference], color="C4", label="stage duration")
    if inference.any():
        ax.bar(xi - 0.2, busy, 0.4, color="C9",
               label="inference: busy (≥ 1 query in service)")
        ax.bar(xi + 0.2, window, 0.4, color="C9", alpha=0.35, hatch="//", edgecolor="C9",
               label="query arrival window")
    solid_max = max(float(train.max(initial=0.0)), float(busy.max(initial=0.0)))
    if window.size and solid_max > 0 and window.max() > CLIP_RATIO * solid_max:
        top = 1.3 * solid_max
        ax.set_ylim(0, top)
        for xv, w in zip(xi, window):
            if w > top:
                ax.annotate(f"{w:.3g} s ↑", (xv + 0.2, top), xytext=(0, -2),
                            textcoords="offset points", ha="center", va="top",
                            fontsize="x-small", rotation=90)
    ax.set_ylabel("simulated time (s)")
    ax.set_title("Simulated time per stage", fontsize="medium")
    ax.legend(fontsize="x-small")


def _energy_panel(ax: Axes, run: RunData, names: list[str], x: np.ndarray) -> None:
    device = _column(run, names, "device_energy_j")
    infra = _column(run, names, "infrastructure_energy_j")
    compute = _column(run, names, "compute_energy_j")
    radio = _column(run, names, "radio_energy_j")
    ax.bar(x - 0.2, device, 0.4, color="C5", label="devices (client batteries)")
    ax.bar(x - 0.2, infra, 0.4, bottom=device, color="C7", label="infrastructure (BS, server)")
    ax.bar(x + 0.2, compute, 0.4, color="white", edgecolor="C5", hatch="///",
           label="compute (hatched)")
    ax.bar(x + 0.2, radio, 0.4, bottom=compute, color="white", edgecolor="C7", hatch="...",
           label="radio (dotted)")
    ax.set_ylabel("energy (J)")
    ax.set_title("Energy per stage: by payer (solid)\nand by kind (hatched)", fontsize="medium")
    ax.legend(fontsize="x-small")


def make_stage_costs_figure(run: RunData) -> Figure:
    """Bytes by link direction, simulated time and energy of every stage."""
    names = list(run.stages)
    if not names:
        raise PlotSkipped(f"{run.run_dir / 'metrics.json'} has no stages")
    x = np.arange(len(names))
    fig = Figure(figsize=(max(12.0, 3 * (0.5 * len(names) + 1.5)), 5.4), layout="constrained")
    ax_b, ax_t, ax_e = fig.subplots(1, 3)
    _bytes_panel(ax_b, run, names, x)
    _time_panel(ax_t, run, names, x)
    _energy_panel(ax_e, run, names, x)
    for ax in (ax_b, ax_t, ax_e):
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize="small")
        ax.set_xlabel("stage")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{run.title}: cost per stage")
    return fig


@PLOTS.register("stage_costs")
def plot_stage_costs(run: RunData, out_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    return draw("stage_costs", lambda: make_stage_costs_figure(run), out_dir, formats)
