"""Closed-form checks of the channel model (nmoe_sim/net/channel.py, fading.py, channel/)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import special

from nmoe_sim.config import CHANNEL_PRESETS_DIR, ChannelConfig, build_scenario, resolve_presets
from nmoe_sim.net import channel as ch
from nmoe_sim.net.fading import FADING, LinkChannel, ar1_advance

J0_FIRST_ZERO = 2.404825557695773  # J0(x) = 0: blocks this far apart are uncorrelated
J0_MINIMUM_X = 3.8317059702075125  # J0 is most negative (-0.4028) here
N_BLOCKS = 100_000
TC_S = 0.01


def cfg_with(**kw: object) -> ChannelConfig:
    return ChannelConfig(**kw)


def doppler_for(x: float, tc_s: float = TC_S) -> float:
    """The Doppler that puts 2 pi f_D T_c at x."""
    return x / (2.0 * math.pi * tc_s)


def block_gains(link: LinkChannel, n: int = N_BLOCKS, every: int = 1) -> np.ndarray:
    tc_s = link.cfg.coherence_time_s
    return np.array([link.fading_gain((k * every + 0.5) * tc_s) for k in range(n)])


def uncorrelated_gains(fading: str, seed: int = 1, **kw: object) -> np.ndarray:
    doppler_hz = doppler_for(J0_FIRST_ZERO)
    cfg = cfg_with(fading=fading, coherence_time_s=TC_S, doppler_hz=doppler_hz, **kw)
    assert abs(ch.jakes_correlation(cfg.doppler_hz, cfg.coherence_time_s)) < 1e-12
    return block_gains(LinkChannel(cfg, 50.0, "bs", np.random.default_rng(seed)))


@pytest.fixture(scope="module")
def rayleigh_iid() -> np.ndarray:
    return uncorrelated_gains("rayleigh")


# ------------------------------------------------------------------------------ path loss
def test_free_space_1km_2_4ghz() -> None:
    cfg = cfg_with(path_loss="free_space", carrier_ghz=2.4)
    assert ch.path_loss_db(cfg, 1000.0, "d2d") == pytest.approx(100.05, abs=0.01)


def test_log_distance_slope_and_reference_clamp() -> None:
    cfg = cfg_with(path_loss="log_distance", path_loss_exponent=3.5, ref_distance_m=10.0)
    pl = ch.path_loss_db(cfg, np.array([5.0, 10.0, 100.0, 1000.0]), "d2d")
    assert isinstance(pl, np.ndarray)
    fspl_10m = 20 * math.log10(4 * math.pi * 10.0 * 3.5e9 / ch.SPEED_OF_LIGHT_M_S)
    assert pl[1] == pytest.approx(fspl_10m, abs=1e-9)
    assert pl[0] == pytest.approx(pl[1], abs=1e-9)  # below d0: held at PL(d0)
    assert np.diff(pl[1:]) == pytest.approx([35.0, 35.0], abs=1e-9)  # 10 n per decade


def test_umi_los_formula_and_breakpoint() -> None:
    cfg = cfg_with(path_loss="umi_los", carrier_ghz=3.5, bs_height_m=10.0, ue_height_m=1.5)
    d3d = math.hypot(100.0, 8.5)
    expected = 32.4 + 21 * math.log10(d3d) + 20 * math.log10(3.5)
    assert ch.path_loss_db(cfg, 100.0, "bs") == pytest.approx(expected, abs=1e-9)
    d_bp = 4 * 9.0 * 0.5 * 3.5e9 / ch.SPEED_OF_LIGHT_M_S
    assert ch.umi_breakpoint_m(cfg, "bs") == pytest.approx(d_bp)
    d3d_far = math.hypot(400.0, 8.5)
    pl2 = 32.4 + 40 * math.log10(d3d_far) + 20 * math.log10(3.5) - 9.5 * math.log10(
        d_bp**2 + 8.5**2
    )
    assert ch.path_loss_db(cfg, 400.0, "bs") == pytest.approx(pl2, abs=1e-9)
    below, above = ch.path_loss_db(cfg, np.array([d_bp - 1e-6, d_bp + 1e-6]), "bs")
    assert above == pytest.approx(below, abs=1e-4)  # continuous at the breakpoint


def test_umi_nlos_formula_and_never_below_los() -> None:
    los = cfg_with(path_loss="umi_los", carrier_ghz=3.5)
    nlos = cfg_with(path_loss="umi_nlos", carrier_ghz=3.5)
    d = np.geomspace(1.0, 5000.0, 200)
    for link_class in ("bs", "d2d"):
        assert np.all(ch.path_loss_db(nlos, d, link_class) >= ch.path_loss_db(los, d, link_class))
    d3d = math.hypot(50.0, 8.5)
    expected = 22.4 + 35.3 * math.log10(d3d) + 21.3 * math.log10(3.5)
    assert ch.path_loss_db(nlos, 50.0, "bs") == pytest.approx(expected, abs=1e-9)


def test_distance_zero_is_clamped_and_link_class_checked() -> None:
    for model in ch.PATH_LOSS:
        assert math.isfinite(ch.path_loss_db(cfg_with(path_loss=model), 0.0, "d2d"))
    with pytest.raises(ValueError, match="link class"):
        ch.path_loss_db(cfg_with(), 10.0, "satellite")


# ------------------------------------------------------------------------------ budget
def test_noise_power_20mhz_nf7() -> None:
    cfg = cfg_with(bandwidth_hz=20e6, noise_figure_db=7.0)
    assert ch.noise_power_dbm(cfg) == pytest.approx(-174 + 73.0103 + 7, abs=1e-3)


def test_mean_snr_budget() -> None:
    cfg = cfg_with(path_loss="free_space", antenna_gain_tx_dbi=2.0, antenna_gain_rx_dbi=3.0)
    pl = ch.path_loss_db(cfg, 80.0, "d2d")
    snr = ch.mean_snr_db(cfg, 23.0, 80.0, "d2d", shadowing_db=4.0)
    assert snr == pytest.approx(23 + 2 + 3 - pl - 4 - ch.noise_power_dbm(cfg), abs=1e-9)


# ------------------------------------------------------------------------------ rates
def test_shannon_efficiency_and_outage() -> None:
    cfg = cfg_with(rate_model="shannon", efficiency=0.75, outage_snr_db=-5.0)
    assert ch.spectral_efficiency_bps_hz(cfg, 20.0) == pytest.approx(0.75 * math.log2(101))
    eff = ch.spectral_efficiency_bps_hz(cfg, np.array([-6.0, -5.0, 0.0]))
    assert eff == pytest.approx([0.0, 0.75 * math.log2(1 + 10**-0.5), 0.75])
    assert ch.is_outage(cfg, -5.01) and not ch.is_outage(cfg, -5.0)


def test_mcs_lookup() -> None:
    table = ((0.0, 0.5), (10.0, 2.0), (20.0, 4.0))
    cfg = cfg_with(rate_model="mcs", mcs_table=table, outage_snr_db=-10.0)
    snrs = np.array([-5.0, 0.0, 9.99, 10.0, 19.0, 20.0, 40.0])
    expected = [0.0, 0.5, 0.5, 2.0, 2.0, 4.0, 4.0]
    assert ch.spectral_efficiency_bps_hz(cfg, snrs) == pytest.approx(expected)
    in_outage = cfg_with(rate_model="mcs", mcs_table=table, outage_snr_db=15.0)
    assert ch.spectral_efficiency_bps_hz(in_outage, 14.9) == 0.0
    assert ch.spectral_efficiency_bps_hz(in_outage, 15.0) == 2.0


# ------------------------------------------------------------------------------ closed forms
def test_closed_forms_at_known_points() -> None:
    assert ch.rayleigh_outage_probability(10.0, 10.0) == pytest.approx(1 - math.exp(-1))
    # High SNR: E[log2(1 + s X)] -> log2(s) - Euler gamma log2(e)
    high = math.log2(1e5) - np.euler_gamma * math.log2(math.e)  # error ~ (ln s)/s here
    assert ch.rayleigh_ergodic_capacity_bps_hz(50.0) == pytest.approx(high, abs=5e-4)
    # Low SNR: -> s log2(e); both branches of the implementation agree there
    log2e = math.log2(math.e)
    assert ch.rayleigh_ergodic_capacity_bps_hz(-30.0) == pytest.approx(1e-3 * log2e, rel=2e-3)
    assert ch.rayleigh_ergodic_capacity_bps_hz(-40.0) == pytest.approx(1e-4 * log2e, rel=2e-4)
    assert ch.jakes_correlation(0.0, 1.0) == 1.0
    assert ch.jakes_correlation(doppler_for(J0_FIRST_ZERO), TC_S) == pytest.approx(0.0, abs=1e-12)


def test_rayleigh_outage_matches_closed_form(rayleigh_iid: np.ndarray) -> None:
    mean_snr_db, threshold_db = 10.0, 7.0
    snr_db = mean_snr_db + 10 * np.log10(rayleigh_iid)
    p = ch.rayleigh_outage_probability(threshold_db, mean_snr_db)
    se = math.sqrt(p * (1 - p) / rayleigh_iid.size)
    assert np.mean(snr_db < threshold_db) == pytest.approx(p, abs=4 * se)


def test_rayleigh_ergodic_capacity_matches_closed_form(rayleigh_iid: np.ndarray) -> None:
    s = 10.0
    empirical = np.mean(np.log2(1 + s * rayleigh_iid))
    assert empirical == pytest.approx(ch.rayleigh_ergodic_capacity_bps_hz(10.0), rel=0.01)


def test_rician_moments() -> None:
    gains = uncorrelated_gains("rician", rician_k_db=6.0)
    k = 10**0.6
    var = (2 * k + 1) / (k + 1) ** 2
    assert gains.mean() == pytest.approx(1.0, abs=4 * math.sqrt(var / gains.size))
    assert gains.var() == pytest.approx(var, rel=0.03)


@pytest.mark.parametrize("m", [0.5, 2.0])
def test_nakagami_moments_and_median(m: float) -> None:
    gains = uncorrelated_gains("nakagami", nakagami_m=m)
    assert gains.mean() == pytest.approx(1.0, abs=4 * math.sqrt(1.0 / m / gains.size))
    assert gains.var() == pytest.approx(1.0 / m, rel=0.05)
    median = special.gammaincinv(m, 0.5) / m
    assert np.mean(gains < median) == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / gains.size))


# ------------------------------------------------------------------------------ time correlation
def lag1_corr(x: np.ndarray) -> float:
    return float(np.corrcoef(x[:-1], x[1:])[0, 1])


def test_rayleigh_power_correlation_is_rho_squared() -> None:
    cfg = cfg_with(fading="rayleigh", doppler_hz=10.0, coherence_time_s=TC_S)
    rho = ch.jakes_correlation(10.0, TC_S)
    assert rho == pytest.approx(special.j0(2 * math.pi * 0.1))
    gains = block_gains(LinkChannel(cfg, 50.0, "bs", np.random.default_rng(2)), n=100_000)
    assert lag1_corr(gains) == pytest.approx(rho**2, abs=0.02)
    # Asking only every third block jumps three AR(1) steps at once: exact, corr rho^6.
    every3 = block_gains(LinkChannel(cfg, 50.0, "bs", np.random.default_rng(3)), 60_000, every=3)
    assert lag1_corr(every3) == pytest.approx(rho**6, abs=0.02)


def test_rician_power_correlation() -> None:
    # |a + b g|^2 with a fixed: corr = (rho^2 + 2 K rho) / (1 + 2 K) (docs/channel.md)
    cfg = cfg_with(fading="rician", rician_k_db=6.0, doppler_hz=20.0, coherence_time_s=TC_S)
    rho, k = ch.jakes_correlation(20.0, TC_S), 10**0.6
    gains = block_gains(LinkChannel(cfg, 50.0, "bs", np.random.default_rng(9)), n=60_000)
    assert lag1_corr(gains) == pytest.approx((rho**2 + 2 * k * rho) / (1 + 2 * k), abs=0.02)


@pytest.mark.parametrize("fading", ["rayleigh", "nakagami"])
def test_negative_rho_gaussian_state_correlation(fading: str) -> None:
    cfg = cfg_with(fading=fading, doppler_hz=doppler_for(J0_MINIMUM_X), coherence_time_s=TC_S)
    rho = ch.jakes_correlation(cfg.doppler_hz, cfg.coherence_time_s)
    assert rho == pytest.approx(-0.4028, abs=1e-4)
    link = LinkChannel(cfg, 50.0, "bs", np.random.default_rng(4))
    states, gains = [], []
    for k in range(50_000):
        gains.append(link.fading_gain((k + 0.5) * TC_S))
        states.append(link.process.state)
    g = np.array(states)
    # Rayleigh: E[g_{k+1} conj(g_k)] = rho (the complex envelope may anti-correlate).
    # Nakagami: the copula's real u stands for the power and uses |rho| (docs/channel.md).
    expected = rho if fading == "rayleigh" else abs(rho)
    assert np.mean(g[1:] * np.conj(g[:-1])).real == pytest.approx(expected, abs=0.02)
    assert lag1_corr(np.array(gains)) > 0.1  # power never anti-correlated


def test_ar1_advance_n_steps_is_rho_power_n() -> None:
    assert ar1_advance(1 + 1j, 0.5, 3, 0.0) == pytest.approx(0.125 * (1 + 1j))
    assert ar1_advance(2.0, 1.0, 10, 5.0) == 2.0  # rho = 1: frozen channel
    assert ar1_advance(2.0, 0.0, 1, 0.7) == pytest.approx(0.7)


# ------------------------------------------------------------------------------ LinkChannel
def test_same_block_same_gain_and_forward_only() -> None:
    link = LinkChannel(cfg_with(doppler_hz=10.0), 50.0, "bs", np.random.default_rng(5))
    g = link.fading_gain(0.031)
    assert link.fading_gain(0.031) == g and link.fading_gain(0.0399) == g
    assert link.block_index(0.03) == 3  # 0.03 / 0.01 = 2.9999999999999996 in floating point
    assert link.fading_gain(0.045) != g
    with pytest.raises(ValueError, match="forward"):
        link.fading_gain(0.02)
    with pytest.raises(ValueError):
        link.fading_gain(-1.0)


def test_snr_is_mean_plus_fading_and_shadowing_is_drawn() -> None:
    cfg = cfg_with(shadowing_std_db=8.0, path_loss="umi_nlos")
    rngs = [np.random.default_rng(seed) for seed in range(400)]
    shadows = [LinkChannel(cfg, 50.0, "bs", rng).shadowing_db for rng in rngs]
    assert np.std(shadows) == pytest.approx(8.0, rel=0.1)
    link = LinkChannel(cfg, 50.0, "bs", np.random.default_rng(6))
    assert link.mean_snr_db(23.0) == pytest.approx(
        ch.mean_snr_db(cfg, 23.0, 50.0, "bs", link.shadowing_db)
    )
    snr = link.snr_db(0.5, 23.0)
    assert snr == pytest.approx(link.mean_snr_db(23.0) + 10 * math.log10(link.fading_gain(0.5)))
    assert link.spectral_efficiency_bps_hz(snr) == ch.spectral_efficiency_bps_hz(cfg, snr)


def test_determinism_with_seed() -> None:
    cfg = cfg_with(fading="rician", shadowing_std_db=6.0)
    times = np.arange(0.0, 1.0, 0.013)

    def trace(seed: int) -> list[float]:
        link = LinkChannel(cfg, 30.0, "d2d", np.random.default_rng(seed))
        return [link.shadowing_db] + [link.snr_db(t, 20.0) for t in times]

    assert trace(7) == trace(7)
    assert trace(7) != trace(8)


def test_ideal_link_and_no_fading() -> None:
    ideal = LinkChannel(cfg_with(model="ideal"), 100.0, "bs", np.random.default_rng(0))
    assert ideal.ideal and ideal.shadowing_db == 0.0
    assert ideal.mean_snr_db(0.0) == math.inf and ideal.snr_db(1.0, 0.0) == math.inf
    assert ideal.spectral_efficiency_bps_hz(math.inf) == math.inf
    flat = LinkChannel(cfg_with(fading="none"), 100.0, "bs", np.random.default_rng(0))
    assert flat.fading_gain(3.0) == 1.0 and flat.fading_gain(0.0) == 1.0
    assert set(FADING.names()) == {"none", "rayleigh", "rician", "nakagami"}
    assert set(ch.RATE_MODELS.names()) == {"shannon", "mcs"}


# ------------------------------------------------------------------------------ presets
PRESETS = sorted(Path(CHANNEL_PRESETS_DIR).glob("*.yaml"))


def test_required_presets_exist() -> None:
    names = {p.stem for p in PRESETS}
    assert {"ideal", "urban_micro", "urban_micro_d2d", "indoor_rician", "harsh"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#"), "a preset starts with a comment: what it models, its sources"
    cfg = ChannelConfig(**(yaml.safe_load(text) or {}))
    raw = resolve_presets({"network": {"channel": {"bs": path.stem, "d2d": path.stem}}})
    assert build_scenario(raw).network.channel.bs == cfg


def test_urban_micro_is_reliable_near_and_unreliable_far() -> None:
    text = (Path(CHANNEL_PRESETS_DIR) / "urban_micro.yaml").read_text()
    cfg = ChannelConfig(**yaml.safe_load(text))
    near = ch.rayleigh_outage_probability(cfg.outage_snr_db, ch.mean_snr_db(cfg, 23.0, 50.0, "bs"))
    far = ch.rayleigh_outage_probability(cfg.outage_snr_db, ch.mean_snr_db(cfg, 23.0, 300.0, "bs"))
    assert near < 0.01 and far > 0.3
