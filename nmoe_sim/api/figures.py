"""The run figures the API returns, by name: the same makers that ``plots/`` saves as files.

A figure a run cannot draw (an alignment figure of an NMoE run, a gating heatmap of FedAvg,
which has no gate) is a ConfigError saying why, where saving would skip it with a log line:
in a notebook the student asked for that figure and should learn why there is none.
"""

from __future__ import annotations

from typing import Any, Callable

from matplotlib.figure import Figure

from nmoe_sim.errors import ConfigError
from nmoe_sim.plots import (
    make_comm_vs_accuracy_figure,
    make_gating_figure,
    make_latency_cdf_figure,
    make_representation_figure,
    make_stage_costs_figure,
    make_topology_figure,
)
from nmoe_sim.plots.alignment_plots import make_accuracy_vs_rounds_figure
from nmoe_sim.plots.rundata import PlotSkipped, RunData
from nmoe_sim.registry import Registry

FigureFn = Callable[..., Figure]  # (run, **options) -> Figure
FIGURES: Registry[FigureFn] = Registry("figure")


def _gating(run: RunData, system: str | None = None) -> Figure:
    return make_gating_figure(run, system or str(run.metrics.get("system", "nmoe")))


for _name, _make in (("comm_vs_accuracy", make_comm_vs_accuracy_figure), ("latency_cdf", make_latency_cdf_figure),
                     ("topology", make_topology_figure), ("representation", make_representation_figure),
                     ("stage_costs", make_stage_costs_figure), ("accuracy_vs_rounds", make_accuracy_vs_rounds_figure),
                     ("gating", _gating)):
    FIGURES.register(_name)(_make)


def figure(run: RunData, name: str, **options: Any) -> Figure:
    """Figure ``name`` of ``run``; options go to its maker (``gating``: ``system=``)."""
    make = FIGURES.get(name, "plot")
    try:
        return make(run, **options)
    except PlotSkipped as why:
        raise ConfigError(f"plot {name}: {why}") from None
    except TypeError as exc:  # an option the maker does not take
        raise ConfigError(f"plot {name}: {exc}") from None
