"""Dynamic fitness scoring: the server's client x expert fitness matrix Q.

Follows FLEX-MoE (arXiv 2512.23070; system view in Chen et al., arXiv 2507.05685): after
each round, for every expert e that client c trained, the server moves Q(c, e) toward the
feedback signal s(c, e) by an exponential moving average,

    Q(c, e) <- (1 - beta) Q(c, e) + beta s(c, e),

where s is the local accuracy of expert e on the samples the client's gate routed to it,
or exp(-alpha_L * loss). Pairs not tried keep their value, so an untried pair stays at the
optimistic ``initial_fitness`` until it is assigned. All functions are pure: they return
new arrays and never touch their inputs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from nmoe_sim.registry import Registry

# A signal maps per-pair (accuracy, loss) feedback, both C x E, to s in [0, 1].
FitnessSignal = Callable[[np.ndarray | None, np.ndarray | None, float], np.ndarray]

FITNESS_SIGNALS: Registry[FitnessSignal] = Registry("fitness signal")


def _need(x: np.ndarray | None, what: str, kind: str) -> np.ndarray:
    if x is None:
        raise ValueError(f"fitness signal {kind!r} needs the per-pair {what}")
    return np.asarray(x, dtype=np.float64)


@FITNESS_SIGNALS.register("accuracy")
def _accuracy_signal(
    accuracy: np.ndarray | None, loss: np.ndarray | None, loss_alpha: float
) -> np.ndarray:
    acc = _need(accuracy, "accuracy", "accuracy")
    # Accuracies outside [0, 1] are a caller bug (a percentage, a count), not noise.
    finite = acc[np.isfinite(acc)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError("accuracy signal must lie in [0, 1]")
    return acc.copy()


@FITNESS_SIGNALS.register("loss")
def _loss_signal(
    accuracy: np.ndarray | None, loss: np.ndarray | None, loss_alpha: float
) -> np.ndarray:
    lo = _need(loss, "loss", "loss")
    if loss_alpha <= 0:
        raise ValueError(f"loss_alpha must be > 0, got {loss_alpha}")
    # A cross-entropy is >= 0, so s = exp(-alpha_L * loss) lies in (0, 1] like accuracy.
    return np.exp(-loss_alpha * lo)


def fitness_signal(
    kind: str,
    accuracy: np.ndarray | None,
    loss: np.ndarray | None,
    loss_alpha: float,
) -> np.ndarray:
    """The feedback s(c, e) of kind ``'accuracy'`` (s = accuracy) or ``'loss'``
    (s = exp(-loss_alpha * loss)); inputs are C x E, entries for untrained pairs may be NaN.
    An unknown kind raises ConfigError naming ``alignment.fitness``."""
    return FITNESS_SIGNALS.get(kind, key="alignment.fitness")(accuracy, loss, loss_alpha)


def init_fitness(n_clients: int, n_experts: int, value: float) -> np.ndarray:
    """Q before any feedback: every pair at ``value`` (``alignment.initial_fitness``)."""
    if n_clients < 0 or n_experts < 1:
        raise ValueError(f"need n_clients >= 0 and n_experts >= 1, got {n_clients}, {n_experts}")
    return np.full((n_clients, n_experts), float(value), dtype=np.float64)


def update_fitness(
    q: np.ndarray, trained: np.ndarray, signal: np.ndarray, beta: float
) -> np.ndarray:
    """A new Q: ``(1 - beta) Q + beta s`` where ``trained[c, e]``, Q unchanged elsewhere.

    q, signal: C x E floats; trained: C x E bools (the pairs whose feedback arrived this
    round: assigned, trained and uploaded before the deadline). The signal of untrained
    pairs is never read, so NaN placeholders there are fine.
    """
    q = np.asarray(q, dtype=np.float64)
    trained = np.asarray(trained)
    signal = np.asarray(signal, dtype=np.float64)
    if q.ndim != 2 or trained.shape != q.shape or signal.shape != q.shape:
        raise ValueError(
            f"q, trained and signal must share one C x E shape, got "
            f"{q.shape}, {trained.shape}, {signal.shape}"
        )
    if trained.dtype != np.bool_:
        raise ValueError(f"trained must be a bool mask, got dtype {trained.dtype}")
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    if not np.all(np.isfinite(signal[trained])):
        raise ValueError("signal is not finite for some trained pair")
    out = q.copy()
    out[trained] = (1.0 - beta) * q[trained] + beta * signal[trained]
    return out
