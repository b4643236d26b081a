"""Running a scenario from Python: the one path the CLI and notebooks share.

``scenario(...)`` turns a file, a mapping or a typed :class:`Scenario` plus overrides into a
validated, frozen scenario; ``start(...)`` makes a fresh run directory and runs it there,
leaving nothing behind when the input proves bad; ``execute(...)`` runs into a directory
that exists (a sweep point, a resumed run). Heavy imports (torch) happen only when
something runs, so importing this module keeps ``nmoe-sim validate`` fast.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, Union

from nmoe_sim.config import Override, Scenario, load_scenario, scenario_from_raw
from nmoe_sim.errors import ConfigError

if TYPE_CHECKING:
    from nmoe_sim.engine.checkpoint import Saved
    from nmoe_sim.reuse import StageCache

ScenarioSource = Union[str, Path, Mapping[str, Any], Scenario]
# --set strings ("stage1.rounds=3", values parsed as YAML), or a mapping of dotted keys to
# Python values ({"stage1.rounds": 3}).
Overrides = Union[Sequence[str], Mapping[str, Any]]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a notebook's interrupt) during a run: still a KeyboardInterrupt, carrying the
    run directory, whose status.json says interrupted and which ``--resume`` goes on from."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def _override_list(overrides: Overrides | None) -> list[Override]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [(key, value) for key, value in overrides.items()]
    if isinstance(overrides, (str, bytes)):
        # One string is almost surely one --set meant as a list of one: say so, not iterate chars.
        raise ConfigError(f"overrides: give a list of KEY=VALUE strings or a mapping, not the string {overrides!r}")
    return list(overrides)


def scenario(source: ScenarioSource, overrides: Overrides | None = None) -> Scenario:
    """A validated, frozen scenario from a YAML file (a relative path missing from the working
    directory is looked up among the shipped scenarios), a mapping written like the YAML, or a
    Scenario; overrides use ``--set``'s keys. Bad input raises ConfigError naming the key."""
    items = _override_list(overrides)
    if isinstance(source, Scenario):
        return scenario_from_raw(source.to_dict(), items, "<Scenario>") if items else source
    if isinstance(source, Mapping):
        return scenario_from_raw(dict(source), items, "<mapping>")
    if isinstance(source, (str, Path)):
        return load_scenario(source, items)
    raise ConfigError(f"scenario: expected a YAML file path, a mapping or a Scenario, got {type(source).__name__}")


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def check_data_files(cfg: Scenario) -> None:
    """A missing dataset folder or file is one error before any directory is made."""
    from nmoe_sim.data.datasets import check_dataset_files  # torch: only when something runs

    check_dataset_files(cfg.data)


def execute(cfg: Scenario, run_dir: Path, *, on_record: Callable[[Any], None] | None = None,
            reuse: "StageCache | None" = None, checkpoint: bool = False, resume: "Saved | None" = None,
            plots: bool | None = None) -> dict[str, Any]:
    """Run ``cfg`` into the existing ``run_dir``, then draw its plots (``plots``: default
    ``output.plots``); returns metrics.json's content."""
    from nmoe_sim.runner import run  # heavy imports (torch) only when something runs

    metrics = run(cfg, run_dir, on_record=on_record, reuse=reuse, checkpoint=checkpoint, resume=resume)
    if cfg.output.plots if plots is None else plots:
        from nmoe_sim.plots import plot_run

        plot_run(run_dir, cfg.output.plot_formats)
    return metrics


def start(cfg: Scenario, out: str | Path | None = None, *, on_record: Callable[[Any], None] | None = None,
          plots: bool | None = None) -> tuple[Path, dict[str, Any]]:
    """Run ``cfg`` in a fresh directory under ``out`` (default ``output.root``)/<name>/,
    checkpointed so that ``nmoe-sim run --resume`` can go on after an interruption.

    Input found bad only once the run started (a malformed dataset file, a loss that turned
    non-finite) leaves no half-filled directory behind, nor the empty folders made for it.
    Ctrl-C raises :class:`RunInterrupted` naming the directory.
    """
    from nmoe_sim.results import new_run_dir

    check_data_files(cfg)
    root = Path(out) if out else Path(cfg.output.root)
    made = _missing_folders(root / cfg.name)
    run_dir = new_run_dir(root, cfg.name, cfg.seed)
    try:
        metrics = execute(cfg, run_dir, on_record=on_record, checkpoint=True, plots=plots)
    except ConfigError:
        shutil.rmtree(run_dir, ignore_errors=True)  # this run's folder held nothing else
        for folder in made:  # deepest first; rmdir only ever removes an empty folder
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise RunInterrupted(run_dir) from None
    return run_dir, metrics
