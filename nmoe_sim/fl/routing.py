"""Routers decide which experts serve a client's queries; the query bank scores them fast.

The math of gated inference, kept apart from simulated time: a router maps a client's
features to top-k (weights, expert indices); :func:`combine` mixes the delivered experts'
class probabilities, y' = sum_j G(h)_j H_j(h) over the top-k (Shazeer et al., 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from nmoe_sim.fl.train import predict_batched
from nmoe_sim.models import Expert, Gate, topk_route


class Router(Protocol):
    def route(self, client: int, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q,D) features -> (weights (Q,k), expert indices (Q,k))."""


@dataclass
class GateRouter:
    gates: Sequence[Gate]  # one per client (a shared gate may appear N times)
    k: int
    # Per client, (E,) bool: the experts its gate may choose (stage3.candidates); None: all.
    allowed: Optional[Sequence[torch.Tensor]] = None

    @torch.no_grad()
    def route(self, client: int, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate = self.gates[client]
        gate.eval()
        logits = gate(feats)  # (Q,E)
        k = self.k
        if self.allowed is not None:
            logits = logits.masked_fill(~self.allowed[client], -math.inf)
            # A ranking of every expert (the faults fallback asks k = E) stops at the set.
            k = min(k, int(self.allowed[client].sum()))
        return topk_route(logits, k)


@dataclass
class RandomRouter:
    """RanGate: k distinct experts uniformly at random per query (among the client's
    candidates when it has a set), equal weights."""

    n_experts: int
    k: int
    rng: np.random.Generator
    allowed: Optional[Sequence[np.ndarray]] = None  # per client, its candidate expert ids

    def route(self, client: int, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = feats.shape[0]
        if self.allowed is None:
            idx = np.argsort(self.rng.random((q, self.n_experts)), axis=1)[:, : self.k]
        else:
            pool = self.allowed[client]
            idx = pool[np.argsort(self.rng.random((q, len(pool))), axis=1)[:, : self.k]]
        k = idx.shape[1]  # fewer than k when the client may use fewer experts (crashes, faults)
        return torch.full((q, k), 1.0 / k), torch.as_tensor(idx, dtype=torch.long)


def combine(probs: torch.Tensor, weights: torch.Tensor, idx: torch.Tensor, delivered: torch.Tensor) -> torch.Tensor:
    """Mix expert probabilities. probs (E,Q,K); weights/idx/delivered (Q,k) -> (Q,K).

    Weights of undelivered experts are dropped and the rest renormalised; a query with no
    delivered expert gets all-zero probabilities (the caller decides the fallback).
    """
    q = torch.arange(idx.shape[0])[:, None]  # (Q,1)
    picked = probs[idx, q]  # (Q,k,K)
    w = weights * delivered
    w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    return (w[..., None] * picked).sum(1)


class StackedExperts:
    """The experts' weights stacked once, for many calls of :func:`all_expert_probs`.

    ``all_expert_probs`` stacks E experts' four tensors on every call; called once per client
    (the query bank, the ``expert_weights`` exchange) that is n^2 small copies, most of a
    1,000-client run's stage-3 time. Rows picked from the stack hold the same values as a
    fresh stack of those experts, and :meth:`probs` runs the same two einsums on the same
    shapes, so its output equals ``all_expert_probs`` bit for bit (tested).
    """

    def __init__(self, experts: Sequence[Expert]) -> None:
        with torch.no_grad():
            self.w1 = torch.stack([e.net[0].weight for e in experts])  # (E,H,D)
            self.b1 = torch.stack([e.net[0].bias for e in experts])  # (E,H)
            self.w2 = torch.stack([e.net[2].weight for e in experts])  # (E,K,H)
            self.b2 = torch.stack([e.net[2].bias for e in experts])  # (E,K)
        self.n = len(experts)

    @torch.no_grad()
    def probs(self, feats: torch.Tensor, which: Sequence[int] | None = None) -> torch.Tensor:
        """(n, D) -> (E', n, K): the chosen experts' (default all, in order) class probabilities."""
        w1, b1, w2, b2 = self.w1, self.b1, self.w2, self.b2
        if which is not None and list(which) != list(range(self.n)):
            idx = torch.as_tensor(list(which), dtype=torch.long)
            w1, b1, w2, b2 = w1[idx], b1[idx], w2[idx], b2[idx]
        # The body of all_expert_probs, on weights stacked once.
        hidden = torch.relu(torch.einsum("nd,ehd->enh", feats, w1) + b1[:, None, :])  # (E,n,H)
        logits = torch.einsum("enh,ekh->enk", hidden, w2) + b2[:, None, :]  # (E,n,K)
        return torch.softmax(logits, -1)


class QueryBank:
    """Each client's query features and every expert's probabilities on them, computed once."""

    def __init__(self, fes: Sequence[torch.nn.Module], experts: Sequence[Expert], x_queries: Sequence[torch.Tensor],
                 y_queries: Sequence[torch.Tensor], num_classes: int) -> None:
        """``fes[c]`` is client c's feature extractor (the FE it holds, with its standardisation)."""
        self.feats = [predict_batched(fe.eval(), x) for fe, x in zip(fes, x_queries)]  # per client (Q_c, D)
        stacked = StackedExperts(experts)
        self.probs = [stacked.probs(f) for f in self.feats]  # (E,Q_c,K)
        self.y = [y.numpy() for y in y_queries]
        self.num_classes = num_classes
        self.n_experts = len(experts)

    def evaluate(self, router: Router) -> "Scores":
        preds, routes = [], []
        for c, (f, p) in enumerate(zip(self.feats, self.probs)):
            w, idx = router.route(c, f)
            preds.append(combine(p, w, idx, torch.ones_like(w)).argmax(1).numpy())
            routes.append(idx.numpy())
        return score(self.y, preds, routes, self.num_classes, self.n_experts)


@dataclass(frozen=True)
class Scores:
    f1_macro: float
    accuracy: float
    local_ratio: float
    gating_counts: np.ndarray  # (clients, experts) routing slots


def score(ys: Sequence[np.ndarray], preds: Sequence[np.ndarray], routes: Sequence[np.ndarray] | None,
          num_classes: int, n_experts: int) -> Scores:
    """Macro-F1 and accuracy over all clients' queries; LR and gating counts from routes (Q_c,k)."""
    y, pred = np.concatenate(ys), np.concatenate(preds)
    f1 = float(f1_score(y, pred, average="macro", labels=list(range(num_classes)), zero_division=0))
    acc = float(accuracy_score(y, pred))
    counts = np.zeros((len(ys), n_experts), dtype=np.int64)
    if routes is None:  # a single on-device model: every query served locally
        return Scores(f1, acc, 1.0, np.zeros((0, 0), dtype=np.int64))
    for c, r in enumerate(routes):
        r = np.asarray(r).reshape(-1)
        np.add.at(counts[c], r[r >= 0], 1)  # -1: a slot a routing policy left empty
    total = counts.sum()
    local = np.trace(counts[:, : len(ys)]) if n_experts >= len(ys) else 0
    return Scores(f1, acc, float(local / total) if total else float("nan"), counts)
