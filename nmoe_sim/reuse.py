"""Reuse across sweep points: a stage several points share is computed once.

A sweep's points often differ only in what runs after the shared part: the paper study's
gate points share stage 1 and 2 (same data, partition, FE settings and seed), and its
FedAvg and centralized baselines depend on none of the NMoE's stages. A
:class:`StageCache` lives for one sweep invocation and holds, per key, what the shared
part left behind:

* ``nmoe_prefix``: the NMoE's simulation at the end of stage 2 (its SimPy environment,
  network with every link's fading state, executor), the trained parts, the stage spans
  and the records so far, deep-copied, so that stage 3 continues from exactly where it
  would have been;
* ``baseline``: a whole baseline system's records, spans and summary.

A key is the point's scenario without the sections the shared part never reads, as
canonical JSON. Which those are is declared here, once (and tested: a reused point equals
the same point run from scratch, bit for bit). The reuse is recorded in the point's
metrics.json (``reused``).
"""

from __future__ import annotations

import copy
import json
import logging
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:
    from nmoe_sim.config import Scenario

log = logging.getLogger(__name__)

# Read only after stage 2 (by stage 3, inference routing and the baselines) or never by
# the simulation: points that differ only here share stages 1 and 2.
# How queries arrive and are routed is read only by inference (nmoe_sim/serving).
INFERENCE_ROUTING: tuple[str, ...] = (
    "inference.routing", "inference.channel_aware", "inference.load_aware", "inference.budgeted",
)
NMOE_PREFIX_FREE: tuple[str, ...] = (
    "name", "sweep", "output", "stage3", "baselines",
    "model.top_k", "model.gate_hidden", "model.gate_noise",
    *INFERENCE_ROUTING, "inference.arrival_rate_hz", "inference.bursts",
)
# What no baseline reads (each baseline's own section is kept; the others are dropped): no
# baseline has a gate, so the routing policy is the NMoE's alone.
BASELINE_FREE: tuple[str, ...] = ("name", "sweep", "output", "stage1", "stage2", "stage3", *INFERENCE_ROUTING)


def scenario_key(cfg: "Scenario", free: Iterable[str], keep: dict[str, Any] | None = None) -> str:
    """Canonical JSON of ``cfg`` without the dotted ``free`` keys, plus ``keep``."""
    data = cfg.model_dump(mode="json")
    for dotted in free:
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    if keep:
        data["__keep__"] = keep
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def nmoe_prefix_key(cfg: "Scenario") -> str:
    return scenario_key(cfg, NMOE_PREFIX_FREE)


def baseline_key(cfg: "Scenario", name: str) -> str:
    own = cfg.baselines.model_dump(mode="json").get(name)
    return scenario_key(cfg, (*BASELINE_FREE, "baselines"), {"baseline": name, "settings": own})


@dataclass
class Entry:
    value: Any
    origin: str  # the run that computed it (its run directory's name within the sweep)


@dataclass
class StageCache:
    """Entries of one sweep invocation, least recently used dropped beyond ``max_entries``."""

    max_entries: int = 8
    entries: "OrderedDict[str, Entry]" = field(default_factory=OrderedDict)
    hits: int = 0

    def get(self, key: str) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            self.hits += 1
        return entry

    def put(self, key: str, value: Any, origin: str) -> None:
        self.entries[key] = Entry(value, origin)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


@dataclass
class Shared:
    """What a shared part left behind: a snapshot of its state and the records it made, in order."""

    world: Any  # the world the snapshot was taken in (its objects are swapped on restore)
    state: Any
    records: list[Any]


def shared_objects(world: Any) -> list[Any]:
    """The world's objects a snapshot shares rather than copies: equal in every point of a
    key, they are swapped for the restoring point's own."""
    return [world, world.recorder, world.graph, world.profiles, world.dataset, *world.clients]


@contextmanager
def recording(world: Any) -> Iterator[list[Any]]:
    """Collect every record the world's recorder takes while the block runs, in order."""
    made: list[Any] = []
    world.recorder.listeners.append(made.append)
    try:
        yield made
    finally:
        world.recorder.listeners.remove(made.append)


def keep(cache: StageCache, key: str, world: Any, state: Any, records: list[Any], origin: str) -> None:
    """Leave a deep copy of ``state`` for later points; a state that cannot be copied is
    simply not kept (correctness first: the next point recomputes it)."""
    try:
        cache.put(key, Shared(world, copy.deepcopy(state, {id(o): o for o in shared_objects(world)}), records),
                  origin)
    except TypeError as exc:  # e.g. a live generator somewhere in the state
        log.warning("a shared stage could not be kept for the sweep's later points (%s); they recompute it", exc)


def restore(shared: Shared, world: Any) -> Any:
    """Replay the shared part's records into ``world`` and return a fresh copy of its state
    that refers to ``world``'s objects (the cached copy stays untouched for the next point)."""
    for rec in shared.records:  # in their original order, so every running total sums alike
        world.recorder.add(rec)
    mapping = {id(old): new for old, new in zip(shared_objects(shared.world), shared_objects(world))}
    return copy.deepcopy(shared.state, mapping)
