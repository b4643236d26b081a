"""Stage 2: every client trains its personalized expert H_i on its own data, F frozen.

Features are computed once per client (a frozen FE gives the same features every epoch),
and that forward pass is charged to the client's device like the training itself. Before
the experts train, the clients agree on per-feature standardisation statistics: each
uploads (count, sum, sum of squares) of its features (2D + 1 numbers), the server pools
them and sends back (mean, std). A client whose download fails uses its own statistics.

Under injected crashes (docs/faults.md, "Stage 2") a client that is down when its feature
extraction or its training would start, or that crashes during either, trains no expert:
its expert keeps its initial weights, :func:`is_trained` says so, the client is a
``failures.csv`` row of this stage (round 0, phase ``compute``, reason ``crashed``), and the
expert-output exchange before stage 3 treats that expert as unavailable to every client.
"""

from __future__ import annotations

from typing import Any, Generator

import simpy
import torch
from torch import nn

from nmoe_sim.fl.rounds import BS
from nmoe_sim.engine.executors import Job
from nmoe_sim.fl.schedule import sgd_args
from nmoe_sim.engine.tasks import TrainTask, draw_plan
from nmoe_sim.fl.train import predict_batched
from nmoe_sim.models import Expert, FeatureExtractor, Standardize, forward_flops_per_sample, train_flops_per_sample
from nmoe_sim.models.build import make_expert
from nmoe_sim.record import FailureReason, FailureRecord
from nmoe_sim.world import Sim, World

STAGE = "stage2_experts"
# Set to False on an expert whose stage-2 training did not run (its client was down). An
# attribute of the module, so it travels wherever the expert does (checkpoints and sweep
# reuse pickle or copy the module); absent means trained, as in every run without faults.
_TRAINED_ATTR = "stage2_trained"


def is_trained(expert: nn.Module) -> bool:
    """Whether stage 2 trained this expert (False only for a client that was down then)."""
    return bool(getattr(expert, _TRAINED_ATTR, True))


def feature_moments(h: torch.Tensor) -> torch.Tensor:
    """(n, D) features -> (2D + 1,) [count, sum_d, sumsq_d] in float64."""
    h = h.to(torch.float64)
    return torch.cat([torch.tensor([float(len(h))], dtype=torch.float64), h.sum(0), (h * h).sum(0)])


def pooled_standardizer(moments: list[torch.Tensor]) -> Standardize:
    """Mean and (population) std of the union of the clients' features, from their moments."""
    total = torch.stack(moments).sum(0)
    d = (total.numel() - 1) // 2
    n, s, ss = total[0], total[1 : 1 + d], total[1 + d :]
    mean = s / n
    var = (ss / n - mean * mean).clamp_min(0.0)
    return Standardize(mean.float(), var.sqrt().float())


def train_experts(world: World, sim: Sim, fe: FeatureExtractor) -> Generator[
        simpy.Event, Any, tuple[list[Expert], list[torch.Tensor], list[nn.Module]]]:
    """SimPy process body; returns (experts, standardised train features, each client's F)."""
    cfg, n_clients = world.cfg, world.n_clients
    fe.eval()
    fe_flops = forward_flops_per_sample(fe, world.dataset.input_shape)
    experts = [make_expert(cfg, world.dataset.num_classes, world.streams, f"expert{c.idx}") for c in world.clients]
    expert_flops = train_flops_per_sample(experts[0], (cfg.model.feature_dim,))
    stats_bytes = world.tensor_bytes(2 * cfg.model.feature_dim + 1)
    raw: list[torch.Tensor] = [torch.empty(0)] * n_clients
    uploaded: dict[int, torch.Tensor] = {}

    untrained: dict[int, float] = {}  # client -> when its stage-2 work was refused or cut

    def upload(i: int) -> Generator[simpy.Event, Any, None]:
        data = world.clients[i]
        raw[i] = yield sim.executor.compute(i, data.num_samples * fe_flops, stage=STAGE, tag="features",
                                            fn=lambda: predict_batched(fe, data.x_train))
        if raw[i] is None:  # only under faults: the client was down, or crashed, computing them
            untrained[i] = float(sim.env.now)
            # Stage 3 and inference still need its features: the frozen FE gives the same ones
            # whenever it computes them, so they are taken here, not charged (docs/faults.md).
            raw[i] = predict_batched(fe, data.x_train)
            return
        rec = yield sim.net.transfer(i, BS, stats_bytes, stage=STAGE, tag="feature_stats/up")
        if rec.delivered:
            uploaded[i] = feature_moments(raw[i])

    yield sim.env.all_of([sim.env.process(upload(i)) for i in range(n_clients)])
    pooled = pooled_standardizer([uploaded[i] for i in sorted(uploaded)]) if uploaded else None
    standardizers: list[Standardize] = [pooled_standardizer([feature_moments(r)]) for r in raw]
    feats: list[torch.Tensor] = [torch.empty(0)] * n_clients
    jobs: list[Job] = []

    def train(i: int) -> Generator[simpy.Event, Any, None]:
        data = world.clients[i]
        if i in untrained:  # no features of its own: no stage-2 work at all
            with torch.no_grad():
                feats[i] = standardizers[i](raw[i])
            return
        if pooled is not None:
            rec = yield sim.net.transfer(BS, i, stats_bytes, stage=STAGE, tag="feature_stats/down")
            if rec.delivered:
                standardizers[i] = pooled
        with torch.no_grad():
            feats[i] = standardizers[i](raw[i])
        s2 = cfg.stage2
        gen = world.streams.torch(f"{STAGE}/client{i}")
        task = TrainTask(
            client=i, node=i, template=experts[0],
            start={k: v.detach().clone() for k, v in experts[i].state_dict().items()}, x=feats[i], y=data.y_train,
            plan=draw_plan(data.num_samples, s2.epochs, s2.batch_size, gen)[0], loss="cross_entropy",
            **sgd_args(s2),
            flops=s2.epochs * data.num_samples * expert_flops, upload_bytes=0,  # the expert stays on the device
        )
        job = sim.executor.submit(task, stage=STAGE, tag="train")
        jobs.append(job)
        yield job.charged
        if job.aborted:  # only under faults: down when its turn came, or crashed training
            untrained[i] = float(sim.env.now)

    yield sim.env.all_of([sim.env.process(train(i)) for i in range(n_clients)])
    # Every expert trains at once (their tasks are independent), once all have been charged.
    ran = [j for j in jobs if not j.aborted]
    for job, done in zip(ran, sim.executor.gather(ran)):
        experts[job.task.client].load_state_dict(done.state)
    for i in sorted(untrained):  # failures are data: a client without a trained expert is listed
        setattr(experts[i], _TRAINED_ATTR, False)
        sim.recorder.add(FailureRecord(sim.system, STAGE, 0, i, "compute", FailureReason.CRASHED.value,
                                       untrained[i]))
    for e in experts:
        e.eval()
    return experts, feats, [nn.Sequential(fe, s).eval() for s in standardizers]
