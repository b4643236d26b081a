"""Executors: the one interface through which local computation is asked for and charged.

Simulated time is charged as ``flops / flops_per_s`` of the node's device profile, never
host wall time, so results do not depend on the machine. Each node computes one job at a
time (a ``simpy.Resource`` of capacity 1): an expert that many clients query at once
queues them. Work comes in two forms: a described :class:`~nmoe_sim.engine.tasks.TrainTask`
(``run``), which the executor owns running, and, for work not yet described as a task, a
closure (``compute(fn=...)``). ``local``, the reference, runs each piece of real work on
the host the moment its simulated computation starts, one at a time.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Generator, Hashable, TypeVar

import simpy

from nmoe_sim.config import DeviceProfile
from nmoe_sim.engine.tasks import TaskResult, TrainTask, execute
from nmoe_sim.record import ComputeRecord, Recorder
from nmoe_sim.registry import Registry

T = TypeVar("T")


class LocalExecutor:
    """Charges compute to ``system``'s records; ``infrastructure`` nodes' energy is not a battery's.

    Tasks run one at a time in a scratch copy of their template that this executor owns
    (one per architecture), so no algorithm's module is ever trained in.
    """

    def __init__(self, env: simpy.Environment, profiles: dict[Hashable, DeviceProfile], recorder: Recorder,
                 *, system: str, infrastructure: frozenset[Hashable] = frozenset()) -> None:
        self.env = env
        self.profiles = profiles
        self.recorder = recorder
        self.system = system
        self.infrastructure = infrastructure
        self._cpu = {node: simpy.Resource(env, capacity=1) for node in profiles}
        self._scratch: dict[int, Any] = {}  # id(template) -> this executor's copy

    def run(self, task: TrainTask, *, stage: str, tag: str) -> simpy.Process:
        """Charge ``task.flops`` on ``task.node`` and run the task; the value is a TaskResult."""
        return self.compute(task.node, task.flops, stage=stage, tag=tag, fn=lambda: self._execute(task))

    def _execute(self, task: TrainTask) -> TaskResult:
        key = id(task.template)
        if key not in self._scratch:
            self._scratch[key] = (task.template, copy.deepcopy(task.template))  # keep the template alive
        return execute(task, self._scratch[key][1])

    def compute_time_s(self, node: Hashable, flops: float) -> float:
        return flops / self.profiles[node].flops_per_s

    def compute(
        self, node: Hashable, flops: float, *, stage: str, tag: str, fn: Callable[[], T] | None = None
    ) -> simpy.Process:
        """Run ``fn`` (real work) and charge ``flops`` on ``node``; the process value is fn's result."""
        return self.env.process(self._run(node, flops, stage, tag, fn))

    def _run(self, node: Hashable, flops: float, stage: str, tag: str,
             fn: Callable[[], Any] | None) -> Generator[simpy.Event, Any, Any]:
        with self._cpu[node].request() as slot:
            yield slot
            start_s = self.env.now
            result = fn() if fn is not None else None
            duration_s = self.compute_time_s(node, flops)
            if duration_s > 0:
                yield self.env.timeout(duration_s)
            energy_j = self.profiles[node].compute_power_w * duration_s
            infra = node in self.infrastructure
            self.recorder.add(ComputeRecord(
                self.system, stage, tag, str(node), float(flops), start_s, self.env.now, energy_j,
                device_energy_j=0.0 if infra else energy_j, infrastructure_energy_j=energy_j if infra else 0.0))
        return result


# runtime.executor -> the executor class each Sim builds.
EXECUTORS: Registry[type[LocalExecutor]] = Registry("executor")
EXECUTORS.register("local")(LocalExecutor)
