"""The schema of the emulated network: channel presets, topology, device profiles, mobility
(docs/channel.md)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from nmoe_sim.errors import ConfigError
from nmoe_sim.strict import Strict


class ChannelConfig(Strict):
    """One class of links (base-station links or D2D links); see docs/channel.md."""

    model: Literal["ideal", "wireless"] = "wireless"
    carrier_ghz: float = Field(3.5, gt=0)
    bandwidth_hz: float = Field(20e6, gt=0)
    path_loss: Literal["free_space", "log_distance", "umi_los", "umi_nlos"] = "umi_los"
    path_loss_exponent: float = Field(3.0, gt=0)
    ref_distance_m: float = Field(1.0, gt=0)
    shadowing_std_db: float = Field(0.0, ge=0)
    fading: Literal["none", "rayleigh", "rician", "nakagami"] = "rayleigh"
    rician_k_db: float = 6.0
    nakagami_m: float = Field(1.0, ge=0.5)
    coherence_time_s: float = Field(0.01, gt=0)
    doppler_hz: float = Field(10.0, ge=0)
    antenna_gain_tx_dbi: float = 0.0
    antenna_gain_rx_dbi: float = 0.0
    noise_figure_db: float = Field(7.0, ge=0)
    noise_psd_dbm_hz: float = -174.0
    bs_height_m: float = Field(10.0, gt=0)
    ue_height_m: float = Field(1.5, gt=0)
    rate_model: Literal["shannon", "mcs"] = "shannon"
    efficiency: float = Field(0.75, gt=0, le=1, description="fraction of Shannon capacity")
    mcs_table: tuple[tuple[float, float], ...] = Field(
        (
            (-5.0, 0.15),
            (0.0, 0.38),
            (5.0, 0.88),
            (10.0, 1.91),
            (15.0, 3.32),
            (20.0, 4.52),
            (25.0, 5.55),
        ),
        description="(min SNR dB, spectral efficiency bit/s/Hz), ascending SNR",
    )
    outage_snr_db: float = -5.0
    retx_timeout_s: float = Field(0.05, ge=0)
    max_attempts: int = Field(8, ge=1)
    latency_s: float = Field(0.0, ge=0, description="fixed per-hop protocol latency")
    rate_adaptation: Literal["per_block", "per_attempt"] = Field(
        "per_block",
        description="per_block: the rate follows the SNR of every coherence block a "
        "transmission spans and a block in outage fails the attempt; per_attempt: one SNR "
        "drawn when an attempt starts holds for the whole attempt (see docs/channel.md)",
    )

    @model_validator(mode="after")
    def _mcs_ascending(self) -> "ChannelConfig":
        snrs = [row[0] for row in self.mcs_table]
        if snrs != sorted(snrs) or not snrs:
            raise ValueError("mcs_table must list rows in ascending SNR")
        return self


class LinkChannels(Strict):
    bs: ChannelConfig = ChannelConfig()
    d2d: ChannelConfig = ChannelConfig()


class TopologyConfig(Strict):
    kind: Literal["ring", "grid", "random_geometric", "star", "graphml", "explicit"] = "ring"
    radius_m: float = Field(50.0, gt=0, description="ring radius / star radius")
    area_m: float = Field(200.0, gt=0, description="side of the square for random placement")
    spacing_m: float = Field(30.0, gt=0, description="grid spacing")
    d2d_range_m: Optional[float] = Field(
        None, gt=0, description="if set, D2D links join every client pair within this range"
    )
    bs_position_m: Optional[tuple[float, float]] = None
    file: Optional[str] = Field(None, description="GraphML file (kind: graphml)")
    positions_m: Optional[tuple[tuple[float, float], ...]] = Field(
        None, description="client positions (kind: explicit)"
    )
    d2d_edges: Optional[tuple[tuple[int, int], ...]] = Field(
        None, description="client pairs joined by D2D links (kind: explicit)"
    )


class DeviceProfile(Strict):
    flops_per_s: float = Field(gt=0)
    compute_power_w: float = Field(ge=0)
    tx_power_dbm: float = 23.0
    rx_power_w: float = Field(0.1, ge=0)
    memory_bytes: float = Field(4e9, gt=0)


BUILTIN_DEVICES: dict[str, dict[str, float]] = {
    "phone": {"flops_per_s": 2e10, "compute_power_w": 3.0, "tx_power_dbm": 23.0,
              "rx_power_w": 0.1, "memory_bytes": 4e9},
    "iot": {"flops_per_s": 1e9, "compute_power_w": 0.5, "tx_power_dbm": 14.0,
            "rx_power_w": 0.05, "memory_bytes": 2.56e8},
    "laptop": {"flops_per_s": 1e11, "compute_power_w": 30.0, "tx_power_dbm": 20.0,
               "rx_power_w": 0.2, "memory_bytes": 1.6e10},
    "edge_server": {"flops_per_s": 1e13, "compute_power_w": 300.0, "tx_power_dbm": 43.0,
                    "rx_power_w": 1.0, "memory_bytes": 2.56e11},
}


class DevicesConfig(Strict):
    profiles: dict[str, DeviceProfile] = Field(default_factory=dict)
    assign: tuple[str, ...] = Field(("phone",), min_length=1,
                                    description="profile names cycled over the clients")
    server: str = "edge_server"

    def profile(self, name: str) -> DeviceProfile:
        if name in self.profiles:
            return self.profiles[name]
        if name in BUILTIN_DEVICES:
            return DeviceProfile(**BUILTIN_DEVICES[name])
        raise ConfigError(
            f"network.devices: unknown device profile {name!r}; known: "
            f"{', '.join(sorted(set(BUILTIN_DEVICES) | set(self.profiles)))}"
        )

    @model_validator(mode="after")
    def _known_profiles(self) -> "DevicesConfig":
        known = set(BUILTIN_DEVICES) | set(self.profiles)
        for name in (*self.assign, self.server):
            if name not in known:
                raise ValueError(f"unknown device profile {name!r}; known: {', '.join(sorted(known))}")
        return self


class MobilityConfig(Strict):
    """Clients that move (docs/channel.md, "Mobility"); positions are a pure function of time and seed."""

    kind: Literal["random_waypoint", "trajectory"] = Field(
        "random_waypoint", description="random_waypoint: straight legs to uniform points of the clients' "
        "bounding box (Johnson & Maltz 1996); trajectory: each moving client follows waypoints_m")
    speed_m_per_s: float = Field(gt=0, le=100, description="walking ~1.4, cycling ~5, driving ~14")
    clients: Optional[tuple[int, ...]] = Field(None, description="the clients that move; null: all")
    pause_s: float = Field(0.0, ge=0, description="random_waypoint: the wait at each waypoint")
    waypoints_m: Optional[tuple[tuple[tuple[float, float], ...], ...]] = Field(
        None, description="trajectory: per moving client, the points it walks through from its start "
        "position (it stays at the last)")
    update_s: Optional[float] = Field(
        None, gt=0, description="how often link geometry follows the positions; null: each link's "
        "coherence time (the fading's own time step)")
    shadowing_decorrelation_m: float = Field(
        20.0, gt=0, description="shadowing correlation distance: exp(-d / this) between two positions "
        "(Gudmundson 1991; ~20 m in urban cells)")

    @model_validator(mode="after")
    def _trajectory_given(self) -> "MobilityConfig":
        if self.kind == "trajectory" and not self.waypoints_m:
            raise ValueError("kind: trajectory needs waypoints_m (one list of [x_m, y_m] per moving client)")
        return self


class NetworkConfig(Strict):
    topology: TopologyConfig = TopologyConfig()
    channel: LinkChannels = LinkChannels()
    devices: DevicesConfig = DevicesConfig()
    bytes_per_param: int = Field(4, ge=1, le=8)
    routing: Literal["min_airtime", "direct_first"] = Field(
        "min_airtime",
        description="min_airtime: the path of least expected airtime, direct link included "
        "(a link in outage loses to a good relay); direct_first: a direct link whenever one "
        "exists",
    )
    mobility: Optional[MobilityConfig] = Field(None, description="null: clients stay where the topology puts them")
