"""Writes a tiny, realistic run directory following the run-directory schema exactly.

Numbers are chosen so tests can compute expected values by hand: stage costs are fixed
(bytes times ``bytes_scale``), final F1s are arguments, and the per-query latencies come
from a generator seeded with the run's seed. Delivered differs from offered on purpose
(stage 1 loses an upload, the centralized upload loses 10 %, the NMoE's inference loses a
D2D answer and relays another through the base station), so a plot or table that reads
the wrong field is caught by its test.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional

import numpy as np

from nmoe_sim.config import build_scenario, dump_yaml

CLIENTS = 4
SYSTEMS = ("nmoe", "local", "centralized", "fedavg")
DEFAULT_F1 = {"nmoe": 0.80, "local": 0.55, "centralized": 0.90, "fedavg": 0.70}
# Latency of a query whose expert answer never arrived: the client waits this long, then
# answers with its own fallback. Far above the delivered ones (<= 0.3 s), so a percentile
# that leaves undelivered queries out is visibly different from metrics.json's.
FALLBACK_LATENCY_S = 0.5


class Stage(NamedTuple):
    """One stage's costs. Bytes per hop direction, offered and delivered; energy by payer."""

    system: str
    up: int          # offered payload per hop direction (a BS relay counts in up and down)
    down: int
    d2d: int
    up_ok: int       # delivered payload per hop direction
    down_ok: int
    d2d_ok: int
    bytes: int       # offered end to end (once per transfer)
    bytes_ok: int    # delivered end to end
    rounds: int
    sim_time_s: float
    device_compute_j: float
    device_radio_j: float
    infra_compute_j: float
    infra_radio_j: float
    failed: int = 0
    arrival_window_s: Optional[float] = None  # inference stages only
    busy_time_s: Optional[float] = None


STAGES: dict[str, Stage] = {
    # 12 uploads of ~33 kB, one lost: 40 kB of upload undelivered.
    "stage1_fedsc": Stage("nmoe", 400_000, 400_000, 0, 360_000, 400_000, 0, 800_000, 760_000,
                          3, 12.0, 2.0, 2.0, 0.0, 1.0, failed=1),
    "stage2_experts": Stage("nmoe", 0, 0, 0, 0, 0, 0, 0, 0, 0, 3.0, 2.0, 0.0, 0.0, 0.0),
    "stage3_fedgate": Stage("nmoe", 50_000, 50_000, 0, 50_000, 50_000, 0, 100_000, 100_000,
                            2, 4.0, 0.5, 0.3, 0.0, 0.2),
    # 120 kB end to end: 100 kB over direct D2D links (10 kB of it lost) and 20 kB relayed
    # through the base station (one up hop and one down hop, both delivered), so the
    # delivered link load (130 kB) exceeds the delivered end-to-end payload (110 kB).
    "inference_nmoe": Stage("nmoe", 20_000, 20_000, 100_000, 20_000, 20_000, 90_000,
                            120_000, 110_000, 0, 2.0, 0.2, 0.2, 0.0, 0.1, failed=1,
                            arrival_window_s=1.5, busy_time_s=0.6),
    "baseline_centralized": Stage("centralized", 1_000_000, 0, 0, 900_000, 0, 0, 1_000_000,
                                  900_000, 0, 8.0, 0.0, 1.5, 1.0, 0.5, failed=1),
    "inference_centralized": Stage("centralized", 0, 0, 100_000, 0, 0, 100_000, 100_000,
                                   100_000, 0, 1.5, 0.1, 0.3, 0.0, 0.0,
                                   arrival_window_s=1.2, busy_time_s=0.5),
    "baseline_fedavg": Stage("fedavg", 300_000, 300_000, 0, 300_000, 300_000, 0, 600_000,
                             600_000, 3, 9.0, 2.0, 1.0, 0.0, 1.0),
    "inference_fedavg": Stage("fedavg", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.5, 0.1, 0.0, 0.0, 0.0,
                              arrival_window_s=0.45, busy_time_s=0.01),
    "inference_local": Stage("local", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.5, 0.1, 0.0, 0.0, 0.0,
                             arrival_window_s=0.45, busy_time_s=0.01),
}
# The stages whose cost each system pays, as the runner declares them: local reuses the
# NMoE's FE (stage 1) and its own expert (stage 2).
SYSTEM_STAGES: dict[str, list[str]] = {
    "nmoe": ["stage1_fedsc", "stage2_experts", "stage3_fedgate", "inference_nmoe"],
    "local": ["stage1_fedsc", "stage2_experts", "inference_local"],
    "centralized": ["baseline_centralized", "inference_centralized"],
    "fedavg": ["baseline_fedavg", "inference_fedavg"],
}

ROUNDS_HEADER = ("system,stage,round,rounds_total,start_s,end_s,participants,failures,"
                 "cum_bytes,cum_bytes_delivered,cum_sim_time_s,cum_energy_j,f1_macro,"
                 "accuracy").split(",")
GATING_HEADER = ["system", "client", "expert", "count", "share"]
EVENTS_HEADER = ("system,kind,stage,tag,src,dst,node,size_bytes,flops,start_s,end_s,attempts,"
                 "delivered,reason,hops,airtime_s,energy_j,snr_db").split(",")
HOPS_HEADER = ("system,stage,tag,u,v,size_bytes,start_s,end_s,attempts,delivered,airtime_s,"
               "tx_energy_j,rx_energy_j,snr_db,device_energy_j,infrastructure_energy_j").split(",")
QUERIES_HEADER = ["system", "client", "query", "start_s", "end_s", "latency_s", "experts",
                  "delivered"]
CLIENTS_HEADER = ("system,stage,client,bytes_sent,bytes_received,tx_airtime_s,rx_airtime_s,"
                  "compute_time_s,compute_energy_j,radio_energy_j,device_energy_j").split(",")


def stage_metrics(bytes_scale: float = 1.0) -> dict[str, dict[str, Any]]:
    out, t = {}, 0.0
    for name, s in STAGES.items():
        up, down, d2d, up_ok, down_ok, d2d_ok, total, total_ok = (
            int(round(b * bytes_scale))
            for b in (s.up, s.down, s.d2d, s.up_ok, s.down_ok, s.d2d_ok, s.bytes, s.bytes_ok))
        compute_j = s.device_compute_j + s.infra_compute_j
        radio_j = s.device_radio_j + s.infra_radio_j
        device_j = s.device_compute_j + s.device_radio_j
        infra_j = s.infra_compute_j + s.infra_radio_j
        out[name] = {
            "system": s.system,
            "bytes": total, "bytes_delivered": total_ok,
            "bytes_up": up, "bytes_down": down, "bytes_d2d": d2d,
            "bytes_up_delivered": up_ok, "bytes_down_delivered": down_ok,
            "bytes_d2d_delivered": d2d_ok, "link_bytes": up_ok + down_ok + d2d_ok,
            "rounds": s.rounds, "sim_time_s": s.sim_time_s, "start_s": t,
            "end_s": t + s.sim_time_s,
            "energy_j": compute_j + radio_j, "compute_energy_j": compute_j,
            "radio_energy_j": radio_j, "device_energy_j": device_j,
            "infrastructure_energy_j": infra_j,
            "failed_transfers": s.failed, "transfers": 2 * CLIENTS * max(s.rounds, 1),
            "flops": compute_j * 1e10,
        }
        if s.arrival_window_s is not None:
            out[name]["arrival_window_s"] = s.arrival_window_s
            out[name]["busy_time_s"] = s.busy_time_s
        t += s.sim_time_s
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
    """Equal rounds within a stage; ``rounds_total`` is the stage's number of rounds."""
    rows: list[list[Any]] = []
    plan = {"nmoe": ["stage1_fedsc", "stage3_fedgate"], "fedavg": ["baseline_fedavg"]}
    for system, names in plan.items():
        cum_b = cum_ok = cum_t = cum_e = 0.0
        for name in names:
            st = stages[name]
            n = st["rounds"]
            for r in range(1, n + 1):
                cum_b += st["bytes"] / n
                cum_ok += st["bytes_delivered"] / n
                cum_t += st["sim_time_s"] / n
                cum_e += st["energy_j"] / n
                start = st["start_s"] + (r - 1) * st["sim_time_s"] / n
                end = start + st["sim_time_s"] / n
                # FedSC rounds have no classifier: f1_macro and accuracy stay empty.
                score = "" if name == "stage1_fedsc" else round(f1[system] - 0.1 * (n - r) / n, 4)
                rows.append([system, name, r, n, start, end, CLIENTS, 0,
                             int(round(cum_b)), int(round(cum_ok)), cum_t, cum_e, score, score])
    return rows


def _queries(start_s: float, per_client: int, rng: np.random.Generator) -> list[list[Any]]:
    queries: list[list[Any]] = []
    for system in SYSTEMS:
        for client in range(CLIENTS):
            for q in range(per_client):
                start = start_s + 0.1 * q
                # Local answers on the device (sub-ms); networked systems pay D2D transfers.
                lat = 2e-4 if system in ("local", "fedavg") else float(rng.uniform(0.02, 0.3))
                expert = client if system != "centralized" else (client + q) % CLIENTS
                delivered = not (system == "nmoe" and client == 0 and q == 0)
                if not delivered:
                    lat = FALLBACK_LATENCY_S  # still a latency: the fallback's
                queries.append([system, client, q, start, start + lat, lat, str(expert),
                                delivered])
    return queries


def _clients(stages: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Each stage's device-side costs split evenly over the clients (sums match the stage)."""
    rows = []
    for name, st in stages.items():
        s = STAGES[name]
        for c in range(CLIENTS):
            sent = (st["bytes_up_delivered"] + st["bytes_d2d_delivered"]) / CLIENTS
            received = (st["bytes_down_delivered"] + st["bytes_d2d_delivered"]) / CLIENTS
            rows.append([st["system"], name, c, int(sent), int(received), sent / 1e7,
                         received / 1e7, st["sim_time_s"] / 2 / CLIENTS,
                         s.device_compute_j / CLIENTS, s.device_radio_j / CLIENTS,
                         st["device_energy_j"] / CLIENTS])
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
    config = build_scenario({"name": scenario, "seed": seed})
    (run_dir / "config.yaml").write_text(dump_yaml(config))

    queries = _queries(stages["inference_nmoe"]["start_s"], queries_per_client, rng)
    systems = {}
    for system in SYSTEMS:
        # Over all the system's queries, delivered or not (the fallback's latency counts).
        lats = np.array([row[5] for row in queries if row[0] == system])
        p50, p95, p99 = np.percentile(lats, [50, 95, 99])
        own = SYSTEM_STAGES[system]
        systems[system] = {
            "f1_macro": f1[system], "accuracy": f1[system] + 0.01,
            "local_ratio": 1.0 if system in ("local", "fedavg") else 0.7,
            "queries": int(lats.size),
            "latency_s": {"mean": float(lats.mean()), "p50": float(p50), "p95": float(p95),
                          "p99": float(p99)},
            "inference_bytes": stages.get(f"inference_{system}", {}).get("bytes", 0),
            "inference_energy_j": 0.1,
            "failed_queries": sum(1 for row in queries if row[0] == system and not row[7]),
            "gating": _gating(system),
            "stages": own,
            **{key: sum(stages[n][key] for n in own)
               for key in ("bytes", "bytes_delivered", "energy_j", "device_energy_j",
                           "infrastructure_energy_j")},
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
    t_inf = stages["inference_nmoe"]["start_s"]
    _write_csv(run_dir / "events.csv", EVENTS_HEADER, [
        ["nmoe", "transfer", "stage1_fedsc", "model_up", "0", "bs", "", 1000, "", 0.0, 0.4, 1,
         True, "", 1, 0.4, 0.05, 21.0],
        ["nmoe", "compute", "stage1_fedsc", "local_train", "", "", "0", "", 1e9, 0.4, 0.45, "",
         "", "", "", "", 0.15, ""],
        # A client -> client answer relayed through the base station: two hops.
        ["nmoe", "transfer", "inference_nmoe", "q1/answer", "1", "3", "", 500, "", t_inf,
         t_inf + 0.02, 1, True, "", 2, 0.02, 0.004, 15.0],
    ])
    _write_csv(run_dir / "hops.csv", HOPS_HEADER, [
        ["nmoe", "stage1_fedsc", "model_up", "0", "bs", 1000, 0.0, 0.4, 1, True, 0.4, 0.04,
         0.01, 21.0, 0.04, 0.01],
        ["nmoe", "inference_nmoe", "q1/answer", "1", "bs", 500, t_inf, t_inf + 0.01, 1, True,
         0.01, 0.001, 0.001, 21.0, 0.001, 0.001],
        ["nmoe", "inference_nmoe", "q1/answer", "bs", "3", 500, t_inf + 0.01, t_inf + 0.02, 1,
         True, 0.01, 0.001, 0.001, 15.0, 0.001, 0.001],
    ])
    _write_csv(run_dir / "queries.csv", QUERIES_HEADER, queries)
    _write_csv(run_dir / "clients.csv", CLIENTS_HEADER, _clients(stages))
    # metrics.json last: its presence means the run is complete (what sweeps check).
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return run_dir
