"""The scenario schema and its loading: the only module that reads YAML.

A scenario is parsed, merged with presets (``channel/``, ``topologies/``), patched by
``--set KEY=VALUE`` overrides and validated into a frozen :class:`Scenario`. Inner code
takes these typed objects, never dicts. Every error becomes a one-line
:class:`~nmoe_sim.errors.ConfigError` naming the key path and what is allowed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from nmoe_sim.engine.fault_config import FaultsConfig
from nmoe_sim.errors import ConfigError
from nmoe_sim.serving.config import InferenceConfig
from nmoe_sim.fl.alignment.config import AlignmentConfig
from nmoe_sim.strict import Strict
from nmoe_sim.yaml_read import parse_yaml_text, read_yaml_file

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where the presets and scenarios ship inside an installed package (setup.py maps the
# repository's top-level channel/, topologies/ and scenarios/ there). A checkout run from
# the source tree (editable install, PYTHONPATH) has no such folder and reads the top-level
# ones: one copy of each file either way.
PACKAGE_ASSETS_DIR = Path(__file__).resolve().parent / "_assets"
ASSET_FOLDERS = ("channel", "topologies", "scenarios")


def asset_dir(name: str) -> Path:
    """The folder ``name`` (one of ASSET_FOLDERS) of an installed package, else of the checkout."""
    if name not in ASSET_FOLDERS:
        raise ValueError(f"unknown asset folder {name!r}; known: {', '.join(ASSET_FOLDERS)}")
    shipped = PACKAGE_ASSETS_DIR / name
    return shipped if shipped.is_dir() else REPO_ROOT / name


CHANNEL_PRESETS_DIR = asset_dir("channel")
TOPOLOGY_PRESETS_DIR = asset_dir("topologies")
SCENARIOS_DIR = asset_dir("scenarios")

PosInt = Field(ge=1)


# --------------------------------------------------------------------------- data
class PartitionConfig(Strict):
    kind: Literal["iid", "dirichlet", "classes_per_client"] = "iid"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (kind: dirichlet)")
    classes_per_client: int = Field(1, ge=1, description="classes each client holds")
    min_samples_per_client: int = Field(2, ge=1)


class DataConfig(Strict):
    dataset: Literal["digits", "fashion_mnist", "cifar10"] = "digits"
    root: Optional[str] = Field(None, description="folder of the dataset files")
    clients: int = Field(10, ge=1, le=1000)
    partition: PartitionConfig = PartitionConfig()
    queries: Literal["global", "local", "mixed"] = Field(
        "global",
        description="global: each client gets a share of the global test set; "
        "local: a client's queries follow its own training label distribution; "
        "mixed: queries_global_share of them global, the rest local",
    )
    queries_global_share: float = Field(
        0.5, ge=0, le=1, description="queries: mixed: the share of each client's queries from the global "
        "test set (the rest follow its own label distribution)")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="held out where no test split")
    max_train_samples: Optional[int] = Field(None, ge=10)
    max_test_samples: Optional[int] = Field(None, ge=10)


# --------------------------------------------------------------------------- models
class ModelConfig(Strict):
    feature_dim: int = Field(64, ge=2)
    fe_channels: tuple[int, ...] = Field((16, 32), min_length=1, max_length=4)
    expert_hidden: int = Field(64, ge=1)
    gate_hidden: int = Field(64, ge=1)
    proj_dim: int = Field(64, ge=2)
    proj_batchnorm: bool = Field(False, description="FedSC's projection head normalises its hidden layer "
                                 "by the batch's statistics (SimCLR's and the FedSC authors' projectors; "
                                 "docs/algorithms.md measures what it changes)")
    top_k: int = Field(1, ge=1)
    gate_noise: bool = True


# --------------------------------------------------------------------------- training
class SGDConfig(Strict):
    """Minibatch SGD settings shared by every training loop."""

    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip_norm: Optional[float] = Field(
        None, gt=0, description="rescale each step's gradient to at most this L2 norm (none: no clipping)")


class TrainConfig(SGDConfig):
    """A federated stage: rounds of local training under participation and a deadline."""

    rounds: int = Field(10, ge=1)
    local_epochs: int = Field(1, ge=1)
    participation: float = Field(1.0, gt=0, le=1)
    deadline_s: Optional[float] = Field(None, gt=0, description="round deadline in simulated s")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="the local learning rate over rounds: constant, or cosine "
        "annealing from lr towards 0 over the stage's rounds (fl/schedule.py)")


class MonoViewsConfig(Strict):
    """Views for one-channel images (digits, Fashion-MNIST), where colour jitter and
    grayscale mean nothing and crop and flip alone leave two views of a small grey image
    nearly alike (docs/algorithms.md). Values in units of a standardised pixel where they
    are intensities."""

    brightness_contrast: float = Field(0.4, ge=0, le=1, description="brightness and contrast jitter, p 0.8")
    rotate_deg: float = Field(15.0, ge=0, le=180, description="random affine: rotation up to +-deg")
    translate: float = Field(0.1, ge=0, lt=1, description="random affine: shift up to this share of the side")
    affine_p: float = Field(0.5, ge=0, le=1)
    blur_p: float = Field(0.5, ge=0, le=1, description="Gaussian blur (3x3, sigma 0.1-1.0)")
    noise_std: float = Field(0.1, ge=0, description="additive Gaussian noise (p 0.5)")
    erase_p: float = Field(0.25, ge=0, le=1, description="random erasing of 2-25 % of the image")


class AugmentConfig(Strict):
    crop_scale_min: float = Field(0.2, gt=0, le=1)
    flip: bool = True
    color_jitter: float = Field(0.4, ge=0, le=1, description="3-channel images only")
    grayscale_p: float = Field(0.2, ge=0, le=1, description="3-channel images only")
    mono: MonoViewsConfig = MonoViewsConfig()


class FedSCConfig(Strict):
    """FedSC (Jing et al., ICML 2024); defaults are the authors' (docs/algorithms.md)."""

    alpha_start: float = Field(1.0, ge=0, le=1)
    alpha_end: float = Field(0.2, ge=0, le=1)
    mu: float = Field(1.0, gt=0, description="projections clipped to norm sqrt(mu) (authors: 4; at this "
                      "testbed's model sizes and budgets 4 lets the projections herd to the radius and "
                      "collapse there, docs/algorithms.md)")
    share_correlation: bool = True
    r_ext: Literal["fresh", "stale"] = Field(
        "fresh", description="fresh (the authors'): each round every client computes its correlation on the "
        "model it just downloaded and the server returns the mean of the others' before anyone trains (an "
        "extra upload and download per round); stale: a client's correlation from its last local epoch rides "
        "on its model upload and is used in the next round")
    r_passes: int = Field(5, ge=1, le=100, description="fresh: augmented passes over the client's data "
                          "that its correlation is measured on (authors: 5)")
    noise_std: float = Field(0.00104, ge=0, description="std of the Gaussian noise added to each shared "
                             "correlation matrix (privacy; authors: 0.00104; 0 for none)")
    augment: AugmentConfig = AugmentConfig()


class Stage1Config(TrainConfig):
    """Both FE methods train under the FedSC authors' optimiser by default: SGD with momentum
    0.9, weight decay 5e-4, gradient norm clipped at 3, cosine decay over the rounds."""

    weight_decay: float = Field(5e-4, ge=0)
    grad_clip_norm: Optional[float] = Field(3.0, gt=0)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    algorithm: Literal["fedce", "fedsc"] = "fedsc"
    fedsc: FedSCConfig = FedSCConfig()
    probe_every: int = Field(
        0, ge=0, description="measure the FE's features (linear probe, kNN, effective rank) every N "
        "rounds too, in rounds.csv; 0: after the last round only. Measurement: no simulated cost")


class Stage2Config(SGDConfig):
    epochs: int = Field(10, ge=1)


class FedGateConfig(Strict):
    """FedGate: partially synchronised (the shared gate averaged every K rounds) and
    personalised (docs/algorithms.md). ``personal: none, local_part: none, sync_every: 1``
    is FedAvg-style gating."""

    personal: Literal["none", "ditto"] = Field(
        "ditto", description="ditto: every client also trains a personal gate of its own, pulled towards "
        "the shared gate it last downloaded by prox/2 * ||personal - shared||^2 (Li et al., ICML 2021), "
        "and serves queries with it; none: clients serve with the shared gate (plus their local_part)")
    prox: float = Field(10.0, gt=0, description="ditto: the pull towards the shared gate; large = "
                        "FedAvg-style, small = local (docs/algorithms.md measures the trade-off)")
    local_part: Literal["none", "bias", "head"] = Field(
        "none", description="gate parameters never shared (personalised by splitting); see docs/algorithms.md"
    )
    sync_every: int = Field(2, ge=1, description="shared part averaged every K rounds")

    @model_validator(mode="after")
    def _one_kind_of_personal(self) -> "FedGateConfig":
        if self.personal == "ditto" and self.local_part != "none":
            raise ValueError("local_part must be none with personal: ditto (the personal gate is already "
                             "the whole gate); set personal: none to personalise by a local part")
        return self


class Stage3Config(TrainConfig):
    algorithm: Literal["rangate", "rollgate", "fedgate"] = "fedgate"
    target: Literal["best_expert", "moe_loss"] = "best_expert"
    expert_outputs: Literal["features", "expert_weights"] = Field(
        "features",
        description="how clients get every expert's output on their samples: features "
        "(send features to each expert, n(n-1) exchanges) or expert_weights (download the "
        "experts' weights through the base station, 2n transfers; see docs/algorithms.md)",
    )
    candidates: Optional[int] = Field(
        None, ge=1, description="experts each client's gate may choose besides its own: null = all "
        "(the paper); k = k others picked by candidate_rule, so the expert-output exchange is n k "
        "pairs instead of n(n-1) (docs/algorithms.md); k >= n-1 is all")
    candidate_rule: Literal["nearest", "random"] = Field(
        "nearest", description="nearest: the k experts with the least expected airtime per bit from "
        "the client; random: k others uniformly at random (seeded)")
    fedgate: FedGateConfig = FedGateConfig()


class CentralizedConfig(SGDConfig):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    mixture_experts: Optional[int] = Field(
        None, ge=2, description="experts in the training mixture per sample: null = all (dense, the "
        "default); m = the gate's top m (sparse, Shazeer et al. 2017), so that training work grows "
        "as m, not as the number of clients; m >= clients is dense")


class BaselinesConfig(Strict):
    systems: tuple[Literal["local", "centralized", "fedavg"], ...] = (
        "local",
        "centralized",
        "fedavg",
    )
    centralized: CentralizedConfig = CentralizedConfig()
    fedavg: TrainConfig = TrainConfig()


# --------------------------------------------------------------------------- network
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


# --------------------------------------------------------------------------- experiments
class SweepConfig(Strict):
    grid: dict[str, tuple[Any, ...]] = Field(default_factory=dict,
                                             description="dotted key -> values")
    seeds: tuple[int, ...] = (0,)


class RayConfig(Strict):
    """Where ``runtime.executor: ray`` sends a round's tasks (docs/cluster.md)."""

    address: str | None = Field(
        None, description="the Ray cluster to join, e.g. ray://head:10001 or head:6379, or auto for "
        "the one `ray start` runs on this machine; none (default): a private Ray instance on "
        "this machine, started with the run and ended with it")
    num_workers: int | None = Field(
        None, ge=1, le=4096, description="Ray actors that run tasks, one CPU and one torch thread "
        "each; none (default): one per CPU the cluster has")


class RuntimeConfig(Strict):
    """How the host runs the real computation (not what it costs in simulated time)."""

    executor: Literal["local", "batched", "ray"] = Field(
        "batched", description="how client work runs on the host: local (the reference, one task "
        "at a time), batched (a round's tasks together, one worker process per core; equal to "
        "local at one torch thread) or ray (a round's tasks sharded over the actors of a Ray "
        "cluster, runtime.ray; needs pip install -e '.[ray]'). It never changes simulated time, "
        "bytes or energy")
    ray: RayConfig = Field(RayConfig(), description="the Ray cluster of runtime.executor: ray")
    workers: int | Literal["auto"] = Field(
        "auto", description="worker processes of the batched executor: a count, or auto for the "
        "cores this process may use")
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="where tasks train: cpu, or cuda (a GPU; refused when none is present)")
    torch_threads: int | Literal["auto"] = Field(
        1, description="PyTorch intra-op threads of this process (workers always use 1). 1 by "
        "default: the models are small, so more threads mostly add contention. auto: all cores "
        "for models large enough to pay (see docs/architecture.md), else 1. The count changes "
        "float reduction order, so runs agree bit for bit only at the same count",
    )
    checkpoint: Literal["rounds", "stages", "off"] = Field(
        "rounds", description="where a run saves what --resume needs to go on (run_dir/checkpoint.pkl): "
        "rounds (every round boundary and every stage boundary), stages (stage boundaries only), "
        "or off (nothing; a killed run starts again). Never changes results",
    )
    checkpoint_every_s: float = Field(
        5.0, ge=0, le=86400, description="with checkpoint: rounds, a round boundary saves only once this "
        "much host wall time has passed since the last save (stage boundaries always save). 0: every "
        "round. The default 5 s makes saving nearly free on runs of short rounds (every round cost the "
        "quickstart 8-10 %, docs/results-format.md); a kill then loses at most that much work",
    )

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` as the boolean false: take it as the word meant.
        return "off" if v is False else v

    @field_validator("workers", "torch_threads", mode="before")
    @classmethod
    def _count(cls, v: Any, info: ValidationInfo) -> Any:
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 256):
            raise ValueError(f"must be auto or a count from 1 to 256, got {v!r}")
        return v


class OutputConfig(Strict):
    root: str = "results"
    plots: bool = True
    plot_formats: tuple[Literal["png", "svg", "pdf"], ...] = Field(
        ("png",), min_length=1,
        description="figure formats; SVG (vector, for papers) costs about as much again as PNG",
    )


class Scenario(Strict):
    name: str = Field("scenario", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    system: Literal["nmoe", "alignment"] = "nmoe"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    stage3: Stage3Config = Stage3Config()
    baselines: BaselinesConfig = BaselinesConfig()
    inference: InferenceConfig = InferenceConfig()
    network: NetworkConfig = NetworkConfig()
    alignment: Optional[AlignmentConfig] = None
    sweep: Optional[SweepConfig] = None
    runtime: RuntimeConfig = RuntimeConfig()
    output: OutputConfig = OutputConfig()
    faults: FaultsConfig = FaultsConfig()

    @field_validator("name")
    @classmethod
    def _not_a_parent(cls, v: str) -> str:
        # The name is a folder under output.root: "." or ".." would write beside or above it.
        if set(v) == {"."}:
            raise ValueError("must not be only dots (it names a folder under output.root)")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        if self.model.top_k > self.data.clients:
            raise ValueError(
                f"model.top_k={self.model.top_k} exceeds data.clients={self.data.clients}"
            )
        k_cand = self.stage3.candidates
        if k_cand is not None and k_cand < self.data.clients - 1 and self.model.top_k > k_cand + 1:
            raise ValueError(f"model.top_k={self.model.top_k} exceeds the {k_cand + 1} experts a gate may "
                             f"choose with stage3.candidates={k_cand} (its own and {k_cand} others)")
        mob = self.network.mobility
        if mob is not None:
            moving = mob.clients if mob.clients is not None else tuple(range(self.data.clients))
            if any(not 0 <= c < self.data.clients for c in moving):
                raise ValueError(f"network.mobility.clients: {list(moving)} names a client outside "
                                 f"0..{self.data.clients - 1}")
            if mob.kind == "trajectory" and len(mob.waypoints_m or ()) != len(moving):
                raise ValueError(f"network.mobility.waypoints_m: {len(mob.waypoints_m or ())} trajectories for "
                                 f"{len(moving)} moving clients; give one list of [x_m, y_m] per moving client")
        if self.inference.routing == "budgeted" and self.faults.active:
            raise ValueError("inference.routing: budgeted cannot run with faults yet: its budget and "
                             "faults.query_timeout_s would both cut a leg short; use one of them")
        if self.system == "alignment" and self.alignment is None:
            raise ValueError("system: 'alignment' needs an 'alignment:' section (see docs/alignment.md)")
        return self

    def to_dict(self) -> dict[str, Any]:
        # Keys added after results existed are left out while at their defaults, so that a
        # resolved config.yaml reads, and a sweep point's config hash stays, as before them:
        # no faults section; no routing, bursts, mobility or query share (nmoe_sim/serving);
        # no runtime.ray (docs/cluster.md).
        exclude: dict[str, Any] = {}
        if self.faults == FaultsConfig():
            exclude["faults"] = True
        for section, keys in _LATER_KEYS.items():
            node, default = getattr(self, section), type(getattr(self, section))()
            late = {k for k in keys if getattr(node, k) == getattr(default, k)}
            if late:
                exclude[section] = late
        return self.model_dump(mode="json", exclude=exclude or None)


# Per section, keys whose default computes what the code did before they existed (to_dict).
_LATER_KEYS: dict[str, tuple[str, ...]] = {
    "data": ("queries_global_share",),
    "inference": ("bursts", "routing", "channel_aware", "load_aware", "budgeted"),
    "network": ("mobility",),
    "runtime": ("ray",),
}


# --------------------------------------------------------------------------- loading
def preset_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _load_preset(folder: Path, name: str, key: str) -> dict[str, Any]:
    # Only a file of the preset folder: a name is never a path ("../x" reads nothing).
    if name not in preset_names(folder):
        raise ConfigError(
            f"{key}: unknown preset {name!r}; known: {', '.join(preset_names(folder))}"
        )
    path = folder / f"{name}.yaml"
    data = read_yaml_file(path, key) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset must be a mapping")
    return data


def _expand_preset(node: Any, folder: Path, key: str) -> Any:
    """A preset reference is a name, or a mapping with ``preset: name`` plus overrides."""
    if isinstance(node, str):
        return _load_preset(folder, node, key)
    if isinstance(node, dict) and "preset" in node:
        rest = {k: v for k, v in node.items() if k != "preset"}
        if not isinstance(node["preset"], str):
            raise ConfigError(f"{key}.preset: must be a preset name")
        base = _load_preset(folder, node["preset"], key)
        base.update(rest)
        return base
    return node


def resolve_presets(raw: dict[str, Any]) -> dict[str, Any]:
    net = raw.get("network")
    if not isinstance(net, dict):
        return raw
    if "topology" in net:
        net["topology"] = _expand_preset(net["topology"], TOPOLOGY_PRESETS_DIR, "network.topology")
    chan = net.get("channel")
    if isinstance(chan, str):  # one preset for both link classes
        chan = {"bs": chan, "d2d": chan}
        net["channel"] = chan
    if isinstance(chan, dict):
        for cls in ("bs", "d2d"):
            if cls in chan:
                chan[cls] = _expand_preset(chan[cls], CHANNEL_PRESETS_DIR, f"network.channel.{cls}")
    return raw


# Where a preset may be named by a bare string; an override that reaches inside one turns
# the name into ``{preset: name}`` so the override applies on top of the preset.
_PRESET_SLOTS = {("network", "topology"), ("network", "channel", "bs"), ("network", "channel", "d2d")}


def _as_mapping(path: tuple[str, ...], node: Any) -> Any:
    if isinstance(node, str):
        if path == ("network", "channel"):  # one preset for both link classes
            return {"bs": node, "d2d": node}
        if path in _PRESET_SLOTS:
            return {"preset": node}
    return node


# An override: ``"dotted.key=yaml value"`` as --set takes it, or a ``(dotted.key, value)``
# pair whose value is already a Python object (the API's ``{"stage1.rounds": 3}``).
Override = str | tuple[str, Any]


def apply_override(raw: dict[str, Any], assignment: Override) -> None:
    """Apply one override to the user's tree (before preset expansion); the text of a
    ``KEY=VALUE`` string is parsed as YAML, the value of a pair is taken as it is."""
    if isinstance(assignment, tuple):
        key, value = assignment
        if not isinstance(key, str):
            raise ConfigError(f"override {key!r}: a key is a dotted string, e.g. stage1.rounds")
        key = key.strip()
        shown = key
    else:
        if "=" not in assignment:
            raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. stage1.rounds=5")
        key, _, text = assignment.partition("=")
        key = key.strip()
        value = parse_yaml_text(text, f"--set {key}")
        shown = assignment
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"--set {shown!r}: empty key")
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = _as_mapping(tuple(parts[: i + 1]), node.get(part))
        if nxt is None:
            nxt = {}
        if not isinstance(nxt, dict):
            path = ".".join(parts[: i + 1])
            raise ConfigError(f"--set {key}: {path} is {nxt!r}, not a mapping")
        node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def _schema_fields(loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at the mapping that holds ``loc[-1]``."""
    model: Any = Scenario
    dict_key = False
    for part in loc[:-1]:
        if dict_key:  # ``part`` is a user-chosen key of a dict[str, Model] field
            dict_key = False
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                dict_key = getattr(ann, "__origin__", None) is dict
                break
        else:
            return []
    return sorted(getattr(model, "model_fields", {}))


def _key_text(part: Any) -> str:
    """A key of the error's path as the user wrote it; quoted when it could not be read as
    one (a newline would break the one-line error, a dot the path)."""
    text = str(part)
    return text if text and text.isprintable() and "." not in text and text.strip() == text else repr(part)


def format_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    path = ".".join(_key_text(p) for p in loc)
    if err["type"] == "extra_forbidden":
        allowed = _schema_fields(loc)
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"{path}: unknown key{hint}"
    msg = " ".join(err["msg"].removeprefix("Value error, ").split())  # one line
    given = err.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r})"
    more = len(exc.errors()) - 1
    extra = f" [+{more} more]" if more else ""
    # Cross-field checks sit at the top level and name their own keys in the message.
    return f"{path}: {msg}{shown}{extra}" if path else f"{msg}{extra}"


def build_scenario(raw: Any, source: str = "<scenario>") -> Scenario:
    """Validate an already preset-expanded mapping into a frozen Scenario."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a scenario must be a YAML mapping")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def find_scenario_file(path: str | Path) -> Path:
    """``path`` itself, or the shipped scenario it names.

    A relative path that does not exist from the working directory is looked up among the
    shipped scenarios (``scenarios/quickstart.yaml`` or ``quickstart.yaml``), so that an
    installed package runs the README's and the labs' commands from any folder. A path
    that exists always wins; ``..`` never climbs out of the shipped folder.
    """
    given = Path(path)
    if given.is_absolute() or given.exists():
        return given
    parts = given.parts[1:] if given.parts[:1] == ("scenarios",) else given.parts
    if not parts or ".." in parts:
        return given
    shipped = SCENARIOS_DIR.joinpath(*parts)
    return shipped if shipped.is_file() else given


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """The user's tree as written in the file (presets not expanded), checked to be a
    non-empty mapping; a missing relative path is looked up among the shipped scenarios."""
    raw = read_yaml_file(find_scenario_file(path), "scenario")
    if raw is None:
        # An empty file would silently run every default: almost surely the wrong file.
        raise ConfigError(f"{path}: the scenario file is empty; a scenario is a YAML mapping "
                          "(an empty mapping, {}, runs the defaults)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a scenario must be a YAML mapping")
    return raw


def expand(raw: dict[str, Any], overrides: list[Override] | tuple[Override, ...] = ()) -> dict[str, Any]:
    """A copy of the user's tree with ``overrides`` applied, then presets expanded once.

    Overrides go first so that one naming a preset (``network.channel.bs.preset=harsh``)
    picks what is expanded, and one setting a key inside a preset wins over the preset.
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        apply_override(out, item)
    return resolve_presets(out)


def scenario_from_raw(raw: Any, overrides: list[Override] | tuple[Override, ...] = (),
                      source: str = "<scenario>") -> Scenario:
    """The loader: the user's tree (as read from YAML) plus overrides -> a frozen Scenario.
    Raises nothing but ConfigError for any input."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a scenario must be a YAML mapping")
    return build_scenario(expand(raw, overrides), source)


def load_raw(path: str | Path, overrides: list[Override] | tuple[Override, ...] = (), *,
             expanded: bool = True) -> dict[str, Any]:
    """Read a scenario file and apply overrides; presets expanded unless ``expanded=False``
    (a sweep keeps the user's tree, so that a point's override can name a preset)."""
    raw = read_scenario_file(path)
    if not expanded:
        out = copy.deepcopy(raw)
        for item in overrides:
            apply_override(out, item)
        return out
    return expand(raw, overrides)


def load_scenario(path: str | Path, overrides: list[Override] | tuple[Override, ...] = ()) -> Scenario:
    return scenario_from_raw(read_scenario_file(path), overrides, str(path))


def dump_yaml(scenario: Scenario) -> str:
    return yaml.safe_dump(scenario.to_dict(), sort_keys=False)
