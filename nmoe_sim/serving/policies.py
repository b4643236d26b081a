"""Routing policies: which experts serve one query, given the gate and what the client knows.

Pure math on arrays, no simulated time: :mod:`nmoe_sim.serving.view` measures each expert's
expected cost as the querying client sees it, and a policy trades the gate's preference
against that cost. Every policy returns k slots (expert ids, mixture weights); a slot left
empty is -1 with weight 0 (``budgeted`` may ask fewer than k experts). The mixture weights
are always the gate's, renormalised over the chosen experts (a softmax over the chosen
logits, as top-k gating does): a penalty decides *who* serves, never how much each counts.

* ``topk`` (the reference): the gate's top k, planned before inference starts, exactly as
  before policies existed (:data:`PolicySpec.dynamic` False: nothing here runs for it).
* ``channel_aware``: score_j = log p_j - w * T_j, T_j the expected time to carry the query's
  features to expert j and its answer back over the route's links, from the channel state
  the client knows (``csi``); 0 for the client's own expert. Channel-aware gating (arXiv 2504.00819) penalises the gate by the link's
  quality in the same spirit; the additive log-domain form and the weight ``w`` (1/s) are
  ours. A link in outage costs ~1e3 s/bit, so ``w > 0`` drops it whenever another expert
  is reachable.
* ``load_aware``: the same form, T_j the expert's compute time at its device's speed plus
  the wait behind the legs already in flight to it, (legs in flight) x (its airtime + its
  compute), a processor-sharing estimate (its radio and CPU are shared by its open legs;
  a hop's fixed protocol latency is not).
  The link itself is not penalised: an idle network routes as topk does, up to the experts'
  speeds.
* ``budgeted``: the best experts in gate order that meet a latency budget and/or an expected
  energy budget, skipping experts whose gate weight is below ``min_gain`` (SiftMoE,
  arXiv 2603.23888, skips experts of small expected gain under latency constraints; DES /
  JESA, arXiv 2503.13421, select experts under an energy objective), the client's own
  expert when none fits. Greedy in gate order, not an exact knapsack: with k <= 3 experts
  it differs from the optimum only when a lower-ranked expert displaces a higher one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from nmoe_sim.registry import Registry
from nmoe_sim.serving.config import InferenceConfig


@dataclass(frozen=True)
class Costs:
    """What the client expects of each expert for this query: (E,) arrays of its parts.

    The expected time to an expert's answer is ``link_s + service_s + queue_s``."""

    link_s: np.ndarray  # features out and probabilities back over the route (0 for the own expert)
    service_s: np.ndarray  # the expert's compute at its device's speed
    queue_s: np.ndarray  # the wait behind the legs already in flight to it (0 when load is not seen)
    energy_j: np.ndarray  # device energy (radios of client devices on the route, expert compute)

    @property
    def delay_s(self) -> np.ndarray:
        return self.link_s + self.service_s + self.queue_s


@dataclass(frozen=True)
class Choice:
    idx: np.ndarray  # (k,) expert ids, -1 for an empty slot
    weights: np.ndarray  # (k,) summing to 1 over the filled slots


@dataclass(frozen=True)
class Query:
    """One query's routing problem."""

    probs: np.ndarray  # (E,) the gate's probabilities over the experts it may choose (0 elsewhere)
    allowed: np.ndarray  # (E,) bool: the experts the client's gate may choose
    own: int  # the client's own expert (always allowed, answered without the network)
    k: int
    budget_left_s: float = math.inf  # the latency budget left when the legs start


# A policy: (query, costs, config) -> the chosen slots.
Policy = Callable[[Query, Costs, InferenceConfig], Choice]


@dataclass(frozen=True)
class PolicySpec:
    choose: Policy | None  # None: the top-k planned up front (no view needed)
    csi: Callable[[InferenceConfig], str] | None = None  # what the client knows of links (None: mean)
    load: bool = False  # whether the costs count the legs in flight to each expert
    budget_s: Callable[[InferenceConfig], float | None] | None = None  # the latency budget it keeps


POLICIES: Registry[PolicySpec] = Registry("routing policy")


def _slots(chosen: list[int], probs: np.ndarray, k: int) -> Choice:
    idx = np.full(k, -1, dtype=np.int64)
    w = np.zeros(k, dtype=np.float64)
    idx[: len(chosen)] = chosen
    p = probs[chosen]
    # All chosen weights zero only when the gate underflowed for them: mix them equally.
    w[: len(chosen)] = p / p.sum() if p.sum() > 0 else 1.0 / len(chosen)
    return Choice(idx, w)


def penalised_topk(q: Query, penalty: np.ndarray) -> Choice:
    """The k allowed experts of highest log p_j - penalty_j (ties: lower id first)."""
    with np.errstate(divide="ignore"):
        score = np.log(q.probs) - penalty
    score = np.where(q.allowed, score, -np.inf)
    k = min(q.k, int(q.allowed.sum()))
    order = np.argsort(-score, kind="stable")[:k]
    return _slots(order.tolist(), q.probs, q.k)


def channel_aware(q: Query, costs: Costs, cfg: InferenceConfig) -> Choice:
    return penalised_topk(q, cfg.channel_aware.weight_per_s * costs.link_s)


def load_aware(q: Query, costs: Costs, cfg: InferenceConfig) -> Choice:
    return penalised_topk(q, cfg.load_aware.weight_per_s * (costs.service_s + costs.queue_s))


def budgeted(q: Query, costs: Costs, cfg: InferenceConfig) -> Choice:
    b = cfg.budgeted
    assert b is not None  # the schema requires the section with routing: budgeted
    time_s = min(q.budget_left_s, b.budget_s if b.budget_s is not None else math.inf)
    energy_left_j = b.energy_budget_j if b.energy_budget_j is not None else math.inf
    # Gate order, ties to the lower id; the legs run in parallel, so the latency is their max.
    ranked = [int(j) for j in np.argsort(-q.probs, kind="stable") if q.allowed[j]]
    chosen: list[int] = []
    for j in ranked:
        if len(chosen) == q.k:
            break
        if q.probs[j] < b.min_gain:
            continue  # its expected gain does not pay for its cost (the own expert: the fallback)
        if costs.delay_s[j] > time_s or costs.energy_j[j] > energy_left_j:
            continue
        chosen.append(j)
        energy_left_j -= costs.energy_j[j]
    return _slots(chosen or [q.own], q.probs, q.k)


def _channel_aware_csi(cfg: InferenceConfig) -> str:
    return cfg.channel_aware.csi


def _current_csi(cfg: InferenceConfig) -> str:
    return "current"


POLICIES.register("topk")(PolicySpec(None))
POLICIES.register("channel_aware")(PolicySpec(channel_aware, csi=_channel_aware_csi))
POLICIES.register("load_aware")(PolicySpec(load_aware, load=True))
# A budget is kept against what will happen now: the current block's CSI and the queues.
def _latency_budget_s(cfg: InferenceConfig) -> float | None:
    return cfg.budgeted.budget_s if cfg.budgeted is not None else None


POLICIES.register("budgeted")(PolicySpec(budgeted, csi=_current_csi, load=True, budget_s=_latency_budget_s))
