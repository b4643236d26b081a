#!/usr/bin/env python
"""What stage 1 learns: run only a scenario's stage 1 and print its representation checks
(a figure, not a test).

Runs the scenario's stage-1 algorithm (FedCE or FedSC) over its network for its rounds,
then prints the frozen FE's linear probe, kNN accuracy and effective rank beside the
untrained FE's, and for FedSC the top direction's share of the projections' correlation
(1.0: collapsed onto one line). The same checks as a full run's metrics.json
(``stages.<stage1>.representation``), without stages 2-3, inference or the baselines.

    python benchmarks/stage1_probe.py scenarios/quickstart.yaml --set data.partition.kind=iid
    python benchmarks/stage1_probe.py scenarios/quickstart.yaml --set stage1.probe_every=20 --set stage1.rounds=120
    python benchmarks/stage1_probe.py scenarios/quickstart.yaml --set model.proj_batchnorm=true \\
        --set 'stage1.fedsc.augment.mono={brightness_contrast: 0, affine_p: 0, blur_p: 0, noise_std: 0, erase_p: 0}'
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    import torch

    from nmoe_sim.config import load_scenario
    from nmoe_sim.fl.rounds import CostScope, RoundDriver
    from nmoe_sim.fl.stage1 import FE_ALGORITHMS
    from nmoe_sim.seeds import SeedStreams
    from nmoe_sim.world import build_world

    from nmoe_sim.errors import ConfigError

    torch.set_num_threads(1)
    try:
        cfg = load_scenario(args.scenario, args.sets)
    except ConfigError as exc:  # a bad scenario or --set: one line, as the CLI does
        print(f"error: {exc}", file=sys.stderr)
        return 2
    world = build_world(cfg, SeedStreams(cfg.seed))
    sim = world.new_sim("nmoe")
    algo = FE_ALGORITHMS.get(cfg.stage1.algorithm, "stage1.algorithm")(world, cfg.stage1, probe=True)
    t0 = time.perf_counter()
    driver = RoundDriver(sim, world.n_clients, world.streams.numpy(f"{algo.stage}/participation"))
    sim.env.run(sim.env.process(driver.run(algo, cfg.stage1, CostScope("nmoe", [algo.stage]))))
    rep = algo.representation()
    for r in world.recorder.rounds:  # stage1.probe_every > 0: the checks along the way
        if r.probe_linear == r.probe_linear:  # not NaN: measured this round
            print(f"  round {r.round + 1}: probe {r.probe_linear:.3f}, kNN {r.probe_knn:.3f}, "
                  f"effective rank {r.effective_rank:.1f}")
    un = rep["untrained"]
    share = rep.get("projection_top_share")
    print(f"{cfg.stage1.algorithm} seed {cfg.seed}, {cfg.stage1.rounds} rounds: probe {rep['linear_probe']:.3f} "
          f"(untrained {un['linear_probe']:.3f}), kNN {rep['knn']:.3f} ({un['knn']:.3f}), effective rank "
          f"{rep['effective_rank']:.1f} ({un['effective_rank']:.1f})"
          + (f", projections' top direction {100 * share:.1f} %" if share is not None else "")
          + f"; {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
