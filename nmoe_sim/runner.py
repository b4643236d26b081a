"""One skeleton for every registered system: build the world, run the system, write the run.

The system (``SYSTEMS[cfg.system]``, :mod:`nmoe_sim.systems`) decides what runs; the
skeleton owns the order in which the run directory is written: ``config.yaml`` first,
then the records, the system's tables and the topology, and ``metrics.json`` last (its
presence marks a finished run). Every file is written atomically; ``status.json`` says
where the run stands, and a checkpointed run can be resumed (``engine/checkpoint.py``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from nmoe_sim.config import Scenario, dump_yaml
from nmoe_sim.engine.checkpoint import CHECKPOINT_FILE, Checkpoints, Saved
from nmoe_sim.engine.executors import auto_torch_threads, torch_threads
from nmoe_sim.engine.status import resume_command, write_status
from nmoe_sim.errors import ConfigError
from nmoe_sim.metrics import warn_stages_without_update
from nmoe_sim.reuse import StageCache
from nmoe_sim.results import atomic_write_text, write_csv, write_json, write_records
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.systems import SYSTEMS
from nmoe_sim.world import Sim, World, build_world


def run(cfg: Scenario, run_dir: Path, on_record: Callable[[Any], None] | None = None,
        reuse: StageCache | None = None, *, checkpoint: bool = False,
        resume: Saved | None = None) -> dict[str, Any]:
    """Run a validated scenario into ``run_dir`` (which must exist); returns metrics.json's content.

    ``reuse`` (a sweep's cache) lets the run take stages an earlier point shared with it.
    With ``checkpoint`` the run saves at the boundaries ``runtime.checkpoint`` names
    (``engine/checkpoint.py``); ``resume`` is a checkpoint of this run directory to go on
    from. ``status.json`` says throughout whether the run is running, interrupted, failed
    or finished.
    """
    check_device(cfg.runtime.device)
    status: dict[str, Any] = {"command": resume_command(run_dir), "pid": os.getpid()}
    if resume is None:
        status["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_status(run_dir, "running", **status)
    try:
        with torch_threads(1 if cfg.runtime.torch_threads == "auto" else cfg.runtime.torch_threads):
            metrics = _run(cfg, run_dir, on_record, reuse, checkpoint, resume)
    except KeyboardInterrupt:
        write_status(run_dir, "interrupted")
        raise
    except BaseException as exc:
        write_status(run_dir, "failed", reason=f"{type(exc).__name__}: {exc}".splitlines()[0])
        raise
    write_status(run_dir, "finished")
    return metrics


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device: cuda asked for, but this machine has no CUDA device "
                          "(torch.cuda.is_available() is False); use cpu")


def _run(cfg: Scenario, run_dir: Path, on_record: Callable[[Any], None] | None,
         reuse: StageCache | None, checkpoint: bool, resume: Saved | None) -> dict[str, Any]:
    wall0 = time.perf_counter()
    system = SYSTEMS.get(cfg.system, "system")(cfg)
    if resume is None:  # a resumed run's config.yaml is the one it started with
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    world = build_world(cfg, SeedStreams(cfg.seed))
    if cfg.runtime.torch_threads == "auto":
        torch.set_num_threads(auto_torch_threads(cfg, world.dataset.input_shape))

    def saved(where: str, kind: str) -> None:
        write_status(run_dir, "running", checkpoint={"where": where, "kind": kind})

    world.checkpoints = ck = Checkpoints(run_dir if checkpoint else None, cfg.runtime.checkpoint, world,
                                         on_save=saved, wall0=wall0, every_s=cfg.runtime.checkpoint_every_s)
    if resume is not None:
        ck.restore(resume)
    if on_record is not None:
        world.recorder.listeners.append(on_record)
    outcome = system.run(world, reuse, f"{run_dir.parent.name}/{run_dir.name}")
    if ck.resuming:  # the code did not reopen every saved frame: it no longer matches the checkpoint
        raise RuntimeError(f"the checkpoint in {run_dir} does not match this program (frames left: "
                           f"{[f.name for f in ck._resumed]})")
    metrics = {
        "scenario": cfg.name, "seed": cfg.seed, "run_id": run_dir.name, "system": cfg.system,
        "wall_time_s": None,  # set just before metrics.json is written, after every other file
        "dataset": dataset_summary(world),
        **outcome.metrics,
    }
    warn_stages_without_update(outcome.metrics.get("stages", {}))
    write_records(run_dir, world.recorder, [c.idx for c in world.clients])
    for name, (header, rows) in outcome.tables.items():
        write_csv(run_dir / name, header, rows)
    write_json(run_dir / "topology.json", topology_json(world, outcome.topology_sim))
    metrics["wall_time_s"] = round(ck.wall_before_s + time.perf_counter() - wall0, 3)
    write_json(run_dir / "metrics.json", metrics)  # last: its presence marks a finished run
    (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # a finished run has nothing to go on from
    return metrics


def dataset_summary(world: World) -> dict[str, Any]:
    ds = world.dataset
    return {"name": ds.name, "num_classes": ds.num_classes, "train_samples": int(len(ds.y_train)),
            "test_samples": int(len(ds.y_test)), "queries": sum(len(c.y_query) for c in world.clients)}


def topology_json(world: World, sim: Sim) -> dict[str, Any]:
    g = world.graph
    nodes = [{"id": str(n), "kind": g.nodes[n]["kind"], "x_m": float(g.nodes[n]["pos"][0]),
              "y_m": float(g.nodes[n]["pos"][1]), "device": g.nodes[n].get("device", world.cfg.network.devices.server)}
             for n in sorted(g.nodes, key=str)]
    edges = [{"u": str(u), "v": str(v), "kind": d["kind"], "distance_m": float(d["distance_m"]),
              "mean_snr_db": float(sim.net.mean_snr_db(u, v))} for u, v, d in g.edges(data=True)]
    return {"nodes": nodes, "edges": edges}
