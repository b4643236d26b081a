"""FedSC's spectral contrastive objective (pure tensor math).

S. Jing et al., "FedSC: Provable Federated Self-supervised Learning with Spectral
Contrastive Objective over Non-i.i.d. Data", ICML 2024; the spectral contrastive loss is
from J. Z. HaoChen et al., NeurIPS 2021. For two views z1, z0 (B x P):

    L = -(2/B) tr(z1 z0^T) + alpha ||R_loc||_F^2 + 2 (1 - alpha) tr(R_loc R_ext)

with R_loc = Z^T Z / (2B) over both views Z = [z1; z0] and R_ext the mean correlation of
the other clients, shared through the server. Projections are clipped to norm sqrt(mu).
"""

from __future__ import annotations

import torch


def clip_norm(z: torch.Tensor, mu: float) -> torch.Tensor:
    """Scale rows with norm above sqrt(mu) back onto the sphere of radius sqrt(mu). (B,P)->(B,P)"""
    norms = z.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return z * torch.clamp(mu**0.5 / norms, max=1.0)


def correlation(z1: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """R = Z^T Z / (2B) for Z the (2B, P) stack of both views; returns (P, P)."""
    z = torch.cat([z1, z0], dim=0)
    return z.T @ z / z.shape[0]


def spectral_loss(z1: torch.Tensor, z0: torch.Tensor, alpha: float, r_ext: torch.Tensor | None) -> torch.Tensor:
    """The FedSC objective; with ``r_ext`` None it is the local spectral loss (alpha taken as 1)."""
    b = z1.shape[0]
    r_loc = correlation(z1, z0)
    align = -2.0 / b * torch.trace(z1 @ z0.T)
    if r_ext is None:
        return align + (r_loc**2).sum()
    return align + alpha * (r_loc**2).sum() + 2.0 * (1.0 - alpha) * torch.trace(r_loc @ r_ext)


def alpha_value(value: float | str, n_clients: int) -> float:
    """A configured alpha as a number: ``"1/K"`` is each of K clients' share of the global loss."""
    return 1.0 / n_clients if value == "1/K" else float(value)


def alpha_schedule(rnd: int, rounds: int, start: float, end: float) -> float:
    """Linear annealing of alpha from ``start`` (round 0) to ``end`` (last round)."""
    if rounds <= 1:
        return end
    return start + (end - start) * rnd / (rounds - 1)
