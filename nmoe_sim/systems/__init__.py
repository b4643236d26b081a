"""The registry of systems a scenario can run (``system:``), and what a system provides.

A system builds nothing itself: the runner's one skeleton (:mod:`nmoe_sim.runner`) builds
the world, hands it to the system, and writes the run directory from what the system
returns. A system runs each of its member systems in its own simulated world
(``world.new_sim(name)``) and returns its part of metrics.json and its extra tables.

Entries are registered lazily (module paths), so that reading the registry, e.g. in
``nmoe-sim validate``, does not import PyTorch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from nmoe_sim.registry import Registry

if TYPE_CHECKING:  # the world imports torch; only the type is needed here
    from rich.table import Table

    from nmoe_sim.config import Scenario
    from nmoe_sim.reuse import StageCache
    from nmoe_sim.world import Sim, World


@dataclass
class SystemOutcome:
    """What a system hands back to the runner's skeleton."""

    metrics: dict[str, Any]  # its keys of metrics.json (systems, stages, ...)
    topology_sim: "Sim"  # whose network's mean SNRs topology.json reports
    tables: dict[str, tuple[list[str], Iterable[dict[str, Any]]]] = field(default_factory=dict)  # file -> (header, rows)


class System(ABC):
    """One registered system: runs its members over a world and summarises a finished run."""

    def __init__(self, cfg: "Scenario") -> None:
        self.cfg = cfg

    @abstractmethod
    def run(self, world: "World", reuse: "StageCache | None" = None, origin: str = "") -> SystemOutcome:
        """Run over ``world``; with a sweep's ``reuse`` cache, a system may take (and leave)
        shared stages there, recording what it took in its metrics (``origin``: this run)."""

    @staticmethod
    @abstractmethod
    def summary_table(metrics: dict[str, Any]) -> "Table":
        """The table the CLI prints after a run, from metrics.json alone."""


SYSTEMS: Registry[type[System]] = Registry("system")
SYSTEMS.register_lazy("nmoe", "nmoe_sim.systems.nmoe:NMoESystem")
SYSTEMS.register_lazy("alignment", "nmoe_sim.systems.alignment:AlignmentSystem")
