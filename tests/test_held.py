"""The ray executor's parts that need no cluster: averages in parts equal the whole average,
client data is sent to a worker once and then named, the sweep's task planner keeps shared
prefixes together, and a missing Ray or an unreachable address is one line."""

from __future__ import annotations

import sys

import pytest
import torch

from nmoe_sim.engine.held import Held, Holdings, decode
from nmoe_sim.engine.ray_executor import connect, require_ray
from nmoe_sim.errors import ConfigError
from nmoe_sim.fl.aggregate import finish_weighted_sum, normalized_weights, partial_weighted_sum, weighted_average
from nmoe_sim.fl.stage1 import FedCE
from nmoe_sim.ray_sweep import chunks
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.sweep import SweepPoint
from nmoe_sim.world import build_world

from conftest import tiny_cfg


def test_an_average_summed_in_parts_is_the_whole_average() -> None:
    gen = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(5, 3, generator=gen), "steps": torch.tensor(i % 3)} for i in range(7)]
    samples = [3, 9, 1, 9, 4, 2, 5]
    want = weighted_average(states, samples)
    w = normalized_weights(samples, len(states))
    for split in ([7], [3, 4], [1, 2, 4], [2, 2, 2, 1]):
        parts, start = [], 0
        for size in split:
            idx = list(range(start, start + size))
            parts.append(partial_weighted_sum([states[i] for i in idx], [w[i] for i in idx], idx))
            start += size
        got = finish_weighted_sum(parts)
        torch.testing.assert_close(got["w"], want["w"], rtol=1e-6, atol=1e-7)
        # A counter is the heaviest state's, the first on ties (states 1 and 3 weigh 9: state 1's).
        assert torch.equal(got["steps"], want["steps"]) and int(got["steps"]) == 1
    one = finish_weighted_sum([partial_weighted_sum(states, list(w), list(range(7)))])
    assert torch.equal(one["w"], want["w"])  # one part: the same additions in the same order


def test_client_data_goes_to_a_worker_once_and_stays_its_home() -> None:
    world = build_world(tiny_cfg(), SeedStreams(0))
    algo = FedCE(world, world.cfg.stage1)
    holdings = Holdings(2)
    cache: list[dict[str, torch.Tensor]] = [{}, {}]
    homes = {}
    for rnd in range(3):
        tasks = [algo.task(rnd, c) for c in range(4)]
        parts = holdings.place(tasks)
        assert sorted(i for p in parts for i in p) == [0, 1, 2, 3]
        for worker, part in enumerate(parts):
            shard = holdings.encode(worker, [tasks[i] for i in part])
            # Round 0 sends each client's x and y; later rounds name them only.
            assert len(shard.puts) == (2 * len(part) if rnd == 0 else 0)
            assert all(isinstance(t.x, Held) for t in shard.tasks)
            for i, t in zip(part, decode(shard, cache[worker])):
                assert torch.equal(t.x, tasks[i].x) and torch.equal(t.y, tasks[i].y)
                assert homes.setdefault(i, worker) == worker  # sticky
    assert set(homes.values()) == {0, 1}  # spread over both workers


def test_a_worker_over_its_budget_is_told_to_drop_its_oldest_data() -> None:
    world = build_world(tiny_cfg(), SeedStreams(0))
    size = [c.x_train.numel() * 4 + c.y_train.numel() * 8 for c in world.clients]
    holdings = Holdings(1, budget_bytes=sum(size[1:]))  # no room for all four clients' data
    algo = FedCE(world, world.cfg.stage1)
    cache: dict[str, torch.Tensor] = {}
    for c in range(4):
        shard = holdings.encode(0, [algo.task(0, c)])
        decode(shard, cache)
        assert set(cache) == set(holdings.held[0])  # the driver's mirror is the worker's truth
    assert sum(holdings.held[0].values()) <= holdings.budget_bytes
    assert holdings.home(holdings.keys.key(world.clients[3].x_train)) == 0
    assert holdings.home(holdings.keys.key(world.clients[0].x_train)) is None  # dropped first


def test_an_in_place_change_gives_a_tensor_a_new_key() -> None:
    holdings = Holdings(1)
    t = torch.zeros(4)
    before = holdings.keys.key(t)
    assert holdings.keys.key(t.clone()) == before  # content, not identity
    t.add_(1)
    assert holdings.keys.key(t) != before


def test_sweep_tasks_keep_shared_prefixes_together_until_slots_need_splitting() -> None:
    todo = [SweepPoint((f"k={i}",), 0) for i in range(7)]
    keys = ["a", "a", "a", "b", "b", "a", "c"]
    assert chunks(todo, keys, 1) == [[0, 1, 2, 5], [3, 4], [6]]
    assert chunks(todo, keys, 3) == [[0, 1, 2, 5], [3, 4], [6]]
    assert chunks(todo, keys, 4) == [[0, 1], [2, 5], [3, 4], [6]]
    assert sorted(i for c in chunks(todo, keys, 100) for i in c) == list(range(7))
    assert len(chunks(todo, keys, 100)) == 7


def test_a_missing_ray_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    with pytest.raises(ConfigError, match=r"runtime.executor: ray needs Ray.*pip install -e '\.\[ray\]'"):
        require_ray()
    with pytest.raises(ConfigError, match=r"needs Ray"):
        build_world(tiny_cfg("runtime.executor=ray"), SeedStreams(0)).new_sim("t")


def test_an_unreachable_address_is_one_line() -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance of this process is used whatever the address")
    with pytest.raises(ConfigError, match=r"^--address: cannot join the Ray cluster at 127\.0\.0\.1:1: "):
        connect("127.0.0.1:1", what="--address")
    assert not ray.is_initialized()


def test_only_the_ray_modules_import_ray() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "nmoe_sim"
    importers = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")
                       if re.search(r"^\s*(import ray\b|from ray\b)", p.read_text(encoding="utf-8"), re.M))
    assert importers == ["engine/ray_executor.py"]  # ray_sweep.py gets it through ray_executor.connect
