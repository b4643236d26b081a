#!/usr/bin/env python
"""Where crashes hit the NMoE's queries: one line per point and seed of a finished sweep
(a figure for docs/results.md section 8, not a test).

Reads each run's events.csv (the crashed clients: fault rows tagged ``crash``),
queries.csv and metrics.json, and prints the NMoE's macro-F1 and LR (over every query and
over the queries of clients that were up, metrics.json's up_clients), the mean and median
query latency, the share of queries that waited at least ``--timeout-s`` (a fallback),
and, for the surviving and the crashed clients' queries apart, how many there are, the
share that waited, and the share answered by the client's own expert.

    python benchmarks/crash_queries.py /tmp/fr/sweep/faults_crash_sweep/sweep --timeout-s 0.5
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Callable


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def share(rows: list[dict[str, str]], pred: Callable[[dict[str, str]], bool]) -> float:
    return sum(map(pred, rows)) / len(rows) if rows else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--timeout-s", type=float, default=0.5, help="the scenario's faults.query_timeout_s")
    args = ap.parse_args()
    waited = lambda q: float(q["latency_s"]) >= args.timeout_s  # noqa: E731
    own = lambda q: q["experts"] == q["client"]  # noqa: E731
    for point in sorted(p for p in args.sweep_dir.iterdir() if (p / "seed0").is_dir() or any(p.glob("seed*"))):
        for run in sorted(point.glob("seed*")):
            crashed = sorted({int(e["node"]) for e in read(run / "events.csv")
                              if e["kind"] == "fault" and e["system"] == "nmoe" and e["tag"] == "crash"})
            qs = [q for q in read(run / "queries.csv") if q["system"] == "nmoe"]
            lat_ms = [1e3 * float(q["latency_s"]) for q in qs]
            alive = [q for q in qs if int(q["client"]) not in crashed]
            dead = [q for q in qs if int(q["client"]) in crashed]
            m = json.loads((run / "metrics.json").read_text())["systems"]["nmoe"]
            up = m.get("up_clients", {"f1_macro": m["f1_macro"], "local_ratio": m["local_ratio"]})
            print(f"{point.name} {run.name}: crashed {crashed}; F1 {m['f1_macro']:.3f}, LR {m['local_ratio']:.3f} "
                  f"(up clients' queries: F1 {up['f1_macro']:.3f}, LR {up['local_ratio']:.3f}); "
                  f"latency mean {statistics.mean(lat_ms):.1f} ms, median {statistics.median(lat_ms):.1f} ms, "
                  f"waited {share(qs, waited):.3f} | surviving clients' queries {len(alive)}: waited "
                  f"{share(alive, waited):.3f}, own expert {share(alive, own):.3f} | crashed clients' queries "
                  f"{len(dead)}: waited {share(dead, waited):.3f}, own expert {share(dead, own):.3f}")


if __name__ == "__main__":
    main()
