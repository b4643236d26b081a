"""``nmoe-sim sweep --executor ray``: a sweep's points as Ray tasks on a cluster.

The sweep itself stays where it was (:func:`nmoe_sim.sweep.run_sweep`: which points are
finished or changed, config hashes, points.json, tables); only running the points moves.
Each task runs its points with the local sweep's code (``cli.run_one``) into a temporary
folder on its node and streams back, point by point, the run directory's files, which the
driver writes into the sweep directory (``metrics.json`` last, so a point is finished only
once all its files are there). No shared file system is needed; every node needs the
dataset files at the path the scenario names (docs/cluster.md).

**Reuse.** The local sweep computes stages 1-2 (and a baseline) once for the points that
share them (:mod:`nmoe_sim.reuse`). Here points with the same shared prefix
(``reuse.nmoe_prefix_key``) run in one task, in sweep order, with one ``StageCache``, so
they still share it; a group is split (each part paying the prefix once more) only while
there are fewer tasks than the cluster has slots for. Reuse gives the same bits as
recomputing (tests/test_reuse.py), so the grouping changes wall time only, never a table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from nmoe_sim.engine.ray_executor import connect, require_ray
from nmoe_sim.errors import ConfigError
from nmoe_sim.provenance import PointFailure, one_line
from nmoe_sim.results import atomic_write_bytes
from nmoe_sim.sweep import RunPoint, RunPoints, SweepPoint, Tracker

log = logging.getLogger(__name__)

PointItem = tuple[str, int, dict[str, Any]]  # point_id, seed, the point's scenario mapping


def chunks(todo: Sequence[SweepPoint], keys: Sequence[str], slots: int) -> list[list[int]]:
    """Indices of ``todo`` per task: one group per shared-prefix key (in first-seen order,
    sweep order inside), the largest group halved while there are fewer tasks than ``slots``."""
    groups: OrderedDict[str, list[int]] = OrderedDict()
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    out = list(groups.values())
    while len(out) < slots:
        big = max(range(len(out)), key=lambda j: len(out[j]))
        if len(out[big]) < 2:
            break
        half = (len(out[big]) + 1) // 2
        out[big:big + 1] = [out[big][:half], out[big][half:]]
    return out


@contextlib.contextmanager
def _cwd(folder: str) -> Iterator[None]:
    """The driver's working folder where this node has it: a relative ``data.root`` reads
    the same path on every node as on the driver."""
    before = os.getcwd()
    moved = os.path.isdir(folder)
    if moved:
        os.chdir(folder)
    try:
        yield
    finally:
        if moved:
            os.chdir(before)


def run_chunk(items: Sequence[PointItem], reuse: bool, cwd: str,
              cores: int) -> Iterator[tuple[int, dict[str, bytes] | None, str | None]]:
    """On a Ray worker: run each point, yielding (its index, its run directory's files by
    relative path, None) or (index, None, why it failed, in one line) as each finishes."""
    from nmoe_sim.cli import run_one
    from nmoe_sim.config import build_scenario
    from nmoe_sim.engine.executors import limited_cores
    from nmoe_sim.reuse import StageCache

    cache = StageCache() if reuse else None
    with limited_cores(cores), _cwd(cwd), tempfile.TemporaryDirectory(prefix="nmoe-sweep-") as tmp:
        for i, (point_id, seed, raw) in enumerate(items):
            # The same layout as the sweep's: a reused stage's origin names <point_id>/seed<s>.
            run_dir = Path(tmp) / point_id / f"seed{seed}"
            run_dir.mkdir(parents=True)
            try:
                run_one(build_scenario(raw), run_dir, quiet=True, reuse=cache)
                files = {p.relative_to(run_dir).as_posix(): p.read_bytes()
                         for p in sorted(run_dir.rglob("*")) if p.is_file()}
            except Exception as exc:  # noqa: BLE001  # one point's failure must not stop the others
                yield i, None, one_line(exc)
                continue
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
            yield i, files, None


def write_run(run_dir: Path, files: dict[str, bytes]) -> None:
    """A point's files into its run directory (what an interrupted run left is replaced),
    metrics.json last: its presence marks a finished run."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    for rel in sorted(files, key=lambda r: r == "metrics.json"):
        path = run_dir / rel
        if run_dir.resolve() not in path.resolve().parents:  # never outside the run directory
            raise PointFailure(f"a Ray worker sent a file outside the run directory: {rel}")
        atomic_write_bytes(path, files[rel])


def ray_points(run_point: RunPoint | None = None, *, reuse: bool = True, address: str | None = None,
               cpus_per_point: int = 1, progress: bool = True) -> RunPoints:
    """A sweep's points as Ray tasks of ``cpus_per_point`` CPUs each, on the cluster at
    ``address`` (None: a private Ray instance on this machine). ``run_point`` is unused:
    each worker runs its points with ``cli.run_one``, as the local sweep does."""
    ray = connect(address, what="--address", user="sweep --executor ray")
    biggest = max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
    if cpus_per_point > biggest:  # such a task could never be placed: it would wait for ever
        raise ConfigError(f"--cpus-per-point {cpus_per_point}: no node of the Ray cluster has that many "
                          f"CPUs (the largest has {int(biggest)})")
    level = logging.INFO if progress else logging.DEBUG

    def run_points(todo: Sequence[SweepPoint], raw_of: Callable[[SweepPoint], dict[str, Any]], sweep_dir: Path,
                   tracker: Tracker) -> None:
        if not todo:
            return
        from nmoe_sim.config import build_scenario
        from nmoe_sim.reuse import nmoe_prefix_key

        raws = [raw_of(p) for p in todo]
        keys = [nmoe_prefix_key(build_scenario(r)) if reuse else str(i) for i, r in enumerate(raws)]
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_point)
        task = ray.remote(num_cpus=cpus_per_point, max_retries=0)(run_chunk)
        streams: dict[Any, list[int]] = {}
        for part in chunks(todo, keys, slots):
            items = [(todo[i].point_id, todo[i].seed, raws[i]) for i in part]
            stream = task.options(num_returns="streaming").remote(items, reuse, os.getcwd(), cpus_per_point)
            streams[stream] = part
            for i in part:
                tracker.started(todo[i])
        log.log(level, "%d points in %d Ray tasks over %d slots", len(todo), len(streams), slots)
        pending = list(streams)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for stream in ready:
                    _next_point(ray, stream, streams[stream], todo, sweep_dir, tracker, pending)
        except BaseException:  # Ctrl-C: stop the cluster's work on this sweep too
            for stream in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(stream, force=True)
            raise

    return run_points


def _next_point(ray: Any, stream: Any, part: list[int], todo: Sequence[SweepPoint], sweep_dir: Path,
                tracker: Tracker, pending: list[Any]) -> None:
    """One point of a task's stream is ready: write it, or record its failure; a task whose
    worker died fails every point of it that had not finished."""
    try:
        ref = next(stream)
    except StopIteration:
        return  # the task ran all its points
    try:
        index, files, reason = ray.get(ref)
    except Exception as exc:  # noqa: BLE001  # the worker or its node died mid-task
        why = PointFailure(f"its Ray task stopped: {one_line(exc)}")
        for i in part:
            if todo[i] in tracker.running:
                tracker.finished(todo[i], why)
        return
    point = todo[part[index]]
    pending.append(stream)
    if files is None:
        tracker.finished(point, PointFailure(reason or "failed on a Ray worker"))
        return
    try:
        write_run(point.run_dir(sweep_dir), files)
    except Exception as exc:  # noqa: BLE001  # e.g. the disk filled: this point failed, not the sweep
        tracker.finished(point, exc)
        return
    tracker.finished(point, None)


__all__ = ["chunks", "ray_points", "require_ray", "run_chunk", "write_run"]
