"""The baselines evaluated in the same run as the NMoE (Gao et al., arXiv 2511.01743, Fig. 3).

* ``local``: the client's FE + its own expert, no collaboration at inference (LR = 1).
* ``centralized``: every client uploads its raw training data to the edge server, which
  trains FE, all experts and the gate jointly on the pooled data: the upper bound.
  Queries travel to the server as raw inputs; answers come back as logits.
* ``fedavg``: one global classifier (FE + linear head) trained by FedAvg, served on device.
Each baseline runs in its own Sim over the same world (same channel seed).
"""

from __future__ import annotations

from typing import Any, Callable, Generator

import numpy as np
import simpy
import torch

from nmoe_sim.engine.losses import draw_generator_state
from nmoe_sim.fl.schedule import sgd_args
from nmoe_sim.engine.tasks import TrainTask, clone_state, draw_plan
from nmoe_sim.engine.checkpoint import checkpoints_of
from nmoe_sim.fl.rounds import BS, CostScope, RoundDriver
from nmoe_sim.fl.routing import QueryBank, combine
from nmoe_sim.fl.stage1 import FedCE
from nmoe_sim.fl.stage3 import NMoEParts
from nmoe_sim.fl.train import predict_batched
from nmoe_sim.inference import InferenceSpec, Leg
from nmoe_sim.models import Expert, forward_flops_per_sample, gate_train_flops_per_sample, train_flops_per_sample
from nmoe_sim.models.build import make_expert, make_fe, make_gate
from nmoe_sim.registry import Registry
from nmoe_sim.world import Sim, World

# A baseline: (world, sim, nmoe parts) -> SimPy process body returning (spec, cost scope).
Baseline = Callable[[World, Sim, NMoEParts], Generator[simpy.Event, Any, tuple[InferenceSpec, CostScope]]]
BASELINES: Registry[Baseline] = Registry("baseline")

RAW_BYTES_PER_VALUE = 1  # raw images are 8-bit per channel value; labels one byte each


@BASELINES.register("local")
def local(world: World, sim: Sim, parts: NMoEParts) -> Generator[simpy.Event, Any, tuple[InferenceSpec, CostScope]]:
    d = world.cfg.model.feature_dim
    flops = forward_flops_per_sample(parts.fe, world.dataset.input_shape) + forward_flops_per_sample(parts.experts[0], (d,))
    bank = parts.bank

    def predict(c: int, delivered: torch.Tensor) -> np.ndarray:
        return bank.probs[c][c].argmax(1).numpy()  # own expert on own query features

    routes = [np.full((len(y), 1), c) for c, y in enumerate(bank.y)]
    spec = InferenceSpec("local", flops, lambda c, q: [], predict, routes, world.n_clients,
                         [0] * world.n_clients)
    yield sim.env.timeout(0)
    # It reuses the NMoE's stage-1 FE and stage-2 experts: those are its training costs.
    return spec, CostScope(sim.system, [], reused=parts.trained_by)


@BASELINES.register("fedavg")
def fedavg(world: World, sim: Sim, parts: NMoEParts) -> Generator[simpy.Event, Any, tuple[InferenceSpec, CostScope]]:
    stage = "baseline_fedavg"
    # The frame (engine/checkpoint.py) keeps the algorithm and its driver for a resumed run.
    with checkpoints_of(sim).frame("fedavg", lambda: {
            "scope": CostScope(sim.system, [stage]),
            "algo": FedCE(world, world.cfg.baselines.fedavg, stage=stage, evaluate=True),
            "driver": RoundDriver(sim, world.n_clients, world.streams.numpy(f"{stage}/participation"))}) as fr:
        yield from fr.driver.run(fr.algo, world.cfg.baselines.fedavg, fr.scope)
    scope, algo = fr.scope, fr.algo
    model = algo.scratch
    model.load_state_dict(algo.global_state)
    model.eval()
    preds = [predict_batched(model, c.x_query).argmax(1).numpy() for c in world.clients]
    flops = forward_flops_per_sample(model, world.dataset.input_shape)
    spec = InferenceSpec("fedavg", flops, lambda c, q: [], lambda c, d: preds[c], None, 0, [0] * world.n_clients)
    return spec, scope



class CentralMoE(torch.nn.Module):
    """FE + gate + all experts on one device; trained as a mixture (dense by default, see docs).

    Dense, the experts are n modules, each called on every batch (the default's arithmetic,
    kept bit for bit). Sparse (``mixture_experts`` m < n), their weights live in four
    stacked parameters: each sample gathers its m experts' rows, and the optimiser updates
    four tensors instead of 4n, which at 1,000 clients was most of a step.
    """

    def __init__(self, world: World) -> None:
        super().__init__()
        cfg, ds, n = world.cfg, world.dataset, world.n_clients
        self.fe = make_fe(cfg, ds.input_shape, world.streams, "central/fe")
        self.gate = make_gate(cfg, n, world.streams, "central/gate")
        experts = [make_expert(cfg, ds.num_classes, world.streams, f"central/expert{i}") for i in range(n)]
        m = cfg.baselines.centralized.mixture_experts
        self.mixture_experts = n if m is None or m >= n else m
        self.sparse = self.mixture_experts < n
        # An expert's architecture, for FLOP counts and unstacking (a tuple, not a submodule).
        self.expert_args = (cfg.model.feature_dim, cfg.model.expert_hidden, ds.num_classes)
        if self.sparse:
            # The same initial values as the n modules, stacked once.
            with torch.no_grad():
                self.w1 = torch.nn.Parameter(torch.stack([e.net[0].weight for e in experts]))  # (E,H,D)
                self.b1 = torch.nn.Parameter(torch.stack([e.net[0].bias for e in experts]))  # (E,H)
                self.w2 = torch.nn.Parameter(torch.stack([e.net[2].weight for e in experts]))  # (E,K,H)
                self.b2 = torch.nn.Parameter(torch.stack([e.net[2].bias for e in experts]))  # (E,K)
        else:
            self.experts = torch.nn.ModuleList(experts)

    def expert_shell(self) -> Expert:
        """An expert of this architecture whose weights are to be loaded or only counted;
        its throw-away initialisation must not move the global RNG."""
        with torch.random.fork_rng(devices=[]):
            return Expert(*self.expert_args)

    def expert_modules(self) -> list[Expert]:
        """The n experts as modules (from the stacked weights when sparse)."""
        if not self.sparse:
            return list(self.experts)
        out = []
        for j in range(self.w1.shape[0]):
            e = self.expert_shell()
            e.load_state_dict({"net.0.weight": self.w1[j].detach(), "net.0.bias": self.b1[j].detach(),
                               "net.2.weight": self.w2[j].detach(), "net.2.bias": self.b2[j].detach()})
            out.append(e.eval())
        return out

    def mixture_nll(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # A softmax over several experts while training, so that the gate gets gradients even
        # with k = 1 (a softmax over one selected logit is constant); top-k at inference.
        h = self.fe(x)  # (B,D)
        if self.sparse:
            return self._sparse_nll(h, y, gen)
        g = torch.softmax(self.gate(h, gen), dim=1)  # (B,E)
        p = torch.stack([torch.softmax(e(h), -1) for e in self.experts], dim=1)  # (B,E,K)
        p_true = p[torch.arange(len(y)), :, y]  # (B,E)
        return -torch.log((g * p_true).sum(1).clamp_min(1e-12)).mean()

    def _sparse_nll(self, h: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The mixture over each sample's top m experts by the (noisy) gate, weights softmaxed
        over those m logits: m experts' work per sample instead of E."""
        top, idx = torch.topk(self.gate(h, gen), self.mixture_experts, dim=1)  # (B,m)
        g = torch.softmax(top, dim=1)  # (B,m)
        # Each sample gathers its m experts' weights; the gradient flows back to those rows.
        hidden = torch.relu(torch.einsum("bd,bmhd->bmh", h, self.w1[idx]) + self.b1[idx])  # (B,m,H)
        p = torch.softmax(torch.einsum("bmh,bmkh->bmk", hidden, self.w2[idx]) + self.b2[idx], -1)  # (B,m,K)
        p_true = p[torch.arange(len(y)), :, y]  # (B,m)
        return -torch.log((g * p_true).sum(1).clamp_min(1e-12)).mean()


@BASELINES.register("centralized")
def centralized(world: World, sim: Sim, parts: NMoEParts) -> Generator[simpy.Event, Any, tuple[InferenceSpec, CostScope]]:
    stage, cfg = "baseline_centralized", world.cfg.baselines.centralized
    scope = CostScope(sim.system, [stage])
    c_, h_, w_ = world.dataset.input_shape
    sample_bytes = c_ * h_ * w_ * RAW_BYTES_PER_VALUE + 1
    model = CentralMoE(world)
    recs = yield sim.env.all_of([sim.net.transfer(c.idx, BS, c.num_samples * sample_bytes, stage=stage, tag="raw_data")
                                 for c in world.clients])
    arrived = {c.idx for c, r in zip(world.clients, recs.values()) if r.delivered}
    # Only the data that reached the server can be trained on (none: the model stays untrained).
    keep = [c for c in world.clients if c.idx in arrived]
    x = torch.cat([c.x_train for c in keep]) if keep else world.clients[0].x_train[:0]
    y = torch.cat([c.y_train for c in keep]) if keep else world.clients[0].y_train[:0]
    gen = world.streams.torch(f"{stage}/train")
    flops_per = train_flops_per_sample(model.fe, world.dataset.input_shape) + model.mixture_experts * train_flops_per_sample(
        model.expert_shell(), (world.cfg.model.feature_dim,)) + gate_train_flops_per_sample(model.gate, world.cfg.model.feature_dim)

    # One task on the server's pooled data; the gate noise is drawn with the plan from the
    # same generator that shuffles, in the order a loop drawing it in place would.
    plan, draws = draw_plan(len(y), cfg.epochs, cfg.batch_size, gen,
                            per_batch=draw_generator_state(world.n_clients) if model.gate.noisy else None)
    task = TrainTask(client=None, node=BS, template=model, start=clone_state(model.state_dict()), x=x, y=y, plan=plan,
                     draws=draws, loss="central_mixture", **sgd_args(cfg), flops=cfg.epochs * len(y) * flops_per, upload_bytes=0)
    job = sim.executor.submit(task, stage=stage, tag="train")
    yield job.charged
    model.load_state_dict(sim.executor.gather([job])[0].state)
    model.eval()
    bank = QueryBank([model.fe] * world.n_clients, model.expert_modules(), [c.x_query for c in world.clients],
                     [c.y_query for c in world.clients], world.dataset.num_classes)
    k = world.cfg.model.top_k
    with torch.no_grad():
        routed = [torch.topk(model.gate(f), k, dim=1) for f in bank.feats]
    weights = [torch.softmax(r.values, 1) for r in routed]
    routes = [r.indices for r in routed]
    d = world.cfg.model.feature_dim
    serve = (forward_flops_per_sample(model.fe, world.dataset.input_shape)
             + forward_flops_per_sample(model.gate, (d,)) + k * forward_flops_per_sample(model.expert_shell(), (d,)))
    back = world.tensor_bytes(world.dataset.num_classes)

    def predict(c: int, delivered: torch.Tensor) -> np.ndarray:
        ok = delivered[:, 0]
        pred = combine(bank.probs[c], weights[c], routes[c], torch.ones_like(weights[c])).argmax(1).numpy()
        return np.where(ok.numpy(), pred, -1)  # an unanswered query counts as wrong

    spec = InferenceSpec("centralized", 0.0, lambda c, q: [Leg(BS, serve, sample_bytes - 1, back)], predict,
                         [r.numpy() for r in routes], world.n_clients, [1] * world.n_clients)
    return spec, scope
