"""Summaries computed from the recorder: per-system scores, per-stage costs, latency percentiles."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from nmoe_sim.fl.routing import Scores
from nmoe_sim.record import QueryRecord, Recorder


def latency_summary(queries: Iterable[QueryRecord]) -> dict[str, float]:
    lat = np.array([q.latency_s for q in queries], dtype=np.float64)
    if lat.size == 0:
        return {"mean": float("nan"), "p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {"mean": float(lat.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}


def stage_costs(rec: Recorder, stage: str, start_s: float, end_s: float) -> dict[str, Any]:
    ts = [t for t in rec.transfers if t.stage == stage]
    cs = [c for c in rec.computes if c.stage == stage]
    by_dir = {"up": 0, "down": 0, "d2d": 0}
    for t in ts:
        by_dir[t.direction] += t.size_bytes
    radio_j = sum(t.energy_j for t in ts)
    compute_j = sum(c.energy_j for c in cs)
    return {
        "bytes": sum(by_dir.values()),
        "bytes_up": by_dir["up"], "bytes_down": by_dir["down"], "bytes_d2d": by_dir["d2d"],
        "rounds": len({r.round for r in rec.rounds if r.stage == stage}),
        "sim_time_s": end_s - start_s, "start_s": start_s, "end_s": end_s,
        "energy_j": radio_j + compute_j, "compute_energy_j": compute_j, "radio_energy_j": radio_j,
        "failed_transfers": sum(not t.delivered for t in ts), "transfers": len(ts),
        "flops": sum(c.flops for c in cs),
    }


def system_summary(scores: Scores, rec: Recorder, system: str, stage: str, failed_queries: int) -> dict[str, Any]:
    queries = [q for q in rec.queries if q.system == system]
    counts = scores.gating_counts
    rows = counts.sum(1, keepdims=True)
    gating = (counts / np.maximum(rows, 1)).round(6).tolist() if counts.size else []
    return {
        "f1_macro": scores.f1_macro, "accuracy": scores.accuracy, "local_ratio": scores.local_ratio,
        "queries": len(queries), "failed_queries": failed_queries,
        "latency_s": latency_summary(queries),
        "inference_bytes": rec.stage_bytes([stage]), "inference_energy_j": rec.stage_energy_j([stage]),
        "gating": gating,
        "gating_counts": counts.tolist(),
    }
