"""A run directory read back into memory (docs/results-format.md), for the plots.

Only ``metrics.json`` is required; every other file is optional and is ``None`` when
absent, so that the plot needing it is skipped rather than the whole figure set failing.
A file that is present but lacks a column or key a plot needs (a run written by an older
nmoe-sim) raises ``PlotSkipped`` naming the file and the column: a figure silently drawn
from a missing field would be drawn from zeros, which is worse than no figure.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from nmoe_sim.errors import ConfigError

log = logging.getLogger(__name__)

_TRUE = {"true", "1", "yes"}


class PlotSkipped(Exception):
    """The run lacks what a plot needs (a file, a column, an empty matrix): logged, not fatal."""


@dataclass(frozen=True)
class CsvTable:
    """The rows of one results CSV, as text; typed views on demand.

    ``source`` names the file in error messages; ``columns`` is its header, kept apart from
    the rows because a header-only file (no query, no round) still says what it holds.
    """

    rows: tuple[dict[str, str], ...]
    source: str = "CSV"
    columns: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, column: str) -> bool:
        return column in self.columns or bool(self.rows and column in self.rows[0])

    def require(self, *columns: str) -> None:
        """PlotSkipped naming this file and the first of ``columns`` it lacks."""
        for column in columns:
            if not self.has(column):
                raise PlotSkipped(f"{self.source} has no column {column!r} "
                                  "(written by an older nmoe-sim? rerun to redraw this plot)")

    def where(self, column: str, value: str) -> "CsvTable":
        rows = tuple(r for r in self.rows if r.get(column) == value)
        return CsvTable(rows, self.source, self.columns)

    def values(self, column: str) -> list[str]:
        """Distinct values of ``column`` in first-seen order."""
        return list(dict.fromkeys(r.get(column, "") for r in self.rows))

    def floats(self, column: str) -> np.ndarray:
        """The column as float64; empty cells (e.g. f1_macro of unevaluated rounds) are NaN."""
        out = np.full(len(self.rows), np.nan)
        for i, row in enumerate(self.rows):
            text = (row.get(column) or "").strip()
            if text:
                try:
                    out[i] = float(text)
                except ValueError:
                    pass
        return out

    def flags(self, column: str) -> np.ndarray:
        return np.array([(r.get(column) or "").strip().lower() in _TRUE for r in self.rows], bool)


def read_table(path: Path) -> CsvTable:
    """A CSV file as a CsvTable named after its path (its header kept even with no rows)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = tuple(reader)
        columns = tuple(reader.fieldnames or ())
    return CsvTable(rows, str(path), columns)


@dataclass(frozen=True)
class RunData:
    run_dir: Path
    metrics: dict[str, Any]
    rounds: Optional[CsvTable] = None
    gating: Optional[CsvTable] = None
    queries: Optional[CsvTable] = None
    topology: Optional[dict[str, Any]] = None
    missing: tuple[str, ...] = field(default=())

    @property
    def systems(self) -> dict[str, Any]:
        return self.metrics.get("systems") or {}

    @property
    def stages(self) -> dict[str, Any]:
        return self.metrics.get("stages") or {}

    @property
    def title(self) -> str:
        return str(self.metrics.get("scenario", self.run_dir.name))

    def _metrics_path(self) -> str:
        return str(self.run_dir / "metrics.json")

    def system_stages(self, system: str) -> list[str]:
        """The stages whose cost ``system`` pays, as the system declared them in metrics.json.

        Only names present in ``stages`` are returned (a declared stage the run did not
        execute has no cost to add). Declared, never guessed from names: the local
        baseline pays for the NMoE stages whose FE and expert it reuses.
        """
        declared = (self.systems.get(system) or {}).get("stages")
        if not isinstance(declared, list):
            raise PlotSkipped(f"{self._metrics_path()}: systems.{system} has no 'stages' list "
                              "(written by an older nmoe-sim?)")
        return [name for name in declared if name in self.stages]

    def is_inference(self, name: str) -> bool:
        """An inference stage: metrics.json gives it an arrival window (never read from its name)."""
        return "arrival_window_s" in (self.stages.get(name) or {})

    def stage_value(self, name: str, field_name: str) -> float:
        """One stage's field as float; PlotSkipped when the key is absent, 0 for null/NaN."""
        stage = self.stages[name]
        if field_name not in stage:
            raise PlotSkipped(f"{self._metrics_path()}: stages.{name} has no {field_name!r} "
                              "(written by an older nmoe-sim?)")
        value = stage[field_name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return 0.0
        return float(value)

    def stage_total(self, names: list[str], field_name: str) -> float:
        return sum((self.stage_value(name, field_name) for name in names), 0.0)

    def gating_matrix(self, system: str) -> np.ndarray:
        """clients x experts routing shares: metrics.json's, else rebuilt from gating.csv."""
        matrix = (self.systems.get(system) or {}).get("gating") or []
        if matrix and all(matrix):
            return np.asarray(matrix, dtype=float)
        if self.gating is None:
            return np.zeros((0, 0))
        rows = self.gating.where("system", system)
        if not len(rows):
            return np.zeros((0, 0))
        rows.require("client", "expert", "share")
        clients = rows.floats("client").astype(int)
        experts = rows.floats("expert").astype(int)
        out = np.zeros((clients.max() + 1, experts.max() + 1))
        out[clients, experts] = rows.floats("share")
        return out


def _read_optional_csv(path: Path) -> Optional[CsvTable]:
    return read_table(path) if path.is_file() else None


def load_run(run_dir: Path) -> RunData:
    """Read a run directory; ConfigError when it has no metrics.json."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (expected metrics.json in it)")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{metrics_path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
    optional = ("rounds.csv", "gating.csv", "queries.csv", "topology.json")
    missing = tuple(name for name in optional if not (run_dir / name).is_file())
    for name in missing:
        log.info("%s: no %s; the plots that need it are skipped", run_dir, name)
    topo_path = run_dir / "topology.json"
    topology = json.loads(topo_path.read_text(encoding="utf-8")) if topo_path.is_file() else None
    return RunData(
        run_dir=run_dir,
        metrics=metrics,
        rounds=_read_optional_csv(run_dir / "rounds.csv"),
        gating=_read_optional_csv(run_dir / "gating.csv"),
        queries=_read_optional_csv(run_dir / "queries.csv"),
        topology=topology,
        missing=missing,
    )
