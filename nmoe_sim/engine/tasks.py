"""A local computation as a value: what it starts from, on which data, in which order.

A :class:`TrainTask` says everything an executor needs and nothing about how to run it:
the architecture (a template module, never trained in), the parameters it starts from,
the client's data, the minibatch plan drawn in advance from that client's own generator
(with any per-batch random draws the loss needs, such as FedSC's view seeds or the gate's
noise), a registered pure loss (:mod:`nmoe_sim.engine.losses`) and its constant arguments,
the optimiser's hyper-parameters, and the FLOPs and upload size, both known before it
runs. :func:`execute` is the reference way to run one (in a module the caller owns);
other executors must give the same result within float tolerance. Algorithms build tasks
and read results; they never train inside shared modules while a client computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping

import torch
from torch import nn

from nmoe_sim.engine.losses import LOSSES, REPORTS, Batch

State = dict[str, torch.Tensor]
Plan = tuple[tuple[torch.Tensor, ...], ...]  # per epoch, the index batches in order
# (batch size, the client's generator) -> what the loss of that batch needs drawn
BatchDraw = Callable[[int, torch.Generator], Any]


def plan_samples(plan: Plan) -> int:
    """Samples a plan trains on, counted once per epoch that visits them: what its FLOPs are."""
    return sum(len(idx) for epoch in plan for idx in epoch)


def clone_state(state: State) -> State:
    """A detached copy of a state dict: a task's start, or what a result leaves behind."""
    return {k: v.detach().clone() for k, v in state.items()}


def draw_plan(n: int, epochs: int, batch_size: int, gen: torch.Generator,
              per_batch: BatchDraw | None = None,
              max_steps: int | None = None) -> tuple[Plan, tuple[tuple[Any, ...], ...] | None]:
    """Per epoch, shuffled index batches covering ``n`` samples once (the last may be short),
    and per batch what ``per_batch`` draws for it (None without one); with ``max_steps``,
    only the first ``max_steps`` batches of that sequence (a round of a few local steps).

    Drawn in advance from the client's generator in the order a training loop would draw
    them: one permutation at the start of each epoch, then each batch's own draws before the
    next batch. So a task planned here consumes the stream exactly as a loop that shuffles
    and draws in place does (and stops after ``max_steps``), and the generator ends where
    that loop would leave it.
    """
    plan: list[tuple[torch.Tensor, ...]] = []
    draws: list[tuple[Any, ...]] = []
    steps = 0
    for _ in range(epochs):
        if max_steps is not None and steps >= max_steps:
            break
        order = torch.randperm(n, generator=gen)
        batches = tuple(order[i : i + batch_size] for i in range(0, n, batch_size))
        if max_steps is not None:
            batches = batches[: max_steps - steps]
        steps += len(batches)
        plan.append(batches)
        if per_batch is not None:
            draws.append(tuple(per_batch(len(idx), gen) for idx in batches))
    return tuple(plan), (tuple(draws) if per_batch is not None else None)


@dataclass(frozen=True, eq=False)
class TrainTask:
    """Minibatch SGD of ``template``'s architecture from ``start`` on (x, y), along ``plan``."""

    client: int | None  # whose work it is (None: the server's own, e.g. the centralized baseline)
    node: Hashable  # where it runs, and is charged
    template: nn.Module  # the architecture; read only (executors copy it)
    start: State  # parameters and buffers to start from; read only
    x: torch.Tensor  # (n, ...) the client's inputs
    y: torch.Tensor  # (n,)
    plan: Plan
    loss: str  # a LOSSES name
    lr: float
    momentum: float
    weight_decay: float
    flops: float  # charged as flops / the node's FLOP/s
    upload_bytes: int
    draws: tuple[tuple[Any, ...], ...] | None = None  # per epoch and batch, the loss's random draws
    aux: Mapping[str, torch.Tensor] = field(default_factory=dict)  # per-sample extras, indexed like x
    args: Mapping[str, Any] = field(default_factory=dict)  # the loss's constant arguments
    report: str | None = None  # a REPORTS name, measured on the trained module
    grad_clip_norm: float | None = None  # rescale each step's gradient to at most this total norm

    @property
    def num_samples(self) -> int:
        return int(self.y.shape[0])

    @property
    def tensor_bytes(self) -> int:
        """Bytes of the tensors the task carries (start state, data, extras, tensor arguments
        one level deep) plus the state it returns: what handing it to another process moves."""
        def size(v: Any) -> int:
            if isinstance(v, torch.Tensor):
                return v.numel() * v.element_size()
            if isinstance(v, Mapping):
                return sum(size(u) for u in v.values() if isinstance(u, torch.Tensor))
            return 0

        state = sum(size(v) for v in self.start.values())
        return 2 * state + size(self.x) + size(self.y) + sum(size(v) for v in self.aux.values()) + sum(
            size(v) for v in self.args.values())


@dataclass(frozen=True)
class TaskResult:
    client: int | None
    state: State  # the trained parameters and buffers
    num_samples: int
    upload_bytes: int
    loss: float  # mean loss over the last epoch
    stat: torch.Tensor | None = None  # the loss's statistic, sample-weighted over the last epoch
    report: Any = None  # what the task's report measured after training
    # Where the state was left out (averaged where the task ran, executors.gather_mean): the
    # first of its floating tensors that held NaN or inf there, or None.
    nonfinite: str | None = None


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t if t.device == device else t.to(device)


def execute(task: TrainTask, module: nn.Module, device: torch.device | str = "cpu") -> TaskResult:
    """Run ``task`` in ``module`` (the caller's, of the template's architecture) on ``device``.

    The result's tensors are on the CPU whatever the device.
    """
    device = torch.device(device)
    module.to(device)
    module.load_state_dict(task.start)
    loss_of = LOSSES.get(task.loss, "loss")
    x, y = _to(task.x, device), _to(task.y, device)
    aux = {k: _to(v, device) for k, v in task.aux.items()}
    opt = torch.optim.SGD(list(module.parameters()), lr=task.lr, momentum=task.momentum,
                          weight_decay=task.weight_decay)
    module.train()
    last, stats, count = 0.0, [], 0
    for e, epoch in enumerate(task.plan):
        total, count, stats = 0.0, 0, []
        for b, idx in enumerate(epoch):
            draw = task.draws[e][b] if task.draws is not None else None
            idx_d = _to(idx, device)
            out = loss_of(module, Batch(x[idx_d], y[idx_d], {k: v[idx_d] for k, v in aux.items()}, draw, task.args))
            loss, stat = out if isinstance(out, tuple) else (out, None)
            if stat is not None:
                stats.append(stat * len(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if task.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), task.grad_clip_norm)
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        last = total / max(count, 1)
    # Over the samples the last epoch visited: all of them, unless the plan stops early.
    stat_mean = torch.stack(stats).sum(0).cpu() / count if stats else None
    report = None
    if task.report is not None:
        module.eval()
        with torch.no_grad():
            report = REPORTS.get(task.report, "report")(module, task)
    state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    return TaskResult(task.client, state, task.num_samples, task.upload_bytes, last, stat_mean, report)
