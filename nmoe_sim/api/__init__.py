"""nmoe-sim's Python API, for notebooks and scripts (docs/api.md).

    import nmoe_sim
    result = nmoe_sim.run("scenarios/quickstart.yaml", {"stage1.rounds": 3}, out="/tmp/runs")
    result.systems            # pandas DataFrame, one row per system
    result.plot("gating")     # a matplotlib Figure, shown inline by Jupyter

``run`` is what ``nmoe-sim run`` does (the CLI is a thin layer over it), less the progress
bars and the summary table; ``load`` reads a run directory written by either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from nmoe_sim.api.result import TABLES, RunResult, load
from nmoe_sim.api.running import Overrides, RunInterrupted, ScenarioSource, scenario, start

__all__ = ["run", "load", "scenario", "RunResult", "RunInterrupted", "TABLES", "Overrides", "ScenarioSource"]


def run(source: ScenarioSource, overrides: Overrides | None = None, *, out: str | Path | None = None,
        plots: bool | None = None, on_record: Callable[[Any], None] | None = None) -> RunResult:
    """Run a scenario (a YAML path, a mapping or a Scenario, plus ``--set``-style overrides)
    into a fresh directory under ``out`` (default the scenario's ``output.root``) and return it.

    ``plots`` draws the run's PNGs into its ``plots/`` folder (default ``output.plots``);
    ``on_record`` sees every record as it is made (a progress bar). Raises ConfigError for
    bad input, naming the key or file, and RunInterrupted (a KeyboardInterrupt naming the
    directory to ``--resume``) when interrupted.
    """
    cfg = scenario(source, overrides)
    run_dir, _ = start(cfg, out, on_record=on_record, plots=plots)
    return RunResult(run_dir, config=cfg)
