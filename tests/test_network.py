"""The SimPy Network: exact times and charges on tiny networks with deterministic SNR.

Fading 'none' and shadowing 0 make the SNR deterministic; each client's transmit power is
chosen so that its link's mean SNR is a round number, and then the spectral efficiency is
efficiency * log2(1 + snr) by hand, and every time follows from 8 S / (B se) and sharing.
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import numpy as np
import pytest
import simpy

from nmoe_sim.config import ChannelConfig, LinkChannels, TopologyConfig
from nmoe_sim.net.fading import LinkChannel
from nmoe_sim.net.network import Network, dbm_to_w
from nmoe_sim.net.topology import BS, build_topology
from nmoe_sim.record import Recorder

B_HZ = 1e6
EFF = 0.75
S_BYTES = 100_000
RX_W = 0.1
BS_RX_W = 1.0


def cfg(**kw: Any) -> ChannelConfig:
    base = dict(fading="none", shadowing_std_db=0.0, path_loss="log_distance",
                bandwidth_hz=B_HZ, efficiency=EFF, rate_model="shannon")
    return ChannelConfig(**{**base, **kw})


def se(snr_db: float) -> float:
    return EFF * math.log2(1 + 10 ** (snr_db / 10))


def t_alone(snr_db: float, size_bytes: int = S_BYTES) -> float:
    return 8 * size_bytes / (B_HZ * se(snr_db))


def tx_for(c: ChannelConfig, distance_m: float, kind: str, snr_db: float) -> float:
    """The transmit power that puts a link of this class and length at ``snr_db``."""
    return snr_db - LinkChannel(c, distance_m, kind, np.random.default_rng(0)).mean_snr_db(0.0)


def make(positions: tuple[tuple[float, float], ...], d2d: tuple[tuple[int, int], ...] = (),
         bs_cfg: ChannelConfig | None = None, d2d_cfg: ChannelConfig | None = None,
         snr_db: float = 20.0, bs_snr_db: float = 30.0, bs_pos: tuple[float, float] = (0, 0),
         seed: int = 0, routing: str = "min_airtime") -> tuple[simpy.Environment, Network, Recorder]:
    """Clients at ``positions`` around a BS; client tx powers put their BS links at ``snr_db``
    (clients must be equidistant from the BS), the BS's downlinks at ``bs_snr_db``."""
    bs_cfg = bs_cfg or cfg()
    topo = TopologyConfig(kind="explicit", positions_m=positions, d2d_edges=d2d or None,
                          bs_position_m=bs_pos)
    g = build_topology(topo, len(positions), np.random.default_rng(0))
    dist = g.edges[0, BS]["distance_m"]
    tx = {i: tx_for(bs_cfg, dist, "bs", snr_db) for i in range(len(positions))}
    tx[BS] = tx_for(bs_cfg, dist, "bs", bs_snr_db)
    rx = {i: RX_W for i in range(len(positions))} | {BS: BS_RX_W}
    env, rec = simpy.Environment(), Recorder()
    net = Network(env, g, LinkChannels(bs=bs_cfg, d2d=d2d_cfg or cfg()), tx, rx, rec,
                  np.random.default_rng(seed), system="test", routing=routing)
    return env, net, rec


def start_at(env: simpy.Environment, net: Network, t_s: float, *args: Any,
             **kw: Any) -> simpy.Process:
    """A process that starts ``net.transfer(*args)`` at ``t_s`` and returns its record."""
    def go() -> Any:
        yield env.timeout(t_s)
        return (yield net.transfer(*args, **kw))
    return env.process(go())


TWO = ((100.0, 0.0), (-100.0, 0.0))


@pytest.mark.parametrize("latency_s", [0.0, 0.01])
def test_single_transfer_exact_airtime_end_and_energy(latency_s: float) -> None:
    env, net, rec = make(TWO, bs_cfg=cfg(latency_s=latency_s))
    proc = net.transfer(0, BS, S_BYTES, stage="s1", tag="up")
    env.run()
    t = 8 * S_BYTES / (B_HZ * EFF * math.log2(101.0))  # 20 dB = 100 linear
    r = proc.value
    assert r is rec.transfers[0] and len(rec.hops) == 1
    assert r.delivered and r.reason == "" and r.attempts == 1 and r.hops == 1
    assert (r.src, r.dst, r.size_bytes, r.start_s) == ("0", "bs", S_BYTES, 0.0)
    assert r.end_s == pytest.approx(t + latency_s, rel=1e-12)
    assert r.airtime_s == pytest.approx(t, rel=1e-12)
    assert r.energy_j == pytest.approx((dbm_to_w(net.tx_power_dbm(0)) + BS_RX_W) * t, rel=1e-12)
    assert r.snr_db == pytest.approx(20.0, abs=1e-9)
    assert net.mean_snr_db(0, BS) == pytest.approx(20.0, abs=1e-9)
    assert net.mean_snr_db(BS, 0) == pytest.approx(30.0, abs=1e-9)


def test_two_equal_flows_on_one_radio_take_exactly_twice_as_long() -> None:
    env, net, rec = make(TWO)
    a = net.transfer(0, BS, S_BYTES, stage="s", tag="a")
    b = net.transfer(0, BS, S_BYTES, stage="s", tag="b")
    env.run()
    t1 = a.value.airtime_s  # airtime is the time alone on the channel
    assert t1 == pytest.approx(t_alone(20.0), rel=1e-12)
    assert a.value.end_s == 2 * t1 and b.value.end_s == 2 * t1
    assert b.value.airtime_s == t1


def test_flow_joining_halfway_gets_processor_sharing_times() -> None:
    t = t_alone(20.0)
    env, net, _ = make(TWO)
    a = start_at(env, net, 0.0, 0, BS, S_BYTES, stage="s", tag="a")
    b = start_at(env, net, t / 2, 0, BS, S_BYTES, stage="s", tag="b")
    env.run()
    # A alone for T/2 (half sent), then both at half rate: A's last half takes T -> 1.5 T;
    # B has sent half by then and finishes alone in T/2 -> 2 T.
    assert a.value.end_s == pytest.approx(1.5 * t, rel=1e-12)
    assert b.value.end_s == pytest.approx(2.0 * t, rel=1e-12)
    assert b.value.start_s == pytest.approx(t / 2, rel=1e-12)


def test_bs_uplink_shared_but_downlink_is_a_separate_radio() -> None:
    three = ((100.0, 0.0), (-100.0, 0.0), (0.0, 100.0))
    env, net, _ = make(three)
    up0 = net.transfer(0, BS, S_BYTES, stage="s", tag="up0")
    up1 = net.transfer(1, BS, S_BYTES, stage="s", tag="up1")
    down2 = net.transfer(BS, 2, S_BYTES, stage="s", tag="down2")
    env.run()
    assert up0.value.end_s == pytest.approx(2 * t_alone(20.0), rel=1e-12)
    assert up1.value.end_s == pytest.approx(2 * t_alone(20.0), rel=1e-12)
    assert down2.value.end_s == pytest.approx(t_alone(30.0), rel=1e-12)


def test_ideal_channel_takes_latency_only() -> None:
    ideal = ChannelConfig(model="ideal", latency_s=0.02)
    env, net, rec = make(TWO, bs_cfg=ideal, d2d_cfg=ideal)
    one = net.transfer(0, BS, S_BYTES, stage="s", tag="one")
    two = net.transfer(0, 1, S_BYTES, stage="s", tag="two")  # relayed by the BS
    env.run()
    assert one.value.end_s == 0.02 and one.value.attempts == 1 and one.value.delivered
    assert one.value.airtime_s == 0.0 and one.value.energy_j == 0.0
    assert one.value.snr_db == math.inf
    assert two.value.hops == 2 and two.value.end_s == pytest.approx(0.04)


def test_zero_bytes_completes_at_once() -> None:
    env, net, rec = make(TWO)
    p = net.transfer(0, 1, 0, stage="s", tag="z")
    env.run()
    assert p.value.delivered and p.value.end_s == 0.0 and p.value.airtime_s == 0.0
    assert len(rec.hops) == 2
    same = net.transfer(1, 1, S_BYTES, stage="s", tag="self")
    env.run()
    assert same.value.delivered and same.value.hops == 0 and same.value.end_s == 0.0


def test_outage_fails_after_max_attempts_timeouts() -> None:
    c = cfg(max_attempts=3, retx_timeout_s=0.05, outage_snr_db=-5.0)
    env, net, rec = make(TWO, bs_cfg=c, snr_db=-10.0)
    p = net.transfer(0, BS, S_BYTES, stage="s", tag="lost")
    env.run()
    r = p.value
    assert not r.delivered and r.reason == "outage" and r.attempts == 3
    assert r.end_s == pytest.approx(3 * 0.05, rel=1e-12)
    assert r.airtime_s == pytest.approx(0.15, rel=1e-12)
    assert r.energy_j == pytest.approx(dbm_to_w(net.tx_power_dbm(0)) * 0.15, rel=1e-12)
    assert rec.hops[0].rx_energy_j == 0.0 and not rec.hops[0].delivered
    assert r.snr_db == pytest.approx(-10.0, abs=1e-9)


def test_multihop_through_d2d_chain_store_and_forward() -> None:
    # Three clients 50 m apart on a line, the BS 3 km away: D2D beats the cellular relay.
    line = ((0.0, 0.0), (50.0, 0.0), (100.0, 0.0))
    d2d_cfg = cfg()
    env, net, rec = make(line, d2d=((0, 1), (1, 2)), d2d_cfg=d2d_cfg, bs_pos=(50.0, 3000.0),
                         snr_db=0.0, bs_snr_db=5.0)
    assert net.route(0, 2) == [0, 1, 2]
    assert net.route(0, 1) == [0, 1]
    p = net.transfer(0, 2, S_BYTES, stage="s", tag="chain")
    env.run()
    h1, h2 = rec.hops
    snr1, snr2 = net.mean_snr_db(0, 1), net.mean_snr_db(1, 2)
    assert (h1.u, h1.v, h2.u, h2.v) == ("0", "1", "1", "2")
    assert h2.start_s == h1.end_s == pytest.approx(t_alone(snr1), rel=1e-12)
    assert p.value.end_s == pytest.approx(t_alone(snr1) + t_alone(snr2), rel=1e-12)
    assert p.value.hops == 2 and p.value.attempts == 2
    assert p.value.snr_db == pytest.approx(snr1)


def test_star_relays_client_to_client_via_bs() -> None:
    env, net, rec = make(TWO)
    assert net.route(0, 1) == [0, BS, 1]
    p = net.transfer(0, 1, S_BYTES, stage="s", tag="relay")
    env.run()
    assert p.value.end_s == pytest.approx(t_alone(20.0) + t_alone(30.0), rel=1e-12)
    assert [(h.u, h.v) for h in rec.hops] == [("0", "bs"), ("bs", "1")]


def test_event_order_of_three_transfers() -> None:
    three = ((100.0, 0.0), (-100.0, 0.0), (0.0, 100.0))
    env, net, rec = make(three)
    t, td = t_alone(20.0), t_alone(30.0)
    net.transfer(0, BS, S_BYTES, stage="s", tag="A")  # shares the uplink with B
    net.transfer(1, BS, S_BYTES // 2, stage="s", tag="B")
    net.transfer(BS, 2, S_BYTES, stage="s", tag="C")  # downlink radio, alone
    env.run()
    # B: S/2 at half rate -> T. A: S/2 sent by then, the rest alone -> 1.5 T. C: T_down.
    got = [(r.tag, r.end_s) for r in rec.transfers]
    assert [tag for tag, _ in got] == ["C", "B", "A"]
    assert [e for _, e in got] == pytest.approx([td, t, 1.5 * t], rel=1e-12)


def test_deadline_interrupt_frees_bandwidth() -> None:
    t = t_alone(20.0)
    env, net, rec = make(TWO)
    a = net.transfer(0, BS, S_BYTES, stage="s", tag="a")
    b = net.transfer(1, BS, S_BYTES, stage="s", tag="b")

    def deadline() -> Any:
        yield env.timeout(t / 2)
        a.interrupt("deadline")
    env.process(deadline())
    env.run()
    ra, rb = a.value, b.value
    assert not ra.delivered and ra.reason == "deadline" and ra.end_s == pytest.approx(t / 2)
    assert ra.airtime_s == pytest.approx(t / 4, rel=1e-12)  # T/2 at half rate
    assert ra.energy_j == pytest.approx((dbm_to_w(net.tx_power_dbm(0)) + BS_RX_W) * t / 4)
    # B sent a quarter at half rate, then alone: 3/4 of T more.
    assert rb.delivered and rb.end_s == pytest.approx(1.25 * t, rel=1e-12)
    hop_a = next(h for h in rec.hops if h.tag == "a")
    assert not hop_a.delivered and hop_a.end_s == pytest.approx(t / 2)
    stats = {(s["u"], s["v"]): s for s in net.link_stats(rb.end_s)}
    assert stats[("0", "bs")]["bytes"] == 0 and stats[("1", "bs")]["bytes"] == S_BYTES
    assert stats[("1", "bs")]["utilization"] == pytest.approx(t / (1.25 * t))


def test_interrupt_during_outage_wait_charges_elapsed_airtime() -> None:
    env, net, _ = make(TWO, bs_cfg=cfg(retx_timeout_s=0.05), snr_db=-10.0)
    p = net.transfer(0, BS, S_BYTES, stage="s", tag="x")

    def stop() -> Any:
        yield env.timeout(0.07)
        p.interrupt("deadline")
    env.process(stop())
    env.run()
    assert p.value.reason == "deadline" and p.value.attempts == 2
    assert p.value.airtime_s == pytest.approx(0.07, rel=1e-12)


def run_faded(seed: int) -> list[str]:
    c = ChannelConfig(fading="rayleigh", shadowing_std_db=4.0, bandwidth_hz=5e6)
    g = build_topology(TopologyConfig(kind="random_geometric", d2d_range_m=80.0), 6,
                       np.random.default_rng(seed))
    tx = {n: 23.0 for n in g.nodes} | {BS: 43.0}
    env, rec = simpy.Environment(), Recorder()
    net = Network(env, g, LinkChannels(bs=c, d2d=c), tx, {n: 0.1 for n in g.nodes}, rec,
                  np.random.default_rng(seed), system="test")
    rng = np.random.default_rng(seed + 1)
    for k in range(12):
        src, dst = (int(x) for x in rng.choice(6, size=2, replace=False))
        start_at(env, net, 0.003 * k, src, dst if k % 3 else BS, 200_000, stage="s", tag=str(k))
    env.run()
    return [repr(r) for r in rec.transfers + rec.hops]  # repr: nan-safe comparison


def test_same_seed_same_records() -> None:
    a, b = run_faded(5), run_faded(5)
    assert a == b and len(a) >= 12
    assert run_faded(6) != a


def test_link_channels_get_their_class_config() -> None:
    env, net, _ = make(((0.0, 10.0), (0.0, -10.0)), d2d=((0, 1),),
                       d2d_cfg=cfg(bandwidth_hz=2e6))
    assert net.link(0, 1).cfg.bandwidth_hz == 2e6 and net.link(BS, 0).cfg.bandwidth_hz == B_HZ
    assert sorted((s["u"], s["v"], s["kind"]) for s in net.link_stats(1.0)) == [
        ("0", "1", "d2d"), ("0", "bs", "bs"), ("1", "bs", "bs")]
    assert isinstance(net.graph, nx.Graph)
