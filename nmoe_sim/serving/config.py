"""The ``inference:`` schema: how queries arrive and how each is routed to experts.

Pure pydantic, no simulation (``config.py`` imports :class:`InferenceConfig`). The defaults
are the behaviour before routing policies existed: Poisson arrivals at a constant rate and
the gate's top-k (``routing: topk``), so a scenario without these keys computes what it did.
docs/algorithms.md ("Routing policies at inference") describes each policy and its source.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from nmoe_sim.strict import Strict

# The names of nmoe_sim.serving.policies.POLICIES, kept here so that the schema (and its
# error message) needs no torch import; a test checks that the two agree.
PolicyName = Literal["topk", "channel_aware", "load_aware", "budgeted"]


class ChannelAwareConfig(Strict):
    weight_per_s: float = Field(
        100.0, ge=0, description="trade-off: a second of expected delivery time costs this much log gate "
        "probability (0 = topk's choice; 100 = 10 ms weighs as much as a factor e in the gate's odds)")
    csi: Literal["current", "mean"] = Field(
        "current", description="what the client knows of each link: current (the SNR of the coherence "
        "block it decides in, fresh feedback) or mean (path loss and shadowing only, from the topology)")


class LoadAwareConfig(Strict):
    weight_per_s: float = Field(
        100.0, ge=0, description="trade-off: a second of expected wait (queue x service time) costs this "
        "much log gate probability")


class BudgetedConfig(Strict):
    budget_s: Optional[float] = Field(
        None, gt=0, description="per-query latency budget from arrival: experts whose expected answer "
        "comes later are not asked, and legs not answered by then are abandoned for the local expert")
    energy_budget_j: Optional[float] = Field(
        None, gt=0, description="per-query expected device energy budget (radios and expert compute)")
    min_gain: float = Field(
        0.1, ge=0, lt=1, description="skip an expert whose gate weight is below this (SiftMoE's "
        "expert skipping): its expected gain does not pay for its cost; the own expert remains the fallback")

    @model_validator(mode="after")
    def _some_budget(self) -> "BudgetedConfig":
        if self.budget_s is None and self.energy_budget_j is None:
            raise ValueError("set budget_s, energy_budget_j or both (a budgeted policy needs a budget)")
        return self


class BurstConfig(Strict):
    """Arrivals at ``factor`` times the rate for ``duration_s`` at the start of every ``every_s``."""

    every_s: float = Field(gt=0, description="period of the bursts")
    duration_s: float = Field(gt=0, description="length of each burst (< every_s)")
    factor: float = Field(gt=1, description="arrival rate in a burst, as a multiple of arrival_rate_hz")

    @model_validator(mode="after")
    def _shorter_than_period(self) -> "BurstConfig":
        if self.duration_s >= self.every_s:
            raise ValueError(f"duration_s={self.duration_s} must be shorter than every_s={self.every_s}")
        return self


class InferenceConfig(Strict):
    max_queries_per_client: Optional[int] = Field(None, ge=1)
    arrival_rate_hz: float = Field(5.0, gt=0, description="Poisson query arrivals per client")
    bursts: Optional[BurstConfig] = Field(None, description="null: a constant rate; else periodic bursts")
    routing: PolicyName = Field(
        "topk", description="which experts serve a query: topk (the gate alone, the reference), "
        "channel_aware, load_aware or budgeted (docs/algorithms.md)")
    channel_aware: ChannelAwareConfig = ChannelAwareConfig()
    load_aware: LoadAwareConfig = LoadAwareConfig()
    budgeted: Optional[BudgetedConfig] = Field(None, description="routing: budgeted needs this section")

    @model_validator(mode="after")
    def _budget_given(self) -> "InferenceConfig":
        if self.routing == "budgeted" and self.budgeted is None:
            raise ValueError("routing: budgeted needs an inference.budgeted section with budget_s and/or "
                             "energy_budget_j")
        return self
