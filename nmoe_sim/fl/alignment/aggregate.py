"""Per-expert aggregation of client updates, weighted by usage.

After FLEX-MoE (arXiv 2512.23070): each expert is averaged over the clients that trained
it this round, each client weighted by its *usage*, the number of its samples its local
gate routed to that expert; gates stay local and are never aggregated here. Experts
nobody trained (or whose updates all missed the deadline) keep their state. Pure
functions: inputs are never modified and outputs share no storage with them.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from nmoe_sim.fl.aggregate import normalized_weights, weighted_average

State = dict[str, torch.Tensor]
S = TypeVar("S", np.ndarray, State)


def usage_weighted_average(states: list[S], weights: np.ndarray) -> S:
    """sum_i w_i * state_i / sum_i w_i for one expert, over the clients that trained it.

    states: parameter arrays (all one shape) or state dicts (all the same keys and
    shapes); weights: (n,) usage >= 0 (samples routed to the expert); all zero -> plain
    mean. Returns the same type as the states.
    """
    if all(isinstance(s, dict) for s in states):
        return weighted_average(states, weights)
    w = normalized_weights(weights, len(states))
    if all(isinstance(s, np.ndarray) for s in states):
        shapes = {s.shape for s in states}
        if len(shapes) != 1:
            raise ValueError(f"mismatched array shapes: {sorted(shapes)}")
        stacked = np.stack([np.asarray(s, dtype=np.float64) for s in states])  # (n, ...)
        out = np.tensordot(w, stacked, axes=1)
        dtype = np.result_type(*states)
        return out.astype(dtype) if np.issubdtype(dtype, np.floating) else out
    raise TypeError("states must all be numpy arrays or all be dicts of tensors")


def aggregate_experts(
    current: list[State], updates: dict[int, list[tuple[int, State, float]]]
) -> list[State]:
    """New expert states, one per expert of ``current``.

    updates: expert index -> [(client, new_state, usage)], the updates that reached the
    server this round. An expert with updates becomes their usage-weighted average; an
    expert without keeps (a copy of) its current state.
    """
    n_experts = len(current)
    for e, ups in updates.items():
        if not 0 <= e < n_experts:
            raise ValueError(f"update for expert {e}, but there are {n_experts} experts")
        clients = [c for c, _, _ in ups]
        if len(set(clients)) != len(clients):
            raise ValueError(f"expert {e}: a client sent more than one update")
        for c, state, _ in ups:
            if set(state) != set(current[e]):
                raise ValueError(f"expert {e}, client {c}: state keys differ from the expert's")
    out: list[State] = []
    for e, state in enumerate(current):
        ups = updates.get(e, [])
        if ups:
            out.append(usage_weighted_average([s for _, s, _ in ups],
                                              np.array([u for _, _, u in ups], dtype=np.float64)))
        else:
            out.append({k: v.detach().clone() for k, v in state.items()})
    return out
