"""What every plot shares: the registry, atomic saving and one colour per system.

Figures are built as ``matplotlib.figure.Figure`` objects, never through pyplot: no GUI
backend is ever touched (headless servers, CI) and no global figure list can leak memory,
so nothing has to be closed and the user's own pyplot backend is left alone.
"""

from __future__ import annotations

import logging
import io
from pathlib import Path
from typing import Callable, Sequence

from matplotlib.figure import Figure

from nmoe_sim.plots.rundata import PlotSkipped, RunData
from nmoe_sim.results import atomic_write_bytes
from nmoe_sim.registry import Registry

log = logging.getLogger(__name__)

PlotFn = Callable[[RunData, Path, Sequence[str]], list[Path]]  # (run, out_dir, formats)
PLOTS: Registry[PlotFn] = Registry("plot")

FORMATS = ("png", "svg", "pdf")  # what savefig is asked for; output.plot_formats picks
DEFAULT_FORMATS = ("png",)  # SVG doubles the plotting time: on request
DPI = 120
MB = 1e6  # bytes per megabyte, for every axis in MB
# Fixed colours so a system looks the same in every figure of every run. An NMoE run and
# an alignment run never share a figure, so the two sets may reuse colours.
_SYSTEM_COLORS = {"nmoe": "C0", "local": "C1", "centralized": "C2", "fedavg": "C3",
                  "alignment": "C0", "greedy": "C3", "random": "C1", "unlimited": "C2"}
# And a fixed line style and marker per system, so that two systems with the same curve
# (local and fedavg both answer on the device) stay distinguishable where one hides the
# other, and in greyscale print.
_SYSTEM_STYLES = {"nmoe": ("-", "o"), "local": ("--", "s"), "centralized": ("-.", "^"),
                  "fedavg": (":", "v"), "alignment": ("-", "o"), "greedy": (":", "v"),
                  "random": ("--", "s"), "unlimited": ("-.", "^")}
_OTHER_STYLES = (("-", "D"), ("--", "P"), ("-.", "X"), (":", "*"))

__all__ = ["PLOTS", "PlotFn", "PlotSkipped", "FORMATS", "DEFAULT_FORMATS", "DPI", "MB", "system_color",
           "system_style", "save_figure", "draw"]


def system_color(system: str, order: int = 0) -> str:
    return _SYSTEM_COLORS.get(system, f"C{4 + order % 6}")


def system_style(system: str, order: int = 0) -> tuple[str, str]:
    """(line style, marker) of ``system``: fixed for the known ones, cycled for the rest."""
    return _SYSTEM_STYLES.get(system, _OTHER_STYLES[order % len(_OTHER_STYLES)])


def save_figure(fig: Figure, path_stem: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    """Save ``fig`` in each of ``formats`` next to ``path_stem``, each atomically; returns the paths."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"plot formats {unknown} not supported; known: {', '.join(FORMATS)}")
    written = []
    for fmt in formats:
        path = path_stem.with_suffix(f".{fmt}")
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI)
        atomic_write_bytes(path, buf.getvalue())  # fsync-ed; a killed save leaves no half figure
        written.append(path)
    return written


def draw(name: str, make: Callable[[], Figure], out_dir: Path,
         formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    """Build one figure and save it as ``out_dir/name.<format>``, or log why it is skipped."""
    try:
        fig = make()
    except PlotSkipped as why:
        log.info("plot %s skipped: %s", name, why)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out_dir / name, formats)
