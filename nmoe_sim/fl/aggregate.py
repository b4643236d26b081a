"""Aggregation math (pure): weighted parameter averaging, as in FedAvg (McMahan et al., 2017)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

State = Mapping[str, torch.Tensor]


def weighted_average(states: Sequence[State], weights: Sequence[float] | np.ndarray,
                     keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """sum_i w_i * state_i / sum_i w_i over ``keys`` (all keys by default).

    All-zero weights fall back to the plain mean, so an expert that was held but never used
    still averages instead of dividing by zero.
    """
    if len(states) == 0:
        raise ValueError("weighted_average needs at least one state")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(states),):
        raise ValueError(f"{len(states)} states but {w.size} weights")
    if np.any(w < 0):
        raise ValueError("weights must be non-negative")
    w = np.full(len(states), 1.0 / len(states)) if w.sum() == 0 else w / w.sum()
    names = list(states[0].keys()) if keys is None else list(keys)
    out: dict[str, torch.Tensor] = {}
    for name in names:
        acc = torch.zeros_like(states[0][name], dtype=torch.float64)
        for wi, st in zip(w, states):
            acc += float(wi) * st[name].to(torch.float64)
        out[name] = acc.to(states[0][name].dtype)
    return out


def fedavg(states: Sequence[State], num_samples: Sequence[int]) -> dict[str, torch.Tensor]:
    """FedAvg: average weighted by the number of local training samples."""
    return weighted_average(states, np.asarray(num_samples, dtype=np.float64))
