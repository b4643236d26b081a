"""Builds the world and runs every system of a scenario; writes the run directory.

Top-down, like the paper: the NMoE pipeline (stage 1 -> 2 -> 3 -> gated inference), then
each baseline in its own simulated world over the same data, topology and channel seed.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

import simpy
import torch

from nmoe_sim.config import Scenario, dump_yaml
from nmoe_sim.fl.baselines import BASELINES
from nmoe_sim.inference import run_inference
from nmoe_sim.metrics import inference_timing, stage_costs, system_costs, system_summary
from nmoe_sim.pipeline import StageSpan, nmoe_spec, train_nmoe
from nmoe_sim.results import atomic_write_text, write_csv, write_json, write_records
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import Sim, World, build_world

def _run_process(sim: Sim, body: Generator[simpy.Event, Any, Any]) -> Any:
    proc = sim.env.process(body)
    sim.env.run(until=proc)
    return proc.value


def run_systems(world: World) -> tuple[dict[str, Any], list[StageSpan], dict[str, list[str]], Sim]:
    """Run the NMoE and the baselines, each in its own Sim.

    Returns (system summaries, stage spans, the stages each system pays for, the NMoE's sim).
    """
    spans: list[StageSpan] = []
    systems: dict[str, Any] = {}
    pays: dict[str, list[str]] = {}
    nmoe_sim = world.new_sim("nmoe")

    def nmoe() -> Generator[simpy.Event, Any, Any]:
        parts, router, scope = yield from train_nmoe(world, nmoe_sim, spans)
        start = nmoe_sim.env.now
        outcome = yield from run_inference(world, nmoe_sim, nmoe_spec(world, parts, router))
        spans.append(StageSpan(nmoe_sim.system, outcome.stage, start, nmoe_sim.env.now, inference=True))
        return parts, scope, outcome

    parts, scope, outcome = _run_process(nmoe_sim, nmoe())
    systems["nmoe"] = system_summary(outcome.scores, world.recorder, "nmoe", outcome.stage, outcome.failed_queries)
    pays["nmoe"] = [*scope.stages, outcome.stage]

    for name in world.cfg.baselines.systems:
        sim = world.new_sim(name)

        def baseline(name: str = name, sim: Sim = sim) -> Generator[simpy.Event, Any, Any]:
            start = sim.env.now
            spec, scope = yield from BASELINES.get(name, "baselines.systems")(world, sim, parts)
            for stage in scope.stages:
                spans.append(StageSpan(sim.system, stage, start, sim.env.now))
            start = sim.env.now
            result = yield from run_inference(world, sim, spec)
            spans.append(StageSpan(sim.system, result.stage, start, sim.env.now, inference=True))
            return scope, result

        scope, result = _run_process(sim, baseline())
        systems[name] = system_summary(result.scores, world.recorder, name, result.stage, result.failed_queries)
        pays[name] = [*scope.reused, *scope.stages, result.stage]
    return systems, spans, pays, nmoe_sim


def stage_table(world: World, spans: list[StageSpan]) -> dict[str, dict[str, Any]]:
    """metrics.json's ``stages``: one entry per stage, keyed by its (run-wide unique) name."""
    stages: dict[str, dict[str, Any]] = {}
    for span in spans:
        if span.stage in stages:
            raise ValueError(f"stage name {span.stage!r} is used by systems {stages[span.stage]['system']!r} "
                             f"and {span.system!r}; stage names must be unique within a run")
        costs = stage_costs(world.recorder, span.system, span.stage, span.start_s, span.end_s)
        if span.inference:
            queries = [q for q in world.recorder.queries if q.system == span.system]
            costs.update(inference_timing(queries, span.start_s))
        stages[span.stage] = costs
    return stages


def topology_json(world: World, sim: Sim) -> dict[str, Any]:
    g = world.graph
    nodes = [{"id": str(n), "kind": g.nodes[n]["kind"], "x_m": float(g.nodes[n]["pos"][0]),
              "y_m": float(g.nodes[n]["pos"][1]), "device": g.nodes[n].get("device", world.cfg.network.devices.server)}
             for n in sorted(g.nodes, key=str)]
    edges = [{"u": str(u), "v": str(v), "kind": d["kind"], "distance_m": float(d["distance_m"]),
              "mean_snr_db": float(sim.net.mean_snr_db(u, v))} for u, v, d in g.edges(data=True)]
    return {"nodes": nodes, "edges": edges}


def run(cfg: Scenario, run_dir: Path, on_record: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run a validated scenario into ``run_dir`` (which must exist); returns metrics.json's content."""
    with torch_threads(cfg.runtime.torch_threads):
        return _run(cfg, run_dir, on_record)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Set PyTorch's intra-op thread count for the run, and restore the caller's after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run(cfg: Scenario, run_dir: Path, on_record: Callable[[Any], None] | None) -> dict[str, Any]:
    wall0 = time.perf_counter()
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    world = build_world(cfg, SeedStreams(cfg.seed))
    if on_record is not None:
        world.recorder.listeners.append(on_record)
    systems, spans, pays, nmoe_sim = run_systems(world)
    stages = stage_table(world, spans)
    for name, summary in systems.items():
        summary["stages"] = pays[name]
        summary.update(system_costs(stages, pays[name]))
    metrics = {
        "scenario": cfg.name, "seed": cfg.seed, "run_id": run_dir.name,
        "wall_time_s": round(time.perf_counter() - wall0, 3),
        "dataset": dataset_summary(world),
        "systems": systems,
        "stages": stages,
        # The NMoE's own Sim carried only its stages, so its network's counters are its links' load.
        "links": nmoe_sim.net.link_stats(nmoe_sim.env.now),
    }
    write_records(run_dir, world.recorder, [c.idx for c in world.clients])
    write_csv(run_dir / "gating.csv", GATING_COLUMNS, gating_rows(systems))
    write_json(run_dir / "topology.json", topology_json(world, nmoe_sim))
    write_json(run_dir / "metrics.json", metrics)  # last: its presence marks a finished run
    return metrics


GATING_COLUMNS = ["system", "client", "expert", "count", "share"]


def dataset_summary(world: World) -> dict[str, Any]:
    ds = world.dataset
    return {"name": ds.name, "num_classes": ds.num_classes, "train_samples": int(len(ds.y_train)),
            "test_samples": int(len(ds.y_test)), "queries": sum(len(c.y_query) for c in world.clients)}


def gating_rows(systems: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
    """gating.csv rows from the systems' ``gating`` shares and ``gating_counts``."""
    for name, s in systems.items():
        for c, row in enumerate(s["gating"]):
            for e, share in enumerate(row):
                yield {"system": name, "client": c, "expert": e, "count": s["gating_counts"][c][e], "share": share}
