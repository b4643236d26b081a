"""``runtime.executor: ray``: a round's tasks sharded over the actors of a Ray cluster.

The batched executor's design carried over machines. Each actor is one CPU running the
pool's per-worker code (:func:`nmoe_sim.engine.pool.run_tasks`, at one torch thread), so
every task gives the reference's bits. Client data is sent to an actor once and kept
there (:mod:`nmoe_sim.engine.held`); a round moves only start states and results. Where
the algorithm's aggregate is a FedAvg (``RoundAlgorithm.averages_states``), each actor
sends back one sample-weighted partial sum of its shard's states instead of every state,
as pfl-research all-reduces once per round; the sum differs from the local average only
in the order of its float64 additions.

Simulated time, bytes and energy are charged from FLOPs when tasks are submitted
(inherited from :class:`~nmoe_sim.engine.executors.LocalExecutor`), before anything runs
here, so they are the local executor's exactly. Gathers the batched executor keeps in
its own process (one task, or too little work per byte moved, or a GPU) stay here too.

The executor itself keeps nothing but its config: the connection and the actors live in
this module (one set per process, shared by every Sim and sweep point), so a checkpoint
pickles the executor as it does the others and a resumed run reconnects.
"""

from __future__ import annotations

import atexit
import logging
import pickle
from typing import Any, Sequence

from nmoe_sim.config import RayConfig
from nmoe_sim.engine.executors import BatchedExecutor, Job, State, check_finite_loss, nonfinite_param
from nmoe_sim.engine.held import Holdings, Shard, decode
from nmoe_sim.engine.tasks import TaskResult, TrainTask
from nmoe_sim.errors import ConfigError
from nmoe_sim.fl.aggregate import PartialSum, finish_weighted_sum, normalized_weights, partial_weighted_sum

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install -e '.[ray]'"


def require_ray(what: str = "runtime.executor: ray") -> Any:
    """The ``ray`` module, or one line naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"{what} needs Ray, which is not installed; install the extra: {EXTRA_HINT}") from None
    return ray


_STARTED_HERE = False  # this process started a private Ray instance (and ends it at exit)


# How long a cluster's head may take to accept a connection before it counts as unreachable
# (Ray itself retries an unreachable head for minutes, logging from C++ all the while).
REACH_TIMEOUT_S = 5.0


def _unreachable(address: str) -> str | None:
    """Why ``host:port`` (or ``ray://host:port``) takes no TCP connection, or None if it does;
    None too for what is not such an address (``auto``, a Ray-resolved name)."""
    import socket

    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"nothing answers at {hostport} ({exc.strerror or type(exc).__name__})"


def connect(address: str | None, what: str = "runtime.ray.address", user: str = "runtime.executor: ray") -> Any:
    """Join the cluster at ``address`` (None: a private instance on this machine), once per
    process; an instance already started in this process (a test's, a notebook's) is used
    as it is. An address that cannot be reached is one error line."""
    global _STARTED_HERE
    ray = require_ray(user)
    if ray.is_initialized():
        return ray
    try:
        if address is None:
            from nmoe_sim.engine.executors import available_cores

            ray.init(num_cpus=available_cores(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
            _STARTED_HERE = True
        else:
            why = _unreachable(address)
            if why is not None:
                raise ConfigError(f"{what}: cannot join the Ray cluster at {address}: {why}")
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001  # Ray raises ConnectionError, RuntimeError, ValueError...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{what}: cannot join the Ray cluster at {address or 'this machine'}: {first}") from None
    return ray


def _shutdown() -> None:
    global _STARTED_HERE
    _CLUSTERS.clear()  # their actors end with the instance (or with this driver's connection)
    if _STARTED_HERE:
        import ray

        ray.shutdown()
        _STARTED_HERE = False


atexit.register(_shutdown)


class TaskWorker:
    """One Ray actor (one CPU): keeps the data it was sent, runs shards with the pool's code."""

    def __init__(self) -> None:
        from nmoe_sim.engine.pool import prepare_worker

        prepare_worker()
        self.cache: dict[str, Any] = {}

    def run(self, payload: bytes) -> bytes:
        from nmoe_sim.engine.pool import run_tasks

        # A plain pickle, as the pool's shards: by value, never shared memory.
        shard: Shard = pickle.loads(payload)
        results = run_tasks(decode(shard, self.cache))
        partial = None
        if shard.weights is not None:
            mine = [(r, w) for r, w in zip(results, shard.weights) if w is not None]
            if mine:
                partial = partial_weighted_sum([r.state for r, _ in mine], [w[0] for _, w in mine],
                                               [w[1] for _, w in mine])
            # The caller reads no state of an averaged gather: send none back, only whether
            # each was finite (for check_finite_loss).
            results = [TaskResult(r.client, {}, r.num_samples, r.upload_bytes, r.loss, r.stat, r.report,
                                  nonfinite_param(r.state)) for r in results]
        return pickle.dumps((results, partial), protocol=pickle.HIGHEST_PROTOCOL)


class _Cluster:
    """The actors of one ``runtime.ray`` config in this process, and what each holds."""

    def __init__(self, cfg: RayConfig) -> None:
        self.ray = connect(cfg.address)
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self.size = cfg.num_workers or max(1, cpus)
        self._start()

    def _start(self) -> None:
        actor = self.ray.remote(num_cpus=1, max_restarts=0)(TaskWorker)
        self.actors = [actor.remote() for _ in range(self.size)]
        self.holdings = Holdings(self.size)

    def run(self, tasks: Sequence[TrainTask],
            weights: list[tuple[float, int] | None] | None) -> tuple[list[TaskResult], list[PartialSum]]:
        try:
            return self._run(tasks, weights)
        except self.ray.exceptions.RayActorError as exc:
            # A worker (or its node) died: the data it held is gone. Tasks are pure, so
            # start fresh actors and run the gather once more.
            log.warning("a Ray worker died (%s); restarting the workers and running the round's tasks again",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._start()
            return self._run(tasks, weights)
        except self.ray.exceptions.RayTaskError as exc:
            # A task raised on its actor: raise what it raised, as the local executor would
            # (a ConfigError stays one line), not Ray's wrapper with the remote traceback.
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def _run(self, tasks: Sequence[TrainTask],
             weights: list[tuple[float, int] | None] | None) -> tuple[list[TaskResult], list[PartialSum]]:
        parts = [p for p in enumerate(self.holdings.place(tasks)) if p[1]]
        refs = []
        for worker, part in parts:
            shard = self.holdings.encode(worker, [tasks[i] for i in part])
            if weights is not None:
                shard.weights = [weights[i] for i in part]
            refs.append(self.actors[worker].run.remote(pickle.dumps(shard, protocol=pickle.HIGHEST_PROTOCOL)))
        results: list[TaskResult | None] = [None] * len(tasks)
        partials = []
        for (_, part), payload in zip(parts, self.ray.get(refs)):  # partial sums in worker order
            shard_results, partial = pickle.loads(payload)
            for i, r in zip(part, shard_results):
                results[i] = r
            if partial is not None:
                partials.append(partial)
        return results, partials  # type: ignore[return-value]


_CLUSTERS: dict[tuple[str | None, int | None], _Cluster] = {}


def cluster(cfg: RayConfig) -> _Cluster:
    key = (cfg.address, cfg.num_workers)
    ray = require_ray()
    if key in _CLUSTERS and not ray.is_initialized():  # Ray was shut down under us: start over
        _CLUSTERS.clear()
    if key not in _CLUSTERS:
        _CLUSTERS[key] = _Cluster(cfg)
    return _CLUSTERS[key]


def forget_clusters() -> None:
    """End this process's actors and forget them, freeing their CPUs (for a sweep's tasks, or
    before whoever started Ray shuts it down)."""
    import ray

    for c in _CLUSTERS.values():
        for actor in c.actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001  # already gone with its node or its Ray
                pass
    _CLUSTERS.clear()


class RayExecutor(BatchedExecutor):
    """The batched executor with Ray actors for its worker processes (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cluster(self.runtime.ray)  # join now: a bad address fails before anything is simulated

    def _shardable(self, tasks: Sequence[TrainTask]) -> bool:
        # runtime.workers is the local pool's; the actors are counted by runtime.ray.
        return self.device.type == "cpu" and len(tasks) >= 2

    def _run_sharded(self, tasks: Sequence[TrainTask]) -> list[TaskResult]:
        return cluster(self.runtime.ray).run(tasks, None)[0]

    def gather_mean(self, jobs: Sequence[Job], members: Sequence[int]) -> tuple[list[TaskResult], State | None]:
        tasks = [j.task for j in jobs]
        if not all(j.started for j in jobs):
            raise RuntimeError("gather() of a job whose computation never started")
        if (not members or any(j.result is not None for j in jobs) or not self._shardable(tasks)
                or self._light(tasks)):
            return super().gather_mean(jobs, members)
        w = normalized_weights([tasks[i].num_samples for i in members], len(members))
        weights: list[tuple[float, int] | None] = [None] * len(jobs)
        for pos, (i, wi) in enumerate(zip(members, w)):
            weights[i] = (float(wi), pos)
        results, partials = cluster(self.runtime.ray).run(tasks, weights)
        for job, result in zip(jobs, results):
            job.result = result
            check_finite_loss(job)
        return results, finish_weighted_sum(partials)
