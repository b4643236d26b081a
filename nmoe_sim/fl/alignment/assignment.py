"""Each round the server decides which clients train which experts.

``'alignment'`` follows FLEX-MoE (arXiv 2512.23070; Chen et al., arXiv 2507.05685): it
maximizes total fitness subject to every client's capacity and per-expert load bounds,

    max  sum_{c,e} (Q(c,e) + w * d(e)) x(c,e)
    s.t. sum_e x(c,e) =  k_c                  for every participating client c
         L <= sum_c x(c,e) <= U               for every expert e,      x(c,e) in {0, 1}

with d(e) = deficit_e / max(deficit) in [0, 1] (0 when no expert has a deficit) and
w = ``deficit_weight``. Decisions the papers leave open, and ours:

* Capacity is an equality: every participating client trains exactly k_c = min(k_c, E)
  experts, so no device sits idle for a round; load bounds are made to fit instead.
* L is relaxed to floor(K / E) when the round's total capacity K = sum k_c cannot give
  every expert L clients (partial participation, a tight load_min); U is capped at the
  number of participating clients. If U * E < K the round is infeasible and a
  ConfigError names ``alignment.load_max``; :func:`resolve_load_bounds` makes this check
  once at setup, for full participation, which is the worst case. Otherwise the problem
  is always feasible (balanced loads floor/ceil(K/E) are realizable, by Gale-Ryser).
* The constraint matrix is the incidence matrix of a bipartite graph, hence totally
  unimodular: the LP optimum is integral and HiGHS (``scipy.optimize.milp``) proves
  optimality at its root, fast. We still declare the variables integral and set a zero
  MIP gap so the answer is exact by construction.
* Ties: every score gets + TIE_EPS * u(c,e), with u a fixed pseudo-random matrix in
  [0, 1) (a constant seed, independent of the scenario seed and of the round). Exact ties
  in Q, such as the first round where all Q equal ``initial_fitness``, then have one
  optimum, the same on every run and solver version; real score differences below
  TIE_EPS per changed pair count as ties. The objective is scaled by OBJ_SCALE so that
  these differences stay far above HiGHS's absolute tolerances (~1e-7).

Baselines: ``'greedy'`` (each client its top-k_c experts by Q, ties to the lower index,
no load bounds: the source's baseline), ``'random'`` (k_c distinct experts uniformly)
and ``'unlimited'`` (every participating client trains every expert).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from nmoe_sim.errors import ConfigError
from nmoe_sim.fl.alignment.config import AlignmentConfig
from nmoe_sim.registry import Registry

logger = logging.getLogger(__name__)

TIE_EPS = 1e-9
OBJ_SCALE = 1e6
_TIE_SEED = 20260407  # any constant: ties must not move with the scenario seed


@dataclass(frozen=True)
class AssignmentInputs:
    """Validated inputs of one round's assignment (built by :func:`assign`)."""

    fitness: np.ndarray  # C x E float64, Q
    capacity: np.ndarray  # (C,) int64 in 0..E; 0 for clients not taking part
    active: np.ndarray  # (C,) bool, participating clients
    load_min: int
    load_max: int | None  # None: no upper bound beyond the participating clients
    deficit: np.ndarray  # (E,) float64 >= 0
    deficit_weight: float


Assigner = Callable[[AssignmentInputs, np.random.Generator], np.ndarray]
ASSIGNERS: Registry[Assigner] = Registry("expert assignment")


def effective_load_bounds(
    capacity: np.ndarray, n_experts: int, load_min: int, load_max: int | None
) -> tuple[int, int]:
    """The (L, U) one round's MILP uses, given the round's capacities (0 = not taking
    part); raises ConfigError when U * E < sum of capacities (see the module docstring)."""
    k = np.minimum(np.asarray(capacity, dtype=np.int64), n_experts)
    total = int(k.sum())
    able = int(np.count_nonzero(k))
    lo = min(load_min, total // n_experts)
    if lo < load_min:
        logger.debug("alignment.load_min %d relaxed to %d (capacity %d over %d experts)",
                     load_min, lo, total, n_experts)
    hi = able if load_max is None else min(load_max, able)
    if hi * n_experts < total:
        raise ConfigError(
            f"alignment.load_max: {load_max} clients per expert x {n_experts} experts = "
            f"{hi * n_experts} places < {total} the clients' capacities fill; set "
            f"load_max >= {math.ceil(total / n_experts)} or leave it unset"
        )
    return lo, hi


def resolve_load_bounds(cfg: AlignmentConfig, capacity: np.ndarray) -> tuple[int, int]:
    """(load_min, load_max) for :func:`assign` from the config and all clients'
    capacities: load_max unset becomes ceil(sum k / E) + load_slack. Checks feasibility
    at full participation, so a bad load_max fails at setup, not in round 37."""
    k = np.minimum(np.asarray(capacity, dtype=np.int64), cfg.experts)
    load_max = cfg.load_max
    if load_max is None:
        load_max = math.ceil(int(k.sum()) / cfg.experts) + cfg.load_slack
    lo, _ = effective_load_bounds(k, cfg.experts, cfg.load_min, load_max)
    if lo < cfg.load_min:
        logger.warning(
            "alignment.load_min=%d exceeds what %d client capacity slots over %d experts "
            "allow; each round uses at most %d", cfg.load_min, int(k.sum()), cfg.experts, lo,
        )
    return cfg.load_min, load_max


@lru_cache(maxsize=16)
def _tie_break(n_clients: int, n_experts: int) -> np.ndarray:
    u = np.random.default_rng(_TIE_SEED).random((n_clients, n_experts))
    u.flags.writeable = False
    return u


def normalized_deficit(deficit: np.ndarray) -> np.ndarray:
    """deficit / max(deficit), in [0, 1]; zeros when no expert has a deficit."""
    top = float(np.max(deficit)) if deficit.size else 0.0
    return deficit / top if top > 0 else np.zeros_like(deficit, dtype=np.float64)


def alignment_scores(inp: AssignmentInputs) -> np.ndarray:
    """C x E: Q(c,e) + w * d(e), the objective coefficients before tie-breaking."""
    return inp.fitness + inp.deficit_weight * normalized_deficit(inp.deficit)[None, :]


@ASSIGNERS.register("alignment")
def _alignment(inp: AssignmentInputs, rng: np.random.Generator) -> np.ndarray:
    n_clients, n_experts = inp.fitness.shape
    x = np.zeros((n_clients, n_experts), dtype=bool)
    rows = np.flatnonzero(inp.capacity > 0)  # clients that train anything
    if rows.size == 0:
        return x
    k = inp.capacity[rows].astype(np.float64)  # (m,)
    lo, hi = effective_load_bounds(inp.capacity, n_experts, inp.load_min, inp.load_max)
    m = rows.size
    score = alignment_scores(inp)[rows] + TIE_EPS * _tie_break(n_clients, n_experts)[rows]
    # Variable i*E + e is x(rows[i], e); each appears in one client row and one expert row.
    per_client = sparse.kron(sparse.eye(m, format="csr"), np.ones((1, n_experts)), format="csr")
    per_expert = sparse.kron(np.ones((1, m)), sparse.eye(n_experts, format="csr"), format="csr")
    res = milp(
        c=-OBJ_SCALE * score.ravel(),  # milp minimizes
        integrality=np.ones(m * n_experts),
        bounds=Bounds(0, 1),
        constraints=[
            LinearConstraint(per_client, k, k),
            LinearConstraint(per_expert, lo, hi),
        ],
        options={"mip_rel_gap": 0.0},
    )
    if res.status == 2:  # infeasible: effective_load_bounds should have prevented it
        raise ConfigError(
            f"alignment.load_min/load_max: no assignment gives every expert {lo}..{hi} "
            f"clients with capacities summing to {int(k.sum())} over {n_experts} experts"
        )
    if res.x is None or res.status != 0:
        raise RuntimeError(f"expert assignment MILP failed: {res.message}")
    x[rows] = res.x.reshape(m, n_experts) > 0.5
    loads = x.sum(axis=0)
    if not (np.array_equal(x[rows].sum(axis=1), inp.capacity[rows])
            and loads.min() >= lo and loads.max() <= hi):
        raise RuntimeError("expert assignment MILP returned a solution that breaks a bound")
    return x


@ASSIGNERS.register("greedy")
def _greedy(inp: AssignmentInputs, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(inp.fitness.shape, dtype=bool)
    for c in np.flatnonzero(inp.capacity > 0):
        # A stable sort of -Q keeps the lower expert index first among equal fitness.
        top = np.argsort(-inp.fitness[c], kind="stable")[: inp.capacity[c]]
        x[c, top] = True
    return x


@ASSIGNERS.register("random")
def _random(inp: AssignmentInputs, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(inp.fitness.shape, dtype=bool)
    n_experts = inp.fitness.shape[1]
    # Clients in index order, one draw each: the stream depends only on who takes part.
    for c in np.flatnonzero(inp.capacity > 0):
        x[c, rng.choice(n_experts, size=int(inp.capacity[c]), replace=False)] = True
    return x


@ASSIGNERS.register("unlimited")
def _unlimited(inp: AssignmentInputs, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(inp.fitness.shape, dtype=bool)
    x[inp.active] = True
    return x


def assign(
    kind: str,
    fitness: np.ndarray,
    capacity: np.ndarray,
    load_min: int,
    load_max: int | None,
    deficit: np.ndarray,
    deficit_weight: float,
    rng: np.random.Generator,
    active: np.ndarray | None = None,
) -> np.ndarray:
    """C x E bools: x[c, e] is True when client c trains expert e this round.

    fitness: C x E Q; capacity: (C,) ints >= 0 (clipped to E); load_min/load_max: per-expert
    bounds on trainers (from :func:`resolve_load_bounds`; only ``'alignment'`` uses them
    and the deficit); deficit: (E,) >= 0 from LoadMonitor; rng: only ``'random'`` draws
    from it; active: (C,) bools, clients taking part (None: all). Clients not taking
    part get no expert. An unknown kind raises ConfigError naming alignment.assignment.
    """
    impl = ASSIGNERS.get(kind, key="alignment.assignment")
    q = np.asarray(fitness, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] < 1 or not np.all(np.isfinite(q)):
        raise ValueError(f"fitness must be a finite C x E array, got shape {q.shape}")
    n_clients, n_experts = q.shape
    cap = np.asarray(capacity)
    if cap.shape != (n_clients,) or not np.issubdtype(cap.dtype, np.integer) or np.any(cap < 0):
        raise ValueError(f"capacity must be ({n_clients},) ints >= 0, got {cap.dtype} {cap.shape}")
    act = np.ones(n_clients, dtype=bool) if active is None else np.asarray(active)
    if act.shape != (n_clients,) or act.dtype != np.bool_:
        raise ValueError(f"active must be ({n_clients},) bools, got {act.dtype} {act.shape}")
    d = np.asarray(deficit, dtype=np.float64)
    if d.shape != (n_experts,) or not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError(f"deficit must be ({n_experts},) finite values >= 0")
    if not (math.isfinite(deficit_weight) and deficit_weight >= 0):
        raise ValueError(f"deficit_weight must be finite and >= 0, got {deficit_weight}")
    if load_min < 0 or (load_max is not None and load_max < max(load_min, 1)):
        raise ConfigError(
            f"alignment.load_min/load_max: need 0 <= load_min <= load_max and load_max >= 1, "
            f"got {load_min}, {load_max}"
        )
    inp = AssignmentInputs(
        fitness=q,
        capacity=np.where(act, np.minimum(cap, n_experts), 0).astype(np.int64),
        active=act,
        load_min=int(load_min),
        load_max=None if load_max is None else int(load_max),
        deficit=d,
        deficit_weight=float(deficit_weight),
    )
    return impl(inp, rng)
