"""Plots of a ``system: alignment`` run: accuracy vs rounds and vs bytes, utilization CV.

One line per assignment (alignment, greedy, random, unlimited), from rounds.csv and
metrics.json; skipped for any other run. The target accuracy is drawn as a dashed line so
that rounds-to-target can be read off the figure.
"""

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
)
from nmoe_sim.plots.rundata import RunData


def make_accuracy_vs_rounds_figure(run: RunData) -> Figure:
    if run.metrics.get("system") != "alignment":
        raise PlotSkipped("not an alignment run")
    if run.rounds is None:
        raise PlotSkipped("no rounds.csv")
    # Delivered, like the NMoE's comm-vs-accuracy and metrics.json's bytes_to_target.
    run.rounds.require("system", "round", "accuracy", "cum_bytes_delivered")
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    ax_r, ax_b, ax_cv = fig.subplots(1, 3)
    target = None
    drawn = 0
    for i, (name, m) in enumerate(run.systems.items()):
        rows = run.rounds.where("system", name)
        acc = rows.floats("accuracy")
        if not len(rows) or np.isnan(acc).all():
            continue
        color = system_color(name, i)
        ax_r.plot(rows.floats("round") + 1, acc * 100, "o-", ms=3, color=color, label=name)
        ax_b.plot(rows.floats("cum_bytes_delivered") / MB, acc * 100, "o-", ms=3, color=color, label=name)
        cv = m.get("utilization_cv_per_round") or []
        ax_cv.plot(np.arange(1, len(cv) + 1), [np.nan if v is None else v for v in cv], "o-", ms=3,
                   color=color, label=name)
        target = m.get("target_accuracy", target)
        drawn += 1
    if not drawn:
        raise PlotSkipped("no evaluated alignment rounds")
    if isinstance(target, (int, float)):
        for ax in (ax_r, ax_b):
            ax.axhline(target * 100, ls="--", color="gray", lw=1, label="target")
    ax_r.set_xlabel("round (count)")
    ax_b.set_xlabel("cumulative delivered communication (MB)")
    ax_cv.set_xlabel("round (count)")
    ax_r.set_ylabel("test accuracy (%)")
    ax_cv.set_ylabel("utilization CV (std / mean of routed samples)")
    ax_r.set_title("Accuracy vs rounds")
    ax_b.set_title("Accuracy vs delivered communication")
    ax_cv.set_title("Expert utilization CV per round")
    for ax in (ax_r, ax_b, ax_cv):
        ax.grid(alpha=0.3)
    ax_r.legend(loc="best", fontsize="small")
    fig.suptitle(f"{run.metrics.get('scenario', run.run_dir.name)}: client-expert alignment")
    return fig


@PLOTS.register("accuracy_vs_rounds")
def plot_accuracy_vs_rounds(run: RunData, out_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    return draw("accuracy_vs_rounds", lambda: make_accuracy_vs_rounds_figure(run), out_dir, formats)
