"""The generic federated round: broadcast -> local update -> upload -> aggregate.

An algorithm may add a *prelude* to its rounds: after the broadcast every participant
computes a statistic of the model it just downloaded and uploads it; once all have
arrived (or failed) the server combines them and sends each client its reply, and only
then does anyone train. FedSC's fresh correlation matrices need this barrier.

The driver owns timing, participation, deadlines and losses; an algorithm (a
:class:`RoundAlgorithm`) owns what is sent, what is computed and how results combine
(Flower's Strategy / Server.fit_round split). Failures are data: clients whose transfer
failed or who missed the deadline reach ``aggregate`` as explicit :class:`Failure` records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generator, Sequence

import numpy as np
import simpy

from nmoe_sim.config import TrainConfig
from nmoe_sim.engine.checkpoint import ROUND, checkpoints_of
from nmoe_sim.engine.executors import Job
from nmoe_sim.engine.tasks import State, TaskResult, TrainTask
from nmoe_sim.record import FailureReason, FailureRecord, RoundRecord

BS = "bs"


@dataclass(frozen=True)
class LocalResult:
    client: int
    update: Any
    num_samples: int
    upload_bytes: int


@dataclass(frozen=True)
class _Trained:
    """A client whose task was computed and uploaded; its LocalResult comes from ``collect``."""

    client: int


@dataclass(frozen=True)
class Failure:
    client: int
    phase: str  # where the client was: "download", "prelude", "compute" or "upload"
    # Why, from the fixed vocabulary (a str given is converted; an unknown one is refused):
    # "outage" (retries exhausted), "deadline", "crashed", "dropped_out", "link_down", ...
    reason: FailureReason

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "reason", FailureReason(self.reason))
        except ValueError:
            raise ValueError(f"Failure.reason {self.reason!r} is not one of "
                             f"{', '.join(r.value for r in FailureReason)}") from None


def sample_participants(n_clients: int, fraction: float, rng: np.random.Generator) -> list[int]:
    """ceil(fraction * n) distinct clients (at least one), sorted; all clients when fraction is 1."""
    k = max(1, int(np.ceil(fraction * n_clients - 1e-9)))
    if k >= n_clients:
        return list(range(n_clients))
    return sorted(int(c) for c in rng.choice(n_clients, size=k, replace=False))


@dataclass
class CostScope:
    """Which stages a system pays for: its own (run in its world) and those it reuses.

    ``stages`` are the system's own stages, whose running totals its round records carry;
    ``reused`` names stages of another system whose products it uses (the ``local``
    baseline reuses the NMoE's stage-1 FE and stage-2 experts) and so pays for too. This
    is the one place that declares it; tables and plots read it from metrics.json.
    """

    system: str
    stages: list[str]
    start_s: float = 0.0
    reused: tuple[str, ...] = ()


class RoundAlgorithm(ABC):
    """What a federated stage decides; the :class:`RoundDriver` decides when and whether."""

    stage: str = "stage"

    def configure(self, rnd: int, participants: Sequence[int]) -> None:
        """Server-side preparation before the broadcast (e.g. snapshot the global model)."""

    @abstractmethod
    def download_bytes(self, rnd: int, client: int) -> int: ...

    def has_prelude(self, rnd: int) -> bool:
        """Whether round ``rnd`` has a prelude (see the module's docstring); default none."""
        return False

    def prelude(self, rnd: int, client: int) -> TrainTask:
        """The client's prelude work on the model it downloaded: a task with no SGD steps whose
        ``report`` is the statistic, uploaded as ``upload_bytes``."""
        raise NotImplementedError(f"{type(self).__name__} has no prelude")

    def combine(self, rnd: int, reports: dict[int, Any]) -> None:
        """Server side, once every participant's prelude has arrived or failed: ``reports``
        maps each client whose statistic arrived to its task's report."""

    def reply_bytes(self, rnd: int, client: int) -> int:
        """What the server sends ``client`` after ``combine``, before it trains."""
        return 0

    @abstractmethod
    def task(self, rnd: int, client: int) -> TrainTask:
        """The client's local work as a described task, for the executor to run.

        Called when the client's download has arrived, the moment its computation starts:
        what it reads of the server's state is what the client downloaded.
        """

    def collect(self, rnd: int, client: int, result: TaskResult) -> LocalResult:
        """Turn the executor's result of ``task(rnd, client)`` into what ``aggregate`` gets.

        Called, in client order once the round has closed, for every task a device
        computed, including those of clients whose upload then failed or was cut off: a
        device that trained keeps what it trained (FedGate's personal gate part), even if
        the server never hears of it. Only the results of clients that succeeded reach
        ``aggregate``.
        """
        return LocalResult(client, {"state": result.state}, result.num_samples, result.upload_bytes)

    @abstractmethod
    def aggregate(self, rnd: int, results: list[LocalResult], failures: list[Failure]) -> None: ...

    def averages_states(self, rnd: int) -> bool:
        """Whether this round's aggregate reads of the trained states only their FedAvg (the
        mean weighted by samples over the clients whose upload arrived, in round order).

        If so the driver asks the executor for that mean with the results
        (``gather_mean``): an executor running tasks on other machines reduces it where they
        ran (one partial sum per worker instead of every state, as pfl-research all-reduces
        once per round), and the results ``collect`` gets may then have empty states. The
        driver then calls :meth:`aggregate_mean` instead of :meth:`aggregate`.
        """
        return False

    def aggregate_mean(self, rnd: int, mean: State | None, results: list[LocalResult],
                       failures: list[Failure]) -> None:
        """:meth:`aggregate` given the FedAvg of the arrived states (None when none arrived)."""
        raise NotImplementedError(f"{type(self).__name__} averages no states")

    def evaluate(self, rnd: int) -> tuple[float, float] | None:
        """(macro-F1, accuracy) of the system after this round, or None if not meaningful."""
        return None

    def measure(self, rnd: int) -> dict[str, float] | None:
        """Feature checks after this round for the round record (``probe_linear``,
        ``probe_knn``, ``effective_rank``), or None where nothing is measured."""
        return None


class RoundDriver:
    """Runs an algorithm's rounds as SimPy processes over the sim's network and executor.

    After each round's record the run may save a checkpoint (``engine/checkpoint.py``); a
    driver restored from one goes on at ``next_round`` with its participation stream where
    the save left it.
    """

    def __init__(self, sim: Any, n_clients: int, rng: np.random.Generator) -> None:
        self.sim = sim
        self.n_clients = n_clients
        self.rng = rng
        self.next_round = 0

    def run(self, algo: RoundAlgorithm, cfg: TrainConfig, scope: CostScope) -> Generator[simpy.Event, Any, None]:
        env = self.sim.env
        for rnd in range(self.next_round, cfg.rounds):
            participants = sample_participants(self.n_clients, cfg.participation, self.rng)
            algo.configure(rnd, participants)
            start_s = env.now
            jobs: dict[int, Job] = {}  # client -> its submitted task
            sync = _Prelude(env, participants) if algo.has_prelude(rnd) else None
            faults = self.sim.faults
            absent = faults.absent(algo.stage, rnd, participants) if faults is not None else {}
            procs = [env.process(self._client_round(algo, rnd, c, jobs, sync, absent.get(c)))
                     for c in participants]
            everyone = env.all_of(procs)
            deadline = env.timeout(cfg.deadline_s) if cfg.deadline_s is not None else None
            if sync is not None:
                arrived = env.all_of(list(sync.ready.values()))
                yield arrived if deadline is None else arrived | deadline
                if arrived.triggered:  # every statistic is in (or failed) before the deadline
                    done = [sync.jobs[c] for c in sorted(sync.jobs)]
                    reports = {j.task.client: r.report for j, r in zip(done, self.sim.executor.gather(done))}
                    algo.combine(rnd, reports)
                    sync.barrier.succeed()
            if deadline is None:
                yield everyone
            else:
                yield everyone | deadline
                for proc in procs:
                    if proc.is_alive:
                        proc.interrupt("deadline")
                yield env.all_of(procs)
            arrived = [p.value.client for p in procs if isinstance(p.value, _Trained)]
            averaged = algo.averages_states(rnd)
            collected, mean = self._collect(algo, rnd, jobs, arrived if averaged else None)
            outcomes = [collected[p.value.client] if isinstance(p.value, _Trained) else p.value for p in procs]
            results = [o for o in outcomes if isinstance(o, LocalResult)]
            failures = [o for o in outcomes if isinstance(o, Failure)]
            for f in failures:
                self.sim.recorder.add(FailureRecord(self.sim.system, algo.stage, rnd, f.client, f.phase,
                                                    f.reason.value, float(env.now)))
            if averaged:
                algo.aggregate_mean(rnd, mean, results, failures)
            else:
                algo.aggregate(rnd, results, failures)
            scores = algo.evaluate(rnd)
            self.sim.record_round(scope, algo.stage, rnd, cfg.rounds, start_s, len(participants), len(failures),
                                  scores, algo.measure(rnd))
            self.next_round = rnd + 1
            checkpoints_of(self.sim).save(f"{self.sim.system} {algo.stage} round {rnd}", ROUND)

    def _collect(self, algo: RoundAlgorithm, rnd: int, jobs: dict[int, Job],
                 averaged: list[int] | None) -> tuple[dict[int, LocalResult], State | None]:
        """The round's real work, all at once: every task a device started, run by the
        executor; with ``averaged`` (the clients whose upload arrived, in the round's order),
        also the FedAvg of their trained states (``executor.gather_mean``)."""
        # A job cut short by its device's crash (injected faults) left nothing to collect.
        ran = [jobs[c] for c in sorted(jobs) if jobs[c].started and not jobs[c].aborted]
        if not ran:
            return {}, None
        if averaged is None:
            results, mean = self.sim.executor.gather(ran), None
        else:
            where = {job.task.client: i for i, job in enumerate(ran)}
            results, mean = self.sim.executor.gather_mean(ran, [where[c] for c in averaged])
        return {job.task.client: algo.collect(rnd, job.task.client, res) for job, res in zip(ran, results)}, mean

    def _client_round(self, algo: RoundAlgorithm, rnd: int, client: int, jobs: dict[int, Job],
                      sync: "_Prelude | None" = None,
                      absent: FailureReason | None = None) -> Generator[simpy.Event, Any, Any]:
        sim = self.sim
        me = sim.env.active_process
        inflight: list[simpy.Process] = []  # the transfer under way, for an interrupt to abort

        def send(src: Any, dst: Any, size_bytes: int, tag: str) -> Generator[simpy.Event, Any, str | None]:
            """One transfer of this round: None if it arrived, else why not."""
            inflight[:] = [sim.net.transfer(src, dst, size_bytes, stage=algo.stage, tag=f"r{rnd}/{tag}")]
            rec = yield inflight[0]
            inflight.clear()
            return None if rec.delivered else rec.reason

        phase = "download"
        try:
            if absent is not None:  # crashed or dropped out before the round began
                return Failure(client, phase, absent)
            if sim.faults is not None:
                sim.faults.watch(client, me)  # a crash interrupts this with cause 'crashed'
            down = algo.download_bytes(rnd, client)
            if down > 0 and (why := (yield from send(BS, client, down, "down"))) is not None:
                return Failure(client, phase, why)
            if sync is not None:
                phase = "prelude"
                pre = algo.prelude(rnd, client)
                pre_job = sim.executor.submit(pre, stage=algo.stage, tag=f"r{rnd}/prelude")
                yield pre_job.charged
                up = pre.upload_bytes
                if up > 0 and (why := (yield from send(client, BS, up, "prelude_up"))) is not None:
                    return Failure(client, phase, why)
                sync.jobs[client] = pre_job
                sync.ready[client].succeed()
                yield sync.barrier
                reply = algo.reply_bytes(rnd, client)
                if reply > 0 and (why := (yield from send(BS, client, reply, "prelude_down"))) is not None:
                    return Failure(client, phase, why)
            phase = "compute"
            task = algo.task(rnd, client)
            # The upload's size is known before the work runs, so the simulation goes on and
            # the executor runs the task when the round closes (with the others).
            job = jobs[client] = sim.executor.submit(task, stage=algo.stage, tag=f"r{rnd}/train")
            yield job.charged
            phase = "upload"
            up = task.upload_bytes
            if up > 0 and (why := (yield from send(client, BS, up, "up"))) is not None:
                return Failure(client, phase, why)
            return _Trained(client)
        except simpy.Interrupt as stop:
            # The server closed the round: abort the transfer in flight so it frees its
            # share of the radio; a computation in progress runs to its end on the device.
            if inflight and inflight[0].is_alive:
                inflight[0].interrupt(stop.cause)
            return Failure(client, phase, str(stop.cause))
        finally:
            if sim.faults is not None:
                sim.faults.unwatch(client, me)
            # A client out of the round before its statistic arrived must not hold the barrier.
            if sync is not None and not sync.ready[client].triggered:
                sync.ready[client].succeed()


class _Prelude:
    """One round's prelude barrier: each participant's readiness (its statistic arrived or
    it dropped out), the jobs whose statistics arrived, and the server's go-ahead."""

    def __init__(self, env: simpy.Environment, participants: Sequence[int]) -> None:
        self.ready = {c: env.event() for c in participants}
        self.jobs: dict[int, Job] = {}
        self.barrier = env.event()


def make_round_record(scope: CostScope, stage: str, rnd: int, rounds_total: int, start_s: float, end_s: float,
                      participants: int, failures: int, cum_bytes: int, cum_bytes_delivered: int,
                      cum_energy_j: float, scores: tuple[float, float] | None,
                      measured: dict[str, float] | None = None) -> RoundRecord:
    f1, acc = scores if scores is not None else (float("nan"), float("nan"))
    return RoundRecord(scope.system, stage, rnd, rounds_total, start_s, end_s, participants, failures,
                       cum_bytes, cum_bytes_delivered, end_s - scope.start_s, cum_energy_j, f1, acc,
                       **(measured or {}))
