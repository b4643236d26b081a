"""Data that stays on the ray executor's workers: a tensor is sent to a worker once, then named.

A round's tasks carry their client's data (``x``, ``y``, per-sample ``aux``), which does
not change from round to round, next to a start state that does. Sending the data with
every task would move a dataset per round; instead each worker keeps what it was sent,
and the driver mirrors what each worker holds (:class:`Holdings`), so a task whose data a
worker already has carries only the data's key. A task goes to the worker that holds its
data (its *home*); tasks whose data no worker holds yet are spread by FLOPs, as the
batched executor's shards are. Homes are sticky, so over a run each client's data lives on
one worker: with partial participation shards are balanced only in expectation.

Keys are content digests (dtype, shape and bytes), cached per tensor object and its
version counter, so an in-place change of a tensor gives a new key and two equal tensors
share one. Nothing here imports Ray: the protocol is plain data, tested without a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from nmoe_sim.engine.tasks import TrainTask

# What a worker may hold before the driver tells it to drop its least recently used data
# (data a shard needs now is never dropped for it). Fashion-MNIST's 60,000 training images
# are 188 MB as float32, so this holds several stages' worth of every client's inputs.
HELD_BYTES_PER_WORKER = 2 * 2**30


@dataclass(frozen=True)
class Held:
    """A tensor the worker already holds (or receives in the same shard), by key."""

    key: str


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class TensorKeys:
    """Content keys of tensors, each computed once per tensor object and version."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[weakref.ref[torch.Tensor], int, str]] = {}

    def key(self, t: torch.Tensor) -> str:
        hit = self._seen.get(id(t))
        if hit is not None and hit[0]() is t and hit[1] == t._version:
            return hit[2]
        flat = t.detach().cpu().contiguous().reshape(-1)
        h = hashlib.blake2b(f"{t.dtype}|{tuple(t.shape)}|".encode(), digest_size=16)
        h.update(memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else b"")
        key = h.hexdigest()
        if len(self._seen) > 4096:  # forget tensors that are gone
            self._seen = {i: e for i, e in self._seen.items() if e[0]() is not None}
        self._seen[id(t)] = (weakref.ref(t), t._version, key)
        return key


def data_of(task: TrainTask) -> dict[str, torch.Tensor]:
    """The task's data tensors by field: ``x``, ``y`` and ``aux.<name>`` (the first is its home's)."""
    return {"x": task.x, "y": task.y, **{f"aux.{k}": v for k, v in task.aux.items()}}


def with_data(task: TrainTask, data: dict[str, Any]) -> TrainTask:
    """``task`` with its data fields replaced (by :class:`Held` keys, or back by tensors)."""
    aux = {k[len("aux."):]: v for k, v in data.items() if k.startswith("aux.")}
    return dataclasses.replace(task, x=data["x"], y=data["y"], aux=aux)


@dataclass
class Shard:
    """One worker's part of a gather: its tasks with their data by key, the data it lacks,
    what to forget first, and (for an averaged gather) each task's weight and place in the
    average, or None where the task is not averaged."""

    tasks: list[TrainTask]
    puts: dict[str, torch.Tensor] = field(default_factory=dict)
    drops: list[str] = field(default_factory=list)
    weights: list[tuple[float, int] | None] | None = None


class Holdings:
    """The driver's mirror of what each worker holds, least recently used first."""

    def __init__(self, workers: int, budget_bytes: int = HELD_BYTES_PER_WORKER) -> None:
        self.held: list[OrderedDict[str, int]] = [OrderedDict() for _ in range(workers)]
        self.budget_bytes = budget_bytes
        self.keys = TensorKeys()

    @property
    def workers(self) -> int:
        return len(self.held)

    def home(self, key: str) -> int | None:
        return next((w for w, held in enumerate(self.held) if key in held), None)

    def place(self, tasks: Sequence[TrainTask]) -> list[list[int]]:
        """Task indices per worker: each task to the worker holding its inputs, the others
        (largest first) to the least loaded by FLOPs. Every worker's list, empty ones too."""
        load = [0.0] * self.workers
        out: list[list[int]] = [[] for _ in range(self.workers)]
        homeless = []
        for i, t in enumerate(tasks):
            w = self.home(self.keys.key(t.x))
            if w is None:
                homeless.append(i)
            else:
                out[w].append(i)
                load[w] += t.flops
        for i in sorted(homeless, key=lambda i: -tasks[i].flops):
            w = min(range(self.workers), key=lambda w: load[w])
            out[w].append(i)
            load[w] += tasks[i].flops
        return [sorted(part) for part in out]

    def encode(self, worker: int, tasks: Sequence[TrainTask]) -> Shard:
        """The shard for ``worker``: data it holds named, data it lacks attached (and from
        now on counted as held there), least recently used data dropped over the budget."""
        held, shard = self.held[worker], Shard([])
        for task in tasks:
            named: dict[str, Any] = {}
            for name, t in data_of(task).items():
                key = self.keys.key(t)
                if key not in held and key not in shard.puts:
                    shard.puts[key] = t
                held[key] = nbytes(t)
                held.move_to_end(key)
                named[name] = Held(key)
            shard.tasks.append(with_data(task, named))
        needed = {h.key for t in shard.tasks for h in data_of(t).values()}  # type: ignore[union-attr]
        total = sum(held.values())
        for key in list(held):
            if total <= self.budget_bytes:
                break
            if key not in needed:
                total -= held.pop(key)
                shard.drops.append(key)
        return shard

    def forget(self) -> None:
        """Workers lost (restarted): nothing is held anywhere any more."""
        for held in self.held:
            held.clear()


def decode(shard: Shard, cache: dict[str, torch.Tensor]) -> list[TrainTask]:
    """On the worker: update its ``cache`` as the shard says, and the tasks with their data."""
    for key in shard.drops:
        cache.pop(key, None)
    cache.update(shard.puts)
    return [with_data(t, {name: cache[h.key] for name, h in data_of(t).items()})  # type: ignore[union-attr]
            for t in shard.tasks]
