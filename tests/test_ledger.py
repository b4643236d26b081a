"""The ledger: offered vs delivered bytes, per-hop directions, relaying around a dead link,
fading inside a transfer, energy by who pays it, per-system attribution, clients.csv.

Exact counts on tiny networks with deterministic SNR (fading 'none', shadowing 0), and
scripted fading gains where a test needs the SNR to change block by block.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import simpy

from nmoe_sim.config import ChannelConfig, LinkChannels, TopologyConfig, TrainConfig, load_scenario
from nmoe_sim.metrics import busy_time_s, stage_costs
from nmoe_sim.net import channel
from nmoe_sim.net.fading import LinkChannel
from nmoe_sim.net.network import Network, dbm_to_w
from nmoe_sim.net.topology import BS, build_topology
from nmoe_sim.record import Recorder
from nmoe_sim.results import client_rows
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import build_world

from test_network import BS_RX_W, RX_W, S_BYTES, TWO, cfg, make, se, t_alone
from test_rounds import FakeAlgo, drive

J0_FIRST_ZERO = 2.404825557695773  # J0(x) = 0: successive blocks are uncorrelated


# --------------------------------------------------------------------------- offered vs delivered
def test_failed_transfer_is_offered_but_not_delivered() -> None:
    env, net, rec = make(TWO, bs_cfg=cfg(max_attempts=2, retx_timeout_s=0.01), snr_db=-10.0)
    net.transfer(0, BS, S_BYTES, stage="s", tag="lost")
    net.transfer(BS, 1, S_BYTES, stage="s", tag="ok")  # the 30 dB downlink works
    env.run()
    t = rec.stage_totals("test", "s")
    assert (t.bytes, t.bytes_delivered, t.transfers, t.failed_transfers) == (2 * S_BYTES, S_BYTES, 2, 1)
    assert t.hop_bytes == {"up": S_BYTES, "down": S_BYTES, "d2d": 0}
    assert t.hop_bytes_delivered == {"up": 0, "down": S_BYTES, "d2d": 0}
    lost, ok = rec.transfers[0], rec.transfers[1]
    assert (lost.delivered, lost.link_bytes, ok.link_bytes) == (False, 0, S_BYTES)
    costs = stage_costs(rec, "test", "s", 0.0, env.now)
    assert (costs["bytes"], costs["bytes_delivered"], costs["link_bytes"]) == (2 * S_BYTES, S_BYTES, S_BYTES)
    assert (costs["bytes_up"], costs["bytes_up_delivered"]) == (S_BYTES, 0)


def test_relay_through_the_bs_counts_as_up_plus_down_not_d2d() -> None:
    env, net, rec = make(TWO)  # a star: no D2D links
    p = net.transfer(0, 1, S_BYTES, stage="s", tag="relay")
    env.run()
    assert p.value.route == ("0", BS, "1") and p.value.link_bytes == 2 * S_BYTES
    costs = stage_costs(rec, "test", "s", 0.0, env.now)
    assert (costs["bytes"], costs["bytes_delivered"], costs["link_bytes"]) == (S_BYTES, S_BYTES, 2 * S_BYTES)
    assert (costs["bytes_up"], costs["bytes_down"], costs["bytes_d2d"]) == (S_BYTES, S_BYTES, 0)
    assert [h.direction for h in rec.hops] == ["up", "down"]


def test_relay_failing_on_its_second_hop_delivers_only_the_first() -> None:
    # Uplink 20 dB works; the BS downlink to client 1 is at -10 dB: the second hop fails.
    env, net, rec = make(TWO, bs_cfg=cfg(max_attempts=1), bs_snr_db=-10.0)
    p = net.transfer(0, 1, S_BYTES, stage="s", tag="relay")
    env.run()
    r = p.value
    assert (r.delivered, r.reason, r.link_bytes) == (False, "outage", S_BYTES)
    t = rec.stage_totals("test", "s")
    assert (t.bytes, t.bytes_delivered) == (S_BYTES, 0)
    assert t.hop_bytes_delivered == {"up": S_BYTES, "down": 0, "d2d": 0}


# --------------------------------------------------------------------------- routing
def relay_net(routing: str) -> tuple[simpy.Environment, Network, Recorder]:
    """Client 0 far from the BS (uplink at -10 dB, below the -5 dB outage threshold) but
    one good D2D hop from client 1, whose own uplink is strong. Fading none: exact times."""
    bs_cfg = cfg(path_loss_exponent=4.0, max_attempts=3, retx_timeout_s=0.01)
    d2d_cfg = cfg(path_loss_exponent=2.0)
    topo = TopologyConfig(kind="explicit", positions_m=((400.0, 0.0), (100.0, 0.0)), d2d_edges=((0, 1),),
                          bs_position_m=(0.0, 0.0))
    g = build_topology(topo, 2, np.random.default_rng(0))
    probe = LinkChannel(bs_cfg, g.edges[0, BS]["distance_m"], "bs", np.random.default_rng(0))
    probe1 = LinkChannel(bs_cfg, g.edges[1, BS]["distance_m"], "bs", np.random.default_rng(0))
    tx = {0: -10.0 - probe.mean_snr_db(0.0), 1: 30.0 - probe1.mean_snr_db(0.0), BS: 43.0}
    env, rec = simpy.Environment(), Recorder()
    net = Network(env, g, LinkChannels(bs=bs_cfg, d2d=d2d_cfg), tx, {0: RX_W, 1: RX_W, BS: BS_RX_W}, rec,
                  np.random.default_rng(0), system="test", routing=routing)
    return env, net, rec


def test_min_airtime_relays_around_a_dead_direct_link() -> None:
    env, net, rec = relay_net("min_airtime")
    assert net.mean_snr_db(0, BS) == pytest.approx(-10.0)
    assert net.mean_snr_db(0, 1) > 20 and net.mean_snr_db(1, BS) > 20
    assert net.route(0, BS) == [0, 1, BS]
    p = net.transfer(0, BS, S_BYTES, stage="s", tag="up")
    env.run()
    r = p.value
    t1, t2 = t_alone(net.mean_snr_db(0, 1)), t_alone(net.mean_snr_db(1, BS))
    assert r.delivered and r.route == ("0", "1", BS) and r.attempts == 2
    h1, h2 = rec.hops
    assert h2.start_s == pytest.approx(t1, rel=1e-12)  # store and forward
    assert r.end_s == pytest.approx(t1 + t2, rel=1e-12)
    # The relay pays its own radio: it receives hop 1 and transmits hop 2 from its battery.
    p0, p1 = dbm_to_w(net.tx_power_dbm(0)), dbm_to_w(net.tx_power_dbm(1))
    assert r.device_energy_j == pytest.approx(p0 * t1 + RX_W * t1 + p1 * t2, rel=1e-12)
    assert r.infrastructure_energy_j == pytest.approx(BS_RX_W * t2, rel=1e-12)
    rows = {row["client"]: row for row in client_rows(rec, [0, 1])}
    assert rows["1"]["bytes_received"] == rows["1"]["bytes_sent"] == S_BYTES
    assert rows["1"]["rx_airtime_s"] == pytest.approx(t1) and rows["1"]["tx_airtime_s"] == pytest.approx(t2)
    assert rows["1"]["device_energy_j"] == pytest.approx(RX_W * t1 + p1 * t2, rel=1e-12)
    assert rows["0"]["bytes_sent"] == S_BYTES and rows["0"]["bytes_received"] == 0


def test_direct_first_keeps_the_dead_direct_link_and_fails() -> None:
    env, net, rec = relay_net("direct_first")
    assert net.route(0, BS) == [0, BS]
    p = net.transfer(0, BS, S_BYTES, stage="s", tag="up")
    env.run()
    assert not p.value.delivered and p.value.attempts == 3 and p.value.end_s == pytest.approx(0.03)
    assert net.route(0, 1) == [0, 1] and net.route(1, BS) == [1, BS]


def test_min_airtime_keeps_a_good_direct_link() -> None:
    env, net, _ = make(TWO)
    assert net.route(0, BS) == [0, BS] and net.route(BS, 1) == [BS, 1]


def test_quickstart_weak_client_relays_under_min_airtime_and_fails_under_direct_first() -> None:
    # The quickstart's client 5 has a -9 dB mean uplink (below the -5 dB outage threshold)
    # and D2D neighbours at 21-23 dB. One round of model-sized transfers over its network.
    for routing, delivered in (("min_airtime", True), ("direct_first", False)):
        cfg_ = load_scenario("scenarios/quickstart.yaml", [f"network.routing={routing}"])
        world = build_world(cfg_, SeedStreams(cfg_.seed))
        sim = world.new_sim("nmoe")
        assert sim.net.mean_snr_db(5, BS) == pytest.approx(-9.0, abs=0.05)
        drive(sim, FakeAlgo(sim, flops=1e6, down_bytes=96_640, up_bytes=96_640), TrainConfig(rounds=1))
        [up5] = [t for t in world.recorder.transfers if t.src == "5" and t.tag == "r0/up"]
        assert up5.delivered is delivered, routing
        assert up5.route == (("5", "4", BS) if delivered else ("5", BS)), routing


def test_mean_spectral_efficiency_matches_the_rayleigh_closed_form() -> None:
    c = ChannelConfig(fading="rayleigh", shadowing_std_db=0.0, path_loss="log_distance",
                      efficiency=1.0, outage_snr_db=-200.0)
    link = LinkChannel(c, 50.0, "bs", np.random.default_rng(0))
    for mean_db in (-5.0, 5.0, 20.0):
        tx = mean_db - link.mean_snr_db(0.0)
        want = channel.rayleigh_ergodic_capacity_bps_hz(mean_db)
        assert link.mean_spectral_efficiency_bps_hz(tx) == pytest.approx(want, rel=2e-3)
    # With an outage threshold, outage blocks count zero: E[se] = E[log2(1+s g); s g >= thr].
    c2 = c.model_copy(update={"outage_snr_db": 0.0})
    link2 = LinkChannel(c2, 50.0, "bs", np.random.default_rng(0))
    tx = 0.0 - link2.mean_snr_db(0.0)  # mean SNR 0 dB = threshold: P(outage) = 1 - e^-1
    g = np.random.default_rng(1).exponential(size=400_000)
    mc = np.mean(np.where(g >= 1.0, np.log2(1 + g), 0.0))
    assert link2.mean_spectral_efficiency_bps_hz(tx) == pytest.approx(mc, rel=1e-2)


# --------------------------------------------------------------------------- fading inside a transfer
def scripted(net: Network, gains: list[float], u: Any = 0, v: Any = BS) -> None:
    """Make link (u, v) see the given |h|^2 in coherence blocks 0, 1, 2, ..."""
    net.link(u, v).process.gain = lambda block: gains[block]  # type: ignore[method-assign]


def rayleigh_cfg(**kw: Any) -> ChannelConfig:
    return cfg(fading="rayleigh", coherence_time_s=0.01, **kw)


@pytest.mark.parametrize("adaptation", ["per_block", "per_attempt"])
def test_rate_follows_each_coherence_block(adaptation: str) -> None:
    env, net, rec = make(TWO, bs_cfg=rayleigh_cfg(rate_adaptation=adaptation))
    scripted(net, [1.0, 1.0, 10.0] + [10.0] * 20)  # 20 dB, 20 dB, then 30 dB
    r20, r30 = 1e6 * se(20.0), 1e6 * se(30.0)
    bits = 2.5 * 0.01 * r20  # 2.5 blocks' worth at 20 dB
    p = net.transfer(0, BS, int(bits / 8), stage="s", tag="x")
    env.run()
    bits = 8 * int(bits / 8)
    if adaptation == "per_block":  # two blocks at 20 dB, the rest at the 30 dB rate
        want = 0.02 + (bits - 0.02 * r20) / r30
        assert len(p.value.snr_db.__class__.__mro__) and rec.hops[0].snr_db == pytest.approx((20 + 20 + 30) / 3)
    else:  # the first block's rate holds to the end of the attempt
        want = bits / r20
    assert p.value.end_s == pytest.approx(want, rel=1e-9)
    assert p.value.airtime_s == pytest.approx(want, rel=1e-9)
    assert p.value.delivered and p.value.attempts == 1


def test_a_block_in_outage_fails_the_attempt_midway_then_arq_retries() -> None:
    retx = 0.05
    env, net, rec = make(TWO, bs_cfg=rayleigh_cfg(retx_timeout_s=retx, max_attempts=3))
    scripted(net, [1.0, 1.0, 1e-4] + [1.0] * 30)  # block 2 at -20 dB: below the -5 dB threshold
    r20 = 1e6 * se(20.0)
    size = int(0.025 * r20 / 8)  # 2.5 blocks at 20 dB: the outage block cuts attempt 1
    p = net.transfer(0, BS, size, stage="s", tag="x")
    env.run()
    r = p.value
    alone = 8 * size / r20
    # Attempt 1: blocks 0-1 sent (0.02 s), fails at 0.02, waits the ACK timeout to 0.07;
    # attempt 2 starts in block 7 and runs alone at 20 dB.
    assert r.delivered and r.attempts == 2
    assert r.end_s == pytest.approx(0.02 + retx + alone, rel=1e-9)
    assert r.airtime_s == pytest.approx(0.02 + retx + alone, rel=1e-9)
    tx_w = dbm_to_w(net.tx_power_dbm(0))
    assert r.energy_j == pytest.approx(tx_w * (0.02 + retx + alone) + BS_RX_W * (0.02 + alone), rel=1e-9)
    # Under per_attempt the same channel never notices the fade: one attempt, no retry.
    env2, net2, _ = make(TWO, bs_cfg=rayleigh_cfg(retx_timeout_s=retx, rate_adaptation="per_attempt"))
    scripted(net2, [1.0, 1.0, 1e-4] + [1.0] * 30)
    p2 = net2.transfer(0, BS, size, stage="s", tag="x")
    env2.run()
    assert p2.value.attempts == 1 and p2.value.end_s == pytest.approx(alone, rel=1e-9)


def test_block_rate_changes_reshare_the_radio() -> None:
    # Two flows on client 0's radio; the second block doubles the SNR: both speed up together.
    env, net, _ = make(TWO, bs_cfg=rayleigh_cfg())
    scripted(net, [1.0] + [10.0] * 50)
    r20, r30 = 1e6 * se(20.0), 1e6 * se(30.0)
    size = int(0.01 * r20 / 8)  # each flow alone: one block at 20 dB; shared: half of it in block 0
    a = net.transfer(0, BS, size, stage="s", tag="a")
    b = net.transfer(0, BS, size, stage="s", tag="b")
    env.run()
    bits = 8 * size
    left = bits - 0.01 * r20 / 2  # each sent half its bits at half the 20 dB rate in block 0
    want = 0.01 + left / (r30 / 2)
    assert a.value.end_s == pytest.approx(want, rel=1e-9) and b.value.end_s == pytest.approx(want, rel=1e-9)
    assert a.value.airtime_s == pytest.approx(0.01 * 0.5 + left / r30, rel=1e-9)


def test_long_transfer_over_independent_rayleigh_blocks_matches_bits_over_mean_rate() -> None:
    # Successive blocks uncorrelated (J0 = 0) and no outage: a transfer spanning ~3000 blocks
    # averages its rate to B E[se] = B eff log2(e) e^(1/s) E1(1/s) (Goldsmith ch. 4).
    tc = 0.01
    c = cfg(fading="rayleigh", coherence_time_s=tc, doppler_hz=J0_FIRST_ZERO / (2 * math.pi * tc),
            outage_snr_db=-200.0)
    assert abs(channel.jakes_correlation(c.doppler_hz, tc)) < 1e-12
    env, net, rec = make(TWO, bs_cfg=c, snr_db=10.0, seed=3)
    mean_rate_bps = 1e6 * 0.75 * channel.rayleigh_ergodic_capacity_bps_hz(10.0)
    blocks = 3000
    size = int(blocks * tc * mean_rate_bps / 8)
    p = net.transfer(0, BS, size, stage="s", tag="long")
    env.run()
    want = 8 * size / mean_rate_bps
    # Sampling error: the per-block rate's CV at 10 dB is about 0.45, so the mean over
    # 3000 blocks has a relative std of 0.45 / sqrt(3000) = 0.8 % (seeds 0-5 measured
    # -1.0 % to +0.7 %); 4 % is 5 sigma.
    assert p.value.airtime_s == pytest.approx(want, rel=0.04)
    assert p.value.delivered and p.value.attempts == 1
    # The per-attempt model holds one draw for the whole transfer instead: far from the mean.
    env2, net2, _ = make(TWO, bs_cfg=c.model_copy(update={"rate_adaptation": "per_attempt"}), snr_db=10.0, seed=3)
    p2 = net2.transfer(0, BS, size, stage="s", tag="long")
    env2.run()
    first_block_rate = 1e6 * se(net2.link(0, BS).snr_db(0.0, net2.tx_power_dbm(0)))
    assert p2.value.airtime_s == pytest.approx(8 * size / first_block_rate, rel=1e-9)


# --------------------------------------------------------------------------- energy by payer
def test_energy_split_between_batteries_and_infrastructure() -> None:
    env, net, rec = make(TWO)
    up = net.transfer(0, BS, S_BYTES, stage="s", tag="up")
    down = net.transfer(BS, 1, S_BYTES, stage="s", tag="down")
    env.run()
    tu, td = t_alone(20.0), t_alone(30.0)
    p0, pbs = dbm_to_w(net.tx_power_dbm(0)), dbm_to_w(net.tx_power_dbm(BS))
    assert up.value.device_energy_j == pytest.approx(p0 * tu, rel=1e-12)
    assert up.value.infrastructure_energy_j == pytest.approx(BS_RX_W * tu, rel=1e-12)
    assert down.value.device_energy_j == pytest.approx(RX_W * td, rel=1e-12)
    assert down.value.infrastructure_energy_j == pytest.approx(pbs * td, rel=1e-12)
    t = rec.stage_totals("test", "s")
    assert t.device_energy_j + t.infrastructure_energy_j == pytest.approx(t.energy_j, rel=1e-12)


def test_compute_on_the_server_is_infrastructure_energy() -> None:
    world = build_world(load_scenario("scenarios/quickstart.yaml", ["data.max_train_samples=100"]),
                        SeedStreams(0))
    sim = world.new_sim("nmoe")
    proc = sim.env.process(_both(sim))
    sim.env.run(until=proc)
    client, server = world.recorder.computes
    assert (client.node, client.device_energy_j, client.infrastructure_energy_j) == (
        "0", pytest.approx(client.energy_j), 0.0)
    assert (server.node, server.device_energy_j, server.infrastructure_energy_j) == (
        BS, 0.0, pytest.approx(server.energy_j))
    assert client.energy_j > 0 and server.energy_j > 0 and client.system == server.system == "nmoe"


def _both(sim: Any) -> Any:
    yield sim.executor.compute(0, 1e9, stage="s", tag="c")
    yield sim.executor.compute(BS, 1e12, stage="s", tag="b")


# --------------------------------------------------------------------------- per-system attribution
def test_records_carry_their_system_and_totals_are_kept_apart() -> None:
    rec = Recorder()
    g = build_topology(TopologyConfig(kind="explicit", positions_m=TWO, bs_position_m=(0, 0)), 2,
                       np.random.default_rng(0))
    ideal = ChannelConfig(model="ideal")
    nets = {}
    for system in ("a", "b"):
        env = simpy.Environment()
        nets[system] = (env, Network(env, g, LinkChannels(bs=ideal, d2d=ideal), {0: 0, 1: 0, BS: 0},
                                     {0: 0, 1: 0, BS: 0}, rec, np.random.default_rng(0), system=system))
    nets["a"][1].transfer(0, BS, 10, stage="same_name", tag="x")
    nets["b"][1].transfer(0, 1, 7, stage="same_name", tag="y")
    for env, _ in nets.values():
        env.run()
    assert [t.system for t in rec.transfers] == ["a", "b"]
    assert {h.system for h in rec.hops if h.tag == "y"} == {"b"}
    assert rec.stage_totals("a", "same_name").bytes == 10
    assert rec.stage_totals("b", "same_name").bytes == 7
    assert rec.stage_totals("b", "same_name").hop_bytes == {"up": 7, "down": 7, "d2d": 0}
    assert rec.systems == ["a", "b"]


def test_busy_time_is_the_union_of_query_intervals() -> None:
    assert busy_time_s([(0.0, 1.0), (0.5, 2.0), (3.0, 3.5), (3.1, 3.2)]) == pytest.approx(2.5)
    assert busy_time_s([]) == 0.0
