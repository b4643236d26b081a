"""Client-expert alignment for federated Mixture-of-Experts (FLEX-MoE, arXiv 2512.23070;
Chen et al., arXiv 2507.05685): the pure, SimPy-free math.

Per round, the server (1) assigns experts to participating clients from the fitness
matrix Q, the clients' capacities and the experts' historical deficit
(:func:`assign`), (2) aggregates each expert over the clients that trained it, weighted
by usage (:func:`aggregate_experts`), (3) folds the clients' per-expert feedback into Q
(:func:`fitness_signal`, :func:`update_fitness`) and (4) records loads and usage
(:class:`LoadMonitor`). Capacities come from device profiles (:func:`expert_capacity`,
:func:`client_capacities`); load bounds from the config (:func:`resolve_load_bounds`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nmoe_sim.fl.alignment.aggregate import aggregate_experts, usage_weighted_average
    from nmoe_sim.fl.alignment.assignment import (
        ASSIGNERS,
        assign,
        effective_load_bounds,
        resolve_load_bounds,
    )
    from nmoe_sim.fl.alignment.capacity import (
        CapacityProfile,
        client_capacities,
        expert_capacity,
        profile_capacity,
    )
    from nmoe_sim.fl.alignment.config import AlignmentConfig, parse_alignment
    from nmoe_sim.fl.alignment.fitness import (
        FITNESS_SIGNALS,
        fitness_signal,
        init_fitness,
        update_fitness,
    )
    from nmoe_sim.fl.alignment.load import LoadMonitor, coefficient_of_variation

# Names resolve lazily (PEP 562): ``nmoe_sim.config`` imports ``.config`` for the scenario
# schema, and an eager import of this package would pull torch and scipy into every
# ``nmoe-sim validate``.
_HOMES = {
    "aggregate_experts": "aggregate", "usage_weighted_average": "aggregate",
    "ASSIGNERS": "assignment", "assign": "assignment",
    "effective_load_bounds": "assignment", "resolve_load_bounds": "assignment",
    "CapacityProfile": "capacity", "client_capacities": "capacity",
    "expert_capacity": "capacity", "profile_capacity": "capacity",
    "AlignmentConfig": "config", "parse_alignment": "config",
    "FITNESS_SIGNALS": "fitness", "fitness_signal": "fitness",
    "init_fitness": "fitness", "update_fitness": "fitness",
    "LoadMonitor": "load", "coefficient_of_variation": "load",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


__all__ = [
    "ASSIGNERS",
    "AlignmentConfig",
    "CapacityProfile",
    "FITNESS_SIGNALS",
    "LoadMonitor",
    "aggregate_experts",
    "assign",
    "client_capacities",
    "coefficient_of_variation",
    "effective_load_bounds",
    "expert_capacity",
    "fitness_signal",
    "init_fitness",
    "parse_alignment",
    "profile_capacity",
    "resolve_load_bounds",
    "update_fitness",
    "usage_weighted_average",
]
