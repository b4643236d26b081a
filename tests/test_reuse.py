"""Sweep reuse: a point that takes stages 1-2 and the baselines from an earlier point equals
the same point run from scratch, file for file; what it reused is in its metrics.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from nmoe_sim.config import build_scenario, resolve_presets
from nmoe_sim.reuse import StageCache, baseline_key, nmoe_prefix_key
from nmoe_sim.runner import run

from conftest import TINY

# Over urban-micro links with fading, so the network's state at the stage boundary matters.
BASE = {**copy.deepcopy(TINY), "network": {"channel": "urban_micro_d2d", "topology": {"kind": "ring", "radius_m": 60}}}
POINTS = ("fedgate", "rollgate", "rangate")


def point(algorithm: str, **extra: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["stage3"] = {**raw["stage3"], "algorithm": algorithm}
    for key, value in extra.items():
        raw.setdefault(key.split(".")[0], {})[key.split(".")[1]] = value
    return resolve_presets(raw)


def summary(run_dir: Path) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("wall_time_s", "run_id", "reused"):
        metrics.pop(key, None)
    files = {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.suffix == ".csv"}
    return {"metrics": metrics, "files": files}


def run_points(tmp: Path, reuse: StageCache | None) -> dict[str, Path]:
    out = {}
    for name in POINTS:
        run_dir = tmp / name / "seed0"
        run_dir.mkdir(parents=True)
        run(build_scenario(point(name)), run_dir, reuse=reuse)
        out[name] = run_dir
    return out


def test_reused_points_equal_points_run_from_scratch(tmp_path: Path) -> None:
    fresh = run_points(tmp_path / "fresh", None)
    cache = StageCache()
    reused = run_points(tmp_path / "reused", cache)
    for name in POINTS:
        assert summary(reused[name]) == summary(fresh[name]), name
    first = json.loads((reused["fedgate"] / "metrics.json").read_text())
    assert "reused" not in first  # the first point computed everything
    for name in POINTS[1:]:
        got = json.loads((reused[name] / "metrics.json").read_text())["reused"]
        assert got == {"stage1_fedce": "fedgate/seed0", "stage2_experts": "fedgate/seed0",
                       "centralized": "fedgate/seed0", "fedavg": "fedgate/seed0"}
    assert cache.hits == 2 * 3  # the prefix and two baselines, for each of two later points


def test_keys_separate_what_a_shared_stage_reads() -> None:
    a = build_scenario(point("fedgate"))
    assert nmoe_prefix_key(a) == nmoe_prefix_key(build_scenario(point("rangate", **{"model.top_k": 2})))
    # Anything stage 1-2 read splits the key: the seed, the data, the FE, the network.
    for other in (point("fedgate", **{"stage1.rounds": 3}), point("fedgate", **{"model.feature_dim": 6}),
                  {**point("fedgate"), "seed": 1}, point("fedgate", **{"data.max_train_samples": 60})):
        assert nmoe_prefix_key(build_scenario(other)) != nmoe_prefix_key(a)
    # A baseline ignores the NMoE's stages but not its own settings.
    b = build_scenario(point("fedgate", **{"stage1.rounds": 3}))
    assert baseline_key(a, "fedavg") == baseline_key(b, "fedavg")
    c = build_scenario(point("fedgate", **{"baselines.fedavg": {"rounds": 3, "batch_size": 16}}))
    assert baseline_key(a, "fedavg") != baseline_key(c, "fedavg")
    assert baseline_key(a, "centralized") == baseline_key(c, "centralized")


def test_cache_drops_the_least_recently_used() -> None:
    cache = StageCache(max_entries=2)
    cache.put("a", 1, "p1")
    cache.put("b", 2, "p2")
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", 3, "p3")
    assert cache.get("b") is None and cache.get("a").value == 1 and cache.get("c").origin == "p3"  # type: ignore[union-attr]


@pytest.mark.parametrize("key", ["stage1.rounds"])
def test_a_changed_prefix_recomputes(tmp_path: Path, key: str) -> None:
    cache = StageCache()
    for i, rounds in enumerate((1, 2)):
        run_dir = tmp_path / f"p{i}" / "seed0"
        run_dir.mkdir(parents=True)
        run(build_scenario(point("rangate", **{key: rounds})), run_dir, reuse=cache)
        reused = json.loads((run_dir / "metrics.json").read_text()).get("reused", {})
        assert "stage1_fedce" not in reused
        assert set(reused) == ({"centralized", "fedavg"} if i else set())
