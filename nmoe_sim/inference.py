"""Gated networked inference in simulated time, for the NMoE and for every baseline.

A query arises at a client (Poisson arrivals), runs the local part of the model, then
sends work out along "legs": for the NMoE, one leg per chosen remote expert (features out
over the network, class probabilities back); for the centralized baseline, one leg to the
server (the raw input out, logits back). What the legs deliver decides the answer: an
expert whose transfer failed is dropped from the mixture, and a query with no delivered
expert falls back to the client's own expert (it always holds one). The learned math
(routes, probabilities) is computed up front on the host; the network decides delivery.

Which experts a query asks is its routing policy's (``inference.routing``, nmoe_sim/serving):
topk plans every route up front; the others choose when the query's legs leave, from what
the client then knows, and may leave slots empty (-1). Under ``routing: budgeted`` the
query's remote legs are abandoned at arrival + ``budget_s`` and a query left with no
answer computes its own expert after that (``.../fallback``).

With injected faults (``faults:``, docs/faults.md) a client waits at most
``faults.query_timeout_s`` for a leg's answer. A leg not answered by then (its expert
crashed, a hop down, retries still running or spent) is abandoned and, where the spec
ranks the experts (the NMoE, by gate score), retried once at the best-ranked expert not
yet tried that is the client's own or reachable now (up, with a route of hops that are
up), and at its own if that one does not answer either; each abandoned try costs the
query the full timeout.

A crashed client serves no one, itself included. A query that arrives while its client is
down is not issued: the device is off, so nothing is computed, sent or recorded, and the
query is left out of every score (the arrival times of its later queries do not move:
they come from the same draws). A query issued while its client was up that cannot finish
because the client crashed (its local part refused or cut short, or the client down when
the answer would be ready) is *lost*: recorded with no experts and not delivered, scored
as wrong (no answer) and left out of LR and the gating counts. So issued = the query
records, answered = those delivered, failed = the rest (``failed_queries``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Hashable, Sequence

import numpy as np
import simpy
import torch

from nmoe_sim.fl.routing import Scores, score
from nmoe_sim.record import QueryRecord
from nmoe_sim.serving.load import next_arrival_s
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
    # Under faults: (client, query) -> every expert, best first (the gate's order), for the
    # fallback; and the prediction given which expert answered each leg (client,
    # delivered (Q,L) bool, answered (Q,L) expert indices). None: no fallback.
    ranking: Callable[[int, int], Sequence[int]] | None = None
    predict_answered: Callable[[int, torch.Tensor, torch.Tensor], np.ndarray] | None = None
    # A routing policy that watches the experts' load reads this: node -> legs of this stage in
    # flight to it, kept here (serving/view.py). None: nobody reads it, nothing is counted.
    inflight: Counter[Hashable] | None = None
    # A latency budget per query (routing: budgeted): remote legs not answered by arrival +
    # budget_s are abandoned, and a query left with no answer computes its own expert
    # (fallback_flops) before answering. A route may then use fewer slots than n_legs (-1).
    budget_s: float | None = None
    fallback_flops: float = 0.0


@dataclass(frozen=True)
class InferenceOutcome:
    scores: Scores
    stage: str
    failed_queries: int
    # Under faults: the scores of the queries that arose while their client was up, and how
    # many there were (a query arising at a crashed client is not issued, so these are
    # every issued query's). None without faults.
    up_scores: Scores | None = None
    up_queries: int = 0


def run_inference(world: World, sim: Sim, spec: InferenceSpec) -> Generator[simpy.Event, Any, InferenceOutcome]:
    stage = f"inference_{spec.system}"
    env, rate, bursts = sim.env, world.cfg.inference.arrival_rate_hz, world.cfg.inference.bursts
    delivered = [torch.zeros(len(c.y_query), max(spec.n_legs[c.idx], 1), dtype=torch.bool) for c in world.clients]
    faults = sim.faults
    fallback = faults is not None and spec.ranking is not None and spec.routes is not None
    # The expert that answered each leg: the planned one unless a fallback replaced it.
    answered = ([torch.as_tensor(np.asarray(r), dtype=torch.long).clone() for r in spec.routes]
                if fallback else [])
    up = [np.ones(len(c.y_query), dtype=bool) for c in world.clients]  # client up when the query arose: issued
    lost = [np.zeros(len(c.y_query), dtype=bool) for c in world.clients]  # issued, cut off by its client's crash
    # Under faults a computation that did not run (its node down) has the value None, so
    # one whose output matters returns something: this.
    ran = None if faults is None else (lambda: True)

    def leg(c: int, q: int, i: int, lg: Leg) -> Generator[simpy.Event, Any, bool]:
        inflight: list[simpy.Process] = []
        counted = spec.inflight is not None and lg.node != c
        if counted:
            spec.inflight[lg.node] += 1
        try:
            if lg.out_bytes:
                inflight[:] = [sim.net.transfer(c, lg.node, lg.out_bytes, stage=stage, tag=f"q{c}.{q}/out")]
                rec = yield inflight[0]
                if not rec.delivered:
                    return False
            served = yield sim.executor.compute(lg.node, lg.flops, stage=stage, tag=f"q{c}.{q}/serve", fn=ran)
            if faults is not None and served is None:  # its expert's device is down, or crashed serving
                return False
            if lg.back_bytes:
                inflight[:] = [sim.net.transfer(lg.node, c, lg.back_bytes, stage=stage, tag=f"q{c}.{q}/back")]
                rec = yield inflight[0]
                if not rec.delivered:
                    return False
            return True
        except simpy.Interrupt as stop:  # under faults or a budget: the query stopped waiting
            if inflight and inflight[0].is_alive:
                inflight[0].interrupt(stop.cause)  # free its share of the radios now
            return False
        finally:
            if counted:
                spec.inflight[lg.node] -= 1

    def within_budget(c: int, q: int, i: int, lg: Leg, until_s: float) -> Generator[simpy.Event, Any, bool]:
        """The leg, abandoned at ``until_s`` (the query's budget): True if answered by then."""
        proc = env.process(leg(c, q, i, lg))
        if lg.node != c:  # the client's own expert: computed here, nothing to abandon
            yield proc | env.timeout(max(until_s - env.now, 0.0))
        else:
            yield proc
        if proc.triggered:
            return bool(proc.value)
        proc.interrupt("budget")
        return False

    def timed_leg(c: int, q: int, i: int, lg: Leg) -> Generator[simpy.Event, Any, bool]:
        """The leg, abandoned after the query timeout: True if answered in time."""
        start_s, timeout_s = env.now, faults.cfg.query_timeout_s
        proc = env.process(leg(c, q, i, lg))
        yield proc | env.timeout(timeout_s)
        if proc.triggered and proc.value:
            return True
        if proc.is_alive:
            proc.interrupt("query_timeout")
        if env.now < start_s + timeout_s:  # it failed early: the client still waits it out
            yield env.timeout(start_s + timeout_s - env.now)
        return False

    def faulty(c: int, q: int, i: int, lg: Leg) -> Generator[simpy.Event, Any, bool]:
        if lg.node == c:  # the client's own expert: nothing to time out
            return (yield from leg(c, q, i, lg))
        if (yield from timed_leg(c, q, i, lg)):
            return True
        if not fallback:
            return False
        tried = {int(e) for e in spec.routes[c][q]}
        # The best-ranked expert not yet asked that is the client's own or reachable now.
        nxt = next((int(e) for e in spec.ranking(c, q) if int(e) not in tried
                    and (int(e) == c or faults.path_down(sim.net.route_now(c, int(e))) is None)), c)
        answered[c][q, i] = nxt
        if nxt != c and (yield from timed_leg(c, q, i, Leg(nxt, lg.flops, lg.out_bytes, lg.back_bytes))):
            return True
        # The client's own expert: computed here, nothing to wait for (unless the client crashed).
        answered[c][q, i] = c
        return (yield sim.executor.compute(c, lg.flops, stage=stage, tag=f"q{c}.{q}/fallback", fn=ran)) is not None

    def query(c: int, q: int) -> Generator[simpy.Event, Any, None]:
        start_s = env.now
        local = yield sim.executor.compute(c, spec.pre_flops, stage=stage, tag=f"q{c}.{q}/local", fn=ran)
        if faults is not None and local is None:  # the client crashed before its features existed
            lost[c][q] = True
            sim.recorder.add(QueryRecord(spec.system, c, q, start_s, env.now, (), False))
            return
        legs = spec.legs(c, q)
        if spec.budget_s is not None:  # faults and budgets are exclusive (config cross-check)
            until_s = start_s + spec.budget_s
            procs = [env.process(within_budget(c, q, i, lg, until_s)) for i, lg in enumerate(legs)]
        else:
            run_leg = leg if faults is None else faulty
            procs = [env.process(run_leg(c, q, i, lg)) for i, lg in enumerate(legs)]
        done = yield env.all_of(procs)
        ok = [bool(v) for v in done.values()]
        for i, v in enumerate(ok):
            delivered[c][q, i] = v
        if 0 < len(legs) < spec.n_legs[c]:  # slots the policy left empty: nothing to fail
            delivered[c][q, len(legs):] = True
        if spec.budget_s is not None and not any(ok):  # no answer in the budget: the own expert
            yield sim.executor.compute(c, spec.fallback_flops, stage=stage, tag=f"q{c}.{q}/fallback")
        if faults is not None and faults.crashed[c]:  # down when its answer would be ready
            lost[c][q] = True
            delivered[c][q] = False
            sim.recorder.add(QueryRecord(spec.system, c, q, start_s, env.now, (), False))
            return
        routes = answered if fallback else spec.routes
        experts = tuple(int(e) for e in routes[c][q] if e >= 0) if routes is not None else (c,)
        sim.recorder.add(QueryRecord(spec.system, c, q, start_s, env.now, experts, all(ok)))

    def client(c: int, rng: np.random.Generator) -> Generator[simpy.Event, Any, None]:
        procs = []
        for q in range(len(world.clients[c].y_query)):
            yield env.timeout(next_arrival_s(env.now, rate, bursts, rng))
            if faults is not None and faults.crashed[c]:  # the device is off: not issued
                up[c][q] = False
                continue
            procs.append(env.process(query(c, q)))
        yield env.all_of(procs)

    yield env.all_of([env.process(client(c.idx, world.streams.numpy(f"inference/arrivals{c.idx}")))
                      for c in world.clients])
    if fallback and spec.predict_answered is not None:
        preds = [spec.predict_answered(c.idx, delivered[c.idx], answered[c.idx]) for c in world.clients]
    else:
        preds = [spec.predict(c.idx, delivered[c.idx]) for c in world.clients]
    # LR and gating counts from the experts that answered (fallbacks included) under faults.
    routes = [a.numpy() for a in answered] if fallback else spec.routes
    ys = [c.y_query.numpy() for c in world.clients]
    if faults is None:
        failed = sum(int((~d).any(1).sum()) for d in delivered) if any(spec.n_legs) else 0
        scores = score(ys, preds, routes, world.dataset.num_classes, spec.n_experts)
        return InferenceOutcome(scores, stage, failed)
    # Issued queries only; a lost one has no answer (-1 is no class: always wrong) and no
    # expert that answered it.
    preds = [np.where(m, -1, p) for p, m in zip(preds, lost)]
    failed = sum(int(((~d).any(1).numpy() & m).sum()) if any(spec.n_legs) else int((lo & m).sum())
                 for d, lo, m in zip(delivered, lost, up))
    n_up = int(sum(m.sum() for m in up))
    if n_up == 0:  # every query arose at a crashed client: none was issued
        nan = Scores(math.nan, math.nan, math.nan, np.zeros((0, 0)))
        return InferenceOutcome(nan, stage, failed, nan, 0)
    answered_routes = (None if routes is None
                       else [np.asarray(r)[m & ~lo] for r, m, lo in zip(routes, up, lost)])
    scores = score([y[m] for y, m in zip(ys, up)], [p[m] for p, m in zip(preds, up)], answered_routes,
                   world.dataset.num_classes, spec.n_experts)
    return InferenceOutcome(scores, stage, failed, scores, n_up)


def up_scores(outcome: InferenceOutcome) -> tuple[Scores, int] | None:
    """(scores, queries) of the queries whose client was up, under faults; else None."""
    return None if outcome.up_scores is None else (outcome.up_scores, outcome.up_queries)
