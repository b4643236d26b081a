"""Experts stacked once give the probabilities of stacking them on every call, bit for bit."""

from __future__ import annotations

import torch

from nmoe_sim.fl.routing import StackedExperts
from nmoe_sim.models import Expert, all_expert_probs


def test_stacked_experts_equal_all_expert_probs_exactly_for_all_and_for_subsets() -> None:
    torch.manual_seed(0)
    experts = [Expert(16, 12, 5) for _ in range(9)]
    stacked = StackedExperts(experts)
    for n in (1, 5, 60):
        feats = torch.randn(n, 16)
        assert torch.equal(stacked.probs(feats), all_expert_probs(experts, feats))
        for which in ([3], [0, 2, 7], list(range(9))):
            assert torch.equal(stacked.probs(feats, which), all_expert_probs([experts[j] for j in which], feats))
