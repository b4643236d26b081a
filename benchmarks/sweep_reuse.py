#!/usr/bin/env python
"""What sweep reuse saves: one sweep run with and without ``--no-reuse`` (a figure, not a test).

Runs ``nmoe-sim sweep`` on a paper ablation whose points share stages 1-2 and the
baselines (default: the FedGate split ablation, 9 gate points; shrunk by ``--set``
overrides so one sweep takes minutes), each way in a fresh results folder, alternately
``--repeat`` times. Prints each way's wall time (median), their ratio, and whether the two
sweeps' comparison tables are identical (they must be: reuse changes no result).

    python benchmarks/sweep_reuse.py
    python benchmarks/sweep_reuse.py --scenario scenarios/paper/fmnist_main.yaml --repeat 1
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.max_train_samples=1000", "data.max_test_samples=300", "inference.max_queries_per_client=20",
         "stage1.rounds=5", "stage3.rounds=4", "baselines.fedavg.rounds=5", "baselines.centralized.epochs=3",
         "sweep.seeds=[0]", "output.plots=false"]


def sweep(scenario: Path, out: Path, overrides: list[str], reuse: bool) -> tuple[float, bytes]:
    cmd = [sys.executable, "-m", "nmoe_sim.cli", "sweep", str(scenario), "--out", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    if not reuse:
        cmd.append("--no-reuse")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    table = next(out.glob("*/sweep/table.csv"))
    return wall, table.read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios/paper/fmnist_ablation_fedgate_split.yaml")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--set", action="append", default=None, help="overrides (default: a small size)")
    args = parser.parse_args()
    overrides = args.set if args.set is not None else SMALL
    walls: dict[str, list[float]] = {"reuse": [], "no reuse": []}
    tables: dict[str, bytes] = {}
    for _ in range(args.repeat):
        for name in walls:
            with tempfile.TemporaryDirectory() as out:
                wall, tables[name] = sweep(args.scenario, Path(out), overrides, reuse=name == "reuse")
            walls[name].append(wall)
            print(f"{name:9} {wall:7.1f} s")
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"{args.scenario.name}: no reuse {med['no reuse']:.1f} s, reuse {med['reuse']:.1f} s, "
          f"{med['no reuse'] / med['reuse']:.2f}x faster; tables identical: {tables['reuse'] == tables['no reuse']}")
    return 0 if tables["reuse"] == tables["no reuse"] else 1


if __name__ == "__main__":
    sys.exit(main())
