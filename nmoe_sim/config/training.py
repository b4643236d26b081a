"""The schema of what is learned: data and its partition, the models, the three stages' training
and the baselines (docs/algorithms.md says what each key does)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from nmoe_sim.strict import Strict


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


class ModelConfig(Strict):
    feature_dim: int = Field(64, ge=2)
    fe_channels: tuple[int, ...] = Field((16, 32), min_length=1, max_length=4)
    fe_norm: Literal["none", "group"] = Field(
        "none", description="group: GroupNorm after each FE convolution (per sample, no running "
        "statistics, so it federates; docs/algorithms.md measures what it changes for FedSC)")
    expert_hidden: int = Field(64, ge=1)
    gate_hidden: int = Field(64, ge=1)
    proj_dim: int = Field(64, ge=2)
    proj_batchnorm: bool = Field(False, description="FedSC's projection head normalises its hidden layer "
                                 "by the batch's statistics (SimCLR's and the FedSC authors' projectors; "
                                 "docs/algorithms.md measures what it changes)")
    top_k: int = Field(1, ge=1)
    gate_noise: bool = True


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
    local_steps: Optional[int] = Field(
        None, ge=1, description="at most this many SGD steps a round (the first batches of its local "
        "epochs, drawn afresh each round); none: every batch of local_epochs. Few steps a round is what "
        "FedSC needs at one class per client when clients hold thousands of samples (docs/algorithms.md)")


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

    alpha_start: float | Literal["1/K"] = Field(
        1.0, description="weight of the client's own correlation in round 0, in [0, 1] (1: the local "
        "spectral loss, the authors' start), or 1/K: each client's exact share of the global loss, K the "
        "number of clients (what makes FedSC learn at one class per client, docs/algorithms.md)")
    alpha_end: float | Literal["1/K"] = Field(0.2, description="the same in the last round (authors: 0.2); "
                                              "linear in between")
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
    r_samples: Optional[int] = Field(
        None, ge=2, description="fresh: the correlation is measured on this many of the client's samples, "
        "drawn anew each round (none: all of them, the authors'); bounds the prelude's cost on large clients")
    noise_std: float = Field(0.00104, ge=0, description="std of the Gaussian noise added to each shared "
                             "correlation matrix (privacy; authors: 0.00104; 0 for none)")
    augment: AugmentConfig = AugmentConfig()

    @field_validator("alpha_start", "alpha_end", mode="before")
    @classmethod
    def _alpha(cls, v: object) -> object:
        if v == "1/K":
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError("must be a number in [0, 1] or 1/K")
        return float(v)


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
