"""Comparison tables of a sweep: one row per (point, seed, system), then mean ± std over seeds.

Reads only the run directories' ``metrics.json`` (docs/results-format.md) and writes
``table_raw.csv`` (per seed), ``table.csv`` (aggregated) and ``table.md`` (for humans).
Costs come in two flavours: the whole run's (``total_bytes``, ``sim_time_s``,
``energy_j``: every stage the run executed) and the system's own (``system_bytes``, ...:
only the stages that system pays for), because systems of one run share its stages and
only the latter tells them apart on communication.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from nmoe_sim.results import atomic_write_text

if TYPE_CHECKING:  # sweep imports this module; a runtime import would be circular
    from nmoe_sim.sweep import SweepPoint

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("point_id", "seed", "system")


def system_stages(system: str, metrics: dict[str, Any]) -> list[str]:
    """The stages whose cost ``system`` pays, as the run declared them (``systems.<s>.stages``).

    ``nmoe`` pays its three stages and its inference; ``local`` pays the NMoE's stage-1 FE
    and stage-2 expert that it reuses, and its own inference; the runner decides, this
    only reads.
    """
    declared = ((metrics.get("systems") or {}).get(system) or {}).get("stages") or []
    stages = metrics.get("stages") or {}
    return [name for name in declared if name in stages]


def _num(value: Any) -> float | None:
    """A metric as float, or None where it is absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _stage_sum(stages: dict[str, Any], names: Iterable[str], field: str) -> float:
    return float(sum(_num(stages[n].get(field)) or 0.0 for n in names))


def fe_columns(stages: dict[str, Any], own: Iterable[str]) -> dict[str, float]:
    """The feature checks of the FE a system serves with (a stage it pays that measured them)."""
    rep = next((stages[s]["representation"] for s in own if "representation" in (stages.get(s) or {})), None)
    return {f"fe_{key}": _num(rep.get(key)) if rep else float("nan")
            for key in ("linear_probe", "knn", "effective_rank")}


def run_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system of one run's ``metrics.json``: quality, latency and costs."""
    stages: dict[str, Any] = metrics.get("stages") or {}
    systems: dict[str, Any] = metrics.get("systems") or {}
    totals = {
        "total_bytes": _stage_sum(stages, stages, "bytes"),
        "total_bytes_delivered": _stage_sum(stages, stages, "bytes_delivered"),
        "sim_time_s": _stage_sum(stages, stages, "sim_time_s"),
        "energy_j": _stage_sum(stages, stages, "energy_j"),
    }
    rows = []
    for system, m in systems.items():
        own = system_stages(system, metrics)
        row: dict[str, Any] = {
            "system": system,
            "f1_macro": _num(m.get("f1_macro")),
            "accuracy": _num(m.get("accuracy")),
            "local_ratio": _num(m.get("local_ratio")),
            "latency_p95_s": _num((m.get("latency_s") or {}).get("p95")),
            **fe_columns(stages, own),
        }
        for name, stage in stages.items():
            row[f"bytes_{name}"] = _num(stage.get("bytes"))
        row["system_bytes"] = _stage_sum(stages, own, "bytes")
        row["system_bytes_delivered"] = _stage_sum(stages, own, "bytes_delivered")
        row["system_device_energy_j"] = _stage_sum(stages, own, "device_energy_j")
        row["system_sim_time_s"] = _stage_sum(stages, own, "sim_time_s")
        row["system_energy_j"] = _stage_sum(stages, own, "energy_j")
        row.update(totals)
        rows.append(row)
    return rows


def override_columns(point: "SweepPoint") -> dict[str, str]:
    """``("stage1.algorithm=fedce",)`` -> ``{"stage1.algorithm": "fedce"}`` (text, a label)."""
    return dict(item.split("=", 1) for item in point.overrides)


def collect_rows(sweep_dir: Path, points: Sequence["SweepPoint"]) -> list[dict[str, Any]]:
    """One row per (point, seed, system); points whose run has no metrics.json are skipped."""
    rows: list[dict[str, Any]] = []
    for point in points:
        path = point.run_dir(sweep_dir) / "metrics.json"
        if not path.is_file():
            log.warning("table: %s has no metrics.json; left out", path.parent)
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        for row in run_rows(metrics):
            rows.append(
                {"point_id": point.point_id, **override_columns(point), "seed": point.seed, **row}
            )
    return rows


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _numeric_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Columns (first-seen order) whose present values are all numbers; labels excluded."""
    order: dict[str, bool] = {}
    for row in rows:
        for col, value in row.items():
            if col in LABEL_COLUMNS:
                continue
            numeric = _is_missing(value) or _num(value) is not None
            order[col] = order.get(col, True) and numeric
    return [col for col, numeric in order.items() if numeric]


def aggregate_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group by (point_id, system): ``<col>_mean``, ``<col>_std`` (ddof=1; 0 for one seed)."""
    numeric = _numeric_columns(rows)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["point_id"], row["system"]), []).append(row)
    out = []
    for (point_id, system), group in groups.items():
        agg: dict[str, Any] = {"point_id": point_id}
        # Override values are the same for every seed of a point: carry them as labels.
        agg.update({c: v for c, v in group[0].items() if c not in numeric and c not in LABEL_COLUMNS})
        agg["system"] = system
        agg["n_seeds"] = len({r.get("seed") for r in group})
        for col in numeric:
            values = [float(r[col]) for r in group if not _is_missing(r.get(col))]
            if not values:
                agg[f"{col}_mean"] = agg[f"{col}_std"] = None
                continue
            agg[f"{col}_mean"] = float(np.mean(values))
            agg[f"{col}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        out.append(agg)
    return out


# --------------------------------------------------------------------------- writing
def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if _is_missing(v) else v for k, v in row.items()})
    return buf.getvalue()


def _cell(row: dict[str, Any], col: str, scale: float, digits: int) -> str:
    mean, std = row.get(f"{col}_mean"), row.get(f"{col}_std")
    if _is_missing(mean):
        return "–"
    return f"{mean * scale:.{digits}f} ± {(std or 0.0) * scale:.{digits}f}"


# (header, column, scale, decimals): quality as percentages, bytes in MB.
MARKDOWN_COLUMNS = (
    ("F1 (%)", "f1_macro", 100.0, 1),
    ("Accuracy (%)", "accuracy", 100.0, 1),
    ("LR (%)", "local_ratio", 100.0, 1),
    ("FE probe (%)", "fe_linear_probe", 100.0, 1),  # the linear probe of the FE the system serves with
    ("p95 latency (ms)", "latency_p95_s", 1e3, 2),  # sub-ms on-device answers stay visible
    ("Delivered (MB)", "system_bytes_delivered", 1e-6, 2),
    ("Offered (MB)", "system_bytes", 1e-6, 2),
    ("Time (s)", "system_sim_time_s", 1.0, 2),
    ("Energy (J)", "system_energy_j", 1.0, 2),
    ("Device energy (J)", "system_device_energy_j", 1.0, 2),
    ("Run bytes (MB)", "total_bytes", 1e-6, 2),
)


def table_markdown(agg: Sequence[dict[str, Any]]) -> str:
    header = ["Point", "System", "Seeds", *(h for h, *_ in MARKDOWN_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in agg:
        cells = [str(row["point_id"]), str(row["system"]), str(row["n_seeds"])]
        cells += [_cell(row, col, scale, d) for _, col, scale, d in MARKDOWN_COLUMNS]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    note = (
        "\nCells are mean ± sample std over seeds (a single seed shows ± 0). Bytes, time and "
        "energy count the stages the system pays for, as each run declares them in "
        "metrics.json (nmoe: its three stages and its inference; local: the NMoE's stage-1 FE "
        "and stage-2 experts that it reuses, and its inference; another baseline: its own "
        "training and inference). FE probe is the linear-probe accuracy of the stage-1 FE the "
        "system serves with (– where none was probed). Delivered counts the payload of transfers that arrived, "
        "offered every transfer tried; device energy is the clients' batteries' share. Run "
        "bytes count every stage of the run (offered).\n"
    )
    return "\n".join(lines) + "\n" + note


def write_tables(sweep_dir: Path, points: Sequence["SweepPoint"]) -> tuple[Path, Path]:
    """Write table_raw.csv, table.csv and table.md into ``sweep_dir``; returns (csv, md)."""
    sweep_dir = Path(sweep_dir)
    rows = collect_rows(sweep_dir, points)
    agg = aggregate_rows(rows)
    atomic_write_text(sweep_dir / "table_raw.csv", rows_to_csv(rows))
    csv_path = atomic_write_text(sweep_dir / "table.csv", rows_to_csv(agg))
    md_path = atomic_write_text(sweep_dir / "table.md", table_markdown(agg))
    return csv_path, md_path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
