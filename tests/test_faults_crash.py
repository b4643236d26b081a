"""A crashed client neither trains, sends nor serves its expert (docs/faults.md): computations
refused on a down node, stage 2 and the expert exchange under crashes, and queries at a
crashed client. The tiny scenario's ideal channel moves bytes in no time, so every time
here is a computation's FLOPs / FLOP/s (1e9 on the fast clients 0, 1, 3; 1e6 on client 2)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from nmoe_sim.engine.tasks import TrainTask
from nmoe_sim.fl.exchange import EXCHANGES
from nmoe_sim.fl.rounds import CostScope
from nmoe_sim.fl.routing import QueryBank
from nmoe_sim.fl.stage2 import STAGE as STAGE2, is_trained, train_experts
from nmoe_sim.fl.stage3 import GATE_ALGORITHMS, NMoEParts
from nmoe_sim.inference import run_inference
from nmoe_sim.models import FeatureExtractor
from nmoe_sim.models.build import make_expert
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import Sim

from test_faults_rounds import one_query_spec
from test_rounds import DEVICES, world_of


def crashes(*events: str, extra: tuple[str, ...] = ()) -> Any:
    return world_of(DEVICES, *extra, f"faults.events=[{', '.join(events)}]")


def run(sim: Sim, gen: Any) -> Any:
    proc = sim.env.process(gen)
    sim.env.run(until=proc)
    return proc.value


# --------------------------------------------------------------------------- the executor
def test_a_computation_on_a_down_node_does_not_run_and_is_not_charged() -> None:
    # Client 2 (1e6 FLOP/s) is down over [1, 3) s. A computation started at 0 is cut at 1;
    # one queued behind it is dropped at the crash without running; one asked for at 2
    # (down) is refused at once; one asked for at 3 (up again) runs.
    world = crashes("{kind: crash, clients: [2], at_s: 1.0, downtime_s: 2.0}")
    sim = Sim(world, "test")
    ex, env, calls = sim.executor, sim.env, []

    def fn(name: str) -> Any:
        return lambda: calls.append(name) or name

    def later(at_s: float, name: str) -> Any:
        yield env.timeout(at_s)
        return (yield ex.compute(2, 1e6, stage="s", tag=name, fn=fn(name)))

    procs = [ex.compute(2, 2e6, stage="s", tag="cut", fn=fn("cut")),
             ex.compute(2, 1e6, stage="s", tag="queued", fn=fn("queued")),
             env.process(later(2.0, "refused")), env.process(later(3.0, "after"))]
    env.run(until=env.all_of(procs))
    # fn runs when a computation starts (the cut one did start); only a finished one has a value.
    assert calls == ["cut", "after"] and [p.value for p in procs] == [None, None, None, "after"]
    assert [(c.tag, c.start_s, c.end_s, c.flops) for c in world.recorder.computes] == [
        ("cut", 0.0, 1.0, pytest.approx(1e6)), ("after", 3.0, 4.0, 1e6)]


def test_a_task_on_a_down_node_is_aborted_without_starting_and_gathers_nothing() -> None:
    world = crashes("{kind: crash, clients: [2], at_s: 0.0}")
    sim = Sim(world, "test")
    lin = torch.nn.Linear(1, 1)
    task = TrainTask(2, 2, lin, lin.state_dict(), torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), ((),),
                     "cross_entropy", 0.1, 0.0, 0.0, 1e6, 0)
    job = sim.executor.submit(task, stage="s", tag="t")
    sim.env.run(until=job.charged)
    assert (job.started, job.aborted, job.result, sim.env.now) == (False, True, None, 0.0)
    assert world.recorder.computes == []


# --------------------------------------------------------------------------- stage 2
def stage2(*events: str, extra: tuple[str, ...] = (), parts: list[Any] | None = None) -> tuple[
        Any, Sim, list[Any], list[torch.Tensor]]:
    """Stage 2 on an untrained FE (a fixed one: what is learned does not matter here)."""
    world = crashes(*events, extra=extra)
    sim = Sim(world, "nmoe")
    cfg = world.cfg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fe = FeatureExtractor(world.dataset.input_shape, cfg.model.fe_channels, cfg.model.feature_dim)
    experts, feats, fes = run(sim, train_experts(world, sim, fe))
    if parts is not None:  # what stage 3 needs, as the pipeline builds it
        bank = QueryBank(fes, experts, [c.x_query for c in world.clients], [c.y_query for c in world.clients],
                         world.dataset.num_classes)
        parts.append(NMoEParts(fe, experts, feats, bank))
    return world, sim, experts, feats


def initial(world: Any, i: int) -> dict[str, torch.Tensor]:
    return make_expert(world.cfg, world.dataset.num_classes, SeedStreams(0), f"expert{i}").state_dict()


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_a_client_down_in_stage2_trains_no_expert_and_is_listed_as_failed() -> None:
    world, _, experts, feats = stage2("{kind: crash, clients: [2], at_s: 0.0}")
    assert [is_trained(e) for e in experts] == [True, True, False, True]
    assert same(experts[2].state_dict(), initial(world, 2))  # its initialisation, untouched
    assert not any(same(experts[i].state_dict(), initial(world, i)) for i in (0, 1, 3))
    # It computed nothing and sent nothing; the others did all their stage-2 work.
    rec = world.recorder
    assert sorted((c.node, c.tag) for c in rec.computes) == [(str(i), t) for i in (0, 1, 3)
                                                             for t in ("features", "train")]
    assert not [t for t in rec.transfers if "2" in (t.src, t.dst)]
    assert len(rec.transfers) == 2 * 3  # statistics up and down for clients 0, 1 and 3
    assert [(f.stage, f.round, f.client, f.phase, f.reason, f.time_s) for f in rec.failures] == [
        (STAGE2, 0, 2, "compute", "crashed", 0.0)]
    assert feats[2].shape == (world.clients[2].num_samples, world.cfg.model.feature_dim)  # stage 3 needs them


def test_a_client_crashing_during_its_training_keeps_its_untrained_expert() -> None:
    # Without faults, find slow client 2's training; then crash it half-way through.
    _, _, plain, _ = stage2()
    world0, *_ = stage2()
    (train,) = [c for c in world0.recorder.computes if c.node == "2" and c.tag == "train"]
    crash_s = (train.start_s + train.end_s) / 2
    world, _, experts, _ = stage2(f"{{kind: crash, clients: [2], at_s: {crash_s!r}}}")
    assert [is_trained(e) for e in experts] == [True, True, False, True]
    assert same(experts[2].state_dict(), initial(world, 2))
    (cut,) = [c for c in world.recorder.computes if c.node == "2" and c.tag == "train"]
    assert (cut.start_s, cut.end_s) == (train.start_s, crash_s)
    assert cut.flops == pytest.approx(train.flops / 2, rel=1e-9)
    assert [(f.client, f.phase, f.reason, f.time_s) for f in world.recorder.failures] == [
        (2, "compute", "crashed", crash_s)]
    # The others trained exactly as without the crash (client 2's statistics had arrived).
    for i in (0, 1, 3):
        assert same(experts[i].state_dict(), plain[i].state_dict())


@pytest.mark.parametrize("mode", ["features", "expert_weights"])
def test_the_exchange_masks_an_untrained_expert_for_everyone(mode: str) -> None:
    # Client 2 is down at 0 (no stage-2 work) and back 1 us later, before the exchange.
    world, sim, experts, feats = stage2("{kind: crash, clients: [2], at_s: 0.0, downtime_s: 1.0e-6}")
    parts = NMoEParts(None, experts, feats, None)  # type: ignore[arg-type]  # the exchange needs no FE
    n_before = len(world.recorder.transfers)
    data = run(sim, EXCHANGES.get(mode)(world, sim, parts, "s3"))
    want = torch.tensor([True, True, False, True])
    assert all(torch.equal(d.available, want) for d in data)  # client 2's own gate too
    assert all(bool((d.true_p[:, 2] == 0).all()) for d in data)
    ts = world.recorder.transfers[n_before:]
    if mode == "features":  # nobody sends features to expert 2, which serves no one
        assert not [t for t in ts if t.dst == "2" and t.tag.startswith("features/")]
        assert len(ts) == 2 * 9  # out and back for the pairs (c, j != c), j in 0, 1, 3: 2 + 2 + 3 + 2
        assert not [c for c in world.recorder.computes if c.tag.startswith("expert2/")]
    else:  # expert 2 is not uploaded; every bundle holds the trained experts other than its own
        assert [t.src for t in ts if t.dst == "bs"] == ["0", "1", "3"]
        assert sorted((t.dst, t.size_bytes // ts[0].size_bytes) for t in ts if t.src == "bs") == [
            ("0", 2), ("1", 2), ("2", 3), ("3", 2)]


def rollgate(*events: str) -> Any:
    parts: list[Any] = []
    world, sim, *_ = stage2(*events, extra=("stage3.algorithm=rollgate", "stage3.rounds=1"), parts=parts)
    run(sim, GATE_ALGORITHMS.get("rollgate").train(world, sim, parts[0], CostScope("nmoe", []), "s3"))
    return world


def test_rollgate_passes_the_gate_on_from_its_holder_when_a_client_crashes_training_it() -> None:
    # Without faults the gate goes 0 -> 1 -> 2 -> 3. Client 1 crashes half-way through its
    # training: it trains nothing, the lap counts it as a failure, and holder 0 hands the
    # gate to 2 instead.
    world0 = rollgate()
    (train,) = [c for c in world0.recorder.computes if c.tag == "lap0/train" and c.node == "1"]
    crash_s = (train.start_s + train.end_s) / 2
    world = rollgate(f"{{kind: crash, clients: [1], at_s: {crash_s!r}}}")
    assert [c.node for c in world.recorder.computes if c.tag == "lap0/train"] == ["0", "1", "2", "3"]
    (cut,) = [c for c in world.recorder.computes if c.tag == "lap0/train" and c.node == "1"]
    assert cut.end_s == crash_s and cut.flops == pytest.approx(train.flops / 2, rel=1e-9)
    assert [t.tag for t in world.recorder.transfers if t.tag.startswith("lap0/")] == [
        "lap0/0->1", "lap0/0->2", "lap0/2->3"]
    assert [r.failures for r in world.recorder.rounds if r.stage == "s3"] == [1]


# --------------------------------------------------------------------------- inference
def arrivals(world: Any, c: int, n: int) -> list[float]:
    gaps = SeedStreams(0).numpy(f"inference/arrivals{c}").exponential(1.0 / world.cfg.inference.arrival_rate_hz, n)
    return np.cumsum(gaps).tolist()


def infer(*events: str) -> tuple[Any, Any]:
    world = crashes(*events, extra=("inference.max_queries_per_client=2",))
    sim = Sim(world, "nmoe")
    spec = one_query_spec(world, expert=1, ranking=[1, 3, 0, 2], pre_flops=1e6, flops=2e6)
    return world, run(sim, run_inference(world, sim, spec))


def test_a_down_client_issues_no_queries_until_it_rejoins() -> None:
    world0 = crashes(extra=("inference.max_queries_per_client=2",))
    t0, t1 = arrivals(world0, 0, 2)
    world, out = infer(f"{{kind: crash, clients: [0], at_s: 0.0, downtime_s: {(t0 + t1) / 2!r}}}")
    # Client 0's first query arises while it is down: not issued, nothing computed or sent
    # for it. Its second arises after it rejoined: answered by expert 1 as planned, 3 ms later.
    (q,) = [r for r in world.recorder.queries if r.client == 0]
    assert (q.query, q.start_s, q.end_s, q.experts, q.delivered) == (1, t1, pytest.approx(t1 + 3e-3, rel=1e-9),
                                                                     (1,), True)
    assert {c.tag.split("/")[0] for c in world.recorder.computes if c.tag.startswith("q0.")} == {"q0.1"}
    # Accounting: issued = the records, all answered; scores over the issued ones only.
    assert len(world.recorder.queries) == 7 and out.up_queries == 7 and out.failed_queries == 0
    assert out.up_scores == out.scores


def test_a_query_cut_off_by_its_clients_crash_is_lost_and_scored_wrong() -> None:
    world0 = crashes(extra=("inference.max_queries_per_client=2",))
    t0, t1 = arrivals(world0, 0, 2)
    # Client 0 crashes half-way through its first query's local part (1e6 FLOPs, 1 ms) and
    # rejoins before its second query.
    crash_s = t0 + 0.5e-3
    world, out = infer(f"{{kind: crash, clients: [0], at_s: {crash_s!r}, downtime_s: {(t1 - crash_s) / 2!r}}}")
    q0, q1 = [r for r in world.recorder.queries if r.client == 0]
    assert (q0.query, q0.start_s, q0.end_s, q0.experts, q0.delivered) == (0, t0, crash_s, (), False)
    assert (q1.query, q1.experts, q1.delivered) == (1, (1,), True)
    (cut,) = [c for c in world.recorder.computes if c.tag == "q0.0/local"]
    assert (cut.end_s, cut.flops) == (crash_s, pytest.approx(5e5, rel=1e-9))
    assert not [c for c in world.recorder.computes if c.tag.startswith("q0.0/") and c.tag != "q0.0/local"]
    assert out.failed_queries == 1 and out.up_queries == 8
    # one_query_spec predicts class 0 for every query: the lost one counts as wrong whatever its label.
    ys = np.concatenate([c.y_query.numpy() for c in world.clients])
    right = (ys == 0).sum() - int(world.clients[0].y_query[0] == 0)
    assert out.scores.accuracy == pytest.approx(right / 8, rel=1e-12)
    # It is left out of LR and the gating counts: only client 0's second query went to 1.
    assert out.scores.gating_counts[0].tolist() == [0, 1, 0, 0]


def test_routers_never_send_a_query_to_an_expert_stage2_left_untrained() -> None:
    from nmoe_sim.fl.candidates import candidate_masks, serving_sets
    from nmoe_sim.fl.routing import GateRouter, RandomRouter
    from nmoe_sim.models.build import make_gate

    world = crashes("{kind: crash, clients: [2], at_s: 0.0}", extra=("model.top_k=2",))
    experts = [make_expert(world.cfg, 10, world.streams, f"e{i}") for i in range(4)]
    assert serving_sets(world, experts, None) is None  # all trained: no restriction, today's routers
    setattr(experts[2], "stage2_trained", False)  # what stage 2 does for a client down then
    sets = serving_sets(world, experts, None)
    assert [s.tolist() for s in sets] == [[0, 1, 3], [0, 1, 3], [0, 1, 2, 3], [0, 1, 3]]  # its own kept
    feats = torch.randn(300, world.cfg.model.feature_dim, generator=torch.Generator().manual_seed(0))
    gate = make_gate(world.cfg, 4, world.streams, "g")
    for router in (GateRouter([gate] * 4, 2, candidate_masks(sets, 4)), RandomRouter(4, 2, np.random.default_rng(0), sets)):
        for c in (0, 1, 3):
            _, idx = router.route(c, feats)
            assert 2 not in idx.flatten().tolist() and idx.shape == (300, 2)
