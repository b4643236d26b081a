"""Seeded model construction: parameter init draws from a named stream, never the global RNG."""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

from nmoe_sim.config import Scenario
from nmoe_sim.models.modules import Expert, FeatureExtractor, Gate
from nmoe_sim.seeds import SeedStreams

M = TypeVar("M", bound=torch.nn.Module)


def seeded(streams: SeedStreams, name: str, factory: Callable[[], M]) -> M:
    """Build ``factory()`` with torch's init RNG seeded from stream ``name``; global state is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(streams.int_seed(f"init/{name}"))
        return factory()


def make_fe(cfg: Scenario, input_shape: tuple[int, int, int], streams: SeedStreams, name: str) -> FeatureExtractor:
    m = cfg.model
    return seeded(streams, name, lambda: FeatureExtractor(input_shape, m.fe_channels, m.feature_dim, m.fe_norm))


def make_expert(cfg: Scenario, num_classes: int, streams: SeedStreams, name: str) -> Expert:
    return seeded(streams, name, lambda: Expert(cfg.model.feature_dim, cfg.model.expert_hidden, num_classes))


def make_gate(cfg: Scenario, n_experts: int, streams: SeedStreams, name: str) -> Gate:
    return seeded(streams, name, lambda: Gate(cfg.model.feature_dim, cfg.model.gate_hidden, n_experts, cfg.model.gate_noise))
