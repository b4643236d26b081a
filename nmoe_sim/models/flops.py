"""FLOP counting from the real modules, and parameter sizes in bytes.

The compute model charges ``flops / device.flops_per_s`` simulated seconds, so the FLOPs
must come from the modules that actually run. We count the forward pass of one sample with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions, 2 FLOPs per MAC;
element-wise ops are ignored, as is customary) and take a training step as 3x forward
(backward costs about twice the forward: Kaplan et al. 2020, "Scaling Laws", Sec. 2.1).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

TRAIN_FLOPS_PER_FORWARD = 3.0


def forward_flops_per_sample(module: nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass on one sample of ``input_shape`` (no batch dimension)."""
    was_training = module.training
    module.eval()
    x = torch.zeros((1, *input_shape))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    module.train(was_training)
    return float(counter.get_total_flops())


def train_flops_per_sample(module: nn.Module, input_shape: tuple[int, ...]) -> float:
    return TRAIN_FLOPS_PER_FORWARD * forward_flops_per_sample(module, input_shape)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_bytes(module: nn.Module, bytes_per_param: int) -> int:
    return param_count(module) * bytes_per_param


def gate_train_flops_per_sample(gate: nn.Module, feature_dim: int) -> float:
    """Training FLOPs of a noisy top-k gate: the noise branch runs only in training, so the
    eval-mode forward count misses it and it is added here."""
    fwd = forward_flops_per_sample(gate, (feature_dim,))
    if getattr(gate, "noisy", False):
        fwd += forward_flops_per_sample(gate.noise, (gate.noise.in_features,))
    return TRAIN_FLOPS_PER_FORWARD * fwd
