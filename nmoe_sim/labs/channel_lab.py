"""Lab 1, the channel: the model's own link math and fading process against closed forms.

Everything here calls the code the network runs (``net/channel.py``, ``net/fading.py``):
the mean SNR is the link budget a transfer sees before fading; the fading samples come
from the same AR(1) block-fading process, read at blocks far enough apart to be
independent; the attempts per hop are counted from a run's hops.csv.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nmoe_sim.api import RunResult
from nmoe_sim.config import ChannelConfig
from nmoe_sim.net import channel
from nmoe_sim.net.fading import FADING

INDEPENDENT_LAG_BLOCKS = 10_000  # rho^10000 is 0 to double precision for any rho < 0.99


def mean_snr_curve(cfg: ChannelConfig, distances_m: np.ndarray, tx_power_dbm: float,
                   link_class: str = "bs") -> np.ndarray:
    """Mean SNR (dB) without shadowing or fading: P_tx + gains - PL(d) - noise."""
    return np.array([channel.mean_snr_db(cfg, tx_power_dbm, float(d), link_class) for d in distances_m])


def fading_gains(cfg: ChannelConfig, n: int, seed: int, lag_blocks: int = INDEPENDENT_LAG_BLOCKS) -> np.ndarray:
    """``n`` power gains |h|^2 of the preset's fading process, ``lag_blocks`` apart."""
    process = FADING.get(cfg.fading, "fading")(cfg, np.random.default_rng(seed))
    return np.array([process.gain(k * lag_blocks) for k in range(n)])


def fading_table(cfg: ChannelConfig, mean_snrs_db: np.ndarray, n: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """Per mean SNR: outage and ergodic capacity measured on the fading samples, beside
    the Rayleigh closed forms and the capacity of a channel without fading."""
    gains = fading_gains(cfg, n, seed)
    rows = []
    for snr_db in mean_snrs_db:
        inst_db = snr_db + 10.0 * np.log10(gains)
        rows.append({
            "mean_snr_db": float(snr_db),
            "outage_measured": float(np.mean(inst_db < cfg.outage_snr_db)),
            "outage_closed_form": channel.rayleigh_outage_probability(cfg.outage_snr_db, float(snr_db)),
            "capacity_measured_bps_hz": float(np.mean(np.log2(1.0 + 10.0 ** (inst_db / 10.0)))),
            "capacity_closed_form_bps_hz": channel.rayleigh_ergodic_capacity_bps_hz(float(snr_db)),
            "capacity_no_fading_bps_hz": math.log2(1.0 + 10.0 ** (snr_db / 10.0)),
        })
    return pd.DataFrame(rows)


def block_correlation(cfg: ChannelConfig, lags_blocks: tuple[int, ...] = (1, 2, 4, 8), n: int = 20_000,
                      seed: int = 0) -> pd.DataFrame:
    """Correlation of |h|^2 between blocks ``lag`` apart, measured, beside what the model
    builds in (an AR(1) of one-block correlation rho = J0(2 pi f_D T_c): rho^lag for the
    complex gain) and Jakes' J0(2 pi f_D lag T_c) at the full lag. For Rayleigh fading the
    power correlation is the square of the complex gain's, so both are squared."""
    rows = []
    for lag in lags_blocks:
        process = FADING.get(cfg.fading, "fading")(cfg, np.random.default_rng(seed))
        pairs = np.array([(process.gain(k * INDEPENDENT_LAG_BLOCKS), process.gain(k * INDEPENDENT_LAG_BLOCKS + lag))
                          for k in range(n)])
        rows.append({"lag_blocks": lag, "lag_s": lag * cfg.coherence_time_s,
                     "measured": float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]),
                     "ar1_model": channel.jakes_correlation(cfg.doppler_hz, cfg.coherence_time_s) ** (2 * lag),
                     "jakes": channel.jakes_correlation(cfg.doppler_hz, lag * cfg.coherence_time_s) ** 2})
    return pd.DataFrame(rows)


def attempts_by_link(result: RunResult, cfg: ChannelConfig) -> pd.DataFrame:
    """Per client link and direction: its mean SNR (shadowing included, from the run's
    metrics.json), the hops it carried, attempts per hop, the share of hops that failed
    after max_attempts, and what independent attempts (1 / (1 - p_out)) would predict."""
    links = pd.DataFrame(result.metrics["links"])
    links = links[links["kind"] == "bs"]
    hops = result.hops
    rows = []
    for _, link in links.iterrows():
        for direction, snr in (("up", link["mean_snr_db"]), ("down", link["mean_snr_db_vu"])):
            client = str(link["u"])
            src, dst = (client, "bs") if direction == "up" else ("bs", client)
            sel = hops[(hops["direction"] == direction) & (hops["u"] == src) & (hops["v"] == dst)]
            p_out = channel.rayleigh_outage_probability(cfg.outage_snr_db, float(snr))
            rows.append({"client": client, "direction": direction, "distance_m": link["distance_m"],
                         "mean_snr_db": snr, "hops": len(sel), "attempts_per_hop": sel["attempts"].mean(),
                         "failed_share": 1.0 - sel["delivered"].astype(bool).mean() if len(sel) else float("nan"),
                         "outage_closed_form": p_out,
                         # Past p_out 0.99 the geometric mean is off the chart (and every hop
                         # runs into max_attempts anyway): left blank.
                         "attempts_if_independent": 1.0 / (1.0 - p_out) if p_out < 0.99 else float("nan")})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ figures
def snr_vs_distance_figure(cfg: ChannelConfig, tx_power_dbm: float, links: pd.DataFrame | None = None) -> Figure:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    d = np.linspace(10.0, 400.0, 200)
    ax.plot(d, mean_snr_curve(cfg, d, tx_power_dbm), label=f"path loss only ({cfg.path_loss})")
    if links is not None and len(links):
        up = links[links["direction"] == "up"]
        ax.scatter(up["distance_m"], up["mean_snr_db"], color="C1", zorder=3, label="the run's links (with shadowing)")
    ax.axhline(cfg.outage_snr_db, color="C3", ls="--", label=f"outage threshold {cfg.outage_snr_db:g} dB")
    ax.set_xlabel("distance to the base station (m)")
    ax.set_ylabel("mean uplink SNR (dB)")
    ax.set_title(f"Mean SNR against distance, {tx_power_dbm:g} dBm uplink")
    ax.legend()
    return fig


def outage_figure(table: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.semilogy(table["mean_snr_db"], table["outage_closed_form"], label="closed form 1 - exp(-g/s)")
    ax.semilogy(table["mean_snr_db"], table["outage_measured"].where(table["outage_measured"] > 0), "o",
                label="measured on the model's fading samples")
    ax.set_xlabel("mean SNR s (dB)")
    ax.set_ylabel("outage probability P(SNR < g) (-)")
    ax.set_title("Rayleigh outage: the simulator against the closed form")
    ax.legend()
    return fig


def capacity_figure(table: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(table["mean_snr_db"], table["capacity_no_fading_bps_hz"], "--", label="no fading: log2(1 + s)")
    ax.plot(table["mean_snr_db"], table["capacity_closed_form_bps_hz"], label="Rayleigh closed form")
    ax.plot(table["mean_snr_db"], table["capacity_measured_bps_hz"], "o", label="measured on the model's fading samples")
    ax.set_xlabel("mean SNR s (dB)")
    ax.set_ylabel("ergodic capacity (bit/s/Hz)")
    ax.set_title("Ergodic capacity with and without fading")
    ax.legend()
    return fig


def attempts_figure(table: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    # A link that never delivers (every hop ran into max_attempts) would squash the chart:
    # it is named in a note instead of drawn.
    dead = table[table["failed_share"] >= 1.0]
    order = table[table["failed_share"] < 1.0].sort_values("mean_snr_db")
    if len(dead):
        names = ", ".join(f"client {c} {d}link ({s:.1f} dB)" for c, d, s in
                          zip(dead["client"], dead["direction"], dead["mean_snr_db"]))
        ax.text(0.98, 0.6, f"never delivered, not drawn:\n{names}", transform=ax.transAxes, ha="right",
                fontsize="small", bbox={"facecolor": "white", "edgecolor": "gray"})
    for i, (direction, part) in enumerate(order.groupby("direction", sort=True)):
        ax.plot(part["mean_snr_db"], part["attempts_per_hop"], "os"[i % 2], color=f"C{i}",
                label=f"measured, {direction}link hops")
    ax.plot(order["mean_snr_db"], order["attempts_if_independent"], "k-", lw=1,
            label="independent attempts: 1 / (1 - p_out)")
    ax.set_xlabel("mean SNR of the link (dB)")
    ax.set_ylabel("attempts per hop (-)")
    ax.set_title("Retransmissions against the link's mean SNR")
    ax.legend()
    return fig
