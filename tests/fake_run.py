"""Writes a tiny, realistic run directory following docs/results-format.md exactly.

Numbers are chosen so tests can compute expected table values by hand: stage costs are
fixed (times ``bytes_scale``), final F1s are arguments, and the per-query latencies come
from a generator seeded with the run's seed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from nmoe_sim.config import build_scenario, dump_yaml

CLIENTS = 4
SYSTEMS = ("nmoe", "local", "centralized", "fedavg")
DEFAULT_F1 = {"nmoe": 0.80, "local": 0.55, "centralized": 0.90, "fedavg": 0.70}

# stage -> (bytes_up, bytes_down, bytes_d2d, rounds, sim_time_s, compute_j, radio_j)
STAGES: dict[str, tuple[int, int, int, int, float, float, float]] = {
    "stage1_fedsc": (400_000, 400_000, 0, 3, 12.0, 2.0, 3.0),
    "stage2_experts": (0, 0, 0, 0, 3.0, 2.0, 0.0),
    "stage3_fedgate": (50_000, 50_000, 0, 2, 4.0, 0.5, 0.5),
    "inference_nmoe": (0, 0, 120_000, 0, 2.0, 0.2, 0.3),
    "baseline_centralized": (1_000_000, 0, 0, 0, 8.0, 1.0, 2.0),
    "inference_centralized": (0, 0, 100_000, 0, 1.5, 0.1, 0.3),
    "baseline_fedavg": (300_000, 300_000, 0, 3, 9.0, 2.0, 2.0),
    "inference_fedavg": (0, 0, 0, 0, 0.5, 0.1, 0.0),
    "inference_local": (0, 0, 0, 0, 0.5, 0.1, 0.0),
}

ROUNDS_HEADER = ("system,stage,round,start_s,end_s,participants,failures,cum_bytes,"
                 "cum_sim_time_s,cum_energy_j,f1_macro,accuracy").split(",")
GATING_HEADER = ["system", "client", "expert", "count", "share"]
EVENTS_HEADER = ("kind,stage,tag,src,dst,node,size_bytes,flops,start_s,end_s,attempts,"
                 "delivered,reason,hops,airtime_s,energy_j,snr_db").split(",")
HOPS_HEADER = ("stage,tag,u,v,size_bytes,start_s,end_s,attempts,delivered,airtime_s,"
               "tx_energy_j,rx_energy_j,snr_db").split(",")
QUERIES_HEADER = ["system", "client", "query", "start_s", "end_s", "latency_s", "experts",
                  "delivered"]


def stage_metrics(bytes_scale: float = 1.0) -> dict[str, dict[str, Any]]:
    out, t = {}, 0.0
    for name, (up, down, d2d, rounds, sim_s, comp_j, radio_j) in STAGES.items():
        up, down, d2d = (int(round(b * bytes_scale)) for b in (up, down, d2d))
        out[name] = {
            "bytes": up + down + d2d, "bytes_up": up, "bytes_down": down, "bytes_d2d": d2d,
            "rounds": rounds, "sim_time_s": sim_s, "start_s": t, "end_s": t + sim_s,
            "energy_j": comp_j + radio_j, "compute_energy_j": comp_j, "radio_energy_j": radio_j,
            "failed_transfers": 0, "transfers": 2 * CLIENTS * max(rounds, 1),
        }
        t += sim_s
    return out


def _gating(system: str) -> list[list[float]]:
    if system == "fedavg":
        return []  # a single classifier: no routing
    if system == "local":
        return np.eye(CLIENTS).tolist()
    g = np.full((CLIENTS, CLIENTS), 0.1)
    np.fill_diagonal(g, 0.7)
    return g.tolist()


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _rounds(stages: dict[str, dict[str, Any]], f1: Mapping[str, float]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    plan = {"nmoe": ["stage1_fedsc", "stage3_fedgate"], "fedavg": ["baseline_fedavg"]}
    for system, names in plan.items():
        cum_b = cum_t = cum_e = 0.0
        for name in names:
            st = stages[name]
            n = st["rounds"]
            for r in range(1, n + 1):
                cum_b += st["bytes"] / n
                cum_t += st["sim_time_s"] / n
                cum_e += st["energy_j"] / n
                start = st["start_s"] + (r - 1) * st["sim_time_s"] / n
                end = start + st["sim_time_s"] / n
                # FedSC rounds have no classifier: f1_macro and accuracy stay empty.
                score = "" if name == "stage1_fedsc" else round(f1[system] - 0.1 * (n - r) / n, 4)
                rows.append([system, name, r, start, end, CLIENTS, 0, int(cum_b), cum_t, cum_e,
                             score, score])
    return rows


def write_fake_run(
    run_dir: Path,
    *,
    scenario: str = "fake",
    seed: int = 0,
    f1: Optional[Mapping[str, float]] = None,
    bytes_scale: float = 1.0,
    queries_per_client: int = 5,
) -> Path:
    """Write every file of a run directory (except plots/) at ``run_dir``; returns it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    f1 = {**DEFAULT_F1, **(f1 or {})}
    rng = np.random.default_rng(seed)
    stages = stage_metrics(bytes_scale)
    (run_dir / "config.yaml").write_text(dump_yaml(build_scenario({"name": scenario, "seed": seed})))

    queries: list[list[Any]] = []
    q_start = stages["inference_nmoe"]["start_s"]
    for system in SYSTEMS:
        for client in range(CLIENTS):
            for q in range(queries_per_client):
                start = q_start + 0.1 * q
                # Local answers on the device (sub-ms); networked systems pay D2D transfers.
                lat = 2e-4 if system in ("local", "fedavg") else float(rng.uniform(0.02, 0.3))
                expert = client if system != "centralized" else (client + q) % CLIENTS
                delivered = not (system == "nmoe" and client == 0 and q == 0)
                queries.append([system, client, q, start, start + lat, lat, str(expert),
                                delivered])
    systems = {}
    for system in SYSTEMS:
        lats = np.array([row[5] for row in queries if row[0] == system])
        p50, p95, p99 = np.percentile(lats, [50, 95, 99])
        systems[system] = {
            "f1_macro": f1[system], "accuracy": f1[system] + 0.01,
            "local_ratio": 1.0 if system in ("local", "fedavg") else 0.7,
            "queries": int(lats.size),
            "latency_s": {"mean": float(lats.mean()), "p50": p50, "p95": p95, "p99": p99},
            "inference_bytes": stages.get(f"inference_{system}", {}).get("bytes", 0),
            "inference_energy_j": 0.1, "failed_queries": int(system == "nmoe"),
            "gating": _gating(system),
        }
    nodes = [{"id": "bs", "kind": "bs", "x_m": 0.0, "y_m": 0.0}]
    edges = []
    for c in range(CLIENTS):
        angle = 2 * np.pi * c / CLIENTS
        nodes.append({"id": str(c), "kind": "client", "x_m": 50.0 * np.cos(angle),
                      "y_m": 50.0 * np.sin(angle), "device": "phone"})
        edges.append({"u": "bs", "v": str(c), "kind": "bs", "distance_m": 50.0,
                      "mean_snr_db": 20.0 + c})
        edges.append({"u": str(c), "v": str((c + 1) % CLIENTS), "kind": "d2d",
                      "distance_m": 70.7, "mean_snr_db": 10.0 + 2 * c})
    metrics = {
        "scenario": scenario, "seed": seed, "run_id": f"20260101-000000-seed{seed}",
        "wall_time_s": 1.5,
        "dataset": {"name": "digits", "num_classes": 10, "train_samples": 200,
                    "test_samples": 80},
        "systems": systems, "stages": stages,
        "links": [{**e, "bytes": 1000, "airtime_s": 0.01, "utilization": 0.001} for e in edges],
    }
    (run_dir / "topology.json").write_text(json.dumps({"nodes": nodes, "edges": edges}))
    _write_csv(run_dir / "rounds.csv", ROUNDS_HEADER, _rounds(stages, f1))
    gating_rows = []
    for system in SYSTEMS:
        for i, row in enumerate(systems[system]["gating"]):
            for j, share in enumerate(row):
                gating_rows.append([system, i, j, int(round(share * queries_per_client)), share])
    _write_csv(run_dir / "gating.csv", GATING_HEADER, gating_rows)
    _write_csv(run_dir / "events.csv", EVENTS_HEADER, [
        ["transfer", "stage1_fedsc", "model_up", "0", "bs", "", 1000, "", 0.0, 0.4, 1, True,
         "", 1, 0.4, 0.05, 21.0],
        ["compute", "stage1_fedsc", "local_train", "", "", "0", "", 1e9, 0.4, 0.45, "", "",
         "", "", "", 0.15, ""],
    ])
    _write_csv(run_dir / "hops.csv", HOPS_HEADER, [
        ["stage1_fedsc", "model_up", "0", "bs", 1000, 0.0, 0.4, 1, True, 0.4, 0.04, 0.01, 21.0],
    ])
    _write_csv(run_dir / "queries.csv", QUERIES_HEADER, queries)
    # metrics.json last: its presence means the run is complete (what sweeps check).
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return run_dir
