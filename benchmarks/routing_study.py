#!/usr/bin/env python
"""What each routing policy buys and costs: one row per point of a finished sweep, and a
latency-vs-F1 and energy-vs-F1 Pareto figure (docs/results.md section 9; not a test).

Reads each run's metrics.json (the NMoE's macro-F1, LR, latency percentiles, failed
queries, and its inference stage's device energy and delivered bytes) and config.yaml (the
point's routing policy, its weight, the channel presets and the arrival rate). Energy and
bytes are per query: the inference stage's totals over the queries issued.

    python benchmarks/routing_study.py /tmp/rs/routing_study/sweep /tmp/rs/routing_weights/sweep \
        /tmp/rs/routing_mixed/sweep --figure docs/figures/routing_pareto.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

COLUMNS = ("channel", "query_mix", "rate_hz", "policy", "weight", "f1", "lr", "p50_ms", "p95_ms", "p99_ms", "failed",
           "queries", "device_mj_per_query", "kb_per_query")


def row(run: Path) -> dict[str, Any]:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    m = json.loads((run / "metrics.json").read_text())
    s, inf = m["systems"]["nmoe"], m["stages"]["inference_nmoe"]
    # config.yaml leaves out routing keys at their defaults (Scenario.to_dict): topk, 100/s.
    icfg = cfg["inference"]
    ch, pol = cfg["network"]["channel"], icfg.get("routing", "topk")
    bs = ch["bs"]
    # A preset is stored expanded: name it by what tells the two apart.
    channel = "harsh" if bs.get("fading") == "nakagami" else "urban_micro"
    weight = {"channel_aware": icfg.get("channel_aware", {}).get("weight_per_s", 100.0),
              "load_aware": icfg.get("load_aware", {}).get("weight_per_s", 100.0)}.get(pol, "")
    q = max(s["queries"], 1)
    lat = s["latency_s"]
    mix = cfg["data"]["queries"]
    if mix == "mixed":
        mix = f"mixed {cfg['data'].get('queries_global_share', 0.5):g}"
    return {"channel": channel, "query_mix": mix, "rate_hz": icfg["arrival_rate_hz"], "policy": pol, "weight": weight,
            "f1": s["f1_macro"], "lr": s["local_ratio"], "p50_ms": 1e3 * lat["p50"], "p95_ms": 1e3 * lat["p95"],
            "p99_ms": 1e3 * lat["p99"], "failed": s["failed_queries"], "queries": s["queries"],
            "device_mj_per_query": 1e3 * inf["device_energy_j"] / q, "kb_per_query": inf["bytes_delivered"] / q / 1e3}


def text(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"topk": "o", "channel_aware": "s", "load_aware": "^", "budgeted": "D"}
    colors = {}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for ax, x, label in ((axes[0], "p95_ms", "p95 query latency (ms)"),
                         (axes[1], "device_mj_per_query", "device energy per query (mJ)")):
        for r in rows:
            cond = f"{r['channel']}, {r['rate_hz']:g}/s" + ("" if r["query_mix"] == "global" else f", {r['query_mix']}")
            color = colors.setdefault(cond, f"C{len(colors)}")
            ax.scatter(r[x], r["f1"], marker=markers.get(r["policy"], "x"), color=color, s=50, alpha=0.8)
            if r["policy"] == "channel_aware":  # the weight sweep: label each point by its weight
                ax.annotate(f"{r['weight']:g}", (r[x], r["f1"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")  # topk under harsh costs 10-100x what the cautious policies do
        ax.set_xlabel(label + " (log)")
        ax.set_ylabel("macro-F1")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker=m, ls="", color="k", label=p) for p, m in markers.items()]
    handles += [plt.Line2D([], [], marker="o", ls="", color=c, label=cond) for cond, c in colors.items()]
    axes[1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Routing policies: what latency and energy cost in F1 (top-left is better)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path, nargs="+", help="one or more finished sweeps (their rows together)")
    ap.add_argument("--figure", type=Path, help="write the Pareto figure here")
    args = ap.parse_args()
    rows = [row(run) for d in args.sweep_dir for run in sorted(d.glob("*/seed*")) if (run / "metrics.json").exists()]
    rows.sort(key=lambda r: (r["query_mix"], r["channel"] != "urban_micro", r["rate_hz"],
                             ["topk", "channel_aware", "load_aware", "budgeted"].index(r["policy"]),
                             float(r["weight"] or 0)))
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for r in rows:
        print("| " + " | ".join(text(r[c]) for c in COLUMNS) + " |")
    if args.figure is not None:
        figure(rows, args.figure)


if __name__ == "__main__":
    main()
