"""Query arrivals as a scenario knob: a Poisson process, constant or with periodic bursts.

Pure functions of a client's generator. A constant rate draws ``exponential(1 / rate)``
gaps, exactly as inference always has. With bursts (``inference.bursts``) the rate is
``factor x rate`` for ``duration_s`` at the start of every ``every_s`` and ``rate`` between:
a non-homogeneous Poisson process, drawn by inverting its cumulative intensity
Lambda(t) (Cinlar's method): unit-rate exponential gaps E_i, next arrival at
Lambda^-1(Lambda(t) + E_i). One draw per arrival, no thinning, so the arrival times are a
pure function of the seed.
"""

from __future__ import annotations

import math

import numpy as np

from nmoe_sim.serving.config import BurstConfig


def intensity_integral(t_s: float, rate_hz: float, b: BurstConfig) -> float:
    """Lambda(t) = integral of the rate over [0, t]."""
    periods, into = divmod(t_s, b.every_s)
    per_period = rate_hz * (b.every_s + (b.factor - 1.0) * b.duration_s)
    burst_part = min(into, b.duration_s)
    return periods * per_period + rate_hz * (into + (b.factor - 1.0) * burst_part)


def inverse_intensity(target: float, rate_hz: float, b: BurstConfig) -> float:
    """The t with Lambda(t) = target (Lambda is continuous and strictly increasing)."""
    per_period = rate_hz * (b.every_s + (b.factor - 1.0) * b.duration_s)
    periods = math.floor(target / per_period)
    left = target - periods * per_period
    in_burst = rate_hz * b.factor * b.duration_s
    if left <= in_burst:
        into = left / (rate_hz * b.factor)
    else:
        into = b.duration_s + (left - in_burst) / rate_hz
    return periods * b.every_s + into


def next_arrival_s(now_s: float, rate_hz: float, bursts: BurstConfig | None, rng: np.random.Generator) -> float:
    """The gap from ``now_s`` to the next arrival (one draw from ``rng``)."""
    if bursts is None:
        return float(rng.exponential(1.0 / rate_hz))
    target = intensity_integral(now_s, rate_hz, bursts) + float(rng.exponential(1.0))
    return max(inverse_intensity(target, rate_hz, bursts) - now_s, 0.0)
