"""Local training loops (pure PyTorch, no simulated time): minibatch SGD with an injected generator."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
from torch import nn


def minibatches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches covering ``n`` samples once (the last batch may be short)."""
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def make_sgd(params: list[nn.Parameter], lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def run_plan(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    plan: Iterable[Iterable[torch.Tensor]],
    opt: torch.optim.Optimizer,
) -> float:
    """SGD on ``loss_fn(batch_indices)`` along ``plan`` (per epoch, its batches in order);
    returns the mean loss of the last epoch."""
    model.train()
    last = 0.0
    for epoch in plan:
        total, count = 0.0, 0
        for idx in epoch:
            loss = loss_fn(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        last = total / max(count, 1)
    return last


def run_epochs(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    *,
    epochs: int,
    batch_size: int,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
) -> float:
    """``epochs`` passes in an order shuffled at the start of each epoch (lazily: a loss that
    also draws from ``gen``, such as FedSC's views, interleaves with the shuffles)."""
    return run_plan(model, loss_fn, (minibatches(n, batch_size, gen) for _ in range(epochs)), opt)


@torch.no_grad()
def predict_batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Apply ``fn`` in eval batches (bounded memory on large query sets)."""
    if len(x) == 0:
        return fn(x)
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
