"""A run directory read back into memory (docs/results-format.md), for the plots.

Only ``metrics.json`` is required; every other file is optional and is ``None`` when
absent, so that the plot needing it is skipped rather than the whole figure set failing.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from nmoe_sim.errors import ConfigError
from nmoe_sim.table import read_csv

log = logging.getLogger(__name__)

_TRUE = {"true", "1", "yes"}


@dataclass(frozen=True)
class CsvTable:
    """The rows of one results CSV, as text; typed views on demand."""

    rows: tuple[dict[str, str], ...]

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, column: str, value: str) -> "CsvTable":
        return CsvTable(tuple(r for r in self.rows if r.get(column) == value))

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

    def stage_total(self, names: list[str], field_name: str) -> float:
        total = 0.0
        for name in names:
            value = self.stages[name].get(field_name)
            if isinstance(value, (int, float)) and not math.isnan(value):
                total += float(value)
        return total

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
        clients = rows.floats("client").astype(int)
        experts = rows.floats("expert").astype(int)
        out = np.zeros((clients.max() + 1, experts.max() + 1))
        out[clients, experts] = rows.floats("share")
        return out


def _read_optional_csv(path: Path) -> Optional[CsvTable]:
    if not path.is_file():
        return None
    return CsvTable(tuple(read_csv(path)))


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
