"""The round driver on tiny simulated networks: deadlines, participation, failed transfers,
simulated round times and the exact bytes a stage-1 round moves."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest
import torch

from nmoe_sim.config import TrainConfig
from nmoe_sim.engine.tasks import TaskResult, TrainTask
from nmoe_sim.fl.rounds import (
    BS,
    CostScope,
    Failure,
    LocalResult,
    RoundAlgorithm,
    RoundDriver,
    sample_participants,
)
from nmoe_sim.fl.stage1 import FedCE, FedSC
from nmoe_sim.models import forward_flops_per_sample, param_count
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import Sim, World, build_world

from conftest import TINY_CLASSIFIER_PARAMS, TINY_FEDSC_PARAMS, tiny_cfg

FAST_FLOPS_PER_S = 1e9
SLOW_FLOPS_PER_S = 1e6
DEVICES = ("network.devices={profiles: {fast: {flops_per_s: 1.0e+9, compute_power_w: 1.0}, "
           "slow: {flops_per_s: 1.0e+6, compute_power_w: 1.0}}, assign: [fast, fast, slow, fast]}")


class FakeAlgo(RoundAlgorithm):
    """Records what the driver asks and hands to it; sends fixed sizes, computes fixed FLOPs."""

    stage = "fake"

    def __init__(self, sim: Sim, flops: float = 1e5, down_bytes: int = 100, up_bytes: int = 50) -> None:
        self.sim, self.flops, self.down, self.up = sim, flops, down_bytes, up_bytes
        self.template = torch.nn.Linear(1, 1)
        self.configured: list[tuple[int, list[int]]] = []
        self.updates: list[tuple[int, int, float]] = []
        self.aggregated: list[tuple[int, list[LocalResult], list[Failure], float]] = []

    def configure(self, rnd: int, participants: Sequence[int]) -> None:
        self.configured.append((rnd, list(participants)))

    def download_bytes(self, rnd: int, client: int) -> int:
        return self.down

    def task(self, rnd: int, client: int) -> TrainTask:
        # Asked for when the client's computation starts; an empty plan trains nothing.
        self.updates.append((rnd, client, self.sim.env.now))
        return TrainTask(client, client, self.template, self.template.state_dict(), torch.zeros(1, 1),
                         torch.zeros(1, dtype=torch.long), ((),), "cross_entropy", 0.1, 0.0, 0.0,
                         self.flops, self.up)

    def collect(self, rnd: int, client: int, result: TaskResult) -> LocalResult:
        return LocalResult(client, {"rnd": rnd}, result.num_samples, result.upload_bytes)

    def aggregate(self, rnd: int, results: list[LocalResult], failures: list[Failure]) -> None:
        self.aggregated.append((rnd, results, failures, self.sim.env.now))


def drive(sim: Sim, algo: RoundAlgorithm, cfg: TrainConfig, seed_name: str = "p") -> None:
    driver = RoundDriver(sim, sim.world.n_clients, sim.world.streams.numpy(seed_name))
    proc = sim.env.process(driver.run(algo, cfg, CostScope("test", [algo.stage])))
    sim.env.run(until=proc)


def world_of(*overrides: str) -> World:
    return build_world(tiny_cfg(*overrides), SeedStreams(0))


# --------------------------------------------------------------------------- deadlines
def test_deadline_drops_exactly_the_slow_client() -> None:
    world = world_of(DEVICES)
    sim = world.new_sim("test")
    algo = FakeAlgo(sim, flops=1e5)  # fast: 1e5/1e9 = 0.1 ms; slow (client 2): 1e5/1e6 = 0.1 s
    drive(sim, algo, TrainConfig(rounds=1, deadline_s=0.05))
    [(rnd, results, failures, at_s)] = algo.aggregated
    assert rnd == 0
    assert sorted(r.client for r in results) == [0, 1, 3]
    assert failures == [Failure(2, "compute", "deadline")]  # still training when the round closed
    assert at_s == 0.05  # the server closes the round at the deadline, not when client 2 ends
    [rec] = world.recorder.rounds
    assert (rec.start_s, rec.end_s, rec.participants, rec.failures) == (0.0, 0.05, 4, 1)
    ups = [t for t in world.recorder.transfers if t.tag == "r0/up"]
    assert sorted(t.src for t in ups) == ["0", "1", "3"]  # the late client never uploads
    # Its computation still runs to its end on the device (it cannot be recalled).
    sim.env.run()
    slow = [c for c in world.recorder.computes if c.node == "2"]
    assert [(c.start_s, c.end_s) for c in slow] == [(0.0, pytest.approx(0.1))]


def test_deadline_not_binding_when_everyone_is_fast() -> None:
    world = world_of(DEVICES)
    sim = world.new_sim("test")
    algo = FakeAlgo(sim, flops=1e3)  # slow client: 1 ms
    drive(sim, algo, TrainConfig(rounds=2, deadline_s=0.05))
    assert [len(a[1]) for a in algo.aggregated] == [4, 4]
    assert all(not a[2] for a in algo.aggregated)
    assert [a[3] for a in algo.aggregated] == [pytest.approx(1e-3), pytest.approx(2e-3)]


def test_deadline_during_upload_interrupts_the_transfer() -> None:
    # Ideal links with 10 ms per hop; compute 1 ms; deadline 15 ms falls inside the upload.
    world = world_of("network.channel={bs: {preset: ideal, latency_s: 0.01}, d2d: ideal}",
                     "network.devices={profiles: {d: {flops_per_s: 1.0e+6, compute_power_w: 0.0}}, assign: [d]}")
    sim = world.new_sim("test")
    algo = FakeAlgo(sim, flops=1e3)
    drive(sim, algo, TrainConfig(rounds=1, deadline_s=0.015))
    [(_, results, failures, at_s)] = algo.aggregated
    assert results == []
    assert [(f.client, f.phase, f.reason) for f in failures] == [(c, "upload", "deadline") for c in range(4)]
    assert at_s == pytest.approx(0.015)
    ups = [t for t in world.recorder.transfers if t.tag == "r0/up"]
    assert len(ups) == 4
    assert all(not t.delivered and t.reason == "deadline" and t.end_s == pytest.approx(0.015) for t in ups)


# --------------------------------------------------------------------------- participation
@pytest.mark.parametrize("fraction,expect", [(0.25, 1), (0.5, 2), (0.6, 3), (0.75, 3), (0.76, 4), (1.0, 4)])
def test_sample_participants_takes_ceil_fraction(fraction: float, expect: int) -> None:
    picked = sample_participants(4, fraction, np.random.default_rng(0))
    assert len(picked) == expect
    assert picked == sorted(set(picked)) and all(0 <= c < 4 for c in picked)


def test_participation_is_deterministic_per_seed_and_reaches_configure() -> None:
    def participants(seed: int) -> tuple[list[list[int]], list[int]]:
        world = world_of()
        sim = world.new_sim("test")
        algo = FakeAlgo(sim, flops=1.0)
        driver = RoundDriver(sim, 4, SeedStreams(seed).numpy("participation"))
        sim.env.run(until=sim.env.process(driver.run(algo, TrainConfig(rounds=6, participation=0.6),
                                                     CostScope("t", ["fake"]))))
        # Only the sampled clients download and train.
        for rnd, picked in algo.configured:
            downs = sorted(int(t.dst) for t in world.recorder.transfers if t.tag == f"r{rnd}/down")
            assert downs == picked
        return [p for _, p in algo.configured], [r.participants for r in world.recorder.rounds]

    a, counts = participants(0)
    b, _ = participants(0)
    c, _ = participants(1)
    assert counts == [3] * 6  # ceil(0.6 * 4)
    assert all(len(p) == 3 for p in a)
    assert a == b
    assert a != c
    assert len({tuple(p) for p in a}) > 1  # a fresh draw every round


# --------------------------------------------------------------------------- failed transfers
HARSH_BS = ("network.channel={bs: {model: wireless, fading: none, outage_snr_db: 1000.0, "
            "max_attempts: 2, retx_timeout_s: 0.05}, d2d: ideal}")


def test_failed_download_reaches_aggregate_as_failure() -> None:
    world = world_of(HARSH_BS)
    sim = world.new_sim("test")
    algo = FakeAlgo(sim)
    drive(sim, algo, TrainConfig(rounds=1))
    [(_, results, failures, at_s)] = algo.aggregated
    assert results == []
    assert failures == [Failure(c, "download", "outage") for c in range(4)]
    assert algo.updates == []  # nobody trained without the model
    assert at_s == pytest.approx(0.1)  # two attempts, each ended by a 50 ms ACK timeout
    downs = [t for t in world.recorder.transfers if t.tag == "r0/down"]
    assert [(t.attempts, t.delivered) for t in downs] == [(2, False)] * 4
    assert world.recorder.rounds[0].failures == 4


def test_failed_upload_reaches_aggregate_as_failure_after_training() -> None:
    # No fading, no shadowing: the SNR is fixed per direction. The edge server transmits at
    # 43 dBm and a phone at 23 dBm, so a threshold between the two SNRs lets every download
    # through and fails every upload.
    chan = "model: wireless, fading: none, shadowing_std_db: 0.0, max_attempts: 3, retx_timeout_s: 0.02"
    probe = world_of(f"network.channel={{bs: {{{chan}}}, d2d: ideal}}").new_sim("test")
    down_db, up_db = probe.net.mean_snr_db(BS, 0), probe.net.mean_snr_db(0, BS)
    assert down_db - up_db == pytest.approx(20.0)
    threshold = (down_db + up_db) / 2
    world = world_of(f"network.channel={{bs: {{{chan}, outage_snr_db: {threshold}}}, d2d: ideal}}")
    sim = world.new_sim("test")
    algo = FakeAlgo(sim, flops=0.0)
    drive(sim, algo, TrainConfig(rounds=1))
    [(_, results, failures, _)] = algo.aggregated
    assert results == []
    assert failures == [Failure(c, "upload", "outage") for c in range(4)]
    assert sorted(c for _, c, _ in algo.updates) == [0, 1, 2, 3]  # they trained, then lost the upload
    ups = [t for t in world.recorder.transfers if t.tag == "r0/up"]
    assert [(t.attempts, t.delivered) for t in ups] == [(3, False)] * 4
    assert all(t.duration_s == pytest.approx(0.06) for t in ups)  # 3 ACK timeouts of 20 ms


# --------------------------------------------------------------------------- simulated time
def test_fedce_round_time_is_two_latencies_plus_compute() -> None:
    flops_per_s, latency_s = 1e6, 0.01
    world = world_of("network.channel={bs: {preset: ideal, latency_s: 0.01}, d2d: ideal}",
                     "network.devices={profiles: {d: {flops_per_s: 1.0e+6, compute_power_w: 2.0}}, assign: [d]}",
                     "stage1.rounds=1")
    sim = world.new_sim("test")
    algo = FedCE(world, world.cfg.stage1)
    # Classifier forward on 1x8x8: conv 2*4*9*64 = 4608, fc 2*64*8 = 1024, head 2*8*10 = 160.
    assert forward_flops_per_sample(algo.model, (1, 8, 8)) == 5792.0
    train_flops = 3 * 5792.0
    drive(sim, algo, world.cfg.stage1)
    compute_s = {c.idx: c.num_samples * train_flops / flops_per_s for c in world.clients}
    [rec] = world.recorder.rounds
    assert rec.start_s == 0.0
    assert rec.end_s == pytest.approx(2 * latency_s + max(compute_s.values()), rel=1e-12)
    for c in world.clients:
        [comp] = [r for r in world.recorder.computes if r.node == str(c.idx)]
        assert comp.flops == c.num_samples * train_flops
        assert comp.start_s == pytest.approx(latency_s, rel=1e-12)
        assert comp.end_s == pytest.approx(latency_s + compute_s[c.idx], rel=1e-12)
        assert comp.energy_j == pytest.approx(2.0 * compute_s[c.idx], rel=1e-12)
        [down] = [t for t in world.recorder.transfers if t.dst == str(c.idx)]
        [up] = [t for t in world.recorder.transfers if t.src == str(c.idx)]
        # Event order per client: download, then training, then upload.
        assert (down.start_s, down.end_s) == (0.0, pytest.approx(latency_s))
        assert up.start_s == pytest.approx(comp.end_s, rel=1e-12)
        assert up.end_s == pytest.approx(comp.end_s + latency_s, rel=1e-12)


# --------------------------------------------------------------------------- exact bytes
def stage1_transfers(algo_cls: Any, rounds: int, *overrides: str) -> tuple[World, list[Any]]:
    world = world_of(f"stage1.rounds={rounds}", *overrides)
    sim = world.new_sim("test")
    algo = algo_cls(world, world.cfg.stage1)
    drive(sim, algo, world.cfg.stage1)
    return world, [t for t in world.recorder.transfers if t.stage == algo.stage]


@pytest.mark.parametrize("bytes_per_param", [4, 2])
def test_fedce_round_moves_the_classifier_once_each_way(bytes_per_param: int) -> None:
    world, ts = stage1_transfers(FedCE, 1, f"network.bytes_per_param={bytes_per_param}")
    model_bytes = TINY_CLASSIFIER_PARAMS * bytes_per_param  # 650 params
    assert model_bytes == {4: 2600, 2: 1300}[bytes_per_param]
    assert param_count(FedCE(world, world.cfg.stage1).model) == TINY_CLASSIFIER_PARAMS
    for c in range(4):
        mine = [("up" if t.dst == BS else "down", t.size_bytes, t.delivered) for t in ts if str(c) in (t.src, t.dst)]
        assert sorted(mine) == [("down", model_bytes, True), ("up", model_bytes, True)]
    assert len(ts) == 8
    totals = world.recorder.stage_totals("test", "stage1_fedce")
    assert (totals.bytes, totals.bytes_delivered) == (8 * model_bytes, 8 * model_bytes)
    assert totals.hop_bytes == {"up": 4 * model_bytes, "down": 4 * model_bytes, "d2d": 0}


@pytest.mark.parametrize("bytes_per_param", [4, 2])
def test_stale_fedsc_correlation_rides_up_always_and_down_from_round_one(bytes_per_param: int) -> None:
    _, ts = stage1_transfers(FedSC, 2, f"network.bytes_per_param={bytes_per_param}", "stage1.fedsc.r_ext=stale")
    model_bytes = TINY_FEDSC_PARAMS * bytes_per_param  # 668 params
    corr_bytes = 4 * 4 * bytes_per_param  # proj_dim^2 values
    assert (model_bytes, corr_bytes) == {4: (2672, 64), 2: (1336, 32)}[bytes_per_param]
    by_tag: dict[str, list[int]] = {}
    for t in ts:
        by_tag.setdefault(t.tag, []).append(t.size_bytes)
    assert by_tag == {
        "r0/down": [model_bytes] * 4,  # nobody has shared a correlation yet
        "r0/up": [model_bytes + corr_bytes] * 4,
        "r1/down": [model_bytes + corr_bytes] * 4,  # R_ext of the other clients
        "r1/up": [model_bytes + corr_bytes] * 4,
    }


def test_fedsc_without_sharing_sends_only_the_model() -> None:
    _, ts = stage1_transfers(FedSC, 2, "stage1.fedsc.share_correlation=false")
    assert {t.size_bytes for t in ts} == {TINY_FEDSC_PARAMS * 4}
    assert len(ts) == 16


def test_round_driver_uses_bs_as_server() -> None:
    world, ts = stage1_transfers(FedCE, 1)
    assert {t.route for t in ts} == {(BS, str(c)) for c in range(4)} | {(str(c), BS) for c in range(4)}


def test_fedgate_client_whose_download_failed_keeps_its_old_gate() -> None:
    """FedGate's per-round evaluation reflects delivery, as its final broadcast does."""
    import torch

    from nmoe_sim.fl.stage3 import FedGate, GateData

    world = world_of("stage3.rounds=4", "stage3.fedgate.sync_every=2")
    data = [GateData(torch.zeros(2, 8), torch.zeros(2, dtype=torch.long), torch.zeros(2, 4),
                     torch.ones(4, dtype=torch.bool)) for _ in range(4)]
    algo = FedGate(world, None, data, "stage3_fedgate")  # type: ignore[arg-type]
    algo.global_shared = {k: v + 1.0 for k, v in algo.global_shared.items()}  # differs from every gate
    same = {k: v.clone() for k, v in algo.global_shared.items()}  # sync updates that keep it as is
    ok = [LocalResult(c, same, 2, 0) for c in (0, 1, 3)]
    algo.aggregate(0, ok, [Failure(2, "download", "outage")])

    def holds_global(gate: Any) -> bool:
        state = gate.state_dict()
        return all(torch.equal(state[k], v) for k, v in algo.global_shared.items())

    deployed = algo.deployed()
    assert deployed[2] is algo.gates[2] and not holds_global(deployed[2])
    assert all(holds_global(deployed[c]) for c in (0, 1, 3))
    algo.aggregate(1, ok, [Failure(2, "upload", "outage")])  # round 1 has no download: no news
    assert algo.missed_download == {2}
    algo.aggregate(2, ok + [LocalResult(2, same, 2, 0)], [])  # round 2 re-downloads: it arrived
    assert algo.missed_download == set() and holds_global(algo.deployed()[2])
