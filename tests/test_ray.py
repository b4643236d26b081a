"""``runtime.executor: ray`` and ``sweep --executor ray`` in a Ray instance on this machine
(2 CPUs, 2 actors): the same simulated times and metrics as the local executor, client
data sent once, a checkpointed run resumed, and a sweep's tables equal to the local sweep's.

Ray's start-up costs seconds, so the module shares one instance. Skipped without Ray
(``pip install -e '.[ray]'``; .ci/run installs it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml

ray = pytest.importorskip("ray")

from nmoe_sim.cli import main  # noqa: E402
from nmoe_sim.engine import executors, held, ray_executor  # noqa: E402
from nmoe_sim.fl.stage1 import FedCE  # noqa: E402
from nmoe_sim.runner import run  # noqa: E402
from nmoe_sim.seeds import SeedStreams  # noqa: E402
from nmoe_sim.world import build_world  # noqa: E402

from conftest import TINY, tiny_cfg  # noqa: E402
from golden_cases import golden_path, run_case, summarize  # noqa: E402
from test_rounds import drive  # noqa: E402
from test_resume import run_files, stop_and_resume  # noqa: E402

RAY = ("runtime.executor=ray", "runtime.ray.num_workers=2")


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray_executor.forget_clusters()
        ray.shutdown()


@pytest.fixture()
def no_actors() -> None:
    # The executor's actors hold a CPU each for the life of the process (the executor tests
    # share them: an actor's start costs seconds); a sweep's tasks in this 2-CPU instance
    # would wait for them for ever.
    ray_executor.forget_clusters()


@pytest.fixture()
def every_gather_to_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tiny models are too light for the hand-over to pay, so gathers would stay here:
    # send every gather of two tasks or more to the actors.
    monkeypatch.setattr(executors, "POOL_MIN_FLOPS_PER_BYTE", 0.0)


def fedce(executor: tuple[str, ...], rounds: int = 3) -> tuple[dict[str, torch.Tensor], list[tuple], list[float]]:
    cfg = tiny_cfg(*executor)
    world = build_world(cfg, SeedStreams(0))
    algo = FedCE(world, cfg.stage1)
    drive(world.new_sim("test"), algo, cfg.stage1.model_copy(update={"rounds": rounds}))
    computes = [(c.node, c.tag, c.start_s, c.end_s, c.flops, c.energy_j) for c in world.recorder.computes]
    return algo.global_state, computes, [r.end_s for r in world.recorder.rounds]


def test_ray_rounds_charge_the_same_and_learn_the_same(every_gather_to_ray: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []  # tensors attached to each shard
    encode = held.Holdings.encode
    monkeypatch.setattr(held.Holdings, "encode", lambda self, w, ts: (s := encode(self, w, ts), sent.append(
        len(s.puts)))[0])
    means: list[int] = []
    finish = ray_executor.finish_weighted_sum
    monkeypatch.setattr(ray_executor, "finish_weighted_sum", lambda parts: (means.append(len(parts)), finish(parts))[1])
    local_state, local_computes, local_ends = fedce(("runtime.executor=local",))
    ray_state, ray_computes, ray_ends = fedce(RAY)
    assert ray_computes == local_computes and ray_ends == local_ends  # simulated time and energy: exact
    for k in local_state:  # learned: within the batched executor's tolerance (here, in fact, equal)
        torch.testing.assert_close(ray_state[k], local_state[k], rtol=1e-6, atol=1e-7)
    assert means == [2, 2, 2]  # each round: one partial sum from each of the two actors
    assert sum(sent[:2]) == 2 * 4 and sum(sent[2:]) == 0  # x and y of 4 clients, in round 0 only


def summary(executor: tuple[str, ...], tmp: Path, *extra: str) -> dict[str, Any]:
    run_dir = tmp / "-".join(executor).replace("=", "_")
    run_dir.mkdir()
    run(tiny_cfg(*executor, *extra), run_dir)
    return summarize(run_dir)


def test_a_ray_run_gives_the_local_runs_metrics(every_gather_to_ray: None, tmp_path: Path) -> None:
    # FedSC (prelude barrier, correlation statistics) and FedGate (per-client states, not averaged).
    extra = ("stage1.algorithm=fedsc", "network.channel=urban_micro")
    want = summary(("runtime.executor=local",), tmp_path, *extra)
    got = summary(RAY, tmp_path, *extra)
    assert got == want


def test_the_quickstart_on_ray_reproduces_its_golden_results() -> None:
    # The shipped scenario (shrunk as tests/golden_cases.py shrinks it) at the executor's own
    # thresholds: its FE rounds go to the actors and come back as partial sums.
    want = json.loads(golden_path("quickstart").read_text(encoding="utf-8"))
    got = json.loads(json.dumps(run_case("quickstart", RAY)))
    assert got == want


def test_a_ray_run_resumes_from_its_checkpoint(every_gather_to_ray: None, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg(*RAY, "stage1.rounds=3")
    whole = tmp_path / "whole"
    whole.mkdir()
    run(cfg, whole, checkpoint=True)
    stop_and_resume(cfg, tmp_path / "resumed", "nmoe stage1_fedce round 1", monkeypatch)
    assert run_files(tmp_path / "resumed") == run_files(whole)


def sweep_files(root: Path) -> dict[str, bytes]:
    sweep = root / "tiny3" / "sweep"
    return {name: (sweep / name).read_bytes() for name in ("table_raw.csv", "table.csv", "table.md", "points.json")}


def test_a_ray_sweep_writes_the_local_sweeps_tables(no_actors: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = {**TINY, "name": "tiny3", "sweep": {"grid": {"stage3.algorithm": ["rangate", "rollgate", "fedgate"]},
                                             "seeds": [0]}}
    path = tmp_path / "tiny3.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(path), "--out", str(tmp_path / "local")]) == 0
    # Two slots, three points sharing stages 1-2: two tasks, one of them reusing its prefix.
    assert main(["sweep", str(path), "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert sweep_files(tmp_path / "ray") == sweep_files(tmp_path / "local")
    reused = [json.loads(p.read_text()).get("reused") for p in sorted((tmp_path / "ray").rglob("metrics.json"))]
    assert sum(r is not None for r in reused) == 1
    # Run again: every point is finished, so nothing runs and the tables stay.
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    statuses = [p["status"] for p in json.loads((tmp_path / "ray/tiny3/sweep/points.json").read_text())["points"]]
    assert statuses == ["skipped"] * 3


def test_a_failing_point_on_ray_is_recorded_and_the_others_finish(no_actors: None, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # A point whose dataset folder does not exist fails on its worker; the others finish.
    raw = {**TINY, "name": "tiny3", "sweep": {"grid": {"data.dataset": ["digits", "fashion_mnist"]}, "seeds": [0]},
           "data": {**TINY["data"], "root": str(tmp_path / "nowhere")}}
    path = tmp_path / "tiny3.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(path), "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 1
    points = json.loads((tmp_path / "ray/tiny3/sweep/points.json").read_text())["points"]
    assert [p["status"] for p in points] == ["ran", "failed"]
    assert "nowhere" in points[1]["reason"] and "\n" not in points[1]["reason"]
    assert "failed: data.dataset=fashion_mnist seed 0" in capsys.readouterr().err


def test_more_cpus_per_point_than_any_node_has_is_one_line(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    path = tmp_path / "tiny3.yaml"
    path.write_text(yaml.safe_dump({**TINY, "name": "tiny3", "sweep": {"grid": {}, "seeds": [0]}}))
    assert main(["sweep", str(path), "--out", str(tmp_path), "--executor", "ray", "--cpus-per-point", "3"]) == 2
    assert "no node of the Ray cluster has that many CPUs (the largest has 2)" in capsys.readouterr().err
    assert not (tmp_path / "tiny3").exists()


def test_an_error_raised_on_an_actor_is_raised_here_as_itself(every_gather_to_ray: None) -> None:
    import dataclasses

    from nmoe_sim.engine.executors import Job
    from nmoe_sim.errors import ConfigError

    world = build_world(tiny_cfg(*RAY), SeedStreams(0))
    algo = FedCE(world, world.cfg.stage1)
    ex = world.new_sim("t").executor
    tasks = [dataclasses.replace(algo.task(0, c), loss="no_such_loss") for c in range(2)]
    with pytest.raises(ConfigError, match="unknown loss 'no_such_loss'"):
        ex.gather([Job(t, started=True) for t in tasks])
