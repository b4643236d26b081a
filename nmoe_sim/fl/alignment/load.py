"""Global expert load monitoring: who trained which expert, and who is under-served.

After FLEX-MoE (arXiv 2512.23070) and Chen et al. (arXiv 2507.05685), the server tracks
each expert's load (clients that trained it) and usage (samples routed to it) every round,
and keeps a *historical deficit* per expert so that experts under-served before get
priority in the next assignment. The papers state the idea, not the formula; ours is

    deficit_e <- decay * deficit_e + max(0, target_load - load_e),

with target_load the round's fair share, sum_e load_e / E, unless a fixed target is given.
The decay (``alignment.deficit_decay``) makes old shortfalls fade: with decay d a
shortfall still weighs d**t after t rounds, and a steady shortfall f settles at
f / (1 - d); d = 1 never forgets, d = 0 remembers the last round only.

The *utilization* that the papers' coefficient-of-variation figures refer to (greedy
above 0.29, FLEX-MoE about 0.003) is the share of routed samples each expert receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def coefficient_of_variation(x: np.ndarray) -> float:
    """Population std / mean of a 1-D array; 0 when the mean is 0 (nothing to compare)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"need a non-empty 1-D array, got shape {x.shape}")
    mean = float(x.mean())
    if mean == 0.0:
        return 0.0
    return float(x.std(ddof=0) / mean)


@dataclass
class LoadMonitor:
    """Per-round expert loads and usage, and the decaying historical deficit.

    ``loads[t]`` (E,) ints: clients that trained each expert in observed round t.
    ``usage[t]`` (E,) floats: samples routed to each expert in round t, over all clients.
    ``deficit`` (E,) floats >= 0: the historical deficit described in the module docstring.
    """

    n_experts: int
    decay: float = 0.9
    target_load: float | None = None
    loads: list[np.ndarray] = field(default_factory=list)
    usage: list[np.ndarray] = field(default_factory=list)
    deficit: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {self.n_experts}")
        if not 0 <= self.decay <= 1:
            raise ValueError(f"decay must be in [0, 1], got {self.decay}")
        if self.target_load is not None and self.target_load < 0:
            raise ValueError(f"target_load must be >= 0, got {self.target_load}")
        self.deficit = np.zeros(self.n_experts, dtype=np.float64)

    def observe(self, assigned: np.ndarray, usage: np.ndarray) -> None:
        """Record one round.

        assigned: C x E bools, the clients whose update for the expert reached the server
        (pass the assignment itself to count what was scheduled instead).
        usage: C x E samples each client's gate routed to each expert during training.
        """
        assigned = np.asarray(assigned)
        usage = np.asarray(usage, dtype=np.float64)
        if assigned.ndim != 2 or assigned.shape[1] != self.n_experts:
            raise ValueError(
                f"assigned must be C x {self.n_experts}, got shape {assigned.shape}"
            )
        if assigned.dtype != np.bool_:
            raise ValueError(f"assigned must be a bool mask, got dtype {assigned.dtype}")
        if usage.shape != assigned.shape:
            raise ValueError(f"usage shape {usage.shape} != assigned shape {assigned.shape}")
        if np.any(usage < 0) or not np.all(np.isfinite(usage)):
            raise ValueError("usage must be finite and >= 0")
        load = assigned.sum(axis=0).astype(np.int64)  # (E,)
        target = (
            self.target_load if self.target_load is not None
            else load.sum() / self.n_experts
        )
        shortfall = np.maximum(0.0, target - load)  # (E,)
        self.deficit = self.decay * self.deficit + shortfall
        self.loads.append(load)
        self.usage.append(usage.sum(axis=0))

    @property
    def rounds(self) -> int:
        """Rounds observed so far."""
        return len(self.loads)

    def utilization(self) -> np.ndarray:
        """Last round's share of routed samples per expert, (E,) summing to 1; zeros
        before the first round or when nothing was routed."""
        if not self.usage or self.usage[-1].sum() == 0:
            return np.zeros(self.n_experts, dtype=np.float64)
        last = self.usage[-1]
        return last / last.sum()

    def utilization_cv(self) -> float:
        """Coefficient of variation of the last round's utilization (0: perfectly even)."""
        return coefficient_of_variation(self.utilization())

    def load_cv(self) -> float:
        """Coefficient of variation of the last round's per-expert load."""
        if not self.loads:
            return 0.0
        return coefficient_of_variation(self.loads[-1])
