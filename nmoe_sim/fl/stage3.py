"""Stage 3: the gate, with F and every H_i frozen: RanGate, RollGate or FedGate.

The paper (Gao et al., arXiv 2511.01743) names the three methods; their details are ours
and are documented in docs/algorithms.md:
* RanGate routes each query to k experts uniformly at random (untrained lower bound).
* RollGate passes one gate around the clients in ring order over D2D links, fine-tuning
  it on each client's data in turn; a round is one lap.
* FedGate averages a shared gate every ``sync_every`` rounds (partial synchronisation) and
  personalises: by default each client also trains a personal gate pulled towards the
  shared one (Ditto, Li et al., ICML 2021) and serves with it; or it keeps a part of the
  shared gate local (``local_part``). ``personal: none, local_part: none, sync_every: 1``
  is FedAvg-style gating.
The gate's training targets need every expert's output on the client's samples: features
go out to each expert's client and class probabilities come back, charged as transfers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Callable, Generator, Sequence

import numpy as np
import simpy
import torch

from nmoe_sim.config import Stage3Config
from nmoe_sim.engine.losses import draw_generator_state
from nmoe_sim.engine.tasks import TaskResult, TrainTask, clone_state, draw_plan, plan_samples
from nmoe_sim.fl.aggregate import fedavg
from nmoe_sim.fl.candidates import candidate_masks, candidate_sets, serving_sets
from nmoe_sim.fl.exchange import EXCHANGES, GateData
from nmoe_sim.fl.schedule import sgd_args
from nmoe_sim.engine.checkpoint import ROUND, checkpoints_of
from nmoe_sim.fl.rounds import BS, CostScope, Failure, LocalResult, RoundAlgorithm, RoundDriver, sample_participants
from nmoe_sim.fl.routing import GateRouter, QueryBank, RandomRouter, Router
from nmoe_sim.models import DittoGates, Expert, FeatureExtractor, Gate, gate_train_flops_per_sample
from nmoe_sim.models.build import make_gate
from nmoe_sim.registry import Registry
from nmoe_sim.world import Sim, World


@dataclass
class NMoEParts:
    fe: FeatureExtractor
    experts: list[Expert]
    train_feats: list[torch.Tensor]  # per client (n_c, D)
    bank: QueryBank
    trained_by: tuple[str, ...] = ()  # the stages that produced fe and experts (their cost)


def exchange_expert_outputs(world: World, sim: Sim, parts: NMoEParts, stage: str,
                            candidates: Sequence[np.ndarray] | None = None) -> Generator[
        simpy.Event, Any, list[GateData]]:
    """The charged exchange that gives every client its candidate experts' outputs on its own
    samples, in the way ``stage3.expert_outputs`` names (:mod:`nmoe_sim.fl.exchange`)."""
    exchange = EXCHANGES.get(world.cfg.stage3.expert_outputs, "stage3.expert_outputs")
    return (yield from exchange(world, sim, parts, stage, candidates))


def gate_task(client: int, template: Gate, start: dict[str, torch.Tensor], data: GateData, cfg: Stage3Config,
              rnd: int, gen: torch.Generator, flops_per_sample: float, upload_bytes: int,
              noise_gates: int = 1) -> TrainTask:
    """Local epochs of a gate from ``start`` on a client's gate-training set in round ``rnd``, as a task.

    The gate's noise is drawn per batch with the plan (a generator state each), in the
    order a loop drawing it in place would: the epoch's permutation, then each batch's noise
    (for ``noise_gates`` gates trained together).
    """
    n_experts = template.head.out_features
    plan, draws = draw_plan(len(data.y), cfg.local_epochs, cfg.batch_size, gen,
                            per_batch=draw_generator_state(noise_gates * n_experts) if template.noisy else None,
                            max_steps=cfg.local_steps)
    return TrainTask(
        client=client, node=client, template=template, start=start, x=data.feats, y=data.y, plan=plan,
        draws=draws, loss="gate", aux={"true_p": data.true_p},  # (n,E)
        args={"target": cfg.target, "available": data.available, "open": data.open},
        **sgd_args(cfg, rnd),
        flops=plan_samples(plan) * flops_per_sample, upload_bytes=upload_bytes,
    )



LOCAL_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "bias": ("head.bias",),
    "head": ("head.weight", "head.bias", "noise.weight", "noise.bias"),
}


class FedGate(RoundAlgorithm):
    def __init__(self, world: World, parts: NMoEParts, data: list[GateData], stage: str,
                 allowed: Sequence[torch.Tensor] | None = None) -> None:
        self.world, self.cfg, self.parts, self.data, self.stage = world, world.cfg.stage3, parts, data, stage
        self.allowed = allowed  # per client, the experts its gate may choose (None: all)
        base = make_gate(world.cfg, world.n_clients, world.streams, self.stage)
        self.gates = [copy.deepcopy(base) for _ in range(world.n_clients)]
        self.template = base  # the architecture every client's task trains (never trained in)
        self.ditto = self.cfg.fedgate.personal == "ditto"
        # evaluate()'s scratch copies; Ditto's personal gates serve as they are and need none.
        self._eval_gates = [] if self.ditto else [copy.deepcopy(base) for _ in range(world.n_clients)]
        local = LOCAL_PARAMS[self.cfg.fedgate.local_part]
        self.shared = [name for name in base.state_dict() if name not in local]
        self.shared_bytes = world.param_bytes(base, self.shared)
        self.global_shared = {k: v.clone() for k, v in base.state_dict().items() if k in self.shared}
        self.flops = gate_train_flops_per_sample(base, world.cfg.model.feature_dim)
        self.gens = [world.streams.torch(f"{self.stage}/client{i}") for i in range(world.n_clients)]
        # Ditto: every client's personal gate (starting as the shared one), and the pair a task trains.
        self.personal = [copy.deepcopy(base) for _ in range(world.n_clients)] if self.ditto else []
        self.pair = DittoGates(copy.deepcopy(base), copy.deepcopy(base)) if self.ditto else None
        # Ditto's anchor: the shared gate each client last downloaded (not its drifting copy).
        # Shared by reference: global_shared is replaced by each aggregation, never changed
        # in place, so one copy per round serves every client that downloaded it.
        self.anchors = [self.global_shared] * world.n_clients if self.ditto else []
        # Clients whose latest download of the shared part failed: they hold their old gate.
        self.missed_download: set[int] = set()

    def is_sync(self, rnd: int) -> bool:
        return (rnd + 1) % self.cfg.fedgate.sync_every == 0 or rnd == self.cfg.rounds - 1

    def download_bytes(self, rnd: int, client: int) -> int:
        return self.shared_bytes if rnd == 0 or self.is_sync(rnd - 1) else 0

    def task(self, rnd: int, client: int) -> TrainTask:
        """The client's own gate, with the shared part it just downloaded (if this round sent
        one); under Ditto, together with its personal gate pulled towards that shared gate."""
        start = clone_state(self.gates[client].state_dict())
        downloaded = self.download_bytes(rnd, client) > 0
        if downloaded:
            start.update(clone_state(self.global_shared))
        upload = self.shared_bytes if self.is_sync(rnd) else 0
        if not self.ditto:
            return gate_task(client, self.template, start, self.data[client], self.cfg, rnd, self.gens[client],
                             self.flops, upload)
        assert self.pair is not None
        personal = clone_state(self.personal[client].state_dict())
        if downloaded:
            self.anchors[client] = self.global_shared
        task = gate_task(client, self.template, start, self.data[client], self.cfg, rnd, self.gens[client],
                         2 * self.flops, upload, noise_gates=2)
        return replace(task, template=self.pair, loss="gate_ditto",
                       start={**{f"shared.{k}": v for k, v in start.items()},
                              **{f"personal.{k}": v for k, v in personal.items()}},
                       args={**task.args, "anchor": self.anchors[client], "prox": self.cfg.fedgate.prox})

    def collect(self, rnd: int, client: int, result: TaskResult) -> LocalResult:
        # The device keeps what it trained, sent or not.
        state = result.state
        if self.ditto:
            self.personal[client].load_state_dict({k[len("personal."):]: v for k, v in state.items()
                                                   if k.startswith("personal.")})
            state = {k[len("shared."):]: v for k, v in state.items() if k.startswith("shared.")}
        self.gates[client].load_state_dict(state)
        update = {k: v for k, v in state.items() if k in self.shared} if self.is_sync(rnd) else None
        return LocalResult(client, update, result.num_samples, result.upload_bytes)

    def aggregate(self, rnd: int, results: list[LocalResult], failures: list[Failure]) -> None:
        if self.download_bytes(rnd, 0):  # this round began with a download of the shared part
            self.missed_download -= {r.client for r in results}
            self.missed_download -= {f.client for f in failures if f.phase != "download"}
            self.missed_download |= {f.client for f in failures if f.phase == "download"}
        if self.is_sync(rnd) and results:
            self.global_shared = fedavg([r.update for r in results], [r.num_samples for r in results])

    def deployed(self, received: set[int] | None = None) -> list[Gate]:
        """Each client's gate: its own with the current shared part, if that reaches it.

        ``received`` lists the clients the shared part reaches (default: all but those whose
        latest download failed); the others keep their own gate as it is.
        """
        got = received if received is not None else set(range(self.world.n_clients)) - self.missed_download
        out = []
        for c, g in enumerate(self.gates):
            if c in got:
                g = copy.deepcopy(g)
                g.load_state_dict(self.global_shared, strict=False)
            out.append(g)
        return out

    def evaluate(self, rnd: int) -> tuple[float, float]:
        if self.ditto:  # the personal gates serve, as they are
            scores = self.parts.bank.evaluate(GateRouter(self.personal, self.world.cfg.model.top_k, self.allowed))
            return scores.f1_macro, scores.accuracy
        # The gates deployed after this round, loaded into scratch copies made once: a deep
        # copy of every gate every round cost more than evaluating them.
        got = set(range(self.world.n_clients)) - self.missed_download
        for c, (own, deployed) in enumerate(zip(self.gates, self._eval_gates)):
            deployed.load_state_dict(own.state_dict())
            if c in got:
                deployed.load_state_dict(self.global_shared, strict=False)
        scores = self.parts.bank.evaluate(GateRouter(self._eval_gates, self.world.cfg.model.top_k, self.allowed))
        return scores.f1_macro, scores.accuracy

    def finalize(self, sim: Sim) -> Generator[simpy.Event, Any, Router]:
        """Broadcast the final shared part; a client whose download fails keeps its own gate.
        Under Ditto the personal gates serve and nothing more is sent."""
        if self.ditto:
            return GateRouter(self.personal, self.world.cfg.model.top_k, self.allowed)
        recs = yield sim.env.all_of([
            sim.net.transfer(BS, c, self.shared_bytes, stage=self.stage, tag="final/down")
            for c in range(self.world.n_clients)
        ])
        got = {c for c, rec in zip(range(self.world.n_clients), recs.values()) if rec.delivered}
        return GateRouter(self.deployed(got), self.world.cfg.model.top_k, self.allowed)


# A gate method trains the gate inside a SimPy process and returns the router clients use.
GateTrainer = Callable[[World, Sim, NMoEParts, CostScope, str], Generator[simpy.Event, Any, Router]]


@dataclass(frozen=True)
class GateMethod:
    """A stage-3 algorithm: the stage name it owns (its costs are recorded under it) and its body."""

    stage: str
    train: GateTrainer


GATE_ALGORITHMS: Registry[GateMethod] = Registry("stage3 algorithm")


def run_fedgate(world: World, sim: Sim, parts: NMoEParts, scope: CostScope, stage: str) -> Generator[simpy.Event, Any, Router]:
    # The frame (engine/checkpoint.py) keeps the algorithm and its driver for a resumed run.
    with checkpoints_of(sim).frame("fedgate", dict) as fr:
        if not hasattr(fr, "algo"):
            cands = candidate_sets(world, sim)
            data = yield from exchange_expert_outputs(world, sim, parts, stage, cands)
            fr.algo = FedGate(world, parts, data, stage,
                              candidate_masks(serving_sets(world, parts.experts, cands), world.n_clients))
            fr.driver = RoundDriver(sim, world.n_clients, world.streams.numpy(f"{stage}/participation"))
        yield from fr.driver.run(fr.algo, world.cfg.stage3, scope)
        router = yield from fr.algo.finalize(sim)
    return router


def run_rollgate(world: World, sim: Sim, parts: NMoEParts, scope: CostScope, stage: str) -> Generator[simpy.Event, Any, Router]:
    cfg, n, k = world.cfg.stage3, world.n_clients, world.cfg.model.top_k
    ck = checkpoints_of(sim)
    # A lap is a round: the frame (engine/checkpoint.py) keeps the gate, its generators, who
    # holds it and the next lap, so a run saved after a lap's record goes on at the next.
    with ck.frame("rollgate", dict) as fr:
        if not hasattr(fr, "gate"):
            cands = candidate_sets(world, sim)
            fr.allowed = candidate_masks(serving_sets(world, parts.experts, cands), n)
            fr.data = yield from exchange_expert_outputs(world, sim, parts, stage, cands)
            fr.gate = make_gate(world.cfg, n, world.streams, stage)
            fr.gen = world.streams.torch(f"{stage}/gate")
            fr.rng = world.streams.numpy(f"{stage}/participation")
            fr.holder, fr.next_lap = 0, 0
        gate, data, gen, allowed = fr.gate, fr.data, fr.gen, fr.allowed
        gate_bytes = world.param_bytes(gate)
        flops = gate_train_flops_per_sample(gate, world.cfg.model.feature_dim)
        for lap in range(fr.next_lap, cfg.rounds):
            start_s, failures = sim.env.now, 0
            visit = sample_participants(n, cfg.participation, fr.rng)  # ring order = client index order
            for pos, c in enumerate(visit):
                if cfg.deadline_s is not None and sim.env.now - start_s > cfg.deadline_s:
                    failures += len(visit) - pos  # the lap ran out of time: the rest are skipped
                    break
                if c != fr.holder:
                    rec = yield sim.net.transfer(fr.holder, c, gate_bytes, stage=stage, tag=f"lap{lap}/{fr.holder}->{c}")
                    if not rec.delivered:
                        failures += 1
                        continue
                # A hand-over chain: each client trains the gate the previous one sent, so its
                # task runs as soon as it is charged, never batched with the lap's others.
                job = sim.executor.submit(gate_task(c, gate, clone_state(gate.state_dict()), data[c], cfg, lap, gen,
                                                    flops, 0), stage=stage, tag=f"lap{lap}/train")
                yield job.charged
                if job.aborted:  # injected faults: c was down, or crashed training; the holder keeps the gate
                    failures += 1
                    continue
                gate.load_state_dict(sim.executor.gather([job])[0].state)
                fr.holder = c
            s = parts.bank.evaluate(GateRouter([gate] * n, k, allowed))
            sim.record_round(scope, stage, lap, cfg.rounds, start_s, len(visit), failures, (s.f1_macro, s.accuracy))
            fr.next_lap = lap + 1
            ck.save(f"{sim.system} {stage} round {lap}", ROUND)
        holder = fr.holder
        # The last holder hands the finished gate to everyone else over the network.
        others = [c for c in range(n) if c != holder]
        recs = yield sim.env.all_of([sim.net.transfer(holder, c, gate_bytes, stage=stage, tag="final") for c in others])
    got = {c: rec.delivered for c, rec in zip(others, recs.values())}
    untrained = make_gate(world.cfg, n, world.streams, stage)  # what a client holds if the gate never arrives
    return GateRouter([gate if c == holder or got[c] else untrained for c in range(n)], k, allowed)


def run_rangate(world: World, sim: Sim, parts: NMoEParts, scope: CostScope, stage: str) -> Generator[simpy.Event, Any, Router]:
    # RanGate exchanges nothing: a client's candidates are only the experts it may pick.
    cands = serving_sets(world, parts.experts, candidate_sets(world, sim))
    router = RandomRouter(world.n_clients, world.cfg.model.top_k, world.streams.numpy(f"{stage}/eval"), cands)
    s = parts.bank.evaluate(router)
    sim.record_round(scope, stage, 0, 1, sim.env.now, world.n_clients, 0, (s.f1_macro, s.accuracy))
    yield sim.env.timeout(0)
    return RandomRouter(world.n_clients, world.cfg.model.top_k, world.streams.numpy(f"{stage}/route"), cands)


GATE_ALGORITHMS.register("fedgate")(GateMethod("stage3_fedgate", run_fedgate))
GATE_ALGORITHMS.register("rollgate")(GateMethod("stage3_rollgate", run_rollgate))
GATE_ALGORITHMS.register("rangate")(GateMethod("stage3_rangate", run_rangate))
