"""The whole scenario: sweeps, the host runtime, output, and the frozen :class:`Scenario` that
ties every section together, with the checks that span sections."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from nmoe_sim.config.network import NetworkConfig
from nmoe_sim.config.training import BaselinesConfig, DataConfig, ModelConfig, Stage1Config, Stage2Config, Stage3Config
from nmoe_sim.engine.fault_config import FaultsConfig
from nmoe_sim.fl.alignment.config import AlignmentConfig
from nmoe_sim.serving.config import InferenceConfig
from nmoe_sim.strict import Strict


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
