"""Wireless link math: path loss, noise, SNR budget, rate models and closed forms.

Pure functions of a :class:`~nmoe_sim.config.ChannelConfig` and numbers (or numpy
arrays): no state and no randomness here. The time-varying part (shadowing draw, block
fading) lives in :mod:`nmoe_sim.net.fading`. Equations and sources: ``docs/channel.md``
(3GPP TR 38.901 Table 7.4.1-1; Goldsmith, *Wireless Communications*, 2005; Jakes 1974;
Shannon 1948).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import special

from nmoe_sim.config import ChannelConfig
from nmoe_sim.registry import Registry

SPEED_OF_LIGHT_M_S = 299_792_458.0
MIN_DISTANCE_M = 1.0  # every model is log-distance: keep log10(d) finite at d = 0

PathLossFn = Callable[[ChannelConfig, np.ndarray, str], np.ndarray]
RateFn = Callable[[ChannelConfig, np.ndarray], np.ndarray]

PATH_LOSS: Registry[PathLossFn] = Registry("path-loss model")
RATE_MODELS: Registry[RateFn] = Registry("rate model")

# (higher antenna height, lower antenna height) per link class. A table, not an if/elif,
# so that a new link class is one line.
_LINK_HEIGHTS_M: dict[str, Callable[[ChannelConfig], tuple[float, float]]] = {
    "bs": lambda cfg: (cfg.bs_height_m, cfg.ue_height_m),
    "d2d": lambda cfg: (cfg.ue_height_m, cfg.ue_height_m),
}


def _like(result: np.ndarray, given: float | np.ndarray) -> float | np.ndarray:
    """Scalars in, a Python float out; arrays in, an array out."""
    return float(result) if np.ndim(given) == 0 else result


def antenna_heights_m(cfg: ChannelConfig, link_class: str) -> tuple[float, float]:
    """(h_BS, h_UT) of a link class: 'bs' = base station to client, 'd2d' = client to client."""
    try:
        return _LINK_HEIGHTS_M[link_class](cfg)
    except KeyError:
        raise ValueError(
            f"unknown link class {link_class!r}; known: {', '.join(sorted(_LINK_HEIGHTS_M))}"
        ) from None


def distance_3d_m(cfg: ChannelConfig, distance_2d_m: np.ndarray, link_class: str) -> np.ndarray:
    """Slant distance from the ground distance and the antenna heights, clamped to >= 1 m."""
    h_bs_m, h_ut_m = antenna_heights_m(cfg, link_class)
    d_3d_m = np.hypot(np.asarray(distance_2d_m, dtype=float), h_bs_m - h_ut_m)
    return np.maximum(d_3d_m, MIN_DISTANCE_M)


def free_space_db(distance_m: np.ndarray, carrier_hz: float) -> np.ndarray:
    """Friis free-space loss 20 log10(4 pi d f / c)."""
    return 20.0 * np.log10(4.0 * math.pi * distance_m * carrier_hz / SPEED_OF_LIGHT_M_S)


@PATH_LOSS.register("free_space")
def _free_space(cfg: ChannelConfig, distance_2d_m: np.ndarray, link_class: str) -> np.ndarray:
    return free_space_db(distance_3d_m(cfg, distance_2d_m, link_class), cfg.carrier_ghz * 1e9)


@PATH_LOSS.register("log_distance")
def _log_distance(cfg: ChannelConfig, distance_2d_m: np.ndarray, link_class: str) -> np.ndarray:
    # Below the reference distance the model does not hold (near field): hold PL(d0).
    d_m = np.maximum(distance_3d_m(cfg, distance_2d_m, link_class), cfg.ref_distance_m)
    pl_d0_db = free_space_db(np.asarray(cfg.ref_distance_m), cfg.carrier_ghz * 1e9)
    return pl_d0_db + 10.0 * cfg.path_loss_exponent * np.log10(d_m / cfg.ref_distance_m)


def umi_breakpoint_m(cfg: ChannelConfig, link_class: str) -> float:
    """TR 38.901 note 1 of Table 7.4.1-1: d'_BP = 4 h'_BS h'_UT f_c / c, h' = h - 1 m (UMi).

    0 when an antenna is at or below the 1 m effective environment height (outside the
    model's validity); the LOS formula then has a single slope.
    """
    h_bs_m, h_ut_m = antenna_heights_m(cfg, link_class)
    h_eff_bs_m, h_eff_ut_m = h_bs_m - 1.0, h_ut_m - 1.0
    if h_eff_bs_m <= 0.0 or h_eff_ut_m <= 0.0:
        return 0.0
    return 4.0 * h_eff_bs_m * h_eff_ut_m * cfg.carrier_ghz * 1e9 / SPEED_OF_LIGHT_M_S


@PATH_LOSS.register("umi_los")
def _umi_los(cfg: ChannelConfig, distance_2d_m: np.ndarray, link_class: str) -> np.ndarray:
    # 3GPP TR 38.901 Table 7.4.1-1, UMi street canyon LOS, with its breakpoint: PL1 up to
    # d'_BP, then PL2 (slope 40, continuous at d'_BP). With the default heights at 3.5 GHz
    # d'_BP is about 210 m for base-station links and 12 m for D2D links.
    d_2d_m = np.maximum(np.asarray(distance_2d_m, dtype=float), 0.0)
    d_3d_m = distance_3d_m(cfg, d_2d_m, link_class)
    f_ghz_term_db = 20.0 * math.log10(cfg.carrier_ghz)
    pl1_db = 32.4 + 21.0 * np.log10(d_3d_m) + f_ghz_term_db
    d_bp_m = umi_breakpoint_m(cfg, link_class)
    if d_bp_m <= 0.0:
        return pl1_db
    h_bs_m, h_ut_m = antenna_heights_m(cfg, link_class)
    pl2_db = (
        32.4
        + 40.0 * np.log10(d_3d_m)
        + f_ghz_term_db
        - 9.5 * math.log10(d_bp_m**2 + (h_bs_m - h_ut_m) ** 2)
    )
    return np.where(d_2d_m <= d_bp_m, pl1_db, pl2_db)


@PATH_LOSS.register("umi_nlos")
def _umi_nlos(cfg: ChannelConfig, distance_2d_m: np.ndarray, link_class: str) -> np.ndarray:
    # TR 38.901 Table 7.4.1-1 UMi NLOS: max(PL_LOS, PL'_NLOS), so NLOS never beats LOS.
    d_3d_m = distance_3d_m(cfg, distance_2d_m, link_class)
    _, h_ut_m = antenna_heights_m(cfg, link_class)
    pl_nlos_db = (
        22.4
        + 35.3 * np.log10(d_3d_m)
        + 21.3 * math.log10(cfg.carrier_ghz)
        - 0.3 * (h_ut_m - 1.5)
    )
    return np.maximum(_umi_los(cfg, distance_2d_m, link_class), pl_nlos_db)


def path_loss_db(
    cfg: ChannelConfig, distance_m: float | np.ndarray, link_class: str
) -> float | np.ndarray:
    """Path loss in dB at ground (2D) distance ``distance_m`` for link class 'bs' or 'd2d'."""
    model = PATH_LOSS.get(cfg.path_loss, "path_loss")
    return _like(model(cfg, np.asarray(distance_m, dtype=float), link_class), distance_m)


def noise_power_dbm(cfg: ChannelConfig) -> float:
    """Thermal noise over the band plus the receiver noise figure: N0 + 10 log10(B) + NF."""
    return cfg.noise_psd_dbm_hz + 10.0 * math.log10(cfg.bandwidth_hz) + cfg.noise_figure_db


def mean_snr_db(
    cfg: ChannelConfig,
    tx_power_dbm: float,
    distance_m: float,
    link_class: str,
    shadowing_db: float = 0.0,
) -> float:
    """Large-scale SNR: P_tx + G_tx + G_rx - PL - shadowing - noise (no small-scale fading).

    The link budget only; ``cfg.model == 'ideal'`` is handled by ``LinkChannel``.
    """
    return float(
        tx_power_dbm
        + cfg.antenna_gain_tx_dbi
        + cfg.antenna_gain_rx_dbi
        - path_loss_db(cfg, distance_m, link_class)
        - shadowing_db
        - noise_power_dbm(cfg)
    )


@RATE_MODELS.register("shannon")
def _shannon(cfg: ChannelConfig, snr_db: np.ndarray) -> np.ndarray:
    # A fixed fraction of capacity stands in for coding/overhead losses of a real PHY.
    return cfg.efficiency * np.log2(1.0 + np.power(10.0, snr_db / 10.0))


@RATE_MODELS.register("mcs")
def _mcs(cfg: ChannelConfig, snr_db: np.ndarray) -> np.ndarray:
    # Highest row whose threshold the SNR reaches (rows ascend: the schema checks it).
    min_snr_db = np.array([row[0] for row in cfg.mcs_table])
    eff = np.array([0.0] + [row[1] for row in cfg.mcs_table])
    return eff[np.searchsorted(min_snr_db, snr_db, side="right")]


def spectral_efficiency_bps_hz(
    cfg: ChannelConfig, snr_db: float | np.ndarray
) -> float | np.ndarray:
    """Bit/s/Hz at ``snr_db`` under ``cfg.rate_model``; 0 where in outage."""
    snr = np.asarray(snr_db, dtype=float)
    with np.errstate(over="ignore"):  # 10**(inf/10) -> inf -> inf bit/s/Hz, on purpose
        eff = RATE_MODELS.get(cfg.rate_model, "rate_model")(cfg, snr)
    return _like(np.where(snr < cfg.outage_snr_db, 0.0, eff), snr_db)


def spectral_efficiency_scalar_bps_hz(cfg: ChannelConfig, snr_db: float) -> float:
    """:func:`spectral_efficiency_bps_hz` for one finite or -inf SNR, without its array set-up.

    Called once per coherence block of every flow, so it skips ``np.asarray``/``np.errstate``
    (most of the array version's cost on a scalar). It still runs the registered rate model
    on a NumPy scalar, never ``math``: NumPy's SIMD ``power``/``log2`` round differently from
    libm's in the last bit, and the result must equal the array version's exactly (tested).
    """
    if not snr_db >= cfg.outage_snr_db:  # below the threshold (or -inf: a deep fade)
        return 0.0
    return float(RATE_MODELS.get(cfg.rate_model, "rate_model")(cfg, np.float64(snr_db)))


def is_outage(cfg: ChannelConfig, snr_db: float) -> bool:
    """An attempt below the outage threshold carries nothing and is retried."""
    return bool(snr_db < cfg.outage_snr_db)


# ----------------------------------------------------------------------------- closed forms
def rayleigh_outage_probability(threshold_snr_db: float, mean_snr_db: float) -> float:
    """P(SNR < g) = 1 - exp(-g / s) for an exponential SNR of mean s (Goldsmith ch. 6)."""
    ratio = 10.0 ** ((threshold_snr_db - mean_snr_db) / 10.0)
    return float(-math.expm1(-ratio))


def rayleigh_ergodic_capacity_bps_hz(mean_snr_db: float) -> float:
    """E[log2(1 + s|h|^2)], |h|^2 ~ Exp(1): log2(e) e^{1/s} E1(1/s) (Goldsmith ch. 4)."""
    x = 10.0 ** (-mean_snr_db / 10.0)
    if x < 500.0:
        scaled = math.exp(x) * float(special.exp1(x))
    else:  # e^x overflows; the asymptotic series of e^x E1(x) is exact to ~1e-9 here
        scaled = (1.0 - 1.0 / x + 2.0 / x**2 - 6.0 / x**3) / x
    return math.log2(math.e) * scaled


def jakes_correlation(doppler_hz: float, lag_s: float) -> float:
    """Clarke/Jakes autocorrelation of the complex gain: J0(2 pi f_D tau) (Jakes 1974)."""
    return float(special.j0(2.0 * math.pi * doppler_hz * lag_s))
