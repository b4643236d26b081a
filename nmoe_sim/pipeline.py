"""The NMoE pipeline as one SimPy process: stage 1 (FE) -> stage 2 (experts) -> stage 3 (gate).

Reads like the paper (Gao et al., arXiv 2511.01743, Sec. III): a shared FE, personalised
experts on frozen features, then a gate with F and every H_i frozen.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np
import simpy
import torch

from nmoe_sim.engine.checkpoint import STAGE, checkpoints_of
from nmoe_sim.fl.rounds import CostScope, RoundDriver
from nmoe_sim.fl.routing import QueryBank, Router, combine
from nmoe_sim.fl.stage1 import make_stage1
from nmoe_sim.fl.stage2 import STAGE as STAGE2, train_experts
from nmoe_sim.fl.stage3 import GATE_ALGORITHMS, NMoEParts
from nmoe_sim.inference import InferenceSpec, Leg
from nmoe_sim.models import forward_flops_per_sample
from nmoe_sim.models.build import make_gate
from nmoe_sim.serving.chooser import policy_chooser
from nmoe_sim.world import Sim, World

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSpan:
    """When a system's stage ran in that system's simulated clock."""

    system: str
    stage: str
    start_s: float
    end_s: float
    inference: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # merged into metrics.json's stages.<stage>


def train_nmoe(world: World, sim: Sim, spans: list[StageSpan]) -> Generator[simpy.Event, Any, tuple[NMoEParts, Router, CostScope]]:
    parts = yield from train_shared(world, sim, spans)
    router, scope = yield from train_gate(world, sim, parts, spans)
    return parts, router, scope


def train_shared(world: World, sim: Sim, spans: list[StageSpan]) -> Generator[simpy.Event, Any, NMoEParts]:
    """Stages 1 and 2: the shared FE, then every client's expert on its frozen features.

    Nothing here reads the stage-3 settings (``reuse.NMOE_PREFIX_FREE``), so sweep points
    that differ only there can share what this leaves behind.
    """
    ck = checkpoints_of(sim)
    env = sim.env
    # A frame holds what a resumed run needs to go on (engine/checkpoint.py): here the
    # stage-1 algorithm and its driver until stage 1 ends, then its trained FE.
    with ck.frame("shared", dict) as shared:
        if not hasattr(shared, "fe"):
            with ck.frame("stage1", lambda: new_stage1(world, sim)) as st:
                yield from st.driver.run(st.algo, world.cfg.stage1, st.scope)
            fe = st.algo.fe
            fe.eval()
            representation = st.algo.representation()
            warn_if_unlearned(st.algo.stage, representation)
            spans.append(StageSpan(sim.system, st.algo.stage, st.start, env.now, extra={"representation": representation}))
            shared.fe, shared.stage1 = fe, st.algo.stage
            ck.save(f"{sim.system} {st.algo.stage} done", STAGE)
        fe, s1 = shared.fe, shared.stage1

        start = env.now
        experts, feats, client_fes = yield from train_experts(world, sim, fe)
        spans.append(StageSpan(sim.system, STAGE2, start, env.now))

    bank = QueryBank(client_fes, experts, [c.x_query for c in world.clients], [c.y_query for c in world.clients],
                     world.dataset.num_classes)
    return NMoEParts(fe, experts, feats, bank, trained_by=(s1, STAGE2))  # fe: raw FE, for FLOP counting


def new_stage1(world: World, sim: Sim) -> dict[str, Any]:
    """Stage 1 from its first round: the algorithm (it owns its stage name: the costs it
    causes are recorded under it), its cost scope and its round driver."""
    fe_algo = make_stage1(world)
    s1 = fe_algo.stage
    return {"algo": fe_algo, "start": sim.env.now,
            "scope": CostScope(sim.system, [s1, STAGE2]),  # stage 3 has recorded nothing yet
            "driver": RoundDriver(sim, world.n_clients, world.streams.numpy(f"{s1}/participation"))}


def warn_if_unlearned(stage: str, rep: dict[str, Any]) -> None:
    """One line on stderr when stage 1 learned nothing useful (also flagged in metrics.json)."""
    if rep["no_update"]:
        log.warning("%s: no client update arrived in any round; the FE is the untrained one", stage)
    elif rep["collapsed"]:
        log.warning("%s: features collapsed (effective rank %.2f; linear probe %.3f vs %.3f untrained)",
                    stage, rep["effective_rank"], rep["linear_probe"], rep["untrained"]["linear_probe"])
    if rep.get("projection_collapsed"):
        log.warning("%s: projections collapsed (one direction holds %.1f %% of their correlation; spectral loss "
                    "%.4f, collapsed optimum %.4f; view agreement %.4f)", stage, 100 * rep["projection_top_share"],
                    rep["spectral_loss"], rep["collapsed_spectral_loss"], rep["view_agreement"])


def train_gate(world: World, sim: Sim, parts: NMoEParts, spans: list[StageSpan]) -> Generator[
        simpy.Event, Any, tuple[Router, CostScope]]:
    """Stage 3: the gate, with F and every H_i frozen; returns the router and the NMoE's cost scope."""
    gate_method = GATE_ALGORITHMS.get(world.cfg.stage3.algorithm, "stage3.algorithm")
    s3 = gate_method.stage
    with checkpoints_of(sim).frame("stage3", lambda: {
            "scope": CostScope(sim.system, [*parts.trained_by, s3]), "start": sim.env.now}) as st:
        router = yield from gate_method.train(world, sim, parts, st.scope, s3)
    spans.append(StageSpan(sim.system, s3, st.start, sim.env.now))
    return router, st.scope


def nmoe_spec(world: World, parts: NMoEParts, router: Router, sim: Sim | None = None) -> InferenceSpec:
    """Query at client c: FE + gate locally; features to each chosen remote expert, probabilities back.

    With a routing policy other than topk (``inference.routing``; needs ``sim``) each query's
    experts are chosen when its local part is done, from what the client then knows
    (nmoe_sim/serving); topk plans every query's experts before inference starts.
    """
    d, bank = world.cfg.model.feature_dim, parts.bank
    gate = make_gate(world.cfg, world.n_clients, world.streams, "flops-probe")
    pre = forward_flops_per_sample(parts.fe, world.dataset.input_shape) + forward_flops_per_sample(gate, (d,))
    expert_flops = forward_flops_per_sample(parts.experts[0], (d,))
    out_b, back_b = world.tensor_bytes(d), world.tensor_bytes(world.dataset.num_classes)
    planned = [router.route(c, f) for c, f in enumerate(bank.feats)]  # per client (weights, idx)

    choose = policy_chooser(world, sim, router, bank.feats, planned, pre, (out_b, back_b, expert_flops))

    def legs(c: int, q: int) -> list[Leg]:
        if choose is not None:
            choose(c, q)  # fills planned[c]'s row q now, from what the client knows now
        return [Leg(c, expert_flops, 0, 0) if int(e) == c else Leg(int(e), expert_flops, out_b, back_b)
                for e in planned[c][1][q] if e >= 0]

    def predict(c: int, delivered: torch.Tensor) -> np.ndarray:
        w, idx = planned[c]
        if choose is not None:
            delivered = delivered & (idx >= 0)  # an empty slot answers nothing
        mixed = combine(bank.probs[c], w, idx, delivered.to(w.dtype))
        fallback = bank.probs[c][c]  # the client's own expert, always at hand
        none = ~delivered.any(1)
        return torch.where(none[:, None], fallback, mixed).argmax(1).numpy()

    k = world.cfg.model.top_k
    spec = InferenceSpec("nmoe", pre, legs, predict, [p[1].numpy() for p in planned], world.n_clients,
                         [k] * world.n_clients)
    if choose is not None:
        spec.inflight, spec.budget_s, spec.fallback_flops = choose.inflight, choose.budget_s, expert_flops
    if world.cfg.faults.active:
        # The fallback needs every expert in the gate's order; only under faults, so a run
        # without them asks the router nothing more (RanGate's draws stay as they were).
        ranked = [dataclasses.replace(router, k=world.n_clients).route(c, f)[1] for c, f in enumerate(bank.feats)]

        def predict_answered(c: int, delivered: torch.Tensor, answered: torch.Tensor) -> np.ndarray:
            w = planned[c][0]  # a fallback expert takes the weight of the slot it fills
            mixed = combine(bank.probs[c], w, answered, delivered.to(w.dtype))
            none = ~delivered.any(1)
            return torch.where(none[:, None], bank.probs[c][c], mixed).argmax(1).numpy()

        spec.ranking = lambda c, q: ranked[c][q].tolist()
        spec.predict_answered = predict_answered
    return spec
