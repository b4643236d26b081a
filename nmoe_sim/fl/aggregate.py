"""Aggregation math (pure): weighted parameter averaging, as in FedAvg (McMahan et al., 2017).

One implementation serves every stage: FedAvg of the FE and gate (weighted by samples) and
the alignment system's per-expert averages (weighted by usage). Inputs are never modified
and outputs share no storage with them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

State = Mapping[str, torch.Tensor]


def normalized_weights(weights: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    """Weights scaled to sum to 1; all-zero weights fall back to the plain mean.

    (An expert that was held but had nothing routed to it still averages instead of
    dividing by zero: no client is better informed than another.)
    """
    w = np.asarray(weights, dtype=np.float64)
    if n == 0:
        raise ValueError("averaging needs at least one state")
    if w.shape != (n,):
        raise ValueError(f"{n} states but {w.size} weights")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    total = w.sum()
    return np.full(n, 1.0 / n) if total == 0 else w / total


def average_tensors(tensors: Sequence[torch.Tensor], w: np.ndarray) -> torch.Tensor:
    """sum_i w_i t_i accumulated in float64 and cast back; ``w`` already normalized."""
    first = tensors[0]
    for t in tensors[1:]:
        if t.shape != first.shape or t.dtype != first.dtype:
            raise ValueError(f"mismatched tensors: {tuple(t.shape)} {t.dtype} vs "
                             f"{tuple(first.shape)} {first.dtype}")
    if not first.is_floating_point():
        # Counters (e.g. BatchNorm's num_batches_tracked) have no meaningful mean:
        # take the heaviest client's (the first on ties).
        return tensors[int(np.argmax(w))].detach().clone()
    with torch.no_grad():
        acc = torch.zeros(first.shape, dtype=torch.float64)
        for t, wi in zip(tensors, w):
            acc += float(wi) * t.detach().to(torch.float64)
        return acc.to(first.dtype)


def weighted_average(states: Sequence[State], weights: Sequence[float] | np.ndarray) -> dict[str, torch.Tensor]:
    """sum_i w_i * state_i / sum_i w_i, key by key (all states must have the same keys)."""
    w = normalized_weights(weights, len(states))
    keys = list(states[0].keys())
    for s in states[1:]:
        if set(s) != set(keys):
            raise ValueError(f"state dicts have different keys: {sorted(set(s) ^ set(keys))}")
    return {key: average_tensors([s[key] for s in states], w) for key in keys}


def fedavg(states: Sequence[State], num_samples: Sequence[int]) -> dict[str, torch.Tensor]:
    """FedAvg: average weighted by the number of local training samples."""
    return weighted_average(states, np.asarray(num_samples, dtype=np.float64))
