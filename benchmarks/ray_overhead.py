#!/usr/bin/env python
"""What the Ray executor costs against the batched executor on this machine (a figure, not a test).

Takes one stage-1 round of a paper scenario (default: Fashion-MNIST fmnist_main, FedSC, 10
clients of 300 images; ``--set`` overrides as for ``nmoe-sim run``) and times its gather
four ways, interleaved, ``--repeat`` times (medians):

* ``serial``: every task here, one after another at one thread (the ``local`` executor):
  C, the round's compute;
* ``batched``: the batched executor's pool, ``--workers`` forked processes;
* ``ray``: the ray executor, ``--workers`` actors of a private Ray instance on this machine,
  each returning every trained state;
* ``ray mean``: the same returning one partial FedAvg sum per actor (what a round driver
  asks for a FedAvg stage).

Ray is started and its actors given the clients' data once, before the timings (a warm-up
round); the start-up itself is printed apart. Then the model for W workers:

    T(W) = C / W + o,     o = T_ray(w) - C / w measured at w = --workers,

i.e. the compute divides over the workers and the per-round overhead o (dispatch,
pickling start states and results, the driver's reduction) stays as measured. It ignores
network latency and bandwidth between nodes (one machine here), and o grows a little with W
(one shard and one partial sum per worker), so read it as a bound on the speed-up for large W.

    python benchmarks/ray_overhead.py
    python benchmarks/ray_overhead.py --set stage1.algorithm=fedce --workers 2 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nmoe_sim.config import load_scenario  # noqa: E402
from nmoe_sim.engine import ray_executor  # noqa: E402
from nmoe_sim.engine.executors import EXECUTORS, Job  # noqa: E402
from nmoe_sim.fl.stage1 import FE_ALGORITHMS  # noqa: E402
from nmoe_sim.seeds import SeedStreams  # noqa: E402
from nmoe_sim.world import build_world  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=str(ROOT / "scenarios/paper/fmnist_main.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    workers = args.workers
    cfg = load_scenario(args.scenario, [f"runtime.workers={workers}", f"runtime.ray.num_workers={workers}",
                                        *args.set])
    world = build_world(cfg, SeedStreams(cfg.seed))
    algo = FE_ALGORITHMS.get(cfg.stage1.algorithm)(world, cfg.stage1)
    tasks = [algo.task(0, c) for c in range(world.n_clients)]
    members = list(range(len(tasks)))

    def executor(name: str):  # type: ignore[no-untyped-def]
        sim = world.new_sim(name)
        return EXECUTORS.get(name)(sim.env, world.profiles, world.recorder, system=name, runtime=cfg.runtime)

    t0 = time.perf_counter()
    local, batched, ray_ex = executor("local"), executor("batched"), executor("ray")
    start_s = time.perf_counter() - t0

    def jobs() -> list[Job]:
        return [Job(t, started=True) for t in tasks]

    ways: dict[str, Callable[[], object]] = {
        "serial": lambda: local.gather(jobs()),
        "batched": lambda: batched.gather(jobs()),
        "ray": lambda: ray_ex.gather(jobs()),
        "ray mean": lambda: ray_ex.gather_mean(jobs(), members),
    }
    t0 = time.perf_counter()
    for way in ("batched", "ray"):  # warm-up: the pool forks, the actors receive the data
        ways[way]()
    warm_s = time.perf_counter() - t0
    times: dict[str, list[float]] = {w: [] for w in ways}
    for _ in range(args.repeat):
        for way, fn in ways.items():
            t0 = time.perf_counter()
            fn()
            times[way].append(time.perf_counter() - t0)
    med = {w: statistics.median(ts) for w, ts in times.items()}
    flops = sum(t.flops for t in tasks)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f} over the last minute (o includes any "
          "contention: other jobs on the cores slow both parallel paths, not the serial one as much)")
    print(f"scenario {cfg.name}, stage 1 {cfg.stage1.algorithm}: {len(tasks)} tasks, {flops / 1e9:.1f} GFLOP "
          f"a round; {workers} workers; medians of {args.repeat}, interleaved")
    print(f"Ray start-up (connect, {workers} actors): {start_s:.2f} s; first round (pool fork, data to the "
          f"actors): {warm_s:.2f} s")
    for way, m in med.items():
        print(f"  {way:9s} {m:7.3f} s   ({', '.join(f'{t:.3f}' for t in times[way])})")
    c = med["serial"]
    over = med["ray mean"] - c / workers
    print(f"overhead of the Ray path: ray mean / batched = {med['ray mean'] / med['batched']:.2f}x "
          f"({med['ray mean'] - med['batched']:+.3f} s a round against the forked pool); "
          f"o = T_ray_mean - C/{workers} = {over:.3f} s a round")
    print("expected round time with W workers, T(W) = C/W + o (C = serial):")
    for w in (1, 2, 4, 8, 16, 32, 64):
        t = c / w + over
        print(f"  W={w:3d}  {t:7.3f} s   speed-up over serial {c / t:5.2f}x, over batched@{workers} "
              f"{med['batched'] / t:5.2f}x")
    if over > 0:
        print(f"  (the speed-up over serial is bounded by C/o = {c / over:.1f}x)")
    ray_executor.forget_clusters()
    return 0


if __name__ == "__main__":
    sys.exit(main())
