"""Model sizes, FLOPs and client capacity profiling of the alignment system, from a live Sim.

The pure formula is :func:`nmoe_sim.fl.alignment.capacity.profile_capacity`; this module
feeds it each client's device profile (memory, FLOP/s) and uplink rate, the latter from
the mean SNR of the client's base-station link (no fading) times that link's bandwidth:
the rate a link budget gives before any sharing, which is what a device would advertise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from nmoe_sim.fl.alignment.capacity import CapacityProfile, client_capacities, profile_capacity
from nmoe_sim.fl.alignment.config import AlignmentConfig
from nmoe_sim.fl.rounds import BS
from nmoe_sim.models.flops import forward_flops_per_sample, train_flops_per_sample
from nmoe_sim.net.channel import spectral_efficiency_bps_hz


@dataclass(frozen=True)
class ModelCosts:
    """Bytes of one copy and FLOPs per sample of the FE, one expert and the gate."""

    fe_bytes: int
    expert_bytes: int
    fe_fwd_flops: float
    fe_train_flops: float
    expert_fwd_flops: float
    expert_train_flops: float
    gate_fwd_flops: float
    gate_train_flops: float

    def local_flops(self, n_samples: int, epochs: int, k: int) -> float:
        """Training FE + gate + k experts for ``epochs`` passes, then one feedback pass."""
        train = self.fe_train_flops + self.gate_train_flops + k * self.expert_train_flops
        fwd = self.fe_fwd_flops + self.gate_fwd_flops + k * self.expert_fwd_flops
        return float(n_samples) * (epochs * train + fwd)


def model_costs(fe: nn.Module, expert: nn.Module, gate: nn.Module, input_shape: tuple[int, int, int],
                feature_dim: int, bytes_per_param: int) -> ModelCosts:
    feat = (feature_dim,)
    return ModelCosts(
        fe_bytes=sum(p.numel() for p in fe.parameters()) * bytes_per_param,
        expert_bytes=sum(p.numel() for p in expert.parameters()) * bytes_per_param,
        fe_fwd_flops=forward_flops_per_sample(fe, input_shape),
        fe_train_flops=train_flops_per_sample(fe, input_shape),
        expert_fwd_flops=forward_flops_per_sample(expert, feat),
        expert_train_flops=train_flops_per_sample(expert, feat),
        gate_fwd_flops=forward_flops_per_sample(gate, feat),
        gate_train_flops=train_flops_per_sample(gate, feat),
    )


@dataclass(frozen=True)
class ClientProfile:
    """What profiling saw for one client and what it concluded (metrics.json ``capacity``)."""

    client: int
    device: str
    memory_bytes: float
    flops_per_s: float
    mean_snr_db: float
    uplink_rate_bps: float
    profile: CapacityProfile
    k: int  # the capacity used: the profile's, or the scenario's override

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("profile"))
        out["profiled_k"] = self.profile.k
        out["k"] = self.k
        return out


def uplink_rate_bps(sim: Any, client: int) -> tuple[float, float]:
    """(mean SNR dB, rate bit/s) of ``client``'s base-station uplink; rate inf on an ideal link."""
    link = sim.net.link(client, BS)
    snr_db = float(sim.net.mean_snr_db(client, BS))
    return snr_db, float(link.cfg.bandwidth_hz * spectral_efficiency_bps_hz(link.cfg, snr_db))


def profile_clients(world: Any, sim: Any, cfg: AlignmentConfig, costs: ModelCosts) -> list[ClientProfile]:
    """Profile every client, then apply ``capacity_from`` / ``capacity`` (the scenario's word wins)."""
    budget_s = cfg.deadline_s if cfg.deadline_s is not None else cfg.profile_budget_s
    seen = []
    for c in world.clients:
        snr_db, rate_bps = uplink_rate_bps(sim, c.idx)
        # An ideal link never binds: stand in the rate that carries the whole pool in budget.
        finite_rate = rate_bps if math.isfinite(rate_bps) else 2.0 * cfg.experts * 8 * costs.expert_bytes / budget_s
        prof = profile_capacity(
            c.profile.memory_bytes, c.profile.flops_per_s, finite_rate,
            fe_bytes=costs.fe_bytes, expert_bytes=costs.expert_bytes,
            expert_train_flops_per_round=cfg.local_epochs * c.num_samples * costs.expert_train_flops,
            round_budget_s=budget_s, n_experts=cfg.experts, memory_overhead=cfg.memory_overhead,
        )
        seen.append((c, snr_db, rate_bps, prof))
    k = client_capacities(cfg, len(seen), np.array([p.k for *_, p in seen]))
    return [ClientProfile(c.idx, c.device, c.profile.memory_bytes, c.profile.flops_per_s, snr_db, rate,
                          prof, int(k[c.idx])) for c, snr_db, rate, prof in seen]
