"""A client's mixture of experts in the alignment system: pure PyTorch, no simulated time.

After FLEX-MoE (arXiv 2512.23070): a client holds the shared FE, the experts the server
assigned it this round and its own gate, trains them together with cross-entropy on the
MoE output, then reports per-expert usage, accuracy and loss. Our choices where the
sources are silent (docs/alignment.md):

* The gate scores all E experts and unassigned ones are masked to -inf before the softmax.
  A client keeps one gate across rounds while its assignment changes, so a gate over the
  whole pool keeps what it learned about an expert it held before; masked experts get
  neither weight nor gradient.
* Dense mixture: output = sum_e w_e * expert_e(h) over the assigned experts (Jacobs et
  al., 1991). With top-1 routing Softmax(TopK) is 1 and the gate would get no gradient;
  a client holds only k_c <= E experts, so running all of them is affordable (and is what
  capacity profiling budgets for). No gate noise: a dense mixture needs no exploration.
* An expert's *usage* is the number of local samples whose largest gate weight is that
  expert (the samples "routed" to it); its accuracy and loss are the expert's own
  prediction on those samples. An assigned expert the gate routes nothing to is scored on
  all of the client's samples instead, so every trained pair has a defined signal.

Shapes: B batch, D feature_dim, E experts, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nmoe_sim.fl.train import predict_batched


@dataclass(frozen=True)
class ExpertFeedback:
    """Per-expert statistics a client uploads; (E,) each, NaN where the expert was not held."""

    usage: np.ndarray  # samples routed (top-1 gate choice), 0 for experts not held
    accuracy: np.ndarray
    loss: np.ndarray


def held_experts(mask: torch.Tensor) -> list[int]:
    """Indices of the experts a (E,) bool mask selects, ascending."""
    return torch.nonzero(mask).flatten().tolist()


def gate_weights(gate_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,E) logits, (E,) bool mask -> (B,E) softmax weights, exactly 0 where masked."""
    if not bool(mask.any()):
        raise ValueError("gate mask selects no expert")
    return torch.softmax(gate_logits.masked_fill(~mask, float("-inf")), dim=-1)


def mixture(h: torch.Tensor, gate: nn.Module, experts: Sequence[nn.Module | None],
            mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MoE logits (B,K) and gate weights (B,E); ``experts[e]`` may be None where not masked in."""
    w = gate_weights(gate(h), mask)  # (B,E)
    held = held_experts(mask)
    outs = torch.stack([experts[e](h) for e in held], dim=1)  # type: ignore[misc]  # (B,k,K)
    return torch.einsum("bk,bkc->bc", w[:, held], outs), w


class ClientMoE(nn.Module):
    """What a client trains in a round, as one module: the FE, its gate, the k experts it holds.

    The architecture depends only on k; which experts of the pool they are is the (E,)
    ``mask`` each call takes (held experts in ascending index order), so one template
    serves every client holding k experts.
    """

    def __init__(self, fe: nn.Module, gate: nn.Module, experts: Sequence[nn.Module]) -> None:
        super().__init__()
        self.fe = fe
        self.gate = gate
        self.experts = nn.ModuleList(experts)

    def pool_view(self, mask: torch.Tensor) -> list[nn.Module | None]:
        """The held experts at their pool indices, None elsewhere."""
        held = held_experts(mask)
        if len(held) != len(self.experts):
            raise ValueError(f"mask holds {len(held)} experts, the module {len(self.experts)}")
        out: list[nn.Module | None] = [None] * mask.numel()
        for e, m in zip(held, self.experts):
            out[e] = m
        return out

    def mixture_loss(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits, _ = mixture(self.fe(x), self.gate, self.pool_view(mask), mask)
        return F.cross_entropy(logits, y)

    def feedback(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> "ExpertFeedback":
        return expert_feedback(self.fe, self.gate, self.pool_view(mask), mask, x, y)


@torch.no_grad()
def expert_feedback(fe: nn.Module, gate: nn.Module, experts: Sequence[nn.Module | None],
                    mask: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> ExpertFeedback:
    """Usage, accuracy and loss per held expert after local training (one forward pass)."""
    n_experts = mask.numel()
    usage = np.zeros(n_experts)
    acc = np.full(n_experts, np.nan)
    loss = np.full(n_experts, np.nan)
    for m in (fe, gate):
        m.eval()
    h = predict_batched(fe, x)  # (N,D)
    top1 = gate_weights(predict_batched(gate, h), mask).argmax(dim=1)  # (N,)
    for e in held_experts(mask):
        expert = experts[e]
        assert expert is not None
        expert.eval()
        routed = top1 == e
        usage[e] = float(routed.sum())
        keep = routed if bool(routed.any()) else torch.ones_like(routed)
        z = expert(h[keep])  # (n_e,K)
        acc[e] = float((z.argmax(1) == y[keep]).double().mean())
        loss[e] = float(F.cross_entropy(z, y[keep]))
    return ExpertFeedback(usage, acc, loss)


@torch.no_grad()
def predict(fe: nn.Module, gate: nn.Module, experts: Sequence[nn.Module], mask: torch.Tensor,
            x: torch.Tensor) -> torch.Tensor:
    """(N,) predicted classes of the client's MoE on ``x``."""
    for m in (fe, gate, *experts):
        m.eval()
    return predict_batched(lambda xb: mixture(fe(xb), gate, experts, mask)[0], x).argmax(1)
