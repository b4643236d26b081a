"""Executors behind a registry: the batched executor's worker pool computes exactly what the
local reference computes, charges the same simulated time, and the runtime knobs
(workers, device, torch_threads: auto) do what they say or are refused clearly."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from nmoe_sim.config import build_scenario, resolve_presets
from nmoe_sim.engine import executors, pool
from nmoe_sim.engine.executors import AUTO_THREADS_MIN_STEP_FLOPS, auto_torch_threads, available_cores
from nmoe_sim.engine.tasks import TrainTask, execute
from nmoe_sim.errors import ConfigError
from nmoe_sim.fl.stage1 import FedCE
from nmoe_sim.models import FeatureExtractor, train_flops_per_sample
from nmoe_sim.runner import check_device
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import build_world

from conftest import tiny_cfg
from test_rounds import drive


def fedce_rounds(executor: str, workers: int = 2) -> tuple[dict[str, torch.Tensor], list[tuple], list[float]]:
    cfg = tiny_cfg(f"runtime.executor={executor}", f"runtime.workers={workers}")
    world = build_world(cfg, SeedStreams(0))
    algo = FedCE(world, cfg.stage1)
    sim = world.new_sim("test")
    drive(sim, algo, cfg.stage1.model_copy(update={"rounds": 3}))
    computes = [(c.node, c.tag, c.start_s, c.end_s, c.flops) for c in world.recorder.computes]
    ends = [r.end_s for r in world.recorder.rounds]
    return algo.global_state, computes, ends


def test_batched_workers_compute_exactly_what_local_computes() -> None:
    local_state, local_computes, local_ends = fedce_rounds("local")
    batched_state, batched_computes, batched_ends = fedce_rounds("batched", workers=2)
    # One torch thread on both sides, the same reference execute(): bit for bit.
    assert all(torch.equal(local_state[k], batched_state[k]) for k in local_state)
    assert batched_computes == local_computes and batched_ends == local_ends


def test_two_workers_never_share_a_templates_memory() -> None:
    # Two clients' tasks on one template, one per worker: were tensors handed over as
    # shared memory, both workers would train the same parameters and corrupt each other.
    world = build_world(tiny_cfg(), SeedStreams(0))
    algo = FedCE(world, world.cfg.stage1)
    tasks = [algo.task(0, 0), algo.task(0, 1)]
    want = [execute(t, copy.deepcopy(t.template)) for t in tasks]
    before = {k: v.clone() for k, v in algo.model.state_dict().items()}
    got = pool.run_sharded(tasks, 2)
    for w, g in zip(want, got):
        assert w.client == g.client and w.loss == g.loss
        assert all(torch.equal(w.state[k], g.state[k]) for k in w.state)
    assert all(torch.equal(algo.model.state_dict()[k], v) for k, v in before.items())  # template untouched


def test_light_gathers_run_here_with_the_bits_the_pool_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    world = build_world(tiny_cfg("runtime.workers=2"), SeedStreams(0))
    algo = FedCE(world, world.cfg.stage1)
    tasks = [algo.task(0, c) for c in range(4)]
    moved = sum(t.tensor_bytes for t in tasks)
    state = sum(v.numel() * v.element_size() for v in tasks[0].start.values())
    data = sum(t.x.numel() * 4 + t.y.numel() * 8 for t in tasks)
    assert moved == 4 * 2 * state + data  # the start state there, the trained state back, the data
    sharded: list[int] = []
    real = pool.run_sharded
    monkeypatch.setattr(pool, "run_sharded", lambda ts, w: sharded.append(len(ts)) or real(ts, w))
    ex = executors.BatchedExecutor(world.new_sim("t").env, world.profiles, world.recorder, system="t",
                                   runtime=world.cfg.runtime)
    heavy = [dataclasses.replace(t, flops=executors.POOL_MIN_FLOPS_PER_BYTE * moved) for t in tasks]
    light = [dataclasses.replace(t, flops=executors.POOL_MIN_FLOPS_PER_BYTE * moved / 8) for t in tasks]
    torch.set_num_threads(2)  # the caller's threads; the light gather must run at one
    try:
        via_pool, here = ex._execute_all(heavy), ex._execute_all(light)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert sharded == [4]  # only the heavy gather went to the workers
    for a, b in zip(via_pool, here):
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_shards_balance_flops_and_keep_every_task_once() -> None:
    class T:
        def __init__(self, flops: float) -> None:
            self.flops = flops

    tasks = [T(f) for f in (5, 1, 1, 1, 1, 1)]
    parts = pool.shards(tasks, 2)  # type: ignore[arg-type]
    assert sorted(i for p in parts for i in p) == list(range(6))
    assert sorted(sum(tasks[i].flops for i in p) for p in parts) == [5, 5]
    assert pool.shards(tasks[:1], 4) == [[0]]  # idle workers get no empty shard  # type: ignore[arg-type]


def test_a_job_whose_computation_never_started_cannot_be_gathered() -> None:
    world = build_world(tiny_cfg(), SeedStreams(0))
    algo = FedCE(world, world.cfg.stage1)
    sim = world.new_sim("test")
    job = sim.executor.submit(algo.task(0, 0), stage="s", tag="t")
    with pytest.raises(RuntimeError, match="never started"):
        sim.executor.gather([job])
    sim.env.run()
    first = sim.executor.gather([job])[0]
    assert sim.executor.gather([job])[0] is first  # run once, then kept


def test_runtime_knobs_are_validated() -> None:
    for bad, msg in (({"workers": True}, "auto or a count"), ({"workers": 0}, "auto or a count"),
                     ({"torch_threads": "many"}, "auto or a count"), ({"executor": "spark"}, "executor"),
                     ({"device": "tpu"}, "device")):
        with pytest.raises(ConfigError, match=msg):
            build_scenario(resolve_presets({"runtime": bad}))
    rt = build_scenario(resolve_presets({"runtime": {"workers": 3, "torch_threads": "auto"}})).runtime
    assert executors.worker_count(rt) == 3
    assert executors.worker_count(rt.model_copy(update={"workers": "auto"})) == available_cores()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match="runtime.device: cuda"):
        check_device("cuda")
    check_device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_task_on_cuda_matches_cpu_within_float_tolerance() -> None:
    world = build_world(tiny_cfg(), SeedStreams(0))
    task: TrainTask = FedCE(world, world.cfg.stage1).task(0, 0)
    cpu = execute(task, copy.deepcopy(task.template), "cpu")
    gpu = execute(task, copy.deepcopy(task.template), "cuda")
    assert all(v.device.type == "cpu" for v in gpu.state.values())
    for k in cpu.state:
        torch.testing.assert_close(gpu.state[k], cpu.state[k], rtol=1e-4, atol=1e-5)


def test_auto_threads_follow_the_models_step_size() -> None:
    cfg = tiny_cfg("runtime.torch_threads=auto")
    assert auto_torch_threads(cfg, (1, 8, 8)) == 1  # a tiny digits FE: threads do not pay
    big = cfg.model_copy(update={"model": cfg.model.model_copy(update={"fe_channels": (32, 64)})})
    step = train_flops_per_sample(FeatureExtractor((3, 32, 32), (32, 64), cfg.model.feature_dim), (3, 32, 32))
    assert step * cfg.stage1.batch_size >= AUTO_THREADS_MIN_STEP_FLOPS
    assert auto_torch_threads(big, (3, 32, 32)) == available_cores()
    before = torch.random.get_rng_state()
    auto_torch_threads(big, (3, 32, 32))
    assert torch.equal(torch.random.get_rng_state(), before)  # the throw-away FE drew nothing
