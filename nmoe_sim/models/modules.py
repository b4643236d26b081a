"""The networks of an NMoE client: feature extractor F, expert H_i, gate G, heads.

Widths come from the scenario's ``model`` section; the FE is sized to the input shape.
Shapes in comments: B batch, C channels, H/W spatial, D feature_dim, E experts, K classes.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class FeatureExtractor(nn.Module):
    """Small CNN: [conv3x3 -> (GroupNorm) -> ReLU -> maxpool2] per width, then a linear map
    to D features.

    No batch norm on purpose: running statistics do not average well under FedAvg on
    non-IID clients (Hsieh et al., ICML 2020), and a one-class client's batch statistics
    remove the very direction that tells its class from the others. ``norm="group"``
    normalises each sample over groups of channels instead (Wu & He, 2018): nothing
    running, nothing batch-dependent, so it federates like any weight.
    """

    def __init__(self, input_shape: tuple[int, int, int], channels: tuple[int, ...], feature_dim: int,
                 norm: str = "none"):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for width in channels:
            layers.append(nn.Conv2d(c, width, kernel_size=3, padding=1))
            if norm == "group":
                layers.append(nn.GroupNorm(math.gcd(8, width), width))
            layers.append(nn.ReLU())
            if min(h, w) >= 4:  # keep at least 2x2 spatial cells for tiny inputs (digits 8x8)
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = width
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(c * h * w, feature_dim)
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,D)
        return F.relu(self.fc(self.conv(x).flatten(1)))


class Standardize(nn.Module):
    """Per-feature (h - mean) / std with fixed statistics: the frozen FE's output layer.

    Contrastive features carry a large common offset and tiny spread per dimension; small
    MLPs (experts, gate) trained by SGD on them barely move. The statistics are aggregated
    federatedly after stage 1 (see stage 2), like a BatchNorm frozen at evaluation.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone().clamp_min(1e-6))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B,D) -> (B,D)
        return (h - self.mean) / self.std


class Expert(nn.Module):
    """A client's personalized expert: MLP on frozen features, D -> hidden -> K logits."""

    def __init__(self, feature_dim: int, hidden: int, num_classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B,D) -> (B,K)
        return self.net(h)


@torch.no_grad()
def all_expert_probs(experts: Sequence[Expert], feats: torch.Tensor) -> torch.Tensor:
    """Every expert's class probabilities on the same features at once: (n, D) -> (E, n, K).

    The experts' weights are stacked and applied as two batched matmuls, so E experts cost
    two kernels instead of 3E module calls (a 1,000-client run makes a million of those).
    Equal to calling each expert in turn up to float rounding (tested to 1e-6).
    """
    w1 = torch.stack([e.net[0].weight for e in experts])  # (E,H,D)
    b1 = torch.stack([e.net[0].bias for e in experts])  # (E,H)
    w2 = torch.stack([e.net[2].weight for e in experts])  # (E,K,H)
    b2 = torch.stack([e.net[2].bias for e in experts])  # (E,K)
    hidden = torch.relu(torch.einsum("nd,ehd->enh", feats, w1) + b1[:, None, :])  # (E,n,H)
    logits = torch.einsum("enh,ekh->enk", hidden, w2) + b2[:, None, :]  # (E,n,K)
    return torch.softmax(logits, -1)


class Gate(nn.Module):
    """Noisy top-k gate (Shazeer et al., 2017): logits = head(trunk(h)) + eps * softplus(noise(trunk(h))).

    ``trunk`` and ``head`` are separate submodules because FedGate shares some of them and
    keeps others local (see docs/algorithms.md).
    """

    def __init__(self, feature_dim: int, hidden: int, n_experts: int, noisy: bool = True):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_experts)
        self.noise = nn.Linear(hidden, n_experts)
        self.noisy = noisy

    def forward(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,D) -> (B,E) logits; noise is added only when training and given a generator."""
        z = self.trunk(h)
        logits = self.head(z)
        if self.noisy and self.training and generator is not None:
            eps = torch.randn(logits.shape, generator=generator)
            logits = logits + eps * F.softplus(self.noise(z))
        return logits


class DittoGates(nn.Module):
    """A client's two gates under Ditto-style FedGate: ``shared`` (its copy of the gate the
    clients average) and ``personal`` (its own, which serves its queries). Trained as one
    task; their parameters are disjoint, so one optimiser over both trains each as alone."""

    def __init__(self, shared: Gate, personal: Gate):
        super().__init__()
        self.shared = shared
        self.personal = personal


def topk_route(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax(TopK(logits, k)): returns (weights (B,k) summing to 1, expert indices (B,k)).

    The softmax runs over the k kept logits only, as in Shazeer et al. (2017), so the
    weights of the chosen experts sum to one.
    """
    top_vals, top_idx = torch.topk(logits, k, dim=-1)  # (B,k)
    return torch.softmax(top_vals, dim=-1), top_idx


class BatchNorm(nn.Module):
    """(h - batch mean) / batch std * weight + bias, per feature, always by the batch's own
    statistics: torch's BatchNorm1d without running statistics, except that a batch of one
    sample (a last partial batch) gives ``bias`` instead of an error. (B,D) -> (B,D)"""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mean = h.mean(0, keepdim=True)
        var = h.var(0, unbiased=False, keepdim=True)
        return (h - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class ProjectionHead(nn.Module):
    """Contrastive projection g: D -> D -> P, used by FedSC only.

    With ``batchnorm`` a BatchNorm over the hidden layer, as in SimCLR's and the FedSC
    authors' projectors (their ResNet-18 has BatchNorm throughout; our FE has none, see
    FeatureExtractor). It normalises with the batch's own statistics in training and in
    evaluation alike (no running statistics), so there are no buffers to average and a
    client's correlation pass sees the same normalisation as its training.
    """

    def __init__(self, feature_dim: int, proj_dim: int, batchnorm: bool = False):
        super().__init__()
        norm: list[nn.Module] = [BatchNorm(feature_dim)] if batchnorm else []
        self.net = nn.Sequential(nn.Linear(feature_dim, feature_dim), *norm, nn.ReLU(),
                                 nn.Linear(feature_dim, proj_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B,D) -> (B,P)
        return self.net(h)


class Classifier(nn.Module):
    """FE + linear head: the FedCE model and the FedAvg baseline."""

    def __init__(self, fe: FeatureExtractor, num_classes: int):
        super().__init__()
        self.fe = fe
        self.head = nn.Linear(fe.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,K)
        return self.head(self.fe(x))


class ContrastiveModel(nn.Module):
    """FE + projection head: the FedSC model."""

    def __init__(self, fe: FeatureExtractor, proj_dim: int, batchnorm: bool = False):
        super().__init__()
        self.fe = fe
        self.proj = ProjectionHead(fe.feature_dim, proj_dim, batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,P)
        return self.proj(self.fe(x))
