"""A routing policy at work: each query's experts, chosen when its local part is done.

``topk`` needs none of this (its routes are planned before inference starts, as always).
For the other policies, :class:`PolicyChooser` holds every query's full gate distribution
(the router asked for all its experts once, up front: the learned math stays on the host)
and, when a query's legs are about to leave, asks the client's view
(:mod:`nmoe_sim.serving.view`) for each expert's expected cost now and the policy
(:mod:`nmoe_sim.serving.policies`) for the slots, written into the query's planned row.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TYPE_CHECKING, Hashable, Sequence

import numpy as np
import torch

from nmoe_sim.serving.policies import POLICIES, PolicySpec, Query
from nmoe_sim.serving.view import ExpertView

if TYPE_CHECKING:
    from nmoe_sim.fl.routing import Router
    from nmoe_sim.world import Sim, World


class PolicyChooser:
    def __init__(self, world: "World", sim: "Sim", spec: PolicySpec, router: "Router", feats: Sequence[torch.Tensor],
                 planned: list[tuple[torch.Tensor, torch.Tensor]], pre_flops: float, sizes: tuple[int, int, float]) -> None:
        n, cfg = world.n_clients, world.cfg.inference
        self.spec, self.cfg, self.planned, self.k = spec, cfg, planned, world.cfg.model.top_k
        self.probs: list[np.ndarray] = []  # per client (Q,E): the gate's probabilities, 0 where not allowed
        self.allowed: list[np.ndarray] = []  # per client (Q,E) bool
        for c, f in enumerate(feats):
            w, idx = dataclasses.replace(router, k=n).route(c, f)  # every expert it may choose, best first
            rows = np.arange(idx.shape[0])[:, None]
            p, a = np.zeros((idx.shape[0], n)), np.zeros((idx.shape[0], n), dtype=bool)
            p[rows, idx.numpy()] = w.double().numpy()
            a[rows, idx.numpy()] = True
            self.probs.append(p)
            self.allowed.append(a)
        self.inflight: Counter[Hashable] = Counter()
        out_b, back_b, expert_flops = sizes
        self.view = ExpertView(sim, n, out_b, back_b, expert_flops, self.inflight)
        self.csi = spec.csi(cfg) if spec.csi is not None else "mean"
        self.budget_s = spec.budget_s(cfg) if spec.budget_s is not None else None
        # The budget left when the legs start: the budget less the local part's compute time
        # (a CPU queue before it is not seen; run_inference enforces the true deadline).
        self.pre_s = [pre_flops / world.profiles[c].flops_per_s for c in range(n)]

    def __call__(self, c: int, q: int) -> None:
        assert self.spec.choose is not None
        left_s = float("inf") if self.budget_s is None else self.budget_s - self.pre_s[c]
        query = Query(self.probs[c][q], self.allowed[c][q], c, self.k, left_s)
        choice = self.spec.choose(query, self.view.costs(c, self.csi, self.spec.load), self.cfg)
        w, idx = self.planned[c]
        idx[q] = torch.as_tensor(choice.idx, dtype=idx.dtype)
        w[q] = torch.as_tensor(choice.weights, dtype=w.dtype)


def policy_chooser(world: "World", sim: "Sim | None", router: "Router", feats: Sequence[torch.Tensor],
                   planned: list[tuple[torch.Tensor, torch.Tensor]], pre_flops: float,
                   sizes: tuple[int, int, float]) -> PolicyChooser | None:
    """The chooser of ``inference.routing``, or None for a policy planned up front (topk)."""
    spec = POLICIES.get(world.cfg.inference.routing, "inference.routing")
    if spec.choose is None:
        return None
    if sim is None:  # a caller that cannot show the client its network would get topk silently
        raise ValueError(f"inference.routing={world.cfg.inference.routing} needs the Sim the queries run in")
    return PolicyChooser(world, sim, spec, router, feats, planned, pre_flops, sizes)
