"""``system: alignment``: federated MoE with client-expert alignment (docs/alignment.md).

Profiles the clients' capacities once, then runs each assignment of ``alignment.compare``
(or the one ``alignment.assignment``) in its own fresh Sim over the same data, topology
and channel seed, as the NMoE system does for its baselines. Extra file:
``assignments.csv`` (docs/results-format.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from nmoe_sim.config import TrainConfig
from nmoe_sim.engine.checkpoint import STAGE
from nmoe_sim.fl.alignment.config import AlignmentConfig
from nmoe_sim.fl.alignment.profiling import ClientProfile, profile_clients
from nmoe_sim.fl.alignment.system import STREAM, AlignmentFL, alignment_costs
from nmoe_sim.fl.rounds import CostScope, RoundDriver
from nmoe_sim.metrics import SYSTEM_COST_FIELDS, stage_costs
from nmoe_sim.record import RoundRecord
from nmoe_sim.systems import System, SystemOutcome
from nmoe_sim.systems.nmoe import GATING_COLUMNS, _run_process, gating_rows
from nmoe_sim.world import Sim, World

if TYPE_CHECKING:
    from rich.table import Table

ASSIGNMENT_COLUMNS = ["system", "round", "client", "expert", "delivered", "usage", "accuracy", "loss"]


class AlignmentSystem(System):
    def run(self, world: World, reuse: Any = None, origin: str = "") -> SystemOutcome:
        # Every assignment trains from scratch on its own world: nothing is shared to reuse.
        acfg = self.cfg.alignment
        if acfg is None:  # the schema's cross-check forbids it; kept for direct callers
            raise ValueError("system: alignment needs a scenario with an alignment section")
        ck = world.checkpoints
        # The run's frame (engine/checkpoint.py): the profiles, and each assignment trained
        # so far (each one's end is a stage boundary that saves).
        with ck.frame("alignment", lambda: new_alignment_run(world, acfg)) as run:
            for name in assignments_to_run(acfg)[len(run.trained):]:
                run.trained.append(run_assignment(world, acfg, name, run.profiles))
                ck.save(f"{name} {run.trained[-1][0].stage} done", STAGE)
        first_sim, costs, profiles, trained = run.first_sim, run.costs, run.profiles, run.trained
        systems = {algo.assignment: system_metrics(world, acfg, algo, sim) for algo, sim in trained}
        stages = {algo.stage: stage_costs(world.recorder, sim.system, algo.stage, 0.0, sim.env.now)
                  for algo, sim in trained}
        metrics = {
            "model": {"experts": acfg.experts, "fe_bytes": costs.fe_bytes, "expert_bytes": costs.expert_bytes,
                      "fe_train_flops_per_sample": costs.fe_train_flops,
                      "expert_train_flops_per_sample": costs.expert_train_flops},
            "capacity": {"budget_s": acfg.deadline_s if acfg.deadline_s is not None else acfg.profile_budget_s,
                         "clients": [p.to_json() for p in profiles]},
            "systems": systems,
            "stages": stages,
        }
        tables = {"assignments.csv": (ASSIGNMENT_COLUMNS, _assignment_rows(trained)),
                  "gating.csv": (GATING_COLUMNS, gating_rows(systems))}
        return SystemOutcome(metrics, first_sim, tables)

    @staticmethod
    def summary_table(metrics: dict[str, Any]) -> "Table":
        """One row per assignment of a ``system: alignment`` run (docs/alignment.md)."""
        from rich.table import Table

        table = Table(title=f"{metrics['scenario']} (seed {metrics['seed']}): client-expert alignment")
        cols = ("assignment", "accuracy", "F1", "rounds→target", "MB→target", "sim s→target",
                "util CV", "experts/client", "MB delivered", "sim s", "device J")
        for col in cols:
            table.add_column(col, justify="right" if col != "assignment" else "left")
        for name, s in metrics["systems"].items():
            mb_hit = None if s["bytes_to_target"] is None else s["bytes_to_target"] / 1e6
            table.add_row(name, f"{s['accuracy']:.3f}", f"{s['f1_macro']:.3f}", _num(s["rounds_to_target"], "d"),
                          _num(mb_hit, ".2f"), _num(s["sim_time_to_target_s"], ".2f"),
                          f"{s['utilization_cv_mean']:.3f}", f"{s['per_client_load_mean']:.2f}",
                          f"{s['bytes_delivered'] / 1e6:.2f}", f"{s['sim_time_s']:.2f}", f"{s['device_energy_j']:.1f}")
        return table


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def assignments_to_run(cfg: AlignmentConfig) -> tuple[str, ...]:
    return cfg.compare if cfg.compare is not None else (cfg.assignment,)


def round_config(cfg: AlignmentConfig) -> TrainConfig:
    """The round driver's view of the alignment section."""
    return TrainConfig(rounds=cfg.rounds, local_epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                       momentum=cfg.momentum, participation=cfg.participation, deadline_s=cfg.deadline_s)


def new_alignment_run(world: World, acfg: AlignmentConfig) -> dict[str, Any]:
    # Every Sim has the same links and every system the same models: profile once.
    first_sim = world.new_sim("profiling")  # reads link budgets only; records nothing
    costs = alignment_costs(world, acfg)
    return {"first_sim": first_sim, "costs": costs, "profiles": profile_clients(world, first_sim, acfg, costs),
            "trained": []}


def run_assignment(world: World, cfg: AlignmentConfig, assignment: str,
                   profiles: list[ClientProfile]) -> tuple[AlignmentFL, Sim]:
    """One assignment's whole training in its own Sim; returns the trained system and its Sim."""

    def new() -> dict[str, Any]:
        sim = world.new_sim(assignment)
        algo = AlignmentFL(world, cfg, assignment, np.array([p.k for p in profiles]))
        # The same participation stream for every assignment: they meet the same participants.
        driver = RoundDriver(sim, world.n_clients, world.streams.numpy(f"{STREAM}/participation"))
        return {"sim": sim, "algo": algo, "driver": driver}

    # Its frame (engine/checkpoint.py): a run resumed within these rounds goes on in the saved Sim.
    with world.checkpoints.frame("assignment", new) as fr:
        _run_process(fr.sim, fr.driver.run(fr.algo, round_config(cfg), CostScope(fr.sim.system, [fr.algo.stage])))
    return fr.algo, fr.sim


def first_crossing(rounds: list[RoundRecord], target: float) -> RoundRecord | None:
    return next((r for r in rounds if r.accuracy >= target), None)


def system_metrics(world: World, cfg: AlignmentConfig, algo: AlignmentFL, sim: Sim) -> dict[str, Any]:
    rec = world.recorder
    rounds = [r for r in rec.rounds if r.stage == algo.stage]
    hit = first_crossing(rounds, cfg.target_accuracy)
    costs = stage_costs(rec, sim.system, algo.stage, 0.0, sim.env.now)
    usage = algo.usage_totals()  # (C,E)
    per_client = algo.experts_per_round()
    util_cv = [log.utilization_cv for log in algo.logs]
    f1, acc = algo.scores[-1]
    return {
        "assignment": algo.assignment, "stage": algo.stage,
        "f1_macro": f1, "accuracy": acc, "local_ratio": None,
        "rounds": len(rounds), "target_accuracy": cfg.target_accuracy,
        "rounds_to_target": None if hit is None else hit.round + 1,
        "bytes_to_target": None if hit is None else hit.cum_bytes_delivered,
        "sim_time_to_target_s": None if hit is None else hit.cum_sim_time_s,
        "accuracy_per_round": [r.accuracy for r in rounds],
        "f1_per_round": [r.f1_macro for r in rounds],
        "utilization_cv_per_round": util_cv,
        "utilization_cv_mean": float(np.mean(util_cv)),
        "utilization_cv_overall": algo.utilization_cv_overall(),
        "load_cv_per_round": [log.load_cv for log in algo.logs],
        "load_cv_mean": float(np.mean([log.load_cv for log in algo.logs])),
        "expert_load_per_round": [log.arrived.sum(0).tolist() for log in algo.logs],
        "per_client_load": per_client.tolist(),
        "per_client_load_mean": float(per_client.mean()),
        "failures": sum(log.failures for log in algo.logs),
        "stages": [algo.stage],
        "total_bytes": costs["bytes"], "bytes_up": costs["bytes_up"], "bytes_down": costs["bytes_down"],
        **{f: costs[f] for f in SYSTEM_COST_FIELDS if f != "sim_time_s"},
        "sim_time_s": sim.env.now, "flops": costs["flops"],
        "final_fitness": algo.fitness.round(6).tolist(),
        "gating": (usage / np.maximum(usage.sum(1, keepdims=True), 1)).round(6).tolist(),
        "gating_counts": usage.astype(int).tolist(),
    }


def _assignment_rows(trained: list[tuple[AlignmentFL, Sim]]) -> Iterator[dict[str, Any]]:
    """One row per (system, round, client, expert) the server assigned."""
    for algo, _ in trained:
        for log in algo.logs:
            for c, e in zip(*np.nonzero(log.assigned)):
                yield {"system": algo.assignment, "round": log.round, "client": int(c), "expert": int(e),
                       "delivered": bool(log.arrived[c, e]), "usage": float(log.usage[c, e]),
                       "accuracy": float(log.accuracy[c, e]), "loss": float(log.loss[c, e])}
