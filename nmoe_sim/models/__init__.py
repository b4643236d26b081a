"""Models of an NMoE client and FLOP counting."""

from nmoe_sim.models.flops import (
    forward_flops_per_sample,
    gate_train_flops_per_sample,
    param_bytes,
    param_count,
    train_flops_per_sample,
)
from nmoe_sim.models.modules import (
    Classifier,
    ContrastiveModel,
    DittoGates,
    Expert,
    FeatureExtractor,
    Gate,
    ProjectionHead,
    Standardize,
    all_expert_probs,
    topk_route,
)

__all__ = [
    "Classifier", "ContrastiveModel", "DittoGates", "Expert", "FeatureExtractor", "Gate", "ProjectionHead", "Standardize",
    "topk_route", "all_expert_probs", "forward_flops_per_sample", "gate_train_flops_per_sample", "train_flops_per_sample", "param_count", "param_bytes",
]
