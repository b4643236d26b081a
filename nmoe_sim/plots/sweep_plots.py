"""Sweep comparison plots, drawn from a sweep directory's table.csv (nmoe_sim.table).

Error bars are the sample std over seeds, drawn only where a point has two seeds or more:
one seed has no spread to show, and a ±0 bar would claim a precision nobody measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from matplotlib.figure import Figure

from nmoe_sim.errors import ConfigError
from nmoe_sim.plots.base import DEFAULT_FORMATS, MB, draw, system_color, system_style
from nmoe_sim.plots.rundata import CsvTable, read_table
from nmoe_sim.table import LABEL_COLUMNS


def load_table(sweep_dir: Path) -> CsvTable:
    path = Path(sweep_dir) / "table.csv"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: not a sweep directory (expected table.csv in it)")
    return read_table(path)


def compact_value(text: str) -> str:
    """A swept value as a few words: '{kind: dirichlet, alpha: 0.1}' -> 'dirichlet 0.1'."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, dict):
        words = [value["kind"]] if "kind" in value else []
        words += [v for k, v in value.items() if k != "kind"]
        return " ".join(str(w) for w in words)
    return text


def point_labels(table: CsvTable) -> dict[str, str]:
    """point_id -> the swept values only ('fedce, rangate'): short enough to print on a plot."""
    if not len(table):
        return {}
    skip = {*LABEL_COLUMNS, "n_seeds"}
    keys = [c for c in table.rows[0] if c not in skip and not c.endswith(("_mean", "_std"))]
    labels = {}
    for row in table.rows:
        values = [compact_value(row[k]) for k in keys if row.get(k)]
        labels[row["point_id"]] = ", ".join(values) or row["point_id"]
    return labels


def _span(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '#1-3,5': point numbers as short runs."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return "#" + ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _multi_seed(rows: CsvTable) -> np.ndarray:
    """Per row: does the point have the >= 2 seeds a std needs?"""
    return rows.floats("n_seeds") >= 2


def make_sweep_f1_vs_bytes_figure(table: CsvTable) -> Figure:
    """One marker per (point, system) at (its own bytes, F1), error bars over >= 2 seeds."""
    table.require("point_id", "system", "n_seeds", "system_bytes_delivered_mean", "system_bytes_delivered_std",
                  "f1_macro_mean", "f1_macro_std")
    labels = point_labels(table)
    number = {pid: i + 1 for i, pid in enumerate(labels)}  # points numbered in sweep order
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax, key = fig.subplots(1, 2, width_ratios=(3, 1.3))
    for i, system in enumerate(table.values("system")):
        rows = table.where("system", system)
        x, xerr = rows.floats("system_bytes_delivered_mean") / MB, rows.floats("system_bytes_delivered_std") / MB
        y, yerr = rows.floats("f1_macro_mean") * 100, rows.floats("f1_macro_std") * 100
        color, (_, marker) = system_color(system, i), system_style(system, i)
        multi = _multi_seed(rows)
        label: str | None = system  # one legend entry per system, whichever artist is first
        if multi.any():
            ax.errorbar(x[multi], y[multi], xerr=np.nan_to_num(xerr[multi]),
                        yerr=np.nan_to_num(yerr[multi]), fmt=marker, capsize=3, color=color,
                        label=label)
            label = None
        if (~multi).any():
            ax.plot(x[~multi], y[~multi], marker, ls="", color=color, label=label)
        # Baselines are often untouched by the swept keys: one label per position, not
        # a pile of overprinted ones.
        spots: dict[tuple[float, float], list[int]] = {}
        for xi, yi, row in zip(x, y, rows.rows):
            if np.isfinite(xi) and np.isfinite(yi):
                spots.setdefault((round(xi, 9), round(yi, 9)), []).append(number[row["point_id"]])
        for (xi, yi), nums in spots.items():
            text = "all points" if len(nums) == len(labels) > 1 else _span(nums)
            ax.annotate(text, (xi, yi), xytext=(4, 4), textcoords="offset points",
                        fontsize="x-small", color=system_color(system, i))
    ax.set_xlabel("delivered communication of the system's own stages (MB)")
    ax.set_ylabel("macro-F1 (%)")
    ax.set_title("Sweep: accuracy vs communication (up-left is better)\n"
                 "(± sample std over seeds where a point has ≥ 2)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    key.axis("off")
    key.set_title("sweep points", fontsize="small")
    key.text(0.0, 1.0, "\n".join(f"#{number[p]}  {lab}" for p, lab in labels.items()),
             va="top", ha="left", fontsize="x-small", family="monospace", transform=key.transAxes)
    return fig


def _on_points(values: np.ndarray, by_point: dict[str, int], points: list[str]) -> np.ndarray:
    """A system's per-row values laid out on every point of the sweep (NaN where absent)."""
    return np.array([values[by_point[p]] if p in by_point else np.nan for p in points])


def make_sweep_f1_bar_figure(table: CsvTable) -> Figure:
    """Grouped bars: F1 per point (groups) per system (bars), error bars over >= 2 seeds."""
    table.require("point_id", "system", "n_seeds", "f1_macro_mean", "f1_macro_std")
    labels = point_labels(table)
    points = table.values("point_id")
    systems = table.values("system")
    width = 0.8 / max(len(systems), 1)
    fig = Figure(figsize=(max(7.0, 0.5 * len(points) * len(systems) + 2), 5),
                 layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(points))
    for i, system in enumerate(systems):
        rows = table.where("system", system)
        by_point = {r["point_id"]: j for j, r in enumerate(rows.rows)}
        mean, std = rows.floats("f1_macro_mean") * 100, rows.floats("f1_macro_std") * 100
        heights, errs = (_on_points(v, by_point, points) for v in (mean, std))
        has_err = _on_points(_multi_seed(rows).astype(float), by_point, points) == 1.0
        xs = x + (i - (len(systems) - 1) / 2) * width
        color = system_color(system, i)
        ax.bar(xs, np.nan_to_num(heights), width, color=color, label=system)
        if has_err.any():
            ax.errorbar(xs[has_err], heights[has_err], yerr=np.nan_to_num(errs[has_err]),
                        fmt="none", capsize=2, ecolor="black", elinewidth=1)
    ax.set_xticks(x, [labels.get(p, p) for p in points], rotation=30, ha="right",
                  fontsize="small")
    ax.set_xlabel("sweep point")
    ax.set_ylabel("macro-F1 (%)")
    ax.set_title("Sweep: macro-F1 per point and system\n"
                 "(mean over seeds; ± sample std where a point has ≥ 2 seeds)",
                 fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_sweep(sweep_dir: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    """Draw the sweep comparison plots into ``sweep_dir/plots/``; returns the paths written."""
    table = load_table(sweep_dir)
    out_dir = Path(sweep_dir) / "plots"
    written = draw("sweep_f1_vs_bytes", lambda: make_sweep_f1_vs_bytes_figure(table), out_dir, formats)
    written += draw("sweep_f1_bar", lambda: make_sweep_f1_bar_figure(table), out_dir, formats)
    return written
