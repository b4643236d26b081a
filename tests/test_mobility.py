"""Moving clients (nmoe_sim/net/mobility.py): speed, purity in time, links that follow, shadowing."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from nmoe_sim.errors import ConfigError
from nmoe_sim.net import channel
from nmoe_sim.net.mobility import ShadowField, Track
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import Sim, build_world

from conftest import tiny_cfg

_LINK = "{model: wireless, path_loss: log_distance, fading: rayleigh, shadowing_std_db: 6.0}"
NET = (f"network.channel={{bs: {_LINK}, d2d: {_LINK}}}",
       "network.topology={kind: explicit, positions_m: [[0, 0], [10, 0], [0, 10], [10, 10]], "
       "d2d_edges: [[0, 1]], bs_position_m: [0, 0]}")


def test_a_trajectory_is_walked_at_the_stated_speed_then_held() -> None:
    track = Track((0.0, 0.0), 2.0, 0.0, None, None, ((100.0, 0.0), (100.0, 50.0)))
    assert track.position(10.0) == (20.0, 0.0)
    assert track.position(50.0) == (100.0, 0.0)
    assert track.position(60.0) == (100.0, 20.0)
    assert track.position(1e6) == (100.0, 50.0)  # the last waypoint: it stays


def test_random_waypoint_moves_at_speed_and_is_a_pure_function_of_time() -> None:
    box = ((0.0, 0.0), (200.0, 200.0))
    a = Track((5.0, 5.0), 3.0, 0.0, np.random.default_rng(1), box)
    b = Track((5.0, 5.0), 3.0, 0.0, np.random.default_rng(1), box)
    times = np.linspace(0.0, 600.0, 2001)
    pa = [a.position(t) for t in times]
    pb = [b.position(t) for t in times[::-1]][::-1]  # asked backwards: the same positions
    assert pa == pb
    # Never faster than the speed; along the legs (no pause) the path length is speed x time.
    steps = [math.dist(p, q) for p, q in zip(pa, pa[1:])]
    assert max(steps) <= 3.0 * (times[1] - times[0]) + 1e-9
    corners = [pa[0]] + [leg[3] for leg in a.legs if leg[1] <= 600.0] + [pa[-1]]
    assert sum(math.dist(p, q) for p, q in zip(corners, corners[1:])) == pytest.approx(3.0 * 600.0, rel=1e-9)
    assert all(0.0 <= x <= 200.0 and 0.0 <= y <= 200.0 for x, y in pa)


def test_a_moving_clients_links_follow_it_and_its_doppler_follows_its_speed() -> None:
    # Client 1 walks from (10, 0) along +x at 10 m/s; everyone else stands.
    world = build_world(tiny_cfg(*NET, "network.mobility={kind: trajectory, speed_m_per_s: 10.0, clients: [1], "
                                 "waypoints_m: [[[1000, 0]]]}"), SeedStreams(0))
    sim = Sim(world, "nmoe")
    d2d, bs, still = sim.net.link(0, 1), sim.net.link(1, "bs"), sim.net.link(2, "bs")
    sim.env.run(until=1.005)  # the links were last relocated at t = 1.0 (every 10 ms coherence block)
    assert d2d.distance_m == pytest.approx(20.0) and bs.distance_m == pytest.approx(20.0)
    assert still.distance_m == 10.0
    # f_D = v f_c / c: 10 m/s at 3.5 GHz is 116.7 Hz (a standing link keeps the preset's).
    assert bs.cfg.doppler_hz == pytest.approx(10.0 * 3.5e9 / channel.SPEED_OF_LIGHT_M_S)
    assert bs.process.rho == pytest.approx(channel.jakes_correlation(bs.cfg.doppler_hz, 0.01))
    assert still.cfg.doppler_hz == 10.0
    # The budget moved with it: 10 m -> 20 m at path-loss exponent 3 is 9.03 dB less, up to the
    # change of the spatially consistent shadowing.
    assert bs.mean_snr_db(23.0) == pytest.approx(channel.mean_snr_db(bs.cfg, 23.0, 20.0, "bs", bs.shadowing_db))


def test_shadowing_fields_decorrelate_over_the_stated_distance() -> None:
    # Over many independent fields, corr(s(x), s(x + d)) = exp(-d / 20 m); 3,000 fields: sd ~0.02.
    rng = np.random.default_rng(0)
    fields = [ShadowField(6.0, 20.0, rng) for _ in range(3000)]
    at0 = np.array([f((0.0, 0.0)) for f in fields])
    assert np.std(at0) == pytest.approx(6.0, rel=0.05)
    for d in (5.0, 20.0, 60.0):
        at_d = np.array([f((d * 0.6, d * 0.8)) for f in fields])
        assert np.corrcoef(at0, at_d)[0, 1] == pytest.approx(math.exp(-d / 20.0), abs=0.06)


def test_mobility_is_off_by_default_and_bad_settings_name_their_key() -> None:
    assert Sim(build_world(tiny_cfg(*NET), SeedStreams(0)), "nmoe").mobility is None
    with pytest.raises(ConfigError, match="waypoints_m"):
        tiny_cfg("network.mobility={kind: trajectory, speed_m_per_s: 1.0}")
    with pytest.raises(ConfigError, match="network.mobility.speed_m_per_s"):
        tiny_cfg("network.mobility={speed_m_per_s: 0}")
    with pytest.raises(ConfigError, match="network.mobility.waypoints_m: 1 trajectories for 4 moving"):
        tiny_cfg("network.mobility={kind: trajectory, speed_m_per_s: 1.0, waypoints_m: [[[0, 0]]]}")
    with pytest.raises(ConfigError, match="network.mobility.clients"):
        tiny_cfg("network.mobility={speed_m_per_s: 1.0, clients: [7]}")


def test_a_run_with_moving_clients_and_channel_aware_routing_resumes_as_if_never_stopped(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Positions are a pure function of time and seed, and the relocation timer is a picklable
    # Call: a run stopped mid-stage-3 and resumed ends byte for byte as the run never stopped.
    from nmoe_sim.runner import run

    from test_resume import OVERRIDES, run_files, stop_and_resume
    cfg = tiny_cfg(*OVERRIDES, "network.mobility={speed_m_per_s: 5.0}", "inference.routing=channel_aware",
                   "baselines.systems=[local]")
    base = tmp_path / "base"
    base.mkdir()
    run(cfg, base, checkpoint=True)
    stop_and_resume(cfg, tmp_path / "run", "nmoe stage3_fedgate round 1", monkeypatch)
    got, want = run_files(tmp_path / "run"), run_files(base)
    assert list(got) == list(want)
    for name in want:
        assert got[name] == want[name], name
    # And the clients did move: the same run standing still carries its bytes at other SNRs.
    still = tmp_path / "still"
    still.mkdir()
    run(tiny_cfg(*OVERRIDES, "inference.routing=channel_aware", "baselines.systems=[local]"), still)
    assert run_files(still)["hops.csv"] != want["hops.csv"]
