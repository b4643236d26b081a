#!/usr/bin/env python
"""The paper's main study as its findings read it: tables from a finished (or partial) sweep
of ``scenarios/paper/digits_main.yaml``, ``fmnist_main.yaml`` or ``fmnist_full.yaml`` (a
figure, not a test).

Reads each finished point's ``metrics.json`` (through ``nmoe_sim.table.run_rows``, the rows
``table.md`` is made of) and prints, as mean ± sample std over seeds:

1. the NMoE's macro-F1 per partition x stage-1 FE x gate, with FedGate (its scenario
   settings) beside FedAvg-style gating (``stage3.fedgate`` with ``personal: none`` and
   ``sync_every: 1``), and each FE's linear probe beside the same FE's untrained probe (the
   reference it must beat; each algorithm draws its own initialisation);
2. the bounds and baselines per partition: centralized F1 and LR, local F1 per FE, FedAvg F1,
   the NMoE's LR range;
3. the delivered MB of the centralized and FedAvg baselines per partition, and of the NMoE
   per cell (each system's own stages, inference included);

and with ``--figure PNG`` each FE's stage-1 probe against its delivered MB.

RanGate and RollGate ignore ``stage3.fedgate``; where a sweep runs them under both values,
the two copies must agree, and the script says so if they do not.

    python benchmarks/paper_table.py /tmp/q/dsweep/paper_digits_main/sweep
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

GATES = ("RanGate", "RollGate", "FedGate", "FedAvg-style gating")


def partition_label(text: str) -> str:
    p = yaml.safe_load(text)
    if p["kind"] == "iid":
        return "IID"
    if p["kind"] == "dirichlet":
        return f"Dirichlet {p['alpha']}"
    return f"{p['classes_per_client']} class per client"


def fe_label(overrides: dict[str, str]) -> str:
    """The stage-1 algorithm of a point: swept alone (``stage1.algorithm``) or as a whole
    ``stage1`` block (fmnist_full.yaml gives each FE its own budget)."""
    algo = (overrides["stage1.algorithm"] if "stage1.algorithm" in overrides
            else yaml.safe_load(overrides["stage1"])["algorithm"])
    return {"fedce": "FedCE", "fedsc": "FedSC"}.get(algo, algo)


def gate_label(overrides: dict[str, str]) -> tuple[str, bool]:
    """(gate name, whether this point is the copy to report for a gate that ignores stage3.fedgate)."""
    algo = overrides.get("stage3.algorithm", "fedgate")
    fg = yaml.safe_load(overrides.get("stage3.fedgate", "{}")) or {}
    fedavg_style = fg.get("personal") == "none" and fg.get("sync_every") == 1 and fg.get("local_part", "none") == "none"
    if algo == "fedgate":
        return ("FedAvg-style gating" if fedavg_style else "FedGate"), True
    return {"rangate": "RanGate", "rollgate": "RollGate"}[algo], not fedavg_style


def cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--figure", type=Path, metavar="PNG",
                        help="also draw each FE's stage-1 linear probe against its delivered MB (the "
                             "rounds rounds.csv measured, stage1.probe_every), per partition, over seeds")
    args = parser.parse_args()
    from nmoe_sim.table import run_rows

    points_file = args.sweep_dir / "points.json"
    if not points_file.is_file():
        print(f"error: {points_file}: no points.json (is this a sweep directory?)", file=sys.stderr)
        return 2
    points = json.loads(points_file.read_text())["points"]
    # (partition, FE, gate) -> system -> [row per seed]
    rows: dict[tuple[str, str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    copies: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    # (partition, FE) -> seed -> the untrained FE's probe (every gate point of a seed has the same)
    reference: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    # (partition, FE) -> seed -> stage 1's [(delivered MB, probe)] per measured round
    curves: dict[tuple[str, str], dict[int, list[tuple[float, float]]]] = defaultdict(dict)
    done = 0
    for pt in points:
        metrics_file = args.sweep_dir / pt["run_dir"] / "metrics.json"
        # "skipped": finished by an earlier invocation of the sweep (e.g. one seed at a time).
        if pt.get("status") not in ("ran", "skipped") or not metrics_file.is_file():
            continue
        done += 1
        ov = dict(o.split("=", 1) for o in pt["overrides"])
        part, fe = partition_label(ov["data.partition"]), fe_label(ov)
        gate, report = gate_label(ov)
        metrics = json.loads(metrics_file.read_text())
        for stage in (metrics.get("stages") or {}).values():
            untrained = ((stage or {}).get("representation") or {}).get("untrained") or {}
            if "linear_probe" in untrained:
                reference[(part, fe)][pt["seed"]] = untrained["linear_probe"]
        curves[(part, fe)][pt["seed"]] = stage1_curve(args.sweep_dir / pt["run_dir"] / "rounds.csv")
        for row in run_rows(metrics):
            if row["system"] == "nmoe":
                copies[(part, fe, gate, pt["seed"])].append(row["f1_macro"])
            if report:
                rows[(part, fe, gate)][row["system"]].append(row)
    print(f"{done} of {len(points)} points finished")
    for key, f1s in sorted(copies.items()):
        if len(set(f1s)) > 1:
            print(f"note: {key}: the copies under both stage3.fedgate values differ: {f1s}")

    parts = list(dict.fromkeys(k[0] for k in rows))
    fes = list(dict.fromkeys(k[1] for k in rows))
    gates = [g for g in GATES if any(k[2] == g for k in rows)]  # the gates this sweep ran

    def values(part: str, fe: str, gate: str, system: str, col: str) -> list[float]:
        return [r[col] for r in rows.get((part, fe, gate), {}).get(system, [])]

    print("\nNMoE macro-F1 (%), mean ± std over seeds; linear probe (%) of the stage-1 FE, trained and untrained")
    print("| partition | FE | FE probe (untrained) | " + " | ".join(gates) + " |")
    print("|---|---|---|" + "---|" * len(gates))
    for part in parts:
        for fe in fes:
            probe = values(part, fe, "FedGate", "nmoe", "fe_linear_probe")
            f1 = [cell(values(part, fe, g, "nmoe", "f1_macro")) for g in gates]
            print(f"| {part} | {fe} | {cell(probe)} ({cell(list(reference[(part, fe)].values()))}) | " + " | ".join(f1) + " |")

    print("\nBounds and baselines (macro-F1 %, LR %; from the FedGate points)")
    print("| partition | centralized F1 / LR | local F1 (" + " / ".join(fes) + ") | FedAvg F1 | NMoE LR (its cells) |")
    print("|---|---|---|---|---|")
    for part in parts:
        first = fes[0]
        cen_f1 = values(part, first, "FedGate", "centralized", "f1_macro")
        cen_lr = values(part, first, "FedGate", "centralized", "local_ratio")
        local = " / ".join(cell(values(part, fe, "FedGate", "local", "f1_macro")) for fe in fes)
        fedavg = values(part, first, "FedGate", "fedavg", "f1_macro")
        lrs = [statistics.fmean(v) * 100 for fe in fes for g in gates if (v := values(part, fe, g, "nmoe", "local_ratio"))]
        lr_range = f"{min(lrs):.1f} - {max(lrs):.1f}" if lrs else "–"
        print(f"| {part} | {cell(cen_f1)} / {cell(cen_lr)} | {local} | {cell(fedavg)} | {lr_range} |")

    print("\nThe baselines' delivered MB (their own stages), mean over seeds")
    print("| partition | centralized | FedAvg |")
    print("|---|---|---|")
    for part in parts:
        mb = [values(part, fes[0], "FedGate", system, "system_bytes_delivered") for system in ("centralized", "fedavg")]
        print(f"| {part} | " + " | ".join(f"{statistics.fmean(v) / 1e6:.2f}" if v else "–" for v in mb) + " |")

    print("\nNMoE delivered MB (its own stages), mean over seeds")
    print("| partition | FE | " + " | ".join(gates) + " |")
    print("|---|---|" + "---|" * len(gates))
    for part in parts:
        for fe in fes:
            mb = []
            for g in gates:
                v = values(part, fe, g, "nmoe", "system_bytes_delivered")
                mb.append(f"{statistics.fmean(v) / 1e6:.2f}" if v else "–")
            print(f"| {part} | {fe} | " + " | ".join(mb) + " |")
    if args.figure:
        draw_curves(args.figure, parts, fes, curves, reference)
        print(f"\nfigure: {args.figure}")
    return 0


def stage1_curve(rounds_csv: Path) -> list[tuple[float, float]]:
    """(delivered MB so far, linear probe) of each stage-1 round that measured its FE."""
    with rounds_csv.open(newline="", encoding="utf-8") as f:
        return [(float(r["cum_bytes_delivered"]) / 1e6, float(r["probe_linear"])) for r in csv.DictReader(f)
                if r["system"] == "nmoe" and r["stage"].startswith("stage1") and r.get("probe_linear")]


def draw_curves(path: Path, parts: list[str], fes: list[str],
                curves: dict[tuple[str, str], dict[int, list[tuple[float, float]]]],
                reference: dict[tuple[str, str], dict[int, float]]) -> None:
    """One panel per partition: each FE's probe (mean over seeds, the seeds' range shaded)
    against stage 1's delivered MB, and the same FE untrained (dashed, its seeds' mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(parts), figsize=(5.2 * len(parts), 3.8), sharey=True, squeeze=False)
    for ax, part in zip(axes[0], parts):
        for i, fe in enumerate(fes):
            seeds = [c for c in curves[(part, fe)].values() if c]
            if not seeds:
                continue
            n = min(len(c) for c in seeds)  # every seed measures the same rounds
            mb = np.mean([[m for m, _ in c[:n]] for c in seeds], axis=0)  # seeds lose different transfers
            acc = np.array([[p for _, p in c[:n]] for c in seeds]) * 100
            colour = f"C{i}"
            ax.plot(mb, acc.mean(0), "o-", color=colour, label=f"{fe} ({len(seeds)} seeds)")
            ax.fill_between(mb, acc.min(0), acc.max(0), color=colour, alpha=0.2)
            untrained = list(reference[(part, fe)].values())
            if untrained:
                ax.axhline(100 * float(np.mean(untrained)), color=colour, ls="--", lw=1, label=f"{fe} untrained")
        ax.legend(fontsize=8)
        ax.set_title(part)
        ax.set_xlabel("stage-1 MB delivered")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("linear probe of the FE (%)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
