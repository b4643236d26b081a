"""The client-expert alignment system end to end: rounds in simulated time, exact bytes,
capacities, fitness, usage-weighted aggregation, determinism, CLI and plots.

Byte counts use hand-computed sizes of the tiny widths (tests/conftest.py): FE channels
(4,), feature_dim 8 on digits = 560 params; one expert 8 -> 8 -> 10 =
(8*8 + 8) + (8*10 + 10) = 162 params; 4 bytes per parameter.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, TINY_FE_PARAMS, tiny_raw
from nmoe_sim.runner import run
from nmoe_sim.systems.alignment import run_assignment
from nmoe_sim.config import build_scenario
from nmoe_sim.errors import ConfigError
from nmoe_sim.fl.alignment.moe import ExpertFeedback
from nmoe_sim.fl.alignment.profiling import profile_clients
from nmoe_sim.fl.alignment.system import AlignmentFL, ClientUpdate, alignment_costs
from nmoe_sim.fl.rounds import LocalResult
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import build_world

EXPERT_PARAMS = 162
FE_BYTES = TINY_FE_PARAMS * 4
EXPERT_BYTES = EXPERT_PARAMS * 4
ASSIGNMENTS = ["alignment", "greedy", "random", "unlimited"]
QUICK = REPO_ROOT / "scenarios" / "alignment_quick.yaml"


def tiny_alignment(**options: Any) -> Any:
    """The tiny scenario as ``system: alignment``: 4 clients, 4 experts, capacities 1..3."""
    raw = tiny_raw("network.devices.assign=[phone, iot, laptop]")
    raw["system"] = "alignment"
    raw["alignment"] = {"experts": 4, "expert_hidden": 8, "rounds": 2, "batch_size": 16,
                        "capacity": [1, 2, 3, 2], "target_accuracy": 0.2, **options}
    return build_scenario(raw)


def tiny_world(cfg: Any) -> Any:
    return build_world(cfg, SeedStreams(cfg.seed))


def train(cfg: Any, assignment: str) -> tuple[AlignmentFL, Any]:
    world = tiny_world(cfg)
    profiles = profile_clients(world, world.new_sim("test"), cfg.alignment, alignment_costs(world, cfg.alignment))
    return run_assignment(world, cfg.alignment, assignment, profiles)


# ------------------------------------------------------------------ the quick scenario, via the CLI
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """``python run_scenario.py scenarios/alignment_quick.yaml --out TMP``, run once."""
    out = tmp_path_factory.mktemp("quick")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "run_scenario.py"), str(QUICK), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])  # the run directory is the last line
    assert run_dir.parent == out / "alignment_quick"
    assert "client-expert alignment" in proc.stdout and "util CV" in proc.stdout  # the summary table
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_quick_scenario_runs_every_assignment(quick_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, metrics = quick_run
    assert metrics["system"] == "alignment" and list(metrics["systems"]) == ASSIGNMENTS
    assert (run_dir / "config.yaml").is_file()
    for name, s in metrics["systems"].items():
        assert s["rounds"] == 5 and len(s["accuracy_per_round"]) == 5 and len(s["utilization_cv_per_round"]) == 5
        assert 0.0 <= s["accuracy"] <= 1.0 and s["accuracy"] == s["accuracy_per_round"][-1]
        assert s["local_ratio"] is None and s["total_bytes"] > 0 and s["sim_time_s"] > 0 and s["energy_j"] > 0
        if s["rounds_to_target"] is not None:  # the first round at or above the target
            r = s["rounds_to_target"]
            assert s["accuracy_per_round"][r - 1] >= 0.4 > max([0.0, *s["accuracy_per_round"][: r - 1]])
    with (run_dir / "rounds.csv").open() as f:
        stages = {row["stage"] for row in csv.DictReader(f)}
    assert stages == {f"alignment_{a}" for a in ASSIGNMENTS}
    # Capacity profiles are recorded; the scenario's override wins over the profile.
    clients = metrics["capacity"]["clients"]
    assert [c["k"] for c in clients] == [2, 1, 3, 2, 1, 3]
    assert all(c["binding"] in ("memory", "compute", "link", "experts") for c in clients)
    # unlimited trains the whole pool, the others exactly their capacity
    assert metrics["systems"]["unlimited"]["per_client_load"] == [4.0] * 6
    assert metrics["systems"]["alignment"]["per_client_load"] == [2.0, 1.0, 3.0, 2.0, 1.0, 3.0]


def test_every_round_respects_capacities(quick_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, metrics = quick_run
    cap = [c["k"] for c in metrics["capacity"]["clients"]]
    held: dict[tuple[str, int, int], int] = {}
    with (run_dir / "assignments.csv").open() as f:
        for row in csv.DictReader(f):
            key = (row["system"], int(row["round"]), int(row["client"]))
            held[key] = held.get(key, 0) + 1
    assert len(held) == 4 * 5 * 6  # every client in every round of every system
    for (system, _, client), k in held.items():
        assert k == (4 if system == "unlimited" else cap[client]), (system, client)


# ------------------------------------------------------------------ exact bytes
@pytest.mark.parametrize("assignment", ["alignment", "unlimited"])
def test_client_downloads_fe_plus_only_its_experts(assignment: str) -> None:
    cfg = tiny_alignment(rounds=1, compare=None)
    algo, sim = train(cfg, assignment)
    transfers = [t for t in sim.recorder.transfers if t.stage == algo.stage]
    assert all(t.delivered for t in transfers)
    held = algo.logs[0].assigned.sum(1)  # (C,)
    expected_k = [4, 4, 4, 4] if assignment == "unlimited" else [1, 2, 3, 2]
    assert held.tolist() == expected_k
    down = {int(t.dst): t.size_bytes for t in transfers if t.src == "bs"}
    up = {int(t.src): t.size_bytes for t in transfers if t.dst == "bs"}
    for c, k in enumerate(expected_k):
        assert down[c] == FE_BYTES + k * EXPERT_BYTES
        assert up[c] == FE_BYTES + k * EXPERT_BYTES + 3 * k * 4  # + usage/accuracy/loss floats


def test_fitness_changes_only_for_trained_pairs() -> None:
    cfg = tiny_alignment(rounds=1, initial_fitness=0.5)
    algo, _ = train(cfg, "alignment")
    trained = algo.logs[0].arrived
    assert trained.any() and not trained.all()
    assert np.all(algo.fitness[~trained] == 0.5)
    acc = algo.logs[0].accuracy
    np.testing.assert_allclose(algo.fitness[trained], 0.7 * 0.5 + 0.3 * acc[trained])


def test_missed_deadline_is_a_failure_and_changes_nothing() -> None:
    cfg = tiny_alignment(rounds=1, deadline_s=1e-9, initial_fitness=0.5)
    world = tiny_world(cfg)
    before = AlignmentFL(world, cfg.alignment, "alignment", np.array([1, 2, 3, 2]))
    algo, _ = train(cfg, "alignment")
    assert algo.logs[0].failures == 4 and not algo.logs[0].arrived.any()
    assert np.all(algo.fitness == 0.5)
    for a, b in zip(algo.expert_states, before.expert_states):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_experts_averaged_by_usage_and_fe_by_samples() -> None:
    cfg = tiny_alignment()
    algo = AlignmentFL(tiny_world(cfg), cfg.alignment, "alignment", np.array([1, 2, 3, 2]))

    def const(state: dict[str, torch.Tensor], value: float) -> dict[str, torch.Tensor]:
        return {k: torch.full_like(v, value) for k, v in state.items()}

    def result(client: int, value: float, usage: float, samples: int) -> LocalResult:
        usage_vec = np.array([usage, 0, 0, 0], dtype=float)
        fb = ExpertFeedback(usage_vec, np.array([0.5, np.nan, np.nan, np.nan]), np.array([1.0, np.nan, np.nan, np.nan]))
        upd = ClientUpdate(const(algo.fe_state, value), {0: const(algo.expert_states[0], value)}, fb)
        return LocalResult(client, upd, samples, 0)

    untouched = copy.deepcopy(algo.expert_states[1])
    algo.assigned = np.zeros((4, 4), dtype=bool)
    algo.assigned[[0, 1], 0] = True
    algo.aggregate(0, [result(0, 1.0, usage=1, samples=30), result(1, 5.0, usage=3, samples=10)], [])
    for v in algo.expert_states[0].values():  # (1*1 + 3*5) / 4 = 4
        assert torch.allclose(v, torch.full_like(v, 4.0))
    for v in algo.fe_state.values():  # (30*1 + 10*5) / 40 = 2
        assert torch.allclose(v, torch.full_like(v, 2.0))
    assert all(torch.equal(untouched[k], algo.expert_states[1][k]) for k in untouched)


# ------------------------------------------------------------------ determinism, config
def test_same_seed_same_metrics(tmp_path: Path) -> None:
    cfg = tiny_alignment(compare=["alignment", "random"])
    a = run(cfg, (tmp_path / "a").resolve())
    b = run(cfg, (tmp_path / "b").resolve())
    for m in (a, b):
        m.pop("wall_time_s"), m.pop("run_id")
    assert a == b
    assert (tmp_path / "a" / "rounds.csv").read_text() == (tmp_path / "b" / "rounds.csv").read_text()


def test_alignment_system_needs_its_section() -> None:
    raw = tiny_raw()
    raw["system"] = "alignment"
    with pytest.raises(ConfigError, match="alignment"):
        build_scenario(raw)
    raw["alignment"] = {"compare": ["greedy", "greedy"]}
    with pytest.raises(ConfigError, match="compare"):
        build_scenario(raw)


# ------------------------------------------------------------------ plots
def test_plots_of_an_alignment_run(quick_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, _ = quick_run
    # The alignment plot registers itself when its module is imported (docs/alignment.md);
    # a fresh interpreter keeps this test session's plot registry untouched.
    code = ("import sys, nmoe_sim.plots.alignment_plots; from nmoe_sim.plots import plot_run; "
            "print(' '.join(sorted(p.name for p in plot_run(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = set(proc.stdout.split())
    assert {"accuracy_vs_rounds.png", "comm_vs_accuracy.png", "stage_costs.png", "topology.png",
            "gating_alignment.png", "gating_unlimited.png"} <= written
