"""``system: nmoe``: the three-stage NMoE pipeline, then each baseline, each in its own world.

Top-down, like the paper: the NMoE (stage 1 -> 2 -> 3 -> gated inference), then each
baseline in its own simulated world over the same data, topology and channel seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator, Iterator

import simpy

from nmoe_sim.engine.checkpoint import STAGE
from nmoe_sim.fl.baselines import BASELINES
from nmoe_sim.inference import run_inference, up_scores
from nmoe_sim.metrics import inference_timing, stage_costs, system_costs, system_summary
from nmoe_sim.pipeline import StageSpan, nmoe_spec, train_gate, train_shared
from nmoe_sim.reuse import StageCache, baseline_key, keep, nmoe_prefix_key, recording, restore
from nmoe_sim.systems import System, SystemOutcome
from nmoe_sim.world import Sim, World

if TYPE_CHECKING:
    from rich.table import Table

GATING_COLUMNS = ["system", "client", "expert", "count", "share"]


def _run_process(sim: Sim, body: Generator[simpy.Event, Any, Any]) -> Any:
    proc = sim.env.process(body)
    sim.env.run(until=proc)
    # SimPy returns from run(until=proc) with proc's own (callback-free) event still queued;
    # step it away so that a snapshot at this boundary holds no finished generator.
    while sim.env._queue and sim.env._queue[0][3] is proc:
        sim.env.step()
    return proc.value


class NMoESystem(System):
    def run(self, world: World, reuse: StageCache | None = None, origin: str = "") -> SystemOutcome:
        systems, spans, pays, nmoe_sim, reused = run_systems(world, reuse, origin)
        stages = stage_table(world, spans)
        for name, summary in systems.items():
            summary["stages"] = pays[name]
            summary.update(system_costs(stages, pays[name]))
        metrics = {
            "systems": systems,
            "stages": stages,
            # The NMoE's own Sim carried only its stages, so its network's counters are its links' load.
            "links": nmoe_sim.net.link_stats(nmoe_sim.env.now),
        }
        if reused:  # a sweep point that took shared stages from an earlier point
            metrics["reused"] = reused
        return SystemOutcome(metrics, nmoe_sim, {"gating.csv": (GATING_COLUMNS, gating_rows(systems))})

    @staticmethod
    def summary_table(metrics: dict[str, Any]) -> "Table":
        return summary_table(metrics)


def run_systems(world: World, reuse: StageCache | None = None, origin: str = "") -> tuple[
        dict[str, Any], list[StageSpan], dict[str, list[str]], Sim, dict[str, str]]:
    """Run the NMoE and the baselines, each in its own Sim.

    With a ``reuse`` cache (a sweep's), stages 1-2 and the FedAvg and centralized baselines
    are taken from it when an earlier point computed them under the same key, and left in it
    otherwise. Returns (system summaries, stage spans, the stages each system pays for, the
    NMoE's sim, what was reused: stage or system -> the run that computed it).
    """
    ck = world.checkpoints
    # The run's frame (engine/checkpoint.py): what a resumed run finds done, and each
    # member system's Sim while it runs. Each member's end is a stage boundary that saves.
    with ck.frame("nmoe", lambda: {"spans": [], "systems": {}, "pays": {}, "reused": {}, "sims": {},
                                   "parts": None}) as run:
        spans: list[StageSpan] = run.spans
        systems: dict[str, Any] = run.systems
        pays: dict[str, list[str]] = run.pays
        reused: dict[str, str] = run.reused

        key = nmoe_prefix_key(world.cfg) if reuse is not None else ""
        entry = reuse.get(key) if reuse is not None else None
        if run.parts is not None:  # resumed after stage 2
            nmoe_sim, parts = run.sims["nmoe"], run.parts
        elif entry is not None:
            nmoe_sim, parts, prefix_spans = restore(entry.value, world)
            spans.extend(prefix_spans)
            reused.update({stage: entry.origin for stage in parts.trained_by})
        else:
            if "nmoe" not in run.sims:  # else resumed within stage 1 or 2, in the saved Sim
                run.sims["nmoe"] = world.new_sim("nmoe")
            nmoe_sim = run.sims["nmoe"]
            with recording(world) as made:
                parts = _run_process(nmoe_sim, train_shared(world, nmoe_sim, spans))
            if reuse is not None:
                keep(reuse, key, world, (nmoe_sim, parts, list(spans)), made, origin)
        if run.parts is None:
            run.sims["nmoe"], run.parts = nmoe_sim, parts
            ck.save("nmoe stage2_experts done", STAGE)

        def nmoe() -> Generator[simpy.Event, Any, Any]:
            with ck.frame("nmoe_gate", dict) as gate:
                if not hasattr(gate, "router"):
                    gate.router, gate.scope = yield from train_gate(world, nmoe_sim, parts, spans)
                    ck.save(f"nmoe {spans[-1].stage} done", STAGE)
            start = nmoe_sim.env.now
            outcome = yield from run_inference(world, nmoe_sim, nmoe_spec(world, parts, gate.router, nmoe_sim))
            spans.append(StageSpan(nmoe_sim.system, outcome.stage, start, nmoe_sim.env.now, inference=True))
            return gate.scope, outcome

        if "nmoe" not in systems:
            scope, outcome = _run_process(nmoe_sim, nmoe())
            systems["nmoe"] = system_summary(outcome.scores, world.recorder, "nmoe", outcome.stage,
                                             outcome.failed_queries, up_scores(outcome))
            pays["nmoe"] = [*scope.stages, outcome.stage]
            ck.save("nmoe inference done", STAGE)

        for name in world.cfg.baselines.systems:
            if name in systems:  # finished before the checkpoint this run resumed from
                continue
            # ``local`` serves the NMoE's own FE and experts: nothing of its own to reuse.
            bkey = baseline_key(world.cfg, name) if reuse is not None and name != "local" else ""
            hit = reuse.get(bkey) if bkey and reuse is not None else None
            if hit is not None:
                b_spans, systems[name], pays[name] = restore(hit.value, world)
                spans.extend(b_spans)
                reused[name] = hit.origin
                continue
            if name not in run.sims:
                run.sims[name] = world.new_sim(name)
            sim = run.sims[name]

            def baseline(name: str = name, sim: Sim = sim) -> Generator[simpy.Event, Any, Any]:
                with ck.frame("baseline", lambda: {"start": sim.env.now, "first_span": len(spans)}) as b:
                    spec, scope = yield from BASELINES.get(name, "baselines.systems")(world, sim, parts)
                for stage in scope.stages:
                    spans.append(StageSpan(sim.system, stage, b.start, sim.env.now))
                start = sim.env.now
                result = yield from run_inference(world, sim, spec)
                spans.append(StageSpan(sim.system, result.stage, start, sim.env.now, inference=True))
                return scope, result, b.first_span

            with recording(world) as made:
                scope, result, first_span = _run_process(sim, baseline())
            systems[name] = system_summary(result.scores, world.recorder, name, result.stage, result.failed_queries,
                                           up_scores(result))
            pays[name] = [*scope.reused, *scope.stages, result.stage]
            del run.sims[name]  # done: a later checkpoint need not carry its world
            if bkey and reuse is not None:
                keep(reuse, bkey, world, (spans[first_span:], systems[name], pays[name]), made, origin)
            ck.save(f"{name} done", STAGE)
    return systems, spans, pays, nmoe_sim, reused


def stage_table(world: World, spans: list[StageSpan]) -> dict[str, dict[str, Any]]:
    """metrics.json's ``stages``: one entry per stage, keyed by its (run-wide unique) name."""
    stages: dict[str, dict[str, Any]] = {}
    for span in spans:
        if span.stage in stages:
            raise ValueError(f"stage name {span.stage!r} is used by systems {stages[span.stage]['system']!r} "
                             f"and {span.system!r}; stage names must be unique within a run")
        costs = stage_costs(world.recorder, span.system, span.stage, span.start_s, span.end_s)
        costs.update(span.extra)
        if span.inference:
            queries = [q for q in world.recorder.queries if q.system == span.system]
            costs.update(inference_timing(queries, span.start_s))
        stages[span.stage] = costs
    return stages


def gating_rows(systems: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """gating.csv rows from the systems' ``gating`` shares and ``gating_counts``."""
    for name, s in systems.items():
        for c, row in enumerate(s["gating"]):
            for e, share in enumerate(row):
                yield {"system": name, "client": c, "expert": e, "count": s["gating_counts"][c][e], "share": share}


def summary_table(metrics: dict[str, Any]) -> "Table":
    """Systems (quality, latency, delivered bytes, battery energy), then cost per stage."""
    from rich.table import Table

    table = Table(title=f"{metrics['scenario']} (seed {metrics['seed']})")
    for col in ("system", "macro-F1", "accuracy", "LR", "p95 latency (s)", "failed queries", "MB delivered",
                "device J"):
        table.add_column(col, justify="right" if col != "system" else "left")
    for name, s in metrics["systems"].items():
        table.add_row(name, f"{s['f1_macro']:.3f}", f"{s['accuracy']:.3f}", f"{s['local_ratio']:.2f}",
                      f"{s['latency_s']['p95']:.4f}", str(s["failed_queries"]), f"{s['bytes_delivered'] / 1e6:.3f}",
                      f"{s['device_energy_j']:.2f}")
    stages = Table(title="cost per stage (delivered MB per link direction: a relay loads two links)")
    for col in ("stage", "MB offered", "MB delivered", "up/down/d2d", "rounds", "sim s", "device J", "infra J",
                "failed"):
        stages.add_column(col, justify="right" if col != "stage" else "left")
    for name, s in metrics["stages"].items():
        per_link = "/".join(f"{s[f'bytes_{d}_delivered'] / 1e6:.2f}" for d in ("up", "down", "d2d"))
        stages.add_row(name, f"{s['bytes'] / 1e6:.3f}", f"{s['bytes_delivered'] / 1e6:.3f}", per_link,
                       str(s["rounds"]), f"{s['sim_time_s']:.2f}", f"{s['device_energy_j']:.2f}",
                       f"{s['infrastructure_energy_j']:.2f}", f"{s['failed_transfers']}/{s['transfers']}")
    grid = Table.grid()
    grid.add_row(table)
    grid.add_row(stages)
    return grid
