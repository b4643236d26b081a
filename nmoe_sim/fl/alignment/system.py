"""Federated MoE with client-expert alignment, as a RoundAlgorithm on the shared round driver.

After FLEX-MoE (arXiv 2512.23070) and Chen et al., "Efficient Training of Large-Scale AI
Models through Federated Mixture-of-Experts: A System-Level Approach" (arXiv 2507.05685).
Each round, under the driver's participation, deadline and failure rules:

1. ``configure``: the server assigns experts to the participating clients
   (``ASSIGNERS[assignment]``) from the fitness matrix Q, the capacities k_c, the load
   bounds and the LoadMonitor's historical deficit;
2. a client downloads the FE plus only its assigned experts, trains FE + those experts +
   its local gate (:mod:`.moe`), and uploads the FE, the experts and per-expert
   usage / accuracy / loss (three floats each); the gate never leaves the client;
3. ``aggregate``: FedAvg of the FE over the uploads that arrived (weighted by samples),
   usage-weighted average of each expert over the clients that trained it, EMA update of
   Q for the pairs whose feedback arrived, and ``LoadMonitor.observe``;
4. ``evaluate``: every client's queries through the global FE, the global experts and its
   own gate (masked to the experts it last trained).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from nmoe_sim.engine.tasks import TaskResult, TrainTask, clone_state, draw_plan
from nmoe_sim.fl.aggregate import fedavg
from nmoe_sim.fl.alignment.aggregate import aggregate_experts
from nmoe_sim.fl.alignment.assignment import assign, resolve_load_bounds
from nmoe_sim.fl.alignment.config import AlignmentConfig
from nmoe_sim.fl.alignment.fitness import fitness_signal, init_fitness, update_fitness
from nmoe_sim.fl.alignment.load import LoadMonitor, coefficient_of_variation
from nmoe_sim.fl.alignment.moe import ClientMoE, ExpertFeedback, predict
from nmoe_sim.fl.alignment.profiling import ModelCosts, model_costs
from nmoe_sim.fl.rounds import Failure, LocalResult, RoundAlgorithm
from nmoe_sim.models.build import make_fe, seeded
from nmoe_sim.models.modules import Expert, Gate
from nmoe_sim.world import World, client_rngs

State = dict[str, torch.Tensor]
# Stream names shared by every assignment of a run: same initial models, same local
# shuffles and same participants, so the assignments differ only by what they assign.
STREAM = "alignment"



@dataclass(frozen=True)
class ClientUpdate:
    fe: State
    experts: dict[int, State]  # expert index -> trained state, for the experts held
    feedback: ExpertFeedback


@dataclass(frozen=True)
class RoundLog:
    """What one round did (metrics.json and assignments.csv are built from these)."""

    round: int
    assigned: np.ndarray  # C x E bool, the server's assignment
    arrived: np.ndarray  # C x E bool, assigned pairs whose update reached the server
    usage: np.ndarray  # C x E samples routed, arrived pairs only (0 elsewhere)
    accuracy: np.ndarray  # C x E expert accuracy on routed samples, NaN where not arrived
    loss: np.ndarray  # C x E
    utilization_cv: float  # CV of the per-expert share of routed samples
    load_cv: float  # CV of the per-expert number of trainers (arrived)
    failures: int


def make_expert(world: World, cfg: AlignmentConfig, index: int) -> Expert:
    ds, d = world.dataset, world.cfg.model.feature_dim
    return seeded(world.streams, f"{STREAM}/expert{index}", lambda: Expert(d, cfg.expert_hidden, ds.num_classes))


def make_gate(world: World, cfg: AlignmentConfig, client: int) -> Gate:
    d, hidden = world.cfg.model.feature_dim, world.cfg.model.gate_hidden
    return seeded(world.streams, f"{STREAM}/gate{client}", lambda: Gate(d, hidden, cfg.experts, noisy=False))


def alignment_costs(world: World, cfg: AlignmentConfig) -> ModelCosts:
    """Bytes and FLOPs of the system's models, without building a whole system."""
    scn = world.cfg
    fe = make_fe(scn, world.dataset.input_shape, world.streams, f"{STREAM}/fe")
    return model_costs(fe, make_expert(world, cfg, 0), make_gate(world, cfg, 0), world.dataset.input_shape,
                       scn.model.feature_dim, scn.network.bytes_per_param)


class AlignmentFL(RoundAlgorithm):
    def __init__(self, world: World, cfg: AlignmentConfig, assignment: str, capacity: np.ndarray) -> None:
        self.world, self.cfg, self.assignment = world, cfg, assignment
        self.stage = f"alignment_{assignment}"
        scn, ds, streams = world.cfg, world.dataset, world.streams
        n, e, d = world.n_clients, cfg.experts, scn.model.feature_dim
        self.capacity = np.asarray(capacity, dtype=np.int64)  # (C,)
        self.fe = make_fe(scn, ds.input_shape, streams, f"{STREAM}/fe")
        self.experts = [make_expert(world, cfg, i) for i in range(e)]
        # Gates are the clients' own: never sent, never averaged, kept across rounds.
        self.gates = [make_gate(world, cfg, c) for c in range(n)]
        self.fe_state = clone_state(self.fe.state_dict())
        self.expert_states = [clone_state(m.state_dict()) for m in self.experts]
        self.costs = model_costs(self.fe, self.experts[0], self.gates[0], ds.input_shape, d,
                                 scn.network.bytes_per_param)
        self._templates: dict[int, ClientMoE] = {}  # held-expert count -> architecture
        self.gens = client_rngs(streams, STREAM, n)
        self.assign_rng = streams.numpy(f"{STREAM}/assign")
        self.load_min, self.load_max = resolve_load_bounds(cfg, self.capacity)
        self.fitness = init_fitness(n, e, cfg.initial_fitness)
        self.monitor = LoadMonitor(e, decay=cfg.deficit_decay)
        self.assigned = np.zeros((n, e), dtype=bool)
        # The experts each client's gate was last trained with; before its first round a
        # client mixes the whole pool through its untrained gate.
        self.last_mask = np.ones((n, e), dtype=bool)
        self.logs: list[RoundLog] = []
        self.scores: list[tuple[float, float]] = []

    # ------------------------------------------------------------------ server, before
    def configure(self, rnd: int, participants: Sequence[int]) -> None:
        active = np.zeros(self.world.n_clients, dtype=bool)
        active[list(participants)] = True
        self.assigned = assign(self.assignment, self.fitness, self.capacity, self.load_min, self.load_max,
                               self.monitor.deficit, self.cfg.deficit_weight, self.assign_rng, active)

    def held(self, client: int) -> list[int]:
        return np.flatnonzero(self.assigned[client]).tolist()

    def download_bytes(self, rnd: int, client: int) -> int:
        return self.costs.fe_bytes + len(self.held(client)) * self.costs.expert_bytes

    def feedback_bytes(self, k: int) -> int:
        return self.world.tensor_bytes(3 * k)  # usage, accuracy, loss per held expert

    # ------------------------------------------------------------------ client
    def template(self, k: int) -> ClientMoE:
        """The architecture of a client's round holding ``k`` experts (one per k, never trained in)."""
        if k not in self._templates:
            self._templates[k] = ClientMoE(copy.deepcopy(self.fe), copy.deepcopy(self.gates[0]),
                                           [copy.deepcopy(self.experts[0]) for _ in range(k)])
        return self._templates[k]

    def task(self, rnd: int, client: int) -> TrainTask:
        """SGD on the global FE, the held experts' global states and the client's own gate."""
        data, cfg = self.world.clients[client], self.cfg
        held = self.held(client)
        start = {**{f"fe.{k}": v for k, v in self.fe_state.items()},
                 **{f"gate.{k}": v for k, v in self.gates[client].state_dict().items()}}
        for i, e in enumerate(held):
            start.update({f"experts.{i}.{k}": v for k, v in self.expert_states[e].items()})
        self.last_mask[client] = self.assigned[client]
        plan, _ = draw_plan(data.num_samples, cfg.local_epochs, cfg.batch_size, self.gens[client])
        up = self.costs.fe_bytes + len(held) * self.costs.expert_bytes + self.feedback_bytes(len(held))
        return TrainTask(
            client=client, node=client, template=self.template(len(held)), start=clone_state(start),
            x=data.x_train, y=data.y_train, plan=plan, loss="alignment_mixture",
            args={"mask": torch.as_tensor(self.assigned[client])}, report="expert_feedback",
            lr=cfg.lr, momentum=cfg.momentum, weight_decay=0.0,
            flops=self.costs.local_flops(data.num_samples, cfg.local_epochs, len(held)), upload_bytes=up,
        )

    def collect(self, rnd: int, client: int, result: TaskResult) -> LocalResult:
        def part(prefix: str) -> State:
            return {k[len(prefix):]: v for k, v in result.state.items() if k.startswith(prefix)}

        # The gate is the client's own: it keeps what it trained whether or not its upload arrives.
        self.gates[client].load_state_dict(part("gate."))
        held = self.held(client)  # the assignment stands until the next round's configure
        update = ClientUpdate(part("fe."), {e: part(f"experts.{i}.") for i, e in enumerate(held)}, result.report)
        return LocalResult(client, update, result.num_samples, result.upload_bytes)

    # ------------------------------------------------------------------ server, after
    def aggregate(self, rnd: int, results: list[LocalResult], failures: list[Failure]) -> None:
        n, e = self.fitness.shape
        arrived = np.zeros((n, e), dtype=bool)
        usage = np.zeros((n, e))
        acc = np.full((n, e), np.nan)
        loss = np.full((n, e), np.nan)
        per_expert: dict[int, list[tuple[int, State, float]]] = {}
        for r in results:
            upd: ClientUpdate = r.update
            for j, state in upd.experts.items():
                arrived[r.client, j] = True
                per_expert.setdefault(j, []).append((r.client, state, float(upd.feedback.usage[j])))
            usage[r.client] = upd.feedback.usage
            acc[r.client] = upd.feedback.accuracy
            loss[r.client] = upd.feedback.loss
        if results:  # a round where every upload failed leaves the global models unchanged
            self.fe_state = fedavg([r.update.fe for r in results], [r.num_samples for r in results])
        self.expert_states = aggregate_experts(self.expert_states, per_expert)
        signal = fitness_signal(self.cfg.fitness, acc, loss, self.cfg.loss_alpha)
        self.fitness = update_fitness(self.fitness, arrived, signal, self.cfg.beta)
        self.monitor.observe(arrived, usage)
        self.logs.append(RoundLog(rnd, self.assigned.copy(), arrived, usage, acc, loss,
                                  self.monitor.utilization_cv(), self.monitor.load_cv(), len(failures)))

    def evaluate(self, rnd: int) -> tuple[float, float]:
        for m, state in zip(self.experts, self.expert_states):
            m.load_state_dict(state)
        self.fe.load_state_dict(self.fe_state)
        ys, preds = [], []
        for c in self.world.clients:
            mask = torch.as_tensor(self.last_mask[c.idx])
            preds.append(predict(self.fe, self.gates[c.idx], self.experts, mask, c.x_query))
            ys.append(c.y_query)
        y, pred = torch.cat(ys).numpy(), torch.cat(preds).numpy()
        labels = list(range(self.world.dataset.num_classes))
        scores = (float(f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
                  float(accuracy_score(y, pred)))
        self.scores.append(scores)
        return scores

    # ------------------------------------------------------------------ summaries
    def usage_totals(self) -> np.ndarray:
        """C x E samples routed over all rounds (the gating matrix of the plots)."""
        n, e = self.fitness.shape
        return sum((log.usage for log in self.logs), np.zeros((n, e)))

    def experts_per_round(self) -> np.ndarray:
        """(C,) mean number of experts a client trained (update arrived) per round it took part in."""
        trained = np.array([log.arrived.sum(1) for log in self.logs])  # (R,C)
        took_part = np.array([log.assigned.any(1) for log in self.logs])  # (R,C)
        rounds = took_part.sum(0)
        return np.where(rounds > 0, trained.sum(0) / np.maximum(rounds, 1), 0.0)

    def utilization_cv_overall(self) -> float:
        """CV of each expert's share of all samples routed over the run."""
        return coefficient_of_variation(self.usage_totals().sum(0))
