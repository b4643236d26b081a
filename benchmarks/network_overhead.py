#!/usr/bin/env python
"""How much host wall time the wireless emulation adds: quickstart over urban vs ideal links.

Both runs happen in this one process, interleaved (ideal, urban, ideal, urban, ...) so that
machine noise hits both alike; the figure is the ratio of the medians. Target (issue 3): the
emulation adds under 10 % wall time. Plots are off: they are not part of the emulation.
Run `python benchmarks/network_overhead.py [--repeat N]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nmoe_sim.config import load_scenario
from nmoe_sim.runner import run

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "ideal": ["network.channel=ideal"],
    "urban": ["network.channel.bs=urban_micro", "network.channel.d2d=urban_micro_d2d"],
}


def one_run(overrides: list[str], out: Path, i: int) -> tuple[float, dict]:
    cfg = load_scenario(ROOT / "scenarios/quickstart.yaml", ["output.plots=false", *overrides])
    run_dir = out / f"run{i}"
    run_dir.mkdir()
    t0 = time.perf_counter()
    metrics = run(cfg, run_dir)
    return time.perf_counter() - t0, metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {k: [] for k in VARIANTS}
    last: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        i = 0
        for _ in range(args.repeat):
            for name, overrides in VARIANTS.items():
                wall, last[name] = one_run(overrides, Path(tmp), i)
                walls[name].append(wall)
                i += 1
                print(f"{name:6s} run: {wall:.2f} s wall")
    med = {k: statistics.median(v) for k, v in walls.items()}
    ratio = med["urban"] / med["ideal"]
    for name in VARIANTS:
        stages = last[name]["stages"]
        sim_s = sum(s["sim_time_s"] for s in stages.values())
        transfers = sum(s["transfers"] for s in stages.values())
        print(f"{name:6s}: median {med[name]:.2f} s wall, {transfers} transfers, {sim_s:.1f} s simulated")
    print(f"emulation overhead (urban / ideal wall time): {ratio:.3f} ({(ratio - 1) * 100:+.1f} %), target < +10 %")
    return 0 if ratio < 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
