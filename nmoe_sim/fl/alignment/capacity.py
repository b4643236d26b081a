"""Client capacity profiling: how many experts k_c each client can hold and train.

After Chen et al. (arXiv 2507.05685) and FLEX-MoE (arXiv 2512.23070), which derive k_c
from a device's memory, compute and link budget without stating a formula. Ours takes
the tightest of three limits over one round's time budget T (``round_budget_s``):

* memory:  floor((memory_bytes - fe_bytes) / (memory_overhead * expert_bytes)); the FE
  footprint is passed as is, while each expert costs ``memory_overhead`` times its
  parameter bytes (default 3: parameters + gradients + SGD momentum buffer; activations
  of small expert MLPs on one mini-batch are neglected);
* compute: floor(T * flops_per_s / expert_train_flops_per_round), the experts whose local
  training fits in the round;
* link:    floor(T * uplink_rate_bps / (8 * expert_bytes)), the updates that can be
  uploaded within the round;

capped at the pool size E and raised to at least 1: a client that cannot fit one expert
still trains one and is charged the time it takes (the emulation charges, it does not
refuse), and ``binding`` tells which limit was tight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np

from nmoe_sim.errors import ConfigError
from nmoe_sim.fl.alignment.config import AlignmentConfig
from nmoe_sim.registry import Registry

# Guards floor() against ratios such as 0.3 / 0.1 = 2.9999999999999996 that are exact
# integers in real arithmetic; far below any meaningful capacity difference.
_FLOOR_REL_EPS = 1e-12

#: Order in which equal limits are reported as binding.
LIMITS = ("memory", "compute", "link", "experts")


@dataclass(frozen=True)
class CapacityProfile:
    """k (the capacity used) and each limit before the floor of 1; ``binding`` names the
    smallest limit (first of ``LIMITS`` on ties)."""

    k: int
    memory_k: int
    compute_k: int
    link_k: int
    binding: str


def _count(x: float) -> int:
    return max(0, math.floor(x * (1.0 + _FLOOR_REL_EPS)))


def profile_capacity(
    memory_bytes: float,
    flops_per_s: float,
    uplink_rate_bps: float,
    *,
    fe_bytes: int,
    expert_bytes: int,
    expert_train_flops_per_round: float,
    round_budget_s: float,
    n_experts: int,
    memory_overhead: float = 3.0,
) -> CapacityProfile:
    """Capacity of one client and the limit that bounds it (see the module docstring)."""
    values = {
        "memory_bytes": memory_bytes, "flops_per_s": flops_per_s,
        "uplink_rate_bps": uplink_rate_bps, "fe_bytes": fe_bytes,
        "expert_bytes": expert_bytes,
        "expert_train_flops_per_round": expert_train_flops_per_round,
        "round_budget_s": round_budget_s, "memory_overhead": memory_overhead,
    }
    for name, v in values.items():
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {v}")
    for name in ("expert_bytes", "expert_train_flops_per_round", "memory_overhead"):
        if values[name] <= 0:
            raise ValueError(f"{name} must be > 0, got {values[name]}")
    if n_experts < 1:
        raise ValueError(f"n_experts must be >= 1, got {n_experts}")
    limits = {
        "memory": _count((memory_bytes - fe_bytes) / (memory_overhead * expert_bytes)),
        "compute": _count(round_budget_s * flops_per_s / expert_train_flops_per_round),
        "link": _count(round_budget_s * uplink_rate_bps / (8.0 * expert_bytes)),
        "experts": n_experts,
    }
    binding = min(LIMITS, key=lambda name: (limits[name], LIMITS.index(name)))
    return CapacityProfile(
        k=max(1, limits[binding]),
        memory_k=limits["memory"],
        compute_k=limits["compute"],
        link_k=limits["link"],
        binding=binding,
    )


def expert_capacity(
    memory_bytes: float,
    flops_per_s: float,
    uplink_rate_bps: float,
    *,
    fe_bytes: int,
    expert_bytes: int,
    expert_train_flops_per_round: float,
    round_budget_s: float,
    n_experts: int,
    memory_overhead: float = 3.0,
) -> int:
    """k_c alone; :func:`profile_capacity` also says which limit bound it."""
    return profile_capacity(
        memory_bytes, flops_per_s, uplink_rate_bps, fe_bytes=fe_bytes,
        expert_bytes=expert_bytes, expert_train_flops_per_round=expert_train_flops_per_round,
        round_budget_s=round_budget_s, n_experts=n_experts, memory_overhead=memory_overhead,
    ).k


# ------------------------------------------------------------------ from the config
# A capacity source turns (config, n_clients, profiled k's or None) into (C,) ints.
CapacitySource = Callable[[AlignmentConfig, int, "np.ndarray | None"], np.ndarray]
CAPACITY_SOURCES: Registry[CapacitySource] = Registry("capacity source")


@CAPACITY_SOURCES.register("profile")
def _from_profile(cfg: AlignmentConfig, n_clients: int, profiled: np.ndarray | None) -> np.ndarray:
    if profiled is None:
        raise ValueError("capacity_from 'profile' needs the profiled capacities")
    if profiled.shape != (n_clients,):
        raise ValueError(
            f"need one profiled capacity per client ({n_clients}), got {profiled.shape}"
        )
    return profiled.astype(np.int64)


@CAPACITY_SOURCES.register("fixed")
def _fixed(cfg: AlignmentConfig, n_clients: int, profiled: np.ndarray | None) -> np.ndarray:
    return np.full(n_clients, cfg.fixed_capacity, dtype=np.int64)


def client_capacities(
    cfg: AlignmentConfig, n_clients: int, profiled: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """(C,) ints in 1..E: the ``capacity_from`` source, then the ``capacity`` override.

    profiled: k_c per client from :func:`expert_capacity` (needed for ``'profile'``).
    An override naming a client that does not exist raises ConfigError.
    """
    prof = None if profiled is None else np.asarray(profiled)
    k = CAPACITY_SOURCES.get(cfg.capacity_from, key="alignment.capacity_from")(
        cfg, n_clients, prof
    ).copy()
    over = cfg.capacity
    if isinstance(over, dict):
        for client, value in over.items():
            if client >= n_clients:
                raise ConfigError(
                    f"alignment.capacity: client index {client} out of range "
                    f"0..{n_clients - 1}"
                )
            k[client] = value
    elif over is not None:
        if len(over) != n_clients:
            raise ConfigError(
                f"alignment.capacity: {len(over)} values given, need one per client "
                f"({n_clients})"
            )
        k[:] = over
    return np.clip(k, 1, cfg.experts)
