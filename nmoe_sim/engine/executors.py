"""Executors: the one interface through which local computation is asked for and charged.

Simulated time is charged as ``flops / flops_per_s`` of the node's device profile, never
host wall time, so results do not depend on the machine or the executor. Each node
computes one job at a time (a ``simpy.Resource`` of capacity 1): an expert that many
clients query at once queues them.

Work comes in two forms. A described :class:`~nmoe_sim.engine.tasks.TrainTask` is
``submit``-ted: the returned :class:`Job` is charged on its node in simulated time, and
its real result is asked for later with ``gather`` (typically when a round closes). Since
a task's FLOPs and upload size are known before it runs, the simulation never waits on
the host, and an executor is free to run a whole round's tasks together. Work not
described as a task (feature extraction, expert evaluation, serving a query) is a closure
run the moment its simulated computation starts (``compute(fn=...)``).

* ``local``, the reference: ``gather`` runs the jobs one at a time, in order, in this
  process.
* ``batched``: ``gather`` runs the jobs of one call together, sharded over one worker
  process per core (:mod:`nmoe_sim.engine.pool`); ``benchmarks/batching_options.py``
  measured this fastest here of the ways to batch (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generator, Hashable, Iterator, Sequence, TypeVar

import simpy
import torch

from nmoe_sim.config import DeviceProfile, RuntimeConfig
from nmoe_sim.engine.tasks import State, TaskResult, TrainTask, execute
from nmoe_sim.errors import TrainingDiverged
from nmoe_sim.fl.aggregate import fedavg
from nmoe_sim.record import ComputeRecord, Recorder
from nmoe_sim.registry import Registry

if TYPE_CHECKING:
    from nmoe_sim.engine.faults import FaultState

T = TypeVar("T")


@dataclass(eq=False)
class Job:
    """A submitted task: ``charged`` is the SimPy process of its simulated computation."""

    task: TrainTask
    charged: simpy.Process | None = None
    started: bool = False  # the node began computing it (a job interrupted later still ran)
    aborted: bool = False  # its node crashed while computing it (injected faults): no result
    result: TaskResult | None = field(default=None, repr=False)
    stage: str = ""  # what submitted it, for error messages
    tag: str = ""


class LocalExecutor:
    """Charges compute to ``system``'s records; ``infrastructure`` nodes' energy is not a battery's.

    Tasks run one at a time in a scratch copy of their template that this executor owns
    (one per architecture), so no algorithm's module is ever trained in.
    """

    def __init__(self, env: simpy.Environment, profiles: dict[Hashable, DeviceProfile], recorder: Recorder,
                 *, system: str, infrastructure: frozenset[Hashable] = frozenset(),
                 runtime: RuntimeConfig | None = None) -> None:
        self.env = env
        self.profiles = profiles
        self.recorder = recorder
        self.system = system
        self.infrastructure = infrastructure
        self.runtime = runtime or RuntimeConfig()
        self.device = torch.device(self.runtime.device)
        self._cpu = {node: simpy.Resource(env, capacity=1) for node in profiles}
        self._scratch: dict[int, Any] = {}  # id(template) -> (template, this executor's copy)
        self.faults: FaultState | None = None  # the Sim's, where the scenario injects faults

    # ------------------------------------------------------------------ described tasks
    def submit(self, task: TrainTask, *, stage: str, tag: str) -> Job:
        """Charge ``task.flops`` on ``task.node``; the real work waits for ``gather``."""
        job = Job(task, stage=stage, tag=tag)

        def started() -> None:
            job.started = True

        job.charged = self.env.process(self._run(task.node, task.flops, stage, tag, started, job))
        return job

    def gather(self, jobs: Sequence[Job]) -> list[TaskResult]:
        """The results of ``jobs`` (each must have started), running those not yet run."""
        if not all(j.started for j in jobs):
            raise RuntimeError("gather() of a job whose computation never started")
        todo = [j for j in jobs if j.result is None]
        for job, result in zip(todo, self._execute_all([j.task for j in todo])):
            job.result = result
        for job in todo:
            check_finite_loss(job)
        return [j.result for j in jobs]  # type: ignore[misc]

    def gather_mean(self, jobs: Sequence[Job], members: Sequence[int]) -> tuple[list[TaskResult], State | None]:
        """:meth:`gather`, and the FedAvg of the trained states of ``jobs[i]`` for ``i`` in
        ``members`` (weighted by their samples, in that order; None without members).

        For an algorithm whose aggregate reads nothing of the states but that mean: an
        executor running tasks elsewhere (``ray``) reduces it where they ran and returns
        results whose states are left out. Here it is :func:`~nmoe_sim.fl.aggregate.fedavg`
        of the states, exactly what such an aggregate computed before.
        """
        results = self.gather(jobs)
        if not members:
            return results, None
        return results, fedavg([results[i].state for i in members], [results[i].num_samples for i in members])

    def _execute_all(self, tasks: Sequence[TrainTask]) -> list[TaskResult]:
        return [self._execute(t) for t in tasks]

    def _execute(self, task: TrainTask) -> TaskResult:
        key = id(task.template)
        if key not in self._scratch:
            self._scratch[key] = (task.template, copy.deepcopy(task.template))  # keep the template alive
        return execute(task, self._scratch[key][1], self.device)

    # ------------------------------------------------------------------ closures
    def compute_time_s(self, node: Hashable, flops: float) -> float:
        return flops / self.profiles[node].flops_per_s

    def compute(
        self, node: Hashable, flops: float, *, stage: str, tag: str, fn: Callable[[], T] | None = None
    ) -> simpy.Process:
        """Run ``fn`` (real work) and charge ``flops`` on ``node``; the process value is fn's result."""
        return self.env.process(self._run(node, flops, stage, tag, fn))

    def _run(self, node: Hashable, flops: float, stage: str, tag: str,
             fn: Callable[[], Any] | None, job: Job | None = None) -> Generator[simpy.Event, Any, Any]:
        if self.faults is not None:
            return (yield from self._run_faulty(node, flops, stage, tag, fn, job))
        with self._cpu[node].request() as slot:
            yield slot
            start_s = self.env.now
            result = fn() if fn is not None else None
            duration_s = self.compute_time_s(node, flops)
            if duration_s > 0:
                yield self.env.timeout(duration_s)
            self._charge(node, flops, stage, tag, start_s, duration_s)
        return result

    def _charge(self, node: Hashable, flops: float, stage: str, tag: str, start_s: float,
                duration_s: float) -> None:
        energy_j = self.profiles[node].compute_power_w * duration_s
        infra = node in self.infrastructure
        self.recorder.add(ComputeRecord(
            self.system, stage, tag, str(node), float(flops), start_s, self.env.now, energy_j,
            device_energy_j=0.0 if infra else energy_j, infrastructure_energy_j=energy_j if infra else 0.0))

    def _run_faulty(self, node: Hashable, flops: float, stage: str, tag: str,
                    fn: Callable[[], Any] | None, job: Job | None) -> Generator[simpy.Event, Any, Any]:
        """:meth:`_run` under injected faults (engine/faults.py): a straggler's slowdown
        applies to computations that start inside its interval, and a crashed node computes
        nothing.

        A computation that would start while its node is down (crashed before its turn, or
        its turn coming while the node is down) does not run: ``fn`` is not called, nothing
        is charged, a task's job is marked aborted. A crash during the computation stops it
        (charged up to the crash). Either way the process's value is None and a task leaves
        no result: a device that did not finish its work has nothing to hand on, so callers
        that need the output (``fn`` returning something) read None as "not computed".
        """
        faults, me = self.faults, self.env.active_process
        assert faults is not None  # _run takes this path only with faults
        faults.watch(node, me)
        result = None
        try:
            with self._cpu[node].request() as slot:
                try:
                    yield slot
                except simpy.Interrupt:  # crashed while waiting for its turn: nothing ran
                    if job is not None:
                        job.aborted = True
                    return None
                if faults.crashed[node]:  # its turn came while the node is down: refused
                    if job is not None:
                        job.aborted = True
                    return None
                start_s = self.env.now
                result = fn() if fn is not None else None  # a task's fn marks its job started
                faults.stage = stage
                duration_s = planned_s = faults.compute_time_s(node, flops, self.profiles[node].flops_per_s)
                try:
                    if duration_s > 0:
                        yield self.env.timeout(duration_s)
                except simpy.Interrupt:  # the node crashed: charge the part it computed
                    duration_s = self.env.now - start_s
                    flops = flops * duration_s / planned_s
                    result = None
                    if job is not None:
                        job.aborted = True
                self._charge(node, flops, stage, tag, start_s, duration_s)
        finally:
            faults.unwatch(node, me)
        return result


_CORES_LIMIT: int | None = None  # set by limited_cores: this process's share of a shared machine


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count), at
    most its share while :func:`limited_cores` holds."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if _CORES_LIMIT is None else max(1, min(cores, _CORES_LIMIT))


@contextlib.contextmanager
def limited_cores(n: int) -> Iterator[None]:
    """``runtime.workers: auto`` and ``torch_threads: auto`` count ``n`` cores in the block: a
    sweep point run as a Ray task that was given n CPUs of a node must not fork a pool over
    every core the node has (its affinity mask) while other points run beside it."""
    global _CORES_LIMIT
    before, _CORES_LIMIT = _CORES_LIMIT, n
    try:
        yield
    finally:
        _CORES_LIMIT = before


def worker_count(runtime: RuntimeConfig) -> int:
    """``runtime.workers``: a count, or ``auto`` for one per available core."""
    return available_cores() if runtime.workers == "auto" else int(runtime.workers)


# Intra-op threads pay from about this many training FLOPs per SGD step on this 2-core
# machine: measured 1 vs 2 threads, the digits FE (8x8 inputs) ran 0.3-0.5x as fast with 2
# threads at batch 32-64 (about 20 MFLOP a step) and 1.4x at batch 256; every 28x28 and
# 32x32 FE measured 1.5-1.8x from batch 32 (200 MFLOP a step and more).
AUTO_THREADS_MIN_STEP_FLOPS = 5e7


def auto_torch_threads(cfg: Any, input_shape: tuple[int, int, int]) -> int:
    """``runtime.torch_threads: auto``: every core when a stage-1 step of the scenario's FE is
    large enough for threads to pay, else 1."""
    from nmoe_sim.models import FeatureExtractor, train_flops_per_sample

    with torch.random.fork_rng(devices=[]):  # a throw-away model must not move the global RNG
        fe = FeatureExtractor(input_shape, cfg.model.fe_channels, cfg.model.feature_dim, cfg.model.fe_norm)
    step = train_flops_per_sample(fe, input_shape) * cfg.stage1.batch_size
    return available_cores() if step >= AUTO_THREADS_MIN_STEP_FLOPS else 1


# Below this many training FLOPs per byte a gather moves (tasks there, states back) the
# pool stops paying: pickling and copying cost what the second core wins. Measured with one
# round of FedGate's Ditto gate tasks (Fashion-MNIST scenario, 60 samples a client, gates
# over n experts: about 32 FLOP/byte), through two workers against here: on a quiet
# machine even (300 clients 0.99 against 1.00 s, 1,000 clients 6.09 against 6.27 s); with
# other jobs on the cores the pool loses (300 clients 5.1 against 1.9 s, 1,000 clients
# 30.4 against 12.5 s), since its workers wait for a core and the hand-over is extra work.
# The quickstart's gates (93 FLOP/byte) are even on a quiet machine (0.09-0.10 s either
# way); at 371 the pool wins a little (0.30 against 0.35 s). Every FE task measured is
# above 700 (FedSC, 1,100 in the quickstart) and keeps the pool.
POOL_MIN_FLOPS_PER_BYTE = 150.0


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class BatchedExecutor(LocalExecutor):
    """Runs each gather's tasks together, sharded over one single-threaded worker per core.

    Tasks are pure functions of their inputs, and every worker runs them with the same
    reference :func:`~nmoe_sim.engine.tasks.execute` at one thread, so results equal the
    local executor's at ``torch_threads: 1`` (the golden results hold under both). On a
    GPU the tasks run in this process, one after another, on the device.
    """

    def _execute_all(self, tasks: Sequence[TrainTask]) -> list[TaskResult]:
        if not self._shardable(tasks):
            return super()._execute_all(tasks)
        if self._light(tasks):
            # Too little work for what the hand-over moves: run here, at the workers' one
            # thread, so that the bits are the same whichever side runs a task.
            with torch_threads(1):
                return super()._execute_all(tasks)
        return self._run_sharded(tasks)

    def _shardable(self, tasks: Sequence[TrainTask]) -> bool:
        """Whether a gather could use workers at all: on the CPU, two workers and two tasks."""
        return self.device.type == "cpu" and worker_count(self.runtime) >= 2 and len(tasks) >= 2

    @staticmethod
    def _light(tasks: Sequence[TrainTask]) -> bool:
        return sum(t.flops for t in tasks) < POOL_MIN_FLOPS_PER_BYTE * sum(t.tensor_bytes for t in tasks)

    def _run_sharded(self, tasks: Sequence[TrainTask]) -> list[TaskResult]:
        from nmoe_sim.engine.pool import run_sharded

        return run_sharded(tasks, worker_count(self.runtime))


def check_finite_loss(job: Job) -> None:
    """Stop the run when a task's training diverged: a NaN or infinite loss or parameter
    would otherwise be averaged into the global model and every later number would be
    meaningless.

    Reads what the task already returned to the host: its loss (the last epoch's mean; a
    non-finite step makes it non-finite, since NaN and inf propagate through the sum) and
    its trained state (already copied to the CPU), which also catches a last step that
    blew the parameters up after its loss was taken. No extra device sync.
    """
    assert job.result is not None
    loss = job.result.loss
    bad = None if math.isfinite(loss) else f"the training loss of {{who}} became {loss}"
    if bad is None:
        # A state reduced where it ran was checked there (TaskResult.nonfinite).
        name = job.result.nonfinite or nonfinite_param(job.result.state)
        if name is not None:
            bad = f"{{who}}'s trained parameter {name} holds NaN or inf"
    if bad is not None:
        who = "the server" if job.task.client is None else f"client {job.task.client}"
        raise TrainingDiverged(f"{job.stage} {job.tag}: {bad.format(who=who)} (training diverged); "
                               "lower that stage's lr or set its grad_clip_norm")


def nonfinite_param(state: State) -> str | None:
    """The first floating tensor of ``state`` holding NaN or inf, by name; None when all are finite."""
    for name, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


# runtime.executor -> the executor class each Sim builds (ray: imported when asked for, so
# that nothing but a run that uses it needs Ray installed).
EXECUTORS: Registry[type[LocalExecutor]] = Registry("executor")
EXECUTORS.register("local")(LocalExecutor)
EXECUTORS.register("batched")(BatchedExecutor)
EXECUTORS.register_lazy("ray", "nmoe_sim.engine.ray_executor:RayExecutor")
