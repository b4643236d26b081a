"""The batched executor's worker processes: one per core, one torch thread each.

Why processes and not ``vmap``: on this 2-core CPU, ``benchmarks/batching_options.py``
measured ``vmap`` over stacked client parameters at 0.77x a plain loop (its convolutions
become grouped convolutions), unfold + batched matmul at 0.55x, channels-last at 1.22x,
and one single-threaded worker per core taking a shard of the clients at 2.35x: PyTorch's
intra-op threads pay little on a small CNN, independent processes pay fully.

The pool is started on first use and kept for the life of the process: a sweep or a run
of several systems pays its start-up once. On Linux the workers are forked, as
PyTorch's DataLoader forks its workers, each set to one thread: they start in
milliseconds with everything imported, and a user's script needs no ``__main__`` guard
(spawned workers re-import the script that started them). Elsewhere they are spawned.
Each shard travels as one plain pickle, by value (see ``_run_shard``).
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import pickle
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence

import torch

from nmoe_sim.engine.tasks import TaskResult, TrainTask, execute

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_POOL: ProcessPoolExecutor | None = None
_POOL_SIZE = 0


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group: the run (the parent) handles it, saving its
    # status; a worker printing its own KeyboardInterrupt traceback would only add noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A run killed outright (SIGKILL) cannot shut its pool down: on Linux, ask the kernel to
    # end each worker with its parent, so none lingers holding the run's pipes open.
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # no prctl here: workers of a killed run outlive it until ended by hand
    prepare_worker()


def prepare_worker() -> None:
    """What every worker of every executor does first (the pool's and the ray executor's
    actors): one torch thread, so its results are the reference's bits at one thread, and
    every loss and report a task may name registered."""
    torch.set_num_threads(1)
    import nmoe_sim.engine.losses  # noqa: F401


def run_tasks(tasks: Sequence[TrainTask]) -> list[TaskResult]:
    """A worker's shard, in order, each task trained in its own template: the caller's
    unpickled copy, which no other process shares."""
    return [execute(t, t.template) for t in tasks]


def _run_shard(payload: bytes) -> bytes:
    # Tasks travel as plain pickles, by value: multiprocessing's own pickler would hand
    # torch tensors over as shared memory, so two workers training "their" copy of one
    # template would write the same parameters (and every tensor would hold a file
    # descriptor). Unpickled here, the templates are this worker's own: train in them.
    tasks: list[TrainTask] = pickle.loads(payload)
    return pickle.dumps(run_tasks(tasks), protocol=pickle.HIGHEST_PROTOCOL)


def _pool(workers: int) -> ProcessPoolExecutor:
    global _POOL, _POOL_SIZE
    if _POOL is None or _POOL_SIZE != workers:
        shutdown()
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        _POOL = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                                    initializer=_init_worker)
        _POOL_SIZE = workers
    return _POOL


def shutdown() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=True, cancel_futures=True)
        _POOL = None


atexit.register(shutdown)


def shards(tasks: Sequence[TrainTask], workers: int) -> list[list[int]]:
    """Task indices per worker, balanced by FLOPs (largest first onto the least loaded)."""
    load = [0.0] * workers
    out: list[list[int]] = [[] for _ in range(workers)]
    for i in sorted(range(len(tasks)), key=lambda i: -tasks[i].flops):
        w = min(range(workers), key=lambda w: load[w])
        out[w].append(i)
        load[w] += tasks[i].flops
    return [sorted(s) for s in out if s]


def run_sharded(tasks: Sequence[TrainTask], workers: int) -> list[TaskResult]:
    """Run ``tasks`` over ``workers`` processes; results in the tasks' order."""
    pool = _pool(workers)
    parts = shards(tasks, workers)
    # One pickle per shard: a template or a start state its tasks share is sent once.
    futures = [pool.submit(_run_shard, pickle.dumps([tasks[i] for i in part], protocol=pickle.HIGHEST_PROTOCOL))
               for part in parts]
    results: list[TaskResult | None] = [None] * len(tasks)
    for part, fut in zip(parts, futures):
        for i, r in zip(part, pickle.loads(fut.result())):
            results[i] = r
    return results  # type: ignore[return-value]
