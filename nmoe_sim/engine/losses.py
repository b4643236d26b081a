"""The registered pure losses and post-training reports a :class:`~nmoe_sim.engine.tasks.TrainTask` names.

A loss is ``(module in train mode, batch) -> loss`` or ``-> (loss, stat)``: it reads only
the module, the batch (its inputs, targets, per-sample extras, the random draws made for
it when the task was built, and the task's constant arguments) and no other state, so
any executor in any process computes the same thing. A ``stat`` is a per-batch statistic
the executor averages over the last epoch (sample-weighted), e.g. FedSC's correlation
matrix. A report is measured once on the trained module (eval mode, no gradients).

Everything a worker process needs to run a task is registered here, so importing this
module is enough to make every task runnable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn
from torch.nn import functional as F

from nmoe_sim.fl.fedsc_loss import clip_norm, correlation, spectral_loss
from nmoe_sim.registry import Registry


@dataclass(frozen=True)
class Batch:
    x: torch.Tensor  # (B, ...) inputs
    y: torch.Tensor  # (B,) targets
    aux: Mapping[str, torch.Tensor]  # per-sample extras of the batch, e.g. gate targets (B, E, K)
    draw: Any  # the random material drawn for this batch when the task was built (or None)
    args: Mapping[str, Any]  # the task's constant arguments


LossOut = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
Loss = Callable[[nn.Module, Batch], LossOut]
LOSSES: Registry[Loss] = Registry("loss")
# (trained module in eval mode, the task) -> whatever the algorithm reads back.
Report = Callable[[nn.Module, Any], Any]
REPORTS: Registry[Report] = Registry("report")


def generator_from(state: torch.Tensor | None) -> torch.Generator | None:
    """A CPU generator resumed at ``state`` (a ``Generator.get_state()`` snapshot); None for None."""
    if state is None:
        return None
    gen = torch.Generator()
    gen.set_state(state)
    return gen


def draw_generator_state(numel_per_sample: int) -> Callable[[int, torch.Generator], torch.Tensor]:
    """A batch draw for a loss that samples ``numel_per_sample`` normals per sample.

    It snapshots the client's generator and then advances it by exactly the draws the loss
    will make from the snapshot (``torch.randn((B, numel_per_sample))``), so the stream
    continues where a loss drawing in place would have left it. A 5 kB state per batch
    instead of the noise itself keeps a 1,000-expert gate's plan small.
    """
    def draw(batch_size: int, gen: torch.Generator) -> torch.Tensor:
        state = gen.get_state()
        torch.randn((batch_size, numel_per_sample), generator=gen)
        return state
    return draw


@LOSSES.register("cross_entropy")
def cross_entropy(module: nn.Module, b: Batch) -> torch.Tensor:
    return F.cross_entropy(module(b.x), b.y)


@LOSSES.register("fedsc_spectral")
def fedsc_spectral(module: nn.Module, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """FedSC's two-view spectral loss; the stat is the views' correlation R_loc (P, P).

    ``draw`` holds the two views' seeds; ``args``: ``views`` (a ViewAugmenter), ``mu`` (the
    squared clipping radius), ``alpha`` and ``r_ext`` (the other clients' mean correlation,
    or None).
    """
    views, mu = b.args["views"], b.args["mu"]
    z1 = clip_norm(module(views.apply(b.x, b.draw[0])), mu)  # (B,P)
    z0 = clip_norm(module(views.apply(b.x, b.draw[1])), mu)  # (B,P)
    stat = correlation(z1.detach(), z0.detach())
    return spectral_loss(z1, z0, b.args["alpha"], b.args["r_ext"]), stat


# Samples per view batch when a report measures views: each chunk's view has its own seed.
VIEW_CHUNK = 1024


@REPORTS.register("fedsc_correlation")
def fedsc_correlation(module: nn.Module, task: Any) -> torch.Tensor:
    """FedSC's fresh statistic: the correlation R = Z^T Z / N of the clipped projections of
    augmented passes over the client's data, through the model it just downloaded (eval
    mode), as the authors' ``compCOV`` (two views per sample in each pass).
    ``args['seeds']``: per view pass, one view seed per chunk of VIEW_CHUNK samples, drawn
    with the task. Returns (P, P)."""
    views, mu = task.args["views"], task.args["mu"]
    x = task.x.to(next(module.parameters()).device)
    total, count = None, 0
    for seeds in task.args["seeds"]:
        for seed, start in zip(seeds, range(0, len(x), VIEW_CHUNK)):
            z = clip_norm(module(views.apply(x[start : start + VIEW_CHUNK], seed)), mu)  # (b,P)
            total = z.T @ z if total is None else total + z.T @ z
            count += len(z)
    assert total is not None, "a correlation over no samples"
    return total / count


# --------------------------------------------------------------------------- the gate
# A gate target: (gate logits (B,E), true-class probability of every expert (B,E),
# available experts (E,) bool, open experts (E,) bool or None for all) -> loss. Named by
# ``stage3.target``. Open: the experts the gate chooses among (its candidates, trained);
# available: the open ones whose outputs reached the client. An open expert that is not
# available (its transfer was lost) stays in the gate's softmax with no evidence for it, so
# it is ranked below the best the client heard from: masked out of the loss as well, its
# logit stayed untrained, and at inference, where it is open again, it could outrank the
# client's own expert (a client whose exchange failed then routed nothing to itself).
GateTarget = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
GATE_TARGETS: Registry[GateTarget] = Registry("gate target")


def _closed(logits: torch.Tensor, open_: torch.Tensor | None) -> torch.Tensor:
    return logits if open_ is None else logits.masked_fill(~open_, -1e9)


@GATE_TARGETS.register("best_expert")
def best_expert_loss(logits: torch.Tensor, true_p: torch.Tensor, available: torch.Tensor,
                     open_: torch.Tensor | None = None) -> torch.Tensor:
    """Classify the available expert that gives the true class the highest probability."""
    target = true_p.masked_fill(~available, -1.0).argmax(1)
    return F.cross_entropy(_closed(logits, open_), target)


@GATE_TARGETS.register("moe_loss")
def moe_loss(logits: torch.Tensor, true_p: torch.Tensor, available: torch.Tensor,
             open_: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood of the dense mixture sum_j softmax(logits)_j p_j(y); an open
    expert that did not report counts as giving the true class nothing."""
    g = torch.softmax(_closed(logits, open_), dim=1)  # (B,E)
    return -torch.log((g * true_p.masked_fill(~available, 0.0)).sum(1).clamp_min(1e-12)).mean()


@LOSSES.register("gate")
def gate(module: nn.Module, b: Batch) -> torch.Tensor:
    """A noisy gate on frozen features against every expert's probability of the true class
    (``aux['true_p']`` (B,E): all a gate target reads of the experts' (B,E,K) outputs).

    ``draw`` is the generator state the gate noise starts from; ``args``: ``target`` (a
    GATE_TARGETS name), ``available`` and ``open`` (E,) bool (see GATE_TARGETS).
    """
    logits = module(b.x, generator_from(b.draw))
    return GATE_TARGETS.get(b.args["target"], "stage3.target")(logits, b.aux["true_p"], b.args["available"],
                                                               b.args.get("open"))


@LOSSES.register("gate_ditto")
def gate_ditto(module: nn.Module, b: Batch) -> torch.Tensor:
    """Ditto-style FedGate (Li et al., ICML 2021): the shared gate's loss plus the personal
    gate's loss plus (prox/2) ||personal - anchor||^2, ``anchor`` being the shared gate the
    client last downloaded (constant). ``module`` is a DittoGates; ``draw`` the
    generator state both gates' noise is drawn from, shared gate first."""
    target = GATE_TARGETS.get(b.args["target"], "stage3.target")
    true_p, available, open_ = b.aux["true_p"], b.args["available"], b.args.get("open")
    gen = generator_from(b.draw)
    shared = target(module.shared(b.x, gen), true_p, available, open_)  # type: ignore[operator]
    personal = target(module.personal(b.x, gen), true_p, available, open_)  # type: ignore[operator]
    anchor = b.args["anchor"]
    pull = sum(((p - anchor[name]) ** 2).sum() for name, p in module.personal.named_parameters())  # type: ignore[union-attr]
    return shared + personal + 0.5 * b.args["prox"] * pull


@LOSSES.register("central_mixture")
def central_mixture(module: nn.Module, b: Batch) -> torch.Tensor:
    """The centralized baseline's dense mixture NLL (``CentralMoE.mixture_nll``), noisy gate."""
    return module.mixture_nll(b.x, b.y, generator_from(b.draw))  # type: ignore[operator]


# --------------------------------------------------------------------------- alignment
@LOSSES.register("alignment_mixture")
def alignment_mixture(module: nn.Module, b: Batch) -> torch.Tensor:
    """Cross-entropy of a client's MoE over the experts ``args['mask']`` holds (``ClientMoE``)."""
    return module.mixture_loss(b.x, b.y, b.args["mask"])  # type: ignore[operator]


@REPORTS.register("expert_feedback")
def expert_feedback(module: nn.Module, task: Any) -> Any:
    """Usage, accuracy and loss of each held expert on the client's data, after training."""
    return module.feedback(task.x, task.y, task.args["mask"])  # type: ignore[operator]
