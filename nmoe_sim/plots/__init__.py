"""Figures of a run directory and of a sweep directory (PNG and SVG, written atomically).

Each plot is a ``make_<name>_figure(...) -> Figure`` (tests inspect it) and a registered
``PLOTS[name](run, out_dir) -> list[Path]`` that saves it; a plot whose input file is
missing from the run, or lacks a column the plot needs, is skipped with a log line
naming the file and the column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nmoe_sim.errors import ConfigError

# Importing a plot module registers its plots.
from nmoe_sim.plots import alignment_plots, curves, maps, representation, stage_costs  # noqa: F401
from nmoe_sim.plots.base import (
    DEFAULT_FORMATS,
    FORMATS,
    PLOTS,
    PlotFn,
    PlotSkipped,
    save_figure,
)
from nmoe_sim.plots.curves import make_comm_vs_accuracy_figure, make_latency_cdf_figure
from nmoe_sim.plots.maps import make_gating_figure, make_topology_figure
from nmoe_sim.plots.representation import make_representation_figure
from nmoe_sim.plots.rundata import CsvTable, RunData, load_run, read_table
from nmoe_sim.plots.stage_costs import make_stage_costs_figure
from nmoe_sim.plots.sweep_plots import (
    load_table,
    make_sweep_f1_bar_figure,
    make_sweep_f1_vs_bytes_figure,
    plot_sweep,
)

__all__ = [
    "PLOTS", "PlotFn", "FORMATS", "DEFAULT_FORMATS", "PlotSkipped", "CsvTable", "RunData", "load_run", "load_table", "read_table",
    "plot_run", "plot_sweep", "plot_path", "save_figure",
    "make_comm_vs_accuracy_figure", "make_gating_figure", "make_topology_figure",
    "make_stage_costs_figure", "make_latency_cdf_figure", "make_representation_figure",
    "make_sweep_f1_vs_bytes_figure", "make_sweep_f1_bar_figure",
]


def plot_run(run_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    """Draw every registered plot of a run into ``run_dir/plots/``; returns the paths written."""
    run = load_run(Path(run_dir))
    out_dir = run.run_dir / "plots"
    written: list[Path] = []
    for name in PLOTS:
        written += PLOTS.get(name)(run, out_dir, formats)
    return written


def plot_path(path: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    """Plot a run directory (has metrics.json) or a sweep directory (has table.csv)."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        return plot_run(path, formats)
    if (path / "table.csv").is_file():
        return plot_sweep(path, formats)
    expected = "expected a run directory (with metrics.json) or a sweep directory (with table.csv)"
    found = "no such directory" if not path.is_dir() else "neither metrics.json nor table.csv in it"
    raise ConfigError(f"{path}: {found}; {expected}")
