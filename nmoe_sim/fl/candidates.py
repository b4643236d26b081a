"""Candidate experts: which experts a client's gate may choose among (``stage3.candidates``).

With every expert a candidate (the default, and the paper's setting) the expert-output
exchange before stage 3 costs n(n-1) pairs, and its bytes on the air grow as n^2: at 1,000
clients the ``expert_weights`` bundle alone is 19 GB through one base station. Limiting
each client to its own expert and ``k`` others makes the exchange n k pairs, linear in n,
at the price of a gate that can never pick an expert outside the set. The set is chosen
once, before the exchange, by a rule that costs no communication:

* ``nearest``: the k experts cheapest to reach, by the route's expected airtime per bit
  (the weight :mod:`nmoe_sim.net.routing` routes by, computed from mean SNRs the client
  knows from the topology and channel model). Ties go to the lower client id. This is a
  network-aware rule: a client asks the experts its queries can reach fastest.
* ``random``: k others uniformly at random, from the scenario's seed (a reference that
  knows nothing of the network or of the data).

Neither looks at what the experts know; candidates chosen by data similarity would need a
summary of every client's data, i.e. more communication, and are left for later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from torch import nn

from nmoe_sim.fl.stage2 import is_trained
from nmoe_sim.registry import Registry

if TYPE_CHECKING:
    from nmoe_sim.world import Sim, World

# A rule: (world, sim, k) -> per client, the sorted expert ids it may use (its own included).
CandidateRule = Callable[["World", "Sim", int], list[np.ndarray]]
CANDIDATE_RULES: Registry[CandidateRule] = Registry("candidate rule")


@CANDIDATE_RULES.register("nearest")
def nearest(world: "World", sim: "Sim", k: int) -> list[np.ndarray]:
    n = world.n_clients
    out = []
    for c in range(n):
        others = [j for j in range(n) if j != c]
        cost = np.array([sim.net.route_cost_s_per_bit(c, j) for j in others])
        # A stable sort keeps the lower id first among equal costs (e.g. all-ideal links).
        pick = np.asarray(others)[np.argsort(cost, kind="stable")[:k]]
        out.append(np.sort(np.append(pick, c)))
    return out


@CANDIDATE_RULES.register("random")
def uniform(world: "World", sim: "Sim", k: int) -> list[np.ndarray]:
    n = world.n_clients
    rng = world.streams.numpy("stage3/candidates")
    out = []
    for c in range(n):
        others = np.array([j for j in range(n) if j != c])
        out.append(np.sort(np.append(rng.choice(others, size=k, replace=False), c)))
    return out


def candidate_sets(world: "World", sim: "Sim") -> list[np.ndarray] | None:
    """Each client's candidate experts, or None when every expert is a candidate.

    ``k`` at or above n - 1 leaves every expert a candidate, and is the default path
    exactly (None), so that a small network with a large ``k`` computes what it always did.
    """
    cfg = world.cfg.stage3
    if cfg.candidates is None or cfg.candidates >= world.n_clients - 1:
        return None
    return CANDIDATE_RULES.get(cfg.candidate_rule, "stage3.candidate_rule")(world, sim, cfg.candidates)


def serving_sets(world: "World", experts: Sequence[nn.Module], sets: list[np.ndarray] | None) -> list[np.ndarray] | None:
    """The experts each client's router may send a query to: its candidates (all when
    ``sets`` is None) without the experts stage 2 never trained (their client was down then,
    docs/faults.md), its own always kept. None when that is every expert for everyone."""
    untrained = {j for j, e in enumerate(experts) if not is_trained(e)}
    if not untrained:
        return sets
    n = world.n_clients
    return [np.array([j for j in (range(n) if sets is None else s.tolist()) if j == c or j not in untrained])
            for c, s in enumerate([None] * n if sets is None else sets)]


def candidate_masks(sets: list[np.ndarray] | None, n_experts: int) -> list[torch.Tensor] | None:
    """(E,) bool masks, one per client, for the routers; None when every expert is allowed."""
    if sets is None:
        return None
    masks = []
    for s in sets:
        m = torch.zeros(n_experts, dtype=torch.bool)
        m[torch.as_tensor(s, dtype=torch.long)] = True
        masks.append(m)
    return masks
