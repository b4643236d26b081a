"""Parameter sweeps: a scenario's ``sweep`` grid x seeds, run point by point, resumable.

Each point is the scenario with some ``--set``-style overrides and a seed; it runs into
``<out_root>/<scenario>/sweep/<point_id>/seed<seed>/``. A point whose run directory already
has ``metrics.json`` is skipped, so an interrupted sweep continues where it stopped (run
directories are written atomically, so metrics.json present means the run finished), but
only if it ran with the config it would run with now: each finished point stores the
sha256 of its resolved config (``config.sha256``), and a rerun after the scenario changed
refuses to mix old results in (``--rerun-changed`` runs such points again). A point that
fails is recorded as failed, with its reason, in ``points.json``, and the sweep goes on.
Afterwards the comparison tables (nmoe_sim.table) and sweep plots are (re)written. Points
run one at a time here, or at once on a Ray cluster (``--executor ray``, ``SWEEP_EXECUTORS``,
:mod:`nmoe_sim.ray_sweep`) with the same bookkeeping.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from nmoe_sim.config import build_scenario, dump_yaml, expand, scenario_from_raw
from nmoe_sim.errors import ConfigError
from nmoe_sim.provenance import (  # noqa: F401  # load_points, config_hash: part of this module's API
    CONFIG_HASH_FILE, config_hash, load_points, one_line, stored_hash, write_points)
from nmoe_sim.registry import Registry
from nmoe_sim.results import atomic_write_text
from nmoe_sim.table import write_tables

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
    out = {k: v for k, v in raw.items() if k != "sweep"}
    # The seed first, then the overrides on the user's tree, then presets expanded once:
    # an override may name a channel or topology preset.
    return expand({**out, "seed": point.seed}, point.overrides)


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
    spec = scenario_from_raw(raw).sweep  # checks the section's shape and the base scenario
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
@dataclass(frozen=True)
class SweepResult:
    """Where the sweep's results are, and which points failed, each with a one-line reason."""

    sweep_dir: Path
    points: int
    failed: tuple[tuple[SweepPoint, str], ...] = ()


def _check_reuse(sweep_dir: Path, points: Sequence[SweepPoint], hashes: dict[SweepPoint, str],
                 rerun_changed: bool) -> set[SweepPoint]:
    """Finished points whose stored config differs from the one they would run now.

    Without ``rerun_changed`` the first such point is an error: reusing it would put results
    of an old config in the new sweep's tables (one line, before anything is written).
    """
    changed = [p for p in points
               if (p.run_dir(sweep_dir) / "metrics.json").is_file()
               and stored_hash(p.run_dir(sweep_dir)) != hashes[p]]
    if changed and not rerun_changed:
        p = changed[0]
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise ConfigError(
            f"sweep point {p.point_id} seed {p.seed}: its results in {p.run_dir(sweep_dir)} were run with "
            f"a different config than this sweep's{more}; pass --rerun-changed to run such points again, "
            "or use another --out")
    return set(changed)


class Tracker:
    """What a way of running points reports back, from this process, one call at a time:
    a point ``started``, and ``finished`` (with None, or the exception it failed with)."""

    def __init__(self, finished: Callable[[SweepPoint, BaseException | None], None]) -> None:
        self.running: set[SweepPoint] = set()
        self._finished = finished

    def started(self, point: SweepPoint) -> None:
        self.running.add(point)

    def finished(self, point: SweepPoint, exc: BaseException | None) -> None:
        self.running.discard(point)
        self._finished(point, exc)


# (points to run, in order; a point's scenario mapping; the sweep directory; the tracker).
# Points may run in any order and at once, each into point.run_dir(sweep_dir).
RunPoints = Callable[[Sequence[SweepPoint], Callable[[SweepPoint], dict[str, Any]], Path, Tracker], None]


def one_at_a_time(run_point: RunPoint, progress: bool = True) -> RunPoints:
    """The local sweep: each point in order, in this process, through ``run_point``."""
    level = logging.INFO if progress else logging.DEBUG

    def run_points(todo: Sequence[SweepPoint], raw_of: Callable[[SweepPoint], dict[str, Any]], sweep_dir: Path,
                   tracker: Tracker) -> None:
        for i, point in enumerate(todo, 1):
            log.log(level, "[%d/%d] %s seed %d: running", i, len(todo), point.point_id, point.seed)
            run_dir = point.run_dir(sweep_dir)
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            tracker.started(point)
            try:
                run_point(raw_of(point), run_dir)
            except Exception as exc:  # noqa: BLE001  # one point's failure must not stop the sweep
                tracker.finished(point, exc)
                continue
            tracker.finished(point, None)

    return run_points


def _local(run_point: RunPoint | None = None, *, reuse: bool = True, address: str | None = None,
           cpus_per_point: int = 1, progress: bool = True) -> RunPoints:
    assert run_point is not None, "the local sweep runs points through run_point"
    return one_at_a_time(run_point, progress)


# sweep --executor -> (run_point, reuse=, address=, cpus_per_point=, progress=) -> RunPoints
SWEEP_EXECUTORS: Registry[Callable[..., RunPoints]] = Registry("sweep executor")
SWEEP_EXECUTORS.register("local")(_local)
SWEEP_EXECUTORS.register_lazy("ray", "nmoe_sim.ray_sweep:ray_points")


def run_sweep(
    raw: dict[str, Any], out_root: Path, run_point: RunPoint | None, *, progress: bool = True,
    rerun_changed: bool = False, run_points: RunPoints | None = None,
) -> SweepResult:
    """Run every point not yet run, then write tables and plots.

    ``raw`` is the user's tree (presets not expanded: a point's override may name one).
    ``run_point(point_raw, run_dir)`` runs one scenario and writes its run directory exactly
    at ``run_dir``; it may find an incomplete ``run_dir`` left by an interrupted run. Points
    run one at a time in order, or as ``run_points`` runs them (``nmoe_sim.ray_sweep``: at
    once on a Ray cluster). A finished point is reused only if it ran with the same resolved
    config (its ``config.sha256``); one that did not is refused before anything is written,
    or with ``rerun_changed`` deleted and run again. A point whose run raises is recorded as
    failed with its reason and the sweep goes on; the result lists the failures.
    """
    points = expand_sweep(raw)
    scenario = scenario_from_raw(raw)
    hashes = {p: config_hash(build_scenario(point_raw(raw, p))) for p in points}
    sweep_dir = sweep_dir_for(scenario.name, Path(out_root))
    rerun = _check_reuse(sweep_dir, points, hashes, rerun_changed)
    # Only now is this config the one being run: write it (never on a refusal above).
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / "config.yaml", dump_yaml(scenario))
    level = logging.INFO if progress else logging.DEBUG
    status: dict[SweepPoint, str] = {}
    reasons: dict[SweepPoint, str] = {}

    def save() -> None:
        write_points(sweep_dir, points, status, hashes, reasons)

    save()
    todo = []
    for i, point in enumerate(points, 1):
        run_dir = point.run_dir(sweep_dir)
        tag = f"[{i}/{len(points)}] {point.point_id} seed {point.seed}"
        if point in rerun:
            log.log(level, "%s: config changed since it ran; its old results are deleted", tag)
            shutil.rmtree(run_dir)
        elif (run_dir / "metrics.json").is_file():
            log.log(level, "%s: already run, skipped (%s)", tag, run_dir)
            status[point] = "skipped"
            continue
        todo.append(point)

    def finished(point: SweepPoint, exc: BaseException | None) -> None:
        run_dir = point.run_dir(sweep_dir)
        if exc is None and not (run_dir / "metrics.json").is_file():
            exc = RuntimeError(f"run_point did not write {run_dir / 'metrics.json'}")
        tag = f"[{len(status) + 1}/{len(points)}] {point.point_id} seed {point.seed}"
        if exc is not None:
            status[point], reasons[point] = "failed", one_line(exc)
            # Listed again in the summary the CLI prints at the end (and in points.json).
            log.log(level, "%s: failed: %s", tag, reasons[point])
            log.debug("%s: traceback", tag, exc_info=exc)
        else:
            atomic_write_text(run_dir / CONFIG_HASH_FILE, hashes[point] + "\n")
            status[point] = "ran"
            log.log(level, "%s: finished", tag)
        save()

    tracker = Tracker(finished)
    if run_points is None:
        assert run_point is not None, "run_sweep needs run_point or run_points"
        run_points = one_at_a_time(run_point, progress)
    try:
        run_points(todo, lambda p: point_raw(raw, p), sweep_dir, tracker)
    except BaseException:  # Ctrl-C: say where the sweep stopped (the points under way), then stop
        status.update({p: "interrupted" for p in tracker.running})
        save()
        raise
    save()  # the skipped ones too
    csv_path, md_path = write_tables(sweep_dir, [p for p in points if p not in reasons])
    log.log(level, "sweep tables: %s, %s", csv_path, md_path)
    if scenario.output.plots and len(reasons) < len(points):
        from nmoe_sim.plots import plot_sweep  # matplotlib only when plots are asked for

        plot_sweep(sweep_dir, scenario.output.plot_formats)
    return SweepResult(sweep_dir, len(points), tuple((p, reasons[p]) for p in points if p in reasons))
