"""Injected faults on tiny networks with deterministic SNR (see test_network.py): a link,
a radio or the base station down, a deep-fade storm and a straggler, with exact times."""

from __future__ import annotations

from typing import Any

import networkx as nx
import pytest
import simpy

from nmoe_sim.config import DeviceProfile
from nmoe_sim.engine.executors import LocalExecutor
from nmoe_sim.engine.fault_config import FaultsConfig
from nmoe_sim.engine.faults import FaultState
from nmoe_sim.errors import ConfigError
from nmoe_sim.net.network import Network
from nmoe_sim.net.topology import BS
from nmoe_sim.record import FaultRecord, Recorder
from nmoe_sim.seeds import SeedStreams

from test_network import B_HZ, S_BYTES, TWO, cfg, make, se, start_at, t_alone

RETX_S = 0.05


def with_faults(env: simpy.Environment, net: Network, rec: Recorder, *events: dict[str, Any]) -> FaultState:
    state = FaultState(FaultsConfig(events=list(events)), env, net.graph, SeedStreams(0), rec, system="test")
    net.attach_faults(state)
    return state


def test_link_down_mid_flow_breaks_it_and_retries_on_the_outage_schedule() -> None:
    t = t_alone(20.0)
    a, b = t / 2, t / 2 + 0.12
    env, net, rec = make(TWO, bs_cfg=cfg(retx_timeout_s=RETX_S, max_attempts=8))
    with_faults(env, net, rec, {"kind": "link_down", "link": [BS, 0], "start_s": a, "end_s": b})
    proc = net.transfer(0, BS, S_BYTES, stage="s", tag="up")
    env.run()
    r = proc.value
    # Broken at a (attempt 1); attempts 2 and 3 start at a + 0.05 and a + 0.10 while the
    # link is still down and fail as outages; attempt 4 starts at a + 0.15 >= b and sends it all.
    assert r.delivered and r.reason == "" and r.attempts == 4
    assert r.end_s == pytest.approx(a + 3 * RETX_S + t, rel=1e-12)
    # Airtime: half the payload, the sender's three ACK waits, then the whole payload.
    assert r.airtime_s == pytest.approx(t / 2 + 3 * RETX_S + t, rel=1e-12)
    (f,) = rec.faults
    assert f == FaultRecord("test", "s", "link_down", "link_down", a, b, "", "0", "bs")


def test_a_transfer_starting_while_a_hop_of_its_route_is_down_goes_around_it() -> None:
    env, net, rec = make(TWO, d2d=((0, 1),), routing="direct_first")
    with_faults(env, net, rec, {"kind": "link_down", "link": [0, 1], "start_s": 0.0, "end_s": 10.0})
    around = start_at(env, net, 1.0, 0, 1, S_BYTES, stage="s", tag="d2d")
    later = start_at(env, net, 10.0, 0, 1, S_BYTES, stage="s", tag="d2d")
    env.run()
    # Up to the BS at 20 dB, down from it at 30 dB (store and forward), each alone.
    r = around.value
    assert r.delivered and r.route == ("0", "bs", "1") and r.attempts == 2
    assert r.end_s == pytest.approx(1.0 + t_alone(20.0) + t_alone(30.0), rel=1e-12)
    assert later.value.route == ("0", "1")  # back up: the router's own route again


def test_link_down_past_the_retries_fails_the_transfer_with_link_down() -> None:
    env, net, rec = make(TWO, bs_cfg=cfg(retx_timeout_s=RETX_S, max_attempts=3))
    with_faults(env, net, rec, {"kind": "link_down", "link": [0, BS], "start_s": 0.0, "end_s": 10.0})
    late = start_at(env, net, 0.01, 0, BS, S_BYTES, stage="s", tag="up")
    other = start_at(env, net, 0.01, 1, BS, S_BYTES, stage="s", tag="up1")
    env.run()
    r = late.value
    assert not r.delivered and r.reason == "link_down" and r.attempts == 3
    assert r.end_s == pytest.approx(0.01 + 3 * RETX_S, rel=1e-12)
    assert r.airtime_s == pytest.approx(3 * RETX_S, rel=1e-12)  # the sender did not know
    assert r.link_bytes == 0
    assert other.value.delivered and other.value.end_s == pytest.approx(0.01 + t_alone(20.0), rel=1e-12)


def test_bs_outage_fails_every_uplink_in_its_interval_and_spares_d2d() -> None:
    env, net, rec = make(TWO, d2d=((0, 1),), bs_cfg=cfg(retx_timeout_s=RETX_S, max_attempts=2),
                         routing="direct_first")
    with_faults(env, net, rec, {"kind": "bs_outage", "start_s": 1.0, "end_s": 2.0})
    ups = [start_at(env, net, 1.5, c, BS, S_BYTES, stage="s", tag=f"up{c}") for c in (0, 1)]
    d2d = start_at(env, net, 1.5, 0, 1, 1000, stage="s", tag="d2d")
    after = start_at(env, net, 2.0 + 1e-9, 0, BS, S_BYTES, stage="s", tag="after")
    env.run()
    for p in ups:
        assert not p.value.delivered and p.value.reason == "bs_outage"
        assert p.value.end_s == pytest.approx(1.5 + 2 * RETX_S, rel=1e-12)
    assert d2d.value.delivered and d2d.value.route == ("0", "1")
    assert after.value.delivered and after.value.attempts == 1
    assert [(f.tag, f.node, f.start_s, f.end_s) for f in rec.faults] == [("bs_outage", "bs", 1.0, 2.0)]


def test_radio_down_silences_every_link_of_the_node() -> None:
    env, net, rec = make(TWO, d2d=((0, 1),), bs_cfg=cfg(retx_timeout_s=RETX_S, max_attempts=2),
                         d2d_cfg=cfg(retx_timeout_s=RETX_S, max_attempts=2), routing="direct_first")
    with_faults(env, net, rec, {"kind": "radio_down", "node": 1, "start_s": 0.0, "end_s": 5.0})
    to1 = start_at(env, net, 0.1, 0, 1, 1000, stage="s", tag="d2d")
    from1 = start_at(env, net, 0.1, 1, BS, 1000, stage="s", tag="up1")
    up0 = start_at(env, net, 0.1, 0, BS, S_BYTES, stage="s", tag="up0")
    env.run()
    assert (to1.value.delivered, to1.value.reason) == (False, "link_down")
    assert (from1.value.delivered, from1.value.reason) == (False, "link_down")
    assert from1.value.airtime_s == 0.0  # a sender whose radio is off spends nothing
    assert to1.value.airtime_s == pytest.approx(2 * RETX_S, rel=1e-12)
    assert up0.value.delivered


def test_crashed_receiver_fails_transfers_to_it_with_crashed() -> None:
    env, net, rec = make(TWO, bs_cfg=cfg(retx_timeout_s=RETX_S, max_attempts=2))
    with_faults(env, net, rec, {"kind": "crash", "clients": [1], "at_s": 0.5, "downtime_s": 1.0})
    before = start_at(env, net, 0.4, BS, 1, 100, stage="s", tag="down")
    during = start_at(env, net, 0.6, BS, 1, 100, stage="s", tag="down")
    rejoined = start_at(env, net, 1.6, BS, 1, 100, stage="s", tag="down")
    env.run()
    assert before.value.delivered
    assert (during.value.delivered, during.value.reason, during.value.attempts) == (False, "crashed", 2)
    assert rejoined.value.delivered
    assert [(f.tag, f.node, f.start_s, f.end_s) for f in rec.faults] == [("crash", "1", 0.5, 1.5)]


@pytest.mark.parametrize("extra_db", [10.0, 25.0])
def test_storm_over_the_whole_transfer_lowers_the_rate_to_the_faded_snr(extra_db: float) -> None:
    env, net, rec = make(TWO)
    with_faults(env, net, rec, {"kind": "storm", "links": [[0, BS]], "extra_loss_db": extra_db,
                                "start_s": 0.0, "end_s": 100.0})
    proc = start_at(env, net, 0.5, 0, BS, S_BYTES, stage="s", tag="up")
    env.run()
    r = proc.value
    assert r.end_s - 0.5 == pytest.approx(8 * S_BYTES / (B_HZ * se(20.0 - extra_db)), rel=1e-12)
    assert r.snr_db == pytest.approx(20.0 - extra_db, abs=1e-9)


def test_storm_starting_mid_flow_re_rates_the_rest() -> None:
    t = t_alone(20.0)
    env, net, rec = make(TWO)
    with_faults(env, net, rec, {"kind": "storm", "links": [[0, BS]], "extra_loss_db": 10.0,
                                "start_s": t / 2, "end_s": 100.0})
    proc = net.transfer(0, BS, S_BYTES, stage="s", tag="up")
    other = net.transfer(1, BS, S_BYTES, stage="s", tag="up1")  # another link: shares the BS radio only
    env.run()
    # Half the bits at 20 dB alone... but client 1 shares the BS's receive radio, so each
    # flow runs at half its rate: client 0 sends a quarter by t/2, then client 1 (still at
    # 20 dB) and client 0 (now 10 dB) share. Checked against the fluid model by hand:
    bits = 8.0 * S_BYTES
    r0, r1 = B_HZ * se(20.0), B_HZ * se(10.0)
    sent0 = r0 / 2 * (t / 2)  # by the storm
    # After t/2 both flows get half of their own rate; client 1 ends first (it is faster).
    t1_end = t / 2 + (bits - sent0) / (r0 / 2)
    sent0_b = sent0 + (r1 / 2) * (t1_end - t / 2)
    t0_end = t1_end + (bits - sent0_b) / r1
    assert other.value.end_s == pytest.approx(t1_end, rel=1e-12)
    assert proc.value.end_s == pytest.approx(t0_end, rel=1e-12)
    assert proc.value.airtime_s == pytest.approx(sent0 / r0 + (bits - sent0) / r1, rel=1e-12)


def test_straggler_slows_computations_that_start_inside_its_interval() -> None:
    env, rec = simpy.Environment(), Recorder()
    profiles = {0: DeviceProfile(flops_per_s=1e9, compute_power_w=2.0), BS: DeviceProfile(flops_per_s=1e12,
                                                                                         compute_power_w=0.0)}
    ex = LocalExecutor(env, profiles, rec, system="test")
    g = nx.Graph()
    g.add_nodes_from([0, BS])
    ex.faults = FaultState(FaultsConfig(events=[{"kind": "straggler", "node": 0, "slowdown": 3.0,
                                                 "start_s": 1.0, "end_s": 2.0}]),
                           env, g, SeedStreams(0), rec, system="test")

    def at(t_s: float) -> simpy.Process:
        def go() -> Any:
            yield env.timeout(t_s)
            yield ex.compute(0, 1e8, stage="s", tag=f"at{t_s}")
        return env.process(go())

    for t_s in (0.5, 1.5, 2.05):
        at(t_s)
    env.run()
    times = {c.tag: (c.start_s, c.end_s) for c in rec.computes}
    assert times["at0.5"] == (0.5, 0.5 + 0.1)  # before: 1e8 / 1e9
    assert times["at1.5"] == (1.5, 1.5 + 1e8 * 3.0 / 1e9)  # inside: three times as long
    assert times["at2.05"][1] - times["at2.05"][0] == pytest.approx(0.1, rel=1e-12)  # after
    assert [c.energy_j for c in rec.computes if c.tag == "at1.5"] == [2.0 * 0.3]
    assert [(f.tag, f.node) for f in rec.faults] == [("straggler x3", "0")]


def test_a_fault_naming_a_link_or_node_not_in_the_topology_is_a_config_error() -> None:
    env, net, rec = make(TWO)
    with pytest.raises(ConfigError, match=r"faults.events.0.link: no link 0-1"):
        with_faults(env, net, rec, {"kind": "link_down", "link": [0, 1], "start_s": 0, "end_s": 1})
    with pytest.raises(ConfigError, match=r"faults.events.0.clients: client 7 is not in the topology"):
        with_faults(env, net, rec, {"kind": "crash", "clients": [7]})


def test_no_faults_means_no_hook_and_identical_records() -> None:
    runs = []
    for attach in (False, True):
        env, net, rec = make(TWO, bs_cfg=cfg(fading="rayleigh", coherence_time_s=0.01), seed=3)
        if attach:  # a fault that never touches these links or times
            with_faults(env, net, rec, {"kind": "bs_outage", "start_s": 500.0, "end_s": 501.0})
        procs = [net.transfer(c, BS, S_BYTES, stage="s", tag="up") for c in (0, 1)]
        env.run(until=100.0)
        runs.append([p.value for p in procs] + list(rec.hops))
    assert runs[0] == runs[1] and all(r.delivered for r in runs[0][:2])


@pytest.mark.parametrize("adaptation", ["per_block", "per_attempt"])
def test_storm_on_a_fading_link_equals_a_sender_that_many_db_quieter(adaptation: str) -> None:
    # SNR = tx power + link budget + fading gain, so a storm of X dB over the whole transfer
    # must give the times and SNRs of the same fading draws with the sender X dB quieter
    # (every coherence block re-rated through the block clock, or the first one held).
    fading = cfg(fading="rayleigh", coherence_time_s=0.002, rate_adaptation=adaptation, max_attempts=50)
    runs = []
    for stormy in (True, False):
        env, net, rec = make(TWO, bs_cfg=fading, snr_db=20.0 if stormy else 12.0, seed=5)
        if stormy:
            with_faults(env, net, rec, {"kind": "storm", "links": [[0, BS]], "extra_loss_db": 8.0,
                                        "start_s": 0.0, "end_s": 1000.0})
        proc = net.transfer(0, BS, S_BYTES, stage="s", tag="up")
        env.run(until=proc)
        runs.append(proc.value)
    storm, quiet = runs
    assert storm.delivered and quiet.delivered and storm.attempts == quiet.attempts
    assert storm.end_s == pytest.approx(quiet.end_s, rel=1e-9)
    assert storm.airtime_s == pytest.approx(quiet.airtime_s, rel=1e-9)
    assert storm.snr_db == pytest.approx(quiet.snr_db, abs=1e-9)
    assert storm.end_s > 1.5 * t_alone(20.0)  # the storm did slow it down
