"""Batched evaluation (pure PyTorch, no simulated time).

Training is not here: every local training loop is a described task run by an executor
(:mod:`nmoe_sim.engine.tasks`).
"""

from __future__ import annotations

from typing import Callable

import torch


@torch.no_grad()
def predict_batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Apply ``fn`` in eval batches (bounded memory on large query sets)."""
    if len(x) == 0:
        return fn(x)
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
