"""The local optimiser's settings per round: learning-rate schedules over a stage's rounds.

FedSC's authors (Jing et al., ICML 2024; their FedSSL_SPEC.py) anneal the clients'
learning rate with a cosine over the communication rounds, the optimiser re-created each
round: round t of T trains at ``lr * (1 + cos(pi t / T)) / 2`` (PyTorch's
``CosineAnnealingLR`` stepped once per round, minimum 0). Pure functions, no state.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from nmoe_sim.config import SGDConfig, TrainConfig
from nmoe_sim.registry import Registry

# (base lr, round, rounds) -> this round's lr
LR_SCHEDULES: Registry[Callable[[float, int, int], float]] = Registry("lr_schedule")


@LR_SCHEDULES.register("constant")
def constant(lr: float, rnd: int, rounds: int) -> float:
    return lr


@LR_SCHEDULES.register("cosine")
def cosine(lr: float, rnd: int, rounds: int) -> float:
    """Cosine annealing from ``lr`` at round 0 towards 0 at round ``rounds`` (never reached)."""
    return lr * (1.0 + math.cos(math.pi * rnd / rounds)) / 2.0


def round_lr(cfg: TrainConfig, rnd: int) -> float:
    """The learning rate of round ``rnd`` of a federated stage."""
    return LR_SCHEDULES.get(cfg.lr_schedule, "lr_schedule")(cfg.lr, rnd, cfg.rounds)


def sgd_args(cfg: SGDConfig, rnd: int | None = None) -> dict[str, Any]:
    """A task's optimiser settings: ``rnd`` given, the round's scheduled learning rate."""
    lr = round_lr(cfg, rnd) if rnd is not None and isinstance(cfg, TrainConfig) else cfg.lr
    return {"lr": lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
            "grad_clip_norm": cfg.grad_clip_norm}
