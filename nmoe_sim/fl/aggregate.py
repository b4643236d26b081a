"""Aggregation math (pure): weighted parameter averaging, as in FedAvg (McMahan et al., 2017).

One implementation serves every stage: FedAvg of the FE and gate (weighted by samples) and
the alignment system's per-expert averages (weighted by usage). Inputs are never modified
and outputs share no storage with them.
"""

from __future__ import annotations

from dataclasses import dataclass
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


# --------------------------------------------------------------------------- in parts
# A distributed executor averages where the states are: each worker sums its part of
# sum_i w_i t_i, and the caller adds the parts. w is normalized over every part beforehand,
# so the parts add up to what weighted_average computes, up to the order of the float64
# additions (which the cast back to float32 almost always hides).
@dataclass
class PartialSum:
    """One part of a weighted average: per floating key the float64 sum of w_i t_i over this
    part's states, per integer key its heaviest state's value (weight, position, value), since
    :func:`average_tensors` takes the heaviest state's counter (the first on ties)."""

    sums: dict[str, torch.Tensor]
    heaviest: dict[str, tuple[float, int, torch.Tensor]]
    dtypes: dict[str, torch.dtype]


def partial_weighted_sum(states: Sequence[State], w: Sequence[float], positions: Sequence[int]) -> PartialSum:
    """This part's share of the average: ``w`` already normalized over all parts; ``positions``
    are the states' places in the whole average's order (they break ties of counters)."""
    if not states:
        raise ValueError("a part of an average needs at least one state")
    sums: dict[str, torch.Tensor] = {}
    heaviest: dict[str, tuple[float, int, torch.Tensor]] = {}
    dtypes = {k: v.dtype for k, v in states[0].items()}
    with torch.no_grad():
        for key, first in states[0].items():
            if first.is_floating_point():
                acc = torch.zeros(first.shape, dtype=torch.float64)
                for s, wi in zip(states, w):
                    acc += float(wi) * s[key].detach().to(torch.float64)
                sums[key] = acc
            else:
                best = max(range(len(states)), key=lambda i: (w[i], -positions[i]))
                heaviest[key] = (float(w[best]), int(positions[best]), states[best][key].detach().clone())
    return PartialSum(sums, heaviest, dtypes)


def finish_weighted_sum(parts: Sequence[PartialSum]) -> dict[str, torch.Tensor]:
    """The weighted average from its parts (added in the order given), keys in the first
    part's order, each cast back to its dtype."""
    if not parts:
        raise ValueError("an average needs at least one part")
    out: dict[str, torch.Tensor] = {}
    for key, dtype in parts[0].dtypes.items():
        if key in parts[0].sums:
            acc = torch.zeros(parts[0].sums[key].shape, dtype=torch.float64)
            for p in parts:
                acc += p.sums[key]
            out[key] = acc.to(dtype)
        else:
            _, _, value = max((p.heaviest[key] for p in parts), key=lambda h: (h[0], -h[1]))
            out[key] = value
    return out
