"""What stage 1 learned, round by round: the FE's probe and kNN accuracy beside the untrained
FE's, and the features' effective rank (rounds.csv's probe columns, set by
``stage1.probe_every``; metrics.json's ``stages.<stage1>.representation`` for the reference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from nmoe_sim.plots.base import DEFAULT_FORMATS, PLOTS, draw
from nmoe_sim.plots.rundata import PlotSkipped, RunData


def make_representation_figure(run: RunData) -> Figure:
    """Left: linear-probe and kNN test accuracy (%) of each measured stage-1 FE against the
    rounds completed (round 0: the untrained FE), dashed at the untrained FE's; right:
    effective rank, likewise."""
    if run.rounds is None or not run.rounds.has("probe_linear"):
        raise PlotSkipped("rounds.csv has no probe_linear column")
    measured = [(name, s["representation"]) for name, s in run.stages.items()
                if isinstance(s, dict) and isinstance(s.get("representation"), dict)]
    if not measured:
        raise PlotSkipped("metrics.json has no stage with a representation")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_acc, ax_rank = fig.subplots(1, 2)
    for i, (stage, rep) in enumerate(measured):
        rows = run.rounds.where("stage", stage)
        probe = rows.floats("probe_linear")
        keep = ~np.isnan(probe)
        if not keep.any():
            continue
        x = rows.floats("round")[keep] + 1  # rounds completed
        for ax, col, label, ref in ((ax_acc, "probe_linear", "linear probe", rep["untrained"]["linear_probe"]),
                                    (ax_acc, "probe_knn", "kNN", rep["untrained"]["knn"]),
                                    (ax_rank, "effective_rank", "effective rank",
                                     rep["untrained"]["effective_rank"])):
            scale = 100.0 if ax is ax_acc else 1.0
            # Each curve starts at round 0 from the untrained FE, so equal references stay visible.
            line, = ax.plot(np.concatenate([[0.0], x]), np.concatenate([[ref], rows.floats(col)[keep]]) * scale,
                            marker="o", ms=4, label=f"{stage}: {label}")
            ax.axhline(ref * scale, color=line.get_color(), ls="--", lw=1, label=f"{label}, untrained FE")
    ax_acc.set_xlabel("stage-1 rounds completed (count)")
    ax_acc.set_ylabel("test accuracy of frozen FE features (%)")
    ax_acc.set_title("Linear probe and kNN vs rounds")
    ax_rank.set_xlabel("stage-1 rounds completed (count)")
    ax_rank.set_ylabel("effective rank of the features (RankMe)")
    ax_rank.set_title("Effective rank vs rounds")
    for ax in (ax_acc, ax_rank):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"{run.title}: what stage 1 learned (dashed: the same FE untrained)")
    return fig


@PLOTS.register("representation")
def plot_representation(run: RunData, out_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    return draw("representation", lambda: make_representation_figure(run), out_dir, formats)
