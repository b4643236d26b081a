"""Injected faults in federated rounds and at inference, on the tiny scenario (ideal
channel: transfers take no time, so every time is a computation's FLOPs / FLOP/s)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from nmoe_sim.config import TrainConfig, load_scenario
from nmoe_sim.engine.fault_config import FAULT_KINDS
from nmoe_sim.engine.faults import APPLIERS
from nmoe_sim.errors import ConfigError
from nmoe_sim.fl.rounds import Failure
from nmoe_sim.inference import InferenceSpec, Leg, run_inference
from nmoe_sim.record import FailureReason
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import Sim

from conftest import REPO_ROOT
from test_rounds import DEVICES, FakeAlgo, drive, world_of

# FakeAlgo's 1e7 FLOPs: 0.01 s on the fast devices (1e9 FLOP/s), 10 s on client 2 (1e6).
FLOPS = 1e7


def crash_world(*events: str) -> Any:
    return world_of(DEVICES, f"faults.events=[{', '.join(events)}]")


def failures_by_round(world: Any) -> dict[int, list[tuple[int, str, str]]]:
    out: dict[int, list[tuple[int, str, str]]] = {}
    for f in world.recorder.failures:
        out.setdefault(f.round, []).append((f.client, f.phase, f.reason))
    return out


def test_failure_reason_is_a_fixed_vocabulary_that_writes_as_before() -> None:
    f = Failure(1, "upload", "outage")
    assert f.reason is FailureReason.OUTAGE and f.reason == "outage" and str(f.reason) == "outage"
    assert f"{Failure(1, 'upload', 'deadline').reason}" == "deadline"
    with pytest.raises(ValueError, match="Failure.reason 'timeout' is not one of outage, deadline"):
        Failure(1, "upload", "timeout")


def test_every_fault_kind_in_the_schema_has_an_applier_and_its_own_name() -> None:
    assert FAULT_KINDS.names() == APPLIERS.names()
    for name in FAULT_KINDS.names():
        assert FAULT_KINDS.get(name).model_fields["kind"].default == name


def test_client_crash_mid_round_fails_it_then_it_sits_out_until_it_rejoins() -> None:
    # Client 2 crashes at 5 s, half-way through its 10 s computation of round 0, and rejoins
    # 0.015 s later: rounds 1 and 2 (each 0.01 s for the others) start while it is down.
    world = crash_world("{kind: crash, clients: [2], at_s: 5.0, downtime_s: 0.015}")
    sim = Sim(world, "test")
    algo = FakeAlgo(sim, flops=FLOPS)
    drive(sim, algo, TrainConfig(rounds=4))
    assert failures_by_round(world) == {0: [(2, "compute", "crashed")], 1: [(2, "download", "crashed")],
                                        2: [(2, "download", "crashed")]}
    ends = [r.end_s for r in world.recorder.rounds]
    assert ends == pytest.approx([5.0, 5.01, 5.02, 15.02], rel=1e-12)
    assert [r.failures for r in world.recorder.rounds] == [1, 1, 1, 0]
    # It neither trains nor sends while down: its round-0 work was cut at the crash and
    # reached no aggregate; no transfer of its own in rounds 1-2; round 3 is its again.
    (cut,) = [c for c in world.recorder.computes if c.node == "2" and c.tag == "r0/train"]
    assert (cut.start_s, cut.end_s, cut.flops) == (0.0, 5.0, pytest.approx(FLOPS / 2))
    assert [t.tag for t in world.recorder.transfers if "2" in (t.src, t.dst)] == ["r0/down", "r3/down", "r3/up"]
    assert [sorted(r.client for r in res) for _, res, _, _ in algo.aggregated] == [[0, 1, 3]] * 3 + [[0, 1, 2, 3]]
    (rec,) = world.recorder.faults
    assert (rec.tag, rec.node, rec.stage, rec.start_s, rec.end_s) == ("crash", "2", "fake", 5.0, 5.015)


def test_dropout_draws_from_its_own_stream_per_stage_and_round() -> None:
    world = world_of("faults.events=[{kind: dropout, probability: 0.5}]")
    sim = Sim(world, "test")
    drive(sim, FakeAlgo(sim), TrainConfig(rounds=3))
    want = {}
    for rnd in range(3):
        u = SeedStreams(0).numpy(f"faults/dropout/fake/r{rnd}").random(4)
        dropped = [(c, "download", "dropped_out") for c in range(4) if u[c] < 0.5]
        if dropped:
            want[rnd] = dropped
    assert failures_by_round(world) == want and want  # some client did drop out
    assert sorted((f.node, f.start_s) for f in world.recorder.faults if f.tag == "dropout") == sorted(
        (str(c), r.start_s) for r in world.recorder.rounds for c, *_ in want.get(r.round, []))
    # A dropped participant moves no byte in that round.
    moved = {(t.tag.split("/")[0], t.dst if t.src == "bs" else t.src) for t in world.recorder.transfers}
    assert not any((f"r{rnd}", str(c)) in moved for rnd, fs in want.items() for c, *_ in fs)


def test_dropout_of_every_participant_aggregates_nothing() -> None:
    world = world_of("faults.events=[{kind: dropout, probability: 1.0}]")
    sim = Sim(world, "test")
    algo = FakeAlgo(sim)
    drive(sim, algo, TrainConfig(rounds=2))
    assert [len(res) for _, res, _, _ in algo.aggregated] == [0, 0]
    assert [f.reason for _, _, fs, _ in algo.aggregated for f in fs] == [FailureReason.DROPPED_OUT] * 8
    assert world.recorder.transfers == [] and world.recorder.computes == []


def test_a_fault_on_a_node_outside_the_topology_is_refused_when_the_world_is_built() -> None:
    world = world_of("faults.events=[{kind: straggler, node: 9, slowdown: 2, start_s: 0, end_s: 1}]")
    with pytest.raises(ConfigError, match=r"faults.events.0.node: node 9 is not in the topology"):
        Sim(world, "test")


def test_unknown_fault_kind_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"faults.events: entry 0: unknown fault kind 'meteor'; known: bs_outage, "
                                          r"crash, crash_rate, dropout, link_down, radio_down, storm, straggler"):
        load_scenario(REPO_ROOT / "scenarios/quickstart.yaml", ["faults.events=[{kind: meteor}]"])


def test_poisson_crashes_are_drawn_from_per_client_streams() -> None:
    world = world_of("faults.events=[{kind: crash_rate, rate_hz: 2.0, downtime_s: 0.25, clients: [1]}]")
    sim = Sim(world, "test")
    sim.env.run(until=3.0)
    rng, t, want = SeedStreams(0).numpy("faults/crash_rate/1"), 0.0, []
    while True:
        t += float(rng.exponential(0.5))
        if t > 3.0:
            break
        want.append((t, t + 0.25))
        t += 0.25
    got = [(f.start_s, f.end_s) for f in world.recorder.faults]
    flat = [t for pair in got for t in pair]  # pytest.approx takes flat sequences only
    assert flat == pytest.approx([t for pair in want for t in pair], rel=1e-12) and len(want) >= 2


# --------------------------------------------------------------------------- inference
def one_query_spec(world: Any, expert: int, ranking: list[int], pre_flops: float, flops: float) -> InferenceSpec:
    n = world.n_clients
    routes = [np.full((len(c.y_query), 1), expert if c.idx == 0 else c.idx) for c in world.clients]

    def legs(c: int, q: int) -> list[Leg]:
        e = int(routes[c][q, 0])
        return [Leg(c, flops, 0, 0)] if e == c else [Leg(e, flops, 40, 40)]

    def predict(c: int, delivered: torch.Tensor) -> np.ndarray:
        return np.zeros(len(world.clients[c].y_query), dtype=np.int64)

    return InferenceSpec("nmoe", pre_flops, legs, predict, routes, n, [1] * n,
                         ranking=lambda c, q: ranking if c == 0 else [c],
                         predict_answered=lambda c, d, a: predict(c, d))


@pytest.mark.parametrize("timeout_s", [0.2, 1.0])
@pytest.mark.parametrize("down, answered_by", [([1], 3), ([1, 3], 0)])
def test_query_to_a_crashed_expert_waits_the_timeout_then_falls_back(down: list[int], answered_by: int,
                                                                     timeout_s: float) -> None:
    # Client 0's queries go to expert 1 (crashed from t=0); the gate ranks 1, 3, 0, 2. The
    # client waits faults.query_timeout_s, then asks 3, the best reachable expert left, or,
    # when 3 is down too, computes with its own expert, which its gate ranks above 2. The features' transfer to 1 gives up
    # after 8 attempts 0.05 s apart (0.4 s): at 0.2 s the query abandons it, at 1.0 s the
    # query still waits out its timeout, since it cannot tell a lost answer from a late one.
    world = world_of(DEVICES, "inference.max_queries_per_client=1", "network.channel.bs.retx_timeout_s=0.05",
                     "network.channel.d2d.retx_timeout_s=0.05",
                     f"faults={{query_timeout_s: {timeout_s}, events: [{{kind: crash, clients: {down}, at_s: 0.0}}]}}")
    sim = Sim(world, "nmoe")
    spec = one_query_spec(world, expert=1, ranking=[1, 3, 0, 2], pre_flops=1e6, flops=2e6)
    proc = sim.env.process(run_inference(world, sim, spec))
    sim.env.run(until=proc)
    (q,) = [r for r in world.recorder.queries if r.client == 0]
    # 1e6 FLOPs at 1e9 FLOP/s before the legs; the fallback expert's 2e6 FLOPs on a fast
    # device (clients 0 and 3 are fast); the ideal channel moves the 40 bytes in no time.
    assert q.latency_s == pytest.approx(1e-3 + timeout_s + 2e-3, rel=1e-9)
    assert q.experts == (answered_by,) and q.delivered
    (out,) = [t for t in world.recorder.transfers if t.tag == "q0.0/out" and t.dst == "1"]
    assert out.reason == ("query_timeout" if timeout_s < 0.4 else "crashed") and not out.delivered
    fallback = [c for c in world.recorder.computes if c.tag == "q0.0/fallback" or (
        c.tag == "q0.0/serve" and c.node == "3")]
    assert [c.node for c in fallback] == [str(answered_by)]


def test_queries_without_faults_keep_their_planned_experts_and_no_timeout() -> None:
    world = world_of(DEVICES, "inference.max_queries_per_client=1")
    sim = Sim(world, "nmoe")
    proc = sim.env.process(run_inference(world, sim, one_query_spec(world, 1, [1, 3, 0, 2], 1e6, 2e6)))
    sim.env.run(until=proc)
    (q,) = [r for r in world.recorder.queries if r.client == 0]
    assert q.experts == (1,) and q.latency_s == pytest.approx(1e-3 + 2e-3, rel=1e-9)


# --------------------------------------------------------------------------- a whole run
def test_a_tiny_run_with_faults_shows_them_in_events_failures_and_rounds(tmp_path: Any) -> None:
    from test_pipeline import documented_header, read_csv, run_tiny

    events = ("[{kind: crash, clients: [1], at_s: 0.0}, {kind: straggler, node: 2, slowdown: 2.0, "
              "start_s: 0.0, end_s: 100.0}, {kind: storm, links: [[0, bs]], extra_loss_db: 5.0, "
              "start_s: 0.0, end_s: 1.0}]")
    metrics, run_dir = run_tiny(tmp_path, "baselines.systems=[local]", f"faults.events={events}")
    rows = [e for e in read_csv(run_dir / "events.csv") if e["kind"] == "fault"]
    # Each system's world meets every fault, at the same instants of its own clock.
    assert {(r["system"], r["tag"], r["node"] or f"{r['src']}-{r['dst']}", r["start_s"], r["end_s"])
            for r in rows} == {(s, tag, who, "0.0", end) for s in ("nmoe", "local")
                               for tag, who, end in (("crash", "1", "inf"), ("straggler x2", "2", "100.0"),
                                                     ("storm +5 dB", "0-bs", "1.0"))}
    failures = read_csv(run_dir / "failures.csv")
    with (run_dir / "failures.csv").open() as f:
        assert f.readline().strip().split(",") == documented_header("failures.csv")
    # Client 1 is down from the start: every round of stages 1 and 3 fails it before any byte,
    # and stage 2 trains no expert for it (tests/test_faults_crash.py has the details).
    assert {(r["stage"], r["round"], r["client"], r["phase"], r["reason"]) for r in failures} == {
        (stage, str(rnd), "1", "download", "crashed") for stage in ("stage1_fedce", "stage3_fedgate")
        for rnd in range(2)} | {("stage2_experts", "0", "1", "compute", "crashed")}
    rounds = read_csv(run_dir / "rounds.csv")
    assert [r["failures"] for r in rounds if r["system"] == "nmoe"] == ["1"] * 4
    # No round moves a byte to or from it (the expert exchange before stage 3 has no rounds:
    # its transfers to and from client 1 fail as crashed, docs/faults.md).
    ours = [e for e in read_csv(run_dir / "events.csv") if e["kind"] == "transfer" and "1" in (e["src"], e["dst"])]
    assert [e for e in ours if e["tag"].startswith("r")] == []
    assert {(e["delivered"], e["reason"]) for e in ours} == {("False", "crashed")}
    # No query is served by the crashed client's expert.
    assert all(" 1" not in f" {q['experts']}" or q["client"] == "1"
               for q in read_csv(run_dir / "queries.csv") if q["system"] == "nmoe")
    assert metrics["systems"]["nmoe"]["gating_counts"][0][1] == 0
    # Crashed client 1 issues no query: every issued query arose while its client was up.
    up = metrics["systems"]["nmoe"]["up_clients"]
    assert not [q for q in read_csv(run_dir / "queries.csv") if q["client"] == "1"]
    assert up["queries"] == metrics["systems"]["nmoe"]["queries"] < metrics["dataset"]["queries"]
    assert 0.0 <= up["f1_macro"] <= 1.0 and 0.0 <= up["local_ratio"] <= 1.0


def test_a_run_without_faults_writes_what_it_wrote_before(tmp_path: Any) -> None:
    """An empty events list is no faults: same files, and config.yaml without a faults section."""
    from test_pipeline import run_tiny

    _, plain = run_tiny(tmp_path, "baselines.systems=[local]", name="plain")
    _, empty = run_tiny(tmp_path, "baselines.systems=[local]", "faults={events: [], query_timeout_s: 1.0}",
                        name="empty")
    for name in ("events.csv", "hops.csv", "rounds.csv", "queries.csv", "clients.csv", "failures.csv",
                 "config.yaml"):
        assert (plain / name).read_bytes() == (empty / name).read_bytes(), name
    assert "faults" not in (plain / "config.yaml").read_text()
    assert "up_clients" not in (plain / "metrics.json").read_text()


@pytest.mark.parametrize("event, failed, reason", [
    # The tiny ring's D2D links give client 2 a way around its own BS link: no failure.
    ("{kind: link_down, link: [2, bs], start_s: 0.0, end_s: 100.0}", [], ""),
    ("{kind: radio_down, node: 3, start_s: 0.0, end_s: 100.0}", [3], "link_down"),
    ("{kind: bs_outage, start_s: 0.0, end_s: 100.0}", [0, 1, 2, 3], "bs_outage"),
])
def test_a_down_hop_fails_the_download_after_the_retries_with_its_reason(event: str, failed: list[int],
                                                                          reason: str) -> None:
    world = world_of("network.channel.bs.retx_timeout_s=0.05", "network.channel.bs.max_attempts=3",
                     f"faults.events=[{event}]")
    sim = Sim(world, "test")
    algo = FakeAlgo(sim)
    drive(sim, algo, TrainConfig(rounds=1))
    ((_, results, failures, end_s),) = algo.aggregated
    assert [(f.client, f.phase, f.reason) for f in failures] == [(c, "download", reason) for c in failed]
    assert sorted(r.client for r in results) == sorted(set(range(4)) - set(failed))
    if failed:
        assert end_s == pytest.approx(3 * 0.05, rel=1e-12)  # three attempts, 0.05 s apart
    else:
        (down,) = [t for t in world.recorder.transfers if t.tag == "r0/down" and t.dst == "2"]
        assert down.delivered and down.route in (("bs", "1", "2"), ("bs", "3", "2"))


def test_faults_demo_names_every_kind_on_nodes_and_links_of_its_topology() -> None:
    from nmoe_sim.world import build_world

    cfg = load_scenario(REPO_ROOT / "scenarios/faults_demo.yaml", ["data.max_train_samples=100",
                                                                   "data.max_test_samples=30"])
    assert sorted({ev.kind for ev in cfg.faults.events}) == FAULT_KINDS.names()
    world = build_world(cfg, SeedStreams(cfg.seed))
    assert Sim(world, "nmoe").faults is not None  # every node and link it names exists


@pytest.mark.parametrize("events, message", [
    ("[{kind: crash, at_s: 1.0}]", "entry 0 (crash): Value error, give exactly one of clients"),
    ("[{kind: crash, clients: [true]}]", "entry 0 (crash): clients.0: Value error, expected a client number"),
    ("[{kind: straggler, node: true, slowdown: 2, start_s: 0, end_s: 1}]", "entry 0 (straggler): node: Value error, expected a"),
    ("[{kind: bs_outage, start_s: 2.0, end_s: 1.0}]", "end_s (1.0) must be after start_s (2.0)"),
    ("[{kind: bs_outage, start_s: 0, end_s: .inf}]", "end_s: Input should be a finite number"),
    ("[{kind: storm, links: [[0, bs]], extra_loss_db: -3, start_s: 0, end_s: 1}]", "extra_loss_db: Input should be "
                                                                                    "greater than 0"),
    ("[{kind: dropout, probability: 0.1}, {kind: dropout, probability: 0.2}]", "at most one dropout entry"),
    ("[{kind: link_down, link: [0], start_s: 0, end_s: 1}]", "entry 0 (link_down): link"),
    ("{kind: crash}", "expected a list of fault entries"),
])
def test_bad_fault_entries_are_refused_with_their_key(events: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^faults") as err:
        load_scenario(REPO_ROOT / "scenarios/quickstart.yaml", [f"faults.events={events}"])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("fraction, crashed", [(0.1, 1), (0.5, 2), (0.7, 3), (1.0, 4)])
def test_a_crash_fraction_draws_that_many_distinct_clients_from_its_stream(fraction: float, crashed: int) -> None:
    # 4 clients: 0.5 is 2, and 0.1 still crashes one (at least one), rounded half up.
    world = world_of(f"faults.events=[{{kind: crash, fraction: {fraction}, at_s: 0.0}}]")
    Sim(world, "test")
    want = sorted(int(c) for c in SeedStreams(0).numpy("faults/crash").choice(4, size=crashed, replace=False))
    assert [int(f.node) for f in world.recorder.faults] == want
