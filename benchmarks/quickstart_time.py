#!/usr/bin/env python
"""Wall time of the README's quickstart command, end to end (a fresh process, plots included).

Targets: under 60 s on a 2-core machine (issue 2), under 15 s (issue 9). Prints one line
per repetition and the median; run `python benchmarks/quickstart_time.py [--repeat N]`.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--target-s", type=float, default=15.0)
    args = parser.parse_args()
    times = []
    with tempfile.TemporaryDirectory() as out:
        for i in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "run_scenario.py"), str(ROOT / "scenarios/quickstart.yaml"),
                            "--out", out, "--quiet"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
            print(f"run {i + 1}: {times[-1]:.1f} s wall")
    med = statistics.median(times)
    verdict = "within" if med < args.target_s else "OVER"
    print(f"quickstart median wall time: {med:.1f} s ({verdict} the {args.target_s:.0f} s target)")
    return 0 if med < args.target_s else 1


if __name__ == "__main__":
    sys.exit(main())
