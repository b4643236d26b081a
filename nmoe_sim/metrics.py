"""Summaries computed from the recorder: per-system scores, per-stage costs, latency percentiles.

Costs are read from the recorder's running totals by (system, stage): the stage that
caused a record and the world that ran it, both stamped at the source.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

import numpy as np

from nmoe_sim.fl.routing import Scores
from nmoe_sim.record import DIRECTIONS, QueryRecord, Recorder

log = logging.getLogger(__name__)

# Per-stage fields that add up across stages into a system's cost.
SYSTEM_COST_FIELDS = ("bytes", "bytes_delivered", "link_bytes", "sim_time_s", "energy_j",
                      "device_energy_j", "infrastructure_energy_j")


def latency_summary(queries: Iterable[QueryRecord]) -> dict[str, float]:
    """Mean and percentiles over every query, delivered or not.

    A query's latency runs from its arrival until the client holds its answer, from the
    experts or, when a leg failed, from its own fallback; the plots use the same definition.
    """
    lat = np.array([q.latency_s for q in queries], dtype=np.float64)
    if lat.size == 0:
        return {"mean": float("nan"), "p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {"mean": float(lat.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}


def busy_time_s(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals: time with at least one in progress."""
    total, reach = 0.0, -np.inf
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return float(total)


def stage_costs(rec: Recorder, system: str, stage: str, start_s: float, end_s: float) -> dict[str, Any]:
    """One stage's costs: offered vs delivered payload, per hop direction, energy by payer."""
    t = rec.stage_totals(system, stage)
    out: dict[str, Any] = {
        "system": system,
        "bytes": t.bytes, "bytes_delivered": t.bytes_delivered,
    }
    for d in DIRECTIONS:  # per hop actually used: a relay through the BS is up + down
        out[f"bytes_{d}"] = t.hop_bytes[d]
        out[f"bytes_{d}_delivered"] = t.hop_bytes_delivered[d]
    out.update({
        "link_bytes": sum(t.hop_bytes_delivered.values()),
        "rounds": len({r.round for r in rec.rounds if r.system == system and r.stage == stage}),
        "sim_time_s": end_s - start_s, "start_s": start_s, "end_s": end_s,
        "energy_j": t.energy_j, "compute_energy_j": t.compute_energy_j, "radio_energy_j": t.radio_energy_j,
        "device_energy_j": t.device_energy_j, "infrastructure_energy_j": t.infrastructure_energy_j,
        "failed_transfers": t.failed_transfers, "transfers": t.transfers,
        "flops": t.flops,
    })
    if no_update_arrived(rec, system, stage):
        out["no_update"] = True  # only when so: a stage that learned is written as before
    return out


def no_update_arrived(rec: Recorder, system: str, stage: str) -> bool:
    """Whether a federated stage aggregated no client update in any of its rounds: every
    participant failed in every round (a deadline too short for any update to arrive, or
    links down), so what it hands on is its starting model. False for a stage without rounds."""
    rounds = [r for r in rec.rounds if r.system == system and r.stage == stage]
    return bool(rounds) and all(r.failures >= r.participants for r in rounds)


def warn_stages_without_update(stages: dict[str, dict[str, Any]]) -> None:
    """One warning line per stage flagged ``no_update`` in metrics.json's ``stages``; the
    NMoE's stage 1 has already warned, beside its representation checks (pipeline.py)."""
    for name, costs in stages.items():
        if costs.get("no_update") and not costs.get("representation", {}).get("no_update"):
            log.warning("%s (%s): no client update arrived in any of its %d rounds (a deadline too short for "
                        "any upload, or every link down); it kept its starting model", name, costs["system"],
                        costs["rounds"])


def inference_timing(queries: Sequence[QueryRecord], start_s: float) -> dict[str, float]:
    """An inference stage's time split: the Poisson arrival window vs time spent serving."""
    if not queries:
        return {"arrival_window_s": 0.0, "busy_time_s": 0.0}
    return {"arrival_window_s": max(q.start_s for q in queries) - start_s,
            "busy_time_s": busy_time_s([(q.start_s, q.end_s) for q in queries])}


def system_costs(stages: dict[str, dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """A system's cost: the sum over the stages it pays for (its own and those it reuses)."""
    return {f: sum(stages[n][f] for n in names) for f in SYSTEM_COST_FIELDS}


def system_summary(scores: Scores, rec: Recorder, system: str, stage: str, failed_queries: int,
                   up: tuple[Scores, int] | None = None) -> dict[str, Any]:
    """One system's inference summary; with injected faults, ``up`` adds the scores of the
    queries that arose while their client was up (``up_clients``; docs/faults.md)."""
    queries = [q for q in rec.queries if q.system == system]
    counts = scores.gating_counts
    rows = counts.sum(1, keepdims=True)
    gating = (counts / np.maximum(rows, 1)).round(6).tolist() if counts.size else []
    inference = rec.stage_totals(system, stage)
    return {
        "f1_macro": scores.f1_macro, "accuracy": scores.accuracy, "local_ratio": scores.local_ratio,
        "queries": len(queries), "failed_queries": failed_queries,
        "latency_s": latency_summary(queries),
        "inference_bytes": inference.bytes, "inference_bytes_delivered": inference.bytes_delivered,
        "inference_energy_j": inference.energy_j,
        "gating": gating,
        "gating_counts": counts.tolist(),
        **({} if up is None else {"up_clients": {
            "queries": up[1], "f1_macro": up[0].f1_macro, "accuracy": up[0].accuracy,
            "local_ratio": up[0].local_ratio}}),
    }
