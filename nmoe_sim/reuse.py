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
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from nmoe_sim.config import Scenario

# Read only after stage 2 (by stage 3, inference routing and the baselines) or never by
# the simulation: points that differ only here share stages 1 and 2.
NMOE_PREFIX_FREE: tuple[str, ...] = (
    "name", "sweep", "output", "stage3", "baselines",
    "model.top_k", "model.gate_hidden", "model.gate_noise",
)
# What no baseline reads (each baseline's own section is kept; the others are dropped).
BASELINE_FREE: tuple[str, ...] = ("name", "sweep", "output", "stage1", "stage2", "stage3")


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


def snapshot(value: Any, keep: Iterable[Any]) -> Any:
    """A deep copy of ``value`` that shares (does not copy) the objects in ``keep``."""
    return copy.deepcopy(value, {id(obj): obj for obj in keep})


def restore(value: Any, mapping: dict[int, Any]) -> Any:
    """A deep copy of a snapshot with the shared objects replaced: ``mapping`` id(old) -> new."""
    return copy.deepcopy(value, dict(mapping))
