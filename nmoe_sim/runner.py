"""One skeleton for every registered system: build the world, run the system, write the run.

The system (``SYSTEMS[cfg.system]``, :mod:`nmoe_sim.systems`) decides what runs; the
skeleton owns the order in which the run directory is written: ``config.yaml`` first,
then the records, the system's tables and the topology, and ``metrics.json`` last (its
presence marks a finished run). Every file is written atomically.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from nmoe_sim.config import Scenario, dump_yaml
from nmoe_sim.engine.executors import auto_torch_threads, torch_threads
from nmoe_sim.errors import ConfigError
from nmoe_sim.metrics import warn_stages_without_update
from nmoe_sim.reuse import StageCache
from nmoe_sim.results import atomic_write_text, write_csv, write_json, write_records
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.systems import SYSTEMS
from nmoe_sim.world import Sim, World, build_world


def run(cfg: Scenario, run_dir: Path, on_record: Callable[[Any], None] | None = None,
        reuse: StageCache | None = None) -> dict[str, Any]:
    """Run a validated scenario into ``run_dir`` (which must exist); returns metrics.json's content.

    ``reuse`` (a sweep's cache) lets the run take stages an earlier point shared with it.
    """
    check_device(cfg.runtime.device)
    with torch_threads(1 if cfg.runtime.torch_threads == "auto" else cfg.runtime.torch_threads):
        return _run(cfg, run_dir, on_record, reuse)


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device: cuda asked for, but this machine has no CUDA device "
                          "(torch.cuda.is_available() is False); use cpu")


def _run(cfg: Scenario, run_dir: Path, on_record: Callable[[Any], None] | None,
         reuse: StageCache | None) -> dict[str, Any]:
    wall0 = time.perf_counter()
    system = SYSTEMS.get(cfg.system, "system")(cfg)
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    world = build_world(cfg, SeedStreams(cfg.seed))
    if cfg.runtime.torch_threads == "auto":
        torch.set_num_threads(auto_torch_threads(cfg, world.dataset.input_shape))
    if on_record is not None:
        world.recorder.listeners.append(on_record)
    outcome = system.run(world, reuse, f"{run_dir.parent.name}/{run_dir.name}")
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
    metrics["wall_time_s"] = round(time.perf_counter() - wall0, 3)
    write_json(run_dir / "metrics.json", metrics)  # last: its presence marks a finished run
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
