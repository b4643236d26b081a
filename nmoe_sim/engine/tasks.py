"""A local computation as a value: what it starts from, on which data, in which order.

A :class:`TrainTask` says everything an executor needs and nothing about how to run it:
the architecture (a template module, never trained in), the parameters it starts from,
the client's data, the minibatch plan drawn in advance from that client's own generator,
a registered pure loss, the optimiser's hyper-parameters, and the FLOPs and upload size,
both known before it runs. :func:`execute` is the reference way to run one (one task at a
time in a module the caller owns); other executors must give the same result within
float tolerance. Algorithms build tasks and read results; they never train inside shared
modules while a client computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

import torch
from torch import nn
from torch.nn import functional as F

from nmoe_sim.fl.train import run_plan
from nmoe_sim.registry import Registry

State = dict[str, torch.Tensor]
# A pure loss: (module in train mode, inputs of the batch, targets of the batch) -> scalar.
Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[Loss] = Registry("loss")


@LOSSES.register("cross_entropy")
def cross_entropy(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(module(x), y)


def draw_plan(n: int, epochs: int, batch_size: int, gen: torch.Generator) -> tuple[tuple[torch.Tensor, ...], ...]:
    """Per epoch, shuffled index batches covering ``n`` samples once (the last may be short).

    Drawn in advance, one permutation per epoch in order, from the client's generator: the
    same draws a loop shuffling at the start of each epoch makes, when nothing else draws
    from that generator in between.
    """
    plan = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        plan.append(tuple(order[i : i + batch_size] for i in range(0, n, batch_size)))
    return tuple(plan)


@dataclass(frozen=True, eq=False)
class TrainTask:
    """Minibatch SGD of ``template``'s architecture from ``start`` on (x, y), along ``plan``."""

    client: int
    node: Hashable  # where it runs, and is charged
    template: nn.Module  # the architecture; read only (executors copy it)
    start: State  # parameters and buffers to start from; read only
    x: torch.Tensor  # (n, ...) the client's inputs
    y: torch.Tensor  # (n,)
    plan: tuple[tuple[torch.Tensor, ...], ...]  # per epoch, the index batches in order
    loss: str  # a LOSSES name
    lr: float
    momentum: float
    weight_decay: float
    flops: float  # charged as flops / the node's FLOP/s
    upload_bytes: int

    @property
    def num_samples(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class TaskResult:
    client: int
    state: State  # the trained parameters and buffers
    num_samples: int
    upload_bytes: int
    loss: float  # mean loss over the last epoch


def execute(task: TrainTask, module: nn.Module) -> TaskResult:
    """Run ``task`` in ``module`` (the caller's, of the template's architecture)."""
    module.load_state_dict(task.start)
    loss_of = LOSSES.get(task.loss, "loss")
    opt = torch.optim.SGD(list(module.parameters()), lr=task.lr, momentum=task.momentum,
                          weight_decay=task.weight_decay)
    last = run_plan(module, lambda idx: loss_of(module, task.x[idx], task.y[idx]), task.plan, opt)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return TaskResult(task.client, state, task.num_samples, task.upload_bytes, last)
