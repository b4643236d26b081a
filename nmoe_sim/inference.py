"""Gated networked inference in simulated time, for the NMoE and for every baseline.

A query arises at a client (Poisson arrivals), runs the local part of the model, then
sends work out along "legs": for the NMoE, one leg per chosen remote expert (features out
over the network, class probabilities back); for the centralized baseline, one leg to the
server (the raw input out, logits back). What the legs deliver decides the answer: an
expert whose transfer failed is dropped from the mixture, and a query with no delivered
expert falls back to the client's own expert (it always holds one). The learned math
(routes, probabilities) is computed up front on the host; the network decides delivery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Hashable, Sequence

import numpy as np
import simpy
import torch

from nmoe_sim.fl.routing import Scores, score
from nmoe_sim.record import QueryRecord
from nmoe_sim.world import Sim, World


@dataclass(frozen=True)
class Leg:
    node: Hashable  # where the work runs
    flops: float
    out_bytes: int  # sent from the client to node (0 when node is the client)
    back_bytes: int


@dataclass
class InferenceSpec:
    system: str
    pre_flops: float  # run at the client before any leg (FE + gate, or the whole local model)
    legs: Callable[[int, int], list[Leg]]  # (client, query) -> legs
    predict: Callable[[int, torch.Tensor], np.ndarray]  # (client, delivered (Q,L) bool) -> predictions
    routes: Sequence[np.ndarray] | None  # per client (Q,k) expert indices, for LR and gating
    n_experts: int
    n_legs: Sequence[int] = field(default_factory=list)  # legs per query, per client


@dataclass(frozen=True)
class InferenceOutcome:
    scores: Scores
    stage: str
    failed_queries: int


def run_inference(world: World, sim: Sim, spec: InferenceSpec) -> Generator[simpy.Event, Any, InferenceOutcome]:
    stage = f"inference_{spec.system}"
    env, rate = sim.env, world.cfg.inference.arrival_rate_hz
    delivered = [torch.zeros(len(c.y_query), max(spec.n_legs[c.idx], 1), dtype=torch.bool) for c in world.clients]

    def leg(c: int, q: int, i: int, lg: Leg) -> Generator[simpy.Event, Any, bool]:
        if lg.out_bytes:
            rec = yield sim.net.transfer(c, lg.node, lg.out_bytes, stage=stage, tag=f"q{c}.{q}/out")
            if not rec.delivered:
                return False
        yield sim.executor.compute(lg.node, lg.flops, stage=stage, tag=f"q{c}.{q}/serve")
        if lg.back_bytes:
            rec = yield sim.net.transfer(lg.node, c, lg.back_bytes, stage=stage, tag=f"q{c}.{q}/back")
            if not rec.delivered:
                return False
        return True

    def query(c: int, q: int) -> Generator[simpy.Event, Any, None]:
        start_s = env.now
        yield sim.executor.compute(c, spec.pre_flops, stage=stage, tag=f"q{c}.{q}/local")
        legs = spec.legs(c, q)
        done = yield env.all_of([env.process(leg(c, q, i, lg)) for i, lg in enumerate(legs)])
        ok = [bool(v) for v in done.values()]
        for i, v in enumerate(ok):
            delivered[c][q, i] = v
        experts = tuple(int(e) for e in spec.routes[c][q]) if spec.routes is not None else (c,)
        sim.recorder.add(QueryRecord(spec.system, c, q, start_s, env.now, experts, all(ok)))

    def client(c: int, rng: np.random.Generator) -> Generator[simpy.Event, Any, None]:
        procs = []
        for q in range(len(world.clients[c].y_query)):
            yield env.timeout(float(rng.exponential(1.0 / rate)))
            procs.append(env.process(query(c, q)))
        yield env.all_of(procs)

    yield env.all_of([env.process(client(c.idx, world.streams.numpy(f"inference/arrivals{c.idx}")))
                      for c in world.clients])
    preds = [spec.predict(c.idx, delivered[c.idx]) for c in world.clients]
    failed = sum(int((~d).any(1).sum()) for d in delivered) if any(spec.n_legs) else 0
    scores = score([c.y_query.numpy() for c in world.clients], preds, spec.routes,
                   world.dataset.num_classes, spec.n_experts)
    return InferenceOutcome(scores, stage, failed)
