"""Parameter sweeps: a scenario's ``sweep`` grid x seeds, run point by point, resumable.

Each point is the scenario with some ``--set``-style overrides and a seed; it runs into
``<out_root>/<scenario>/sweep/<point_id>/seed<seed>/``. A point whose run directory already
has ``metrics.json`` is skipped, so an interrupted sweep continues where it stopped (run
directories are written atomically, so metrics.json present means the run finished).
Afterwards the comparison tables (nmoe_sim.table) and sweep plots are (re)written.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from nmoe_sim.config import apply_override, build_scenario, dump_yaml, resolve_presets
from nmoe_sim.errors import ConfigError
from nmoe_sim.table import write_tables, write_text_atomic

log = logging.getLogger(__name__)

RunPoint = Callable[[dict[str, Any], Path], Path]

_UNSAFE = re.compile(r"[^a-z0-9._=+-]")  # upper case too: macOS folds case in file names
_MAX_SLUG = 120


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: overrides like ``("stage1.algorithm=fedce",)`` and a seed."""

    overrides: tuple[str, ...]
    seed: int

    @property
    def point_id(self) -> str:
        """A stable, filesystem-safe name of the overrides ('base' when there are none).

        Readable overrides are used as they are; one with characters a file name cannot
        hold safely, or a very long one, gets a hash of the exact text appended so that
        two different points never share a folder.
        """
        if not self.overrides:
            return "base"
        text = "__".join(self.overrides)
        slug = _UNSAFE.sub("-", text)[:_MAX_SLUG]
        if slug != text or any("__" in item for item in self.overrides):
            digest = hashlib.sha1("\n".join(self.overrides).encode("utf-8")).hexdigest()[:8]
            slug = f"{slug}-{digest}"
        return slug

    def run_dir(self, sweep_dir: Path) -> Path:
        return Path(sweep_dir) / self.point_id / f"seed{self.seed}"


def sweep_dir_for(scenario_name: str, out_root: Path) -> Path:
    return Path(out_root) / scenario_name / "sweep"


def _value_text(key: str, value: Any) -> str:
    """A grid value as override text that ``apply_override`` parses back to the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    if text.endswith("\n..."):  # PyYAML's end-of-document marker after a plain scalar
        text = text[: -len("\n...")].strip()
    if "\n" in text or yaml.safe_load(text) != value:
        raise ConfigError(f"sweep.grid.{key}: value {value!r} cannot be written as an override")
    return text


def point_raw(raw: dict[str, Any], point: SweepPoint) -> dict[str, Any]:
    """The scenario mapping of one point: sweep section removed, overrides applied, seed set."""
    out = copy.deepcopy(raw)
    out.pop("sweep", None)
    for item in point.overrides:
        apply_override(out, item)
    out["seed"] = point.seed
    # An override may name a channel or topology preset: expand it like load_raw does.
    return resolve_presets(out)


def _check(raw: dict[str, Any], point: SweepPoint, where: str) -> None:
    try:
        build_scenario(point_raw(raw, point))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def expand_sweep(raw: dict[str, Any]) -> list[SweepPoint]:
    """The grid's Cartesian product (keys and values in their order) x seeds, validated."""
    if not isinstance(raw.get("sweep"), dict):
        raise ConfigError(
            "sweep: the scenario has no sweep section; expected "
            "sweep: {grid: {KEY: [VALUES...]}, seeds: [SEEDS...]}"
        )
    spec = build_scenario(raw).sweep  # checks the section's shape and the base scenario
    assert spec is not None
    if not spec.seeds:
        raise ConfigError("sweep.seeds: give at least one seed")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError(f"sweep.seeds: duplicate seeds in {list(spec.seeds)}")
    for seed in spec.seeds:
        _check(raw, SweepPoint((), seed), f"sweep.seeds: seed {seed}")
    axes: list[list[str]] = []
    for key, values in spec.grid.items():
        where = f"sweep.grid.{key}"
        if key == "seed" or key.split(".")[0] == "sweep":
            raise ConfigError(f"{where}: cannot be swept; list seeds under sweep.seeds")
        if not values:
            raise ConfigError(f"{where}: give at least one value")
        items = [f"{key}={_value_text(key, v)}" for v in values]
        if len(set(items)) != len(items):
            raise ConfigError(f"{where}: duplicate values in {list(values)}")
        for item, value in zip(items, values):
            # One override at a time, so a bad key or value is blamed on its grid key.
            _check(raw, SweepPoint((item,), spec.seeds[0]), f"{where} = {value!r}")
        axes.append(items)
    points = []
    for combo in itertools.product(*axes):
        # Cross-field checks (e.g. top_k <= clients) only fail for some combinations.
        _check(raw, SweepPoint(combo, spec.seeds[0]), f"sweep point {' '.join(combo) or 'base'}")
        points.extend(SweepPoint(tuple(combo), seed) for seed in spec.seeds)
    return points


# --------------------------------------------------------------------------- running
def write_points(sweep_dir: Path, points: Sequence[SweepPoint], status: dict[SweepPoint, str]) -> Path:
    entries = [
        {
            "id": p.point_id,
            "overrides": list(p.overrides),
            "seed": p.seed,
            "run_dir": p.run_dir(Path(".")).as_posix(),
            "status": status.get(p, "pending"),
        }
        for p in points
    ]
    text = json.dumps({"points": entries}, indent=2) + "\n"
    return write_text_atomic(Path(sweep_dir) / "points.json", text)


def load_points(sweep_dir: Path) -> list[SweepPoint]:
    """The points a sweep directory's points.json lists."""
    path = Path(sweep_dir) / "points.json"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: not a sweep directory (no points.json)")
    entries = json.loads(path.read_text(encoding="utf-8"))["points"]
    return [SweepPoint(tuple(e["overrides"]), int(e["seed"])) for e in entries]


def run_sweep(
    raw: dict[str, Any], out_root: Path, run_point: RunPoint, *, progress: bool = True
) -> Path:
    """Run every point not yet run, in order, then write tables and plots; returns the sweep dir.

    ``run_point(point_raw, run_dir)`` runs one scenario and writes its run directory exactly
    at ``run_dir``; it may find an incomplete ``run_dir`` left by an interrupted run.
    """
    points = expand_sweep(raw)
    scenario = build_scenario(raw)
    sweep_dir = sweep_dir_for(scenario.name, Path(out_root))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep_dir / "config.yaml", dump_yaml(scenario))
    level = logging.INFO if progress else logging.DEBUG
    status: dict[SweepPoint, str] = {}
    write_points(sweep_dir, points, status)
    for i, point in enumerate(points, 1):
        run_dir = point.run_dir(sweep_dir)
        tag = f"[{i}/{len(points)}] {point.point_id} seed {point.seed}"
        if (run_dir / "metrics.json").is_file():
            log.log(level, "%s: already run, skipped (%s)", tag, run_dir)
            status[point] = "skipped"
            continue
        log.log(level, "%s: running", tag)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            run_point(point_raw(raw, point), run_dir)
        except BaseException:
            status[point] = "failed"
            write_points(sweep_dir, points, status)
            raise
        if not (run_dir / "metrics.json").is_file():
            status[point] = "failed"
            write_points(sweep_dir, points, status)
            raise RuntimeError(f"run_point did not write {run_dir / 'metrics.json'}")
        status[point] = "ran"
        write_points(sweep_dir, points, status)
    write_points(sweep_dir, points, status)
    csv_path, md_path = write_tables(sweep_dir, points)
    log.log(level, "sweep tables: %s, %s", csv_path, md_path)
    if scenario.output.plots:
        from nmoe_sim.plots import plot_sweep  # matplotlib only when plots are asked for

        plot_sweep(sweep_dir, scenario.output.plot_formats)
    return sweep_dir
