"""A finished run as pandas DataFrames and matplotlib figures, for notebooks and scripts.

:class:`RunResult` reads a run directory (docs/results-format.md) lazily: each table is
read from its CSV the first time it is asked for. The summaries of metrics.json become
tables too: one row per system (``systems``), per stage (``stages``), and the stage-1
representation probe (``representation``). Figures are the run's own plots, returned as
``matplotlib.figure.Figure`` objects (a notebook shows one inline), never saved.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from nmoe_sim.config import Scenario, load_scenario
from nmoe_sim.errors import ConfigError
from nmoe_sim.plots.rundata import RunData, load_run

# The CSV tables of a run directory, by the attribute that reads each.
TABLES = ("rounds", "events", "hops", "queries", "clients", "failures", "gating", "assignments")
# Columns naming nodes ("3", "bs") or lists of them ("3 bs", "1 4"): read as text, so that a
# node id compares equal to topology.json's wherever it appears (pandas would make "3" an
# int in one file and a float in a column with blanks).
_TEXT_COLUMNS = ("src", "dst", "node", "u", "v", "route", "experts")


def _scalars(entry: dict[str, Any]) -> dict[str, Any]:
    """The one-number fields of a metrics.json entry; a nested mapping of numbers (latency_s)
    is spread into ``<key>_<sub>`` columns, lists (gating, per-round series) are left out."""
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            out.update({f"{key}_{sub}": v for sub, v in value.items() if not isinstance(v, (dict, list))})
        elif not isinstance(value, list):
            out[key] = value
    return out


class RunResult:
    """One run directory. ``metrics`` is metrics.json as a dict; every table a DataFrame."""

    def __init__(self, run_dir: str | Path, config: Scenario | None = None) -> None:
        self._data: RunData = load_run(Path(run_dir))  # ConfigError unless it holds metrics.json
        self.run_dir: Path = self._data.run_dir
        self.metrics: dict[str, Any] = self._data.metrics
        self._config = config

    def __repr__(self) -> str:
        systems = ", ".join(self.metrics.get("systems", {}))
        return f"RunResult({str(self.run_dir)!r}, system={self.metrics.get('system')!r}, systems=[{systems}])"

    @property
    def config(self) -> Scenario:
        """The resolved scenario the run saved (config.yaml), validated again."""
        if self._config is None:
            self._config = load_scenario(self.run_dir / "config.yaml")
        return self._config

    # ------------------------------------------------------------------ summaries
    @cached_property
    def systems(self) -> pd.DataFrame:
        """One row per evaluated system (index ``system``): macro-F1, accuracy, LR, latency,
        bytes, simulated time and energy (metrics.json's ``systems``)."""
        rows = {name: _scalars(entry) for name, entry in self.metrics.get("systems", {}).items()}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("system")

    @cached_property
    def stages(self) -> pd.DataFrame:
        """One row per executed stage (index ``stage``): bytes, rounds, times, energy."""
        rows = {name: {k: v for k, v in entry.items() if not isinstance(v, (dict, list))}
                for name, entry in self.metrics.get("stages", {}).items()}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("stage")

    @cached_property
    def representation(self) -> pd.DataFrame:
        """Stage 1's feature probe (metrics.json ``stages.<stage1>.representation``): rows
        ``trained`` and ``untrained``, columns linear_probe, knn, effective_rank; empty for a
        run without one (an alignment run)."""
        for name, entry in self.metrics.get("stages", {}).items():
            rep = entry.get("representation")
            if isinstance(rep, dict):
                keys = ("linear_probe", "knn", "effective_rank")
                rows = {"trained": {k: rep.get(k) for k in keys},
                        "untrained": {k: (rep.get("untrained") or {}).get(k) for k in keys}}
                return pd.DataFrame.from_dict(rows, orient="index").rename_axis(name)
        return pd.DataFrame(columns=["linear_probe", "knn", "effective_rank"])

    def representation_flags(self) -> dict[str, Any]:
        """The representation entry's other fields (collapsed, no_update, FedSC's checks)."""
        for entry in self.metrics.get("stages", {}).values():
            rep = entry.get("representation")
            if isinstance(rep, dict):
                return {k: v for k, v in rep.items() if not isinstance(v, dict)}
        return {}

    @cached_property
    def nodes(self) -> pd.DataFrame:
        """One row per node of topology.json (index ``id``): kind, position, device."""
        nodes = (self._data.topology or {}).get("nodes", [])
        return pd.DataFrame(nodes, columns=["id", "kind", "x_m", "y_m", "device"]).set_index("id")

    @cached_property
    def links(self) -> pd.DataFrame:
        """One row per link (metrics.json ``links``): distance, mean SNR both ways, the NMoE's
        bytes, airtime and utilization; topology.json's edges when metrics.json has none."""
        rows = self.metrics.get("links") or (self._data.topology or {}).get("edges", [])
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ tables
    def table(self, name: str) -> pd.DataFrame:
        """The run's ``<name>.csv`` (one of TABLES) as a DataFrame."""
        if name not in TABLES:
            raise ConfigError(f"table {name!r}: unknown; known: {', '.join(TABLES)}")
        path = self.run_dir / f"{name}.csv"
        if not path.is_file():
            raise ConfigError(f"{path}: not in this run directory (an alignment run alone writes "
                              "assignments.csv; docs/results-format.md lists every file)")
        return pd.read_csv(path, dtype={column: str for column in _TEXT_COLUMNS})

    rounds = cached_property(lambda self: self.table("rounds"))
    rounds.__doc__ = "rounds.csv: one row per federated round of every system (for curves)."
    events = cached_property(lambda self: self.table("events"))
    events.__doc__ = "events.csv: every transfer and computation, in each system's simulated time."
    hops = cached_property(lambda self: self.table("hops"))
    hops.__doc__ = "hops.csv: every link-level transmission, with its SNR and attempts."
    queries = cached_property(lambda self: self.table("queries"))
    queries.__doc__ = "queries.csv: every inference query, its experts and latency."
    clients = cached_property(lambda self: self.table("clients"))
    clients.__doc__ = "clients.csv: per system, stage and client: bytes, airtime, compute, battery energy."
    failures = cached_property(lambda self: self.table("failures"))
    failures.__doc__ = "failures.csv: every round participant whose update did not reach aggregation, and why."

    def gating(self, system: str | None = None) -> pd.DataFrame:
        """The client x expert routing shares of ``system`` (default: the run's own system):
        row i, column j is the share of client i's routing slots sent to expert j."""
        name = system or self.metrics.get("system", "nmoe")
        if name not in self.metrics.get("systems", {}):
            raise ConfigError(f"gating: unknown system {name!r}; this run has "
                              f"{', '.join(self.metrics.get('systems', {}))}")
        matrix = self._data.gating_matrix(name)
        frame = pd.DataFrame(matrix)
        frame.index.name, frame.columns.name = "client", "expert"
        return frame

    # ------------------------------------------------------------------ figures
    def plot(self, name: str, **options: Any) -> Figure:
        """The run's figure ``name`` (see :data:`nmoe_sim.api.figures.FIGURES`), e.g.
        ``plot("gating", system="nmoe")``; ConfigError saying why when the run lacks its data."""
        from nmoe_sim.api.figures import figure

        return figure(self._data, name, **options)

    @property
    def plot_names(self) -> list[str]:
        from nmoe_sim.api.figures import FIGURES

        return FIGURES.names()


def load(run_dir: str | Path) -> RunResult:
    """An existing run directory (one with metrics.json) as a :class:`RunResult`."""
    return RunResult(run_dir)
