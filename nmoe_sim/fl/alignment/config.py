"""The ``alignment:`` section of a scenario: federated MoE with client-expert alignment.

``nmoe_sim.config.Scenario.alignment`` holds this frozen schema (validated with the rest
of the scenario); :func:`parse_alignment` validates a bare mapping into it, raising a
one-line :class:`~nmoe_sim.errors.ConfigError` that names the ``alignment.<key>`` at
fault. What each option means for the algorithm is in ``docs/alignment.md`` (client-expert
alignment, after FLEX-MoE, arXiv 2512.23070). This module must stay light (pydantic
only): ``nmoe_sim.config`` imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Optional, Union

from pydantic import Field, ValidationError, model_validator

from nmoe_sim.errors import ConfigError
from nmoe_sim.strict import Strict

AssignmentKind = Literal["alignment", "greedy", "random", "unlimited"]
FitnessKind = Literal["accuracy", "loss"]


class AlignmentConfig(Strict):
    """Federated MoE training where the server assigns experts to clients every round."""

    # ----------------------------------------------------------------- the model pool
    experts: int = Field(8, ge=1, description="E, the size of the shared expert pool")
    expert_hidden: int = Field(64, ge=1, description="hidden width of each expert MLP")

    # ----------------------------------------------------------------- federated rounds
    rounds: int = Field(20, ge=1, description="communication rounds")
    local_epochs: int = Field(1, ge=1, description="local passes over a client's data per round")
    batch_size: int = Field(32, ge=1, description="local mini-batch size")
    lr: float = Field(0.05, gt=0, description="local SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="local SGD momentum")
    participation: float = Field(
        1.0, gt=0, le=1, description="share of clients sampled to take part in each round"
    )
    deadline_s: Optional[float] = Field(
        None, gt=0,
        description="round deadline in simulated s; updates arriving later are dropped; "
        "also the time budget of capacity profiling when set",
    )
    target_accuracy: float = Field(
        0.8, gt=0, le=1,
        description="test accuracy whose first crossing is reported as rounds-to-target",
    )

    # ----------------------------------------------------------------- assignment
    assignment: AssignmentKind = Field(
        "alignment",
        description="alignment: exact capacity- and load-constrained fitness maximization; "
        "greedy: each client takes its top-k experts by fitness; random: k experts at "
        "random; unlimited: every client trains every expert",
    )
    compare: Optional[tuple[AssignmentKind, ...]] = Field(
        None, min_length=1,
        description="run each of these assignments in its own simulated world over the "
        "same data, topology and channel seed (one metrics.json system each); unset: "
        "only `assignment`",
    )
    load_min: int = Field(
        1, ge=0,
        description="least number of clients that train each expert per round "
        "(lowered to what the round's capacity allows)",
    )
    load_max: Optional[int] = Field(
        None, ge=1,
        description="most clients that train one expert per round; "
        "unset: ceil(sum of capacities / experts) + load_slack",
    )
    load_slack: int = Field(
        1, ge=0, description="added to the balanced load when load_max is unset"
    )
    deficit_weight: float = Field(
        0.1, ge=0,
        description="weight of an expert's normalized historical deficit (in [0, 1]) "
        "added to every client's fitness for it; 0 ignores history",
    )
    deficit_decay: float = Field(
        0.9, ge=0, le=1,
        description="factor the historical deficit is multiplied by each round before "
        "the new shortfall is added (0: last round only, 1: never forget)",
    )

    # ----------------------------------------------------------------- fitness
    fitness: FitnessKind = Field(
        "accuracy",
        description="feedback that drives the fitness signal s(c,e): local accuracy of "
        "expert e on the samples routed to it, or exp(-loss_alpha * loss)",
    )
    beta: float = Field(
        0.3, gt=0, le=1, description="EMA factor: Q <- (1 - beta) Q + beta s for trained pairs"
    )
    loss_alpha: float = Field(1.0, gt=0, description="alpha_L in s = exp(-alpha_L * loss)")
    initial_fitness: float = Field(
        0.5, ge=0, le=1, description="fitness of client-expert pairs never tried"
    )

    # ----------------------------------------------------------------- capacity
    capacity_from: Literal["profile", "fixed"] = Field(
        "profile",
        description="profile: k_c from each device's memory, compute and uplink; "
        "fixed: every client gets fixed_capacity",
    )
    fixed_capacity: int = Field(
        2, ge=1, description="experts per client when capacity_from is fixed"
    )
    profile_budget_s: float = Field(
        0.05, gt=0,
        description="time budget of one round's expert work (train + upload) that "
        "capacity profiling fits experts into, when deadline_s is unset",
    )
    memory_overhead: float = Field(
        3.0, gt=0,
        description="bytes of device memory one expert takes per parameter byte "
        "(parameters + gradients + momentum)",
    )
    capacity: Optional[Union[dict[int, int], tuple[int, ...]]] = Field(
        None,
        description="override: a mapping client index -> experts it can train, or one "
        "value per client",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "AlignmentConfig":
        if self.load_max is not None and self.load_max < self.load_min:
            raise ValueError(f"load_max: {self.load_max} is below load_min={self.load_min}")
        if self.compare is not None and len(set(self.compare)) != len(self.compare):
            raise ValueError(f"compare: lists an assignment twice: {list(self.compare)}")
        if self.fixed_capacity > self.experts:
            raise ValueError(
                f"fixed_capacity: {self.fixed_capacity} exceeds experts={self.experts}"
            )
        if self.capacity is not None:
            pairs = (
                self.capacity.items() if isinstance(self.capacity, dict)
                else enumerate(self.capacity)
            )
            for client, k in pairs:
                if client < 0:
                    raise ValueError(f"capacity: client index {client} is negative")
                if not 1 <= k <= self.experts:
                    raise ValueError(
                        f"capacity: client {client} given {k}, must be in "
                        f"1..experts ({self.experts})"
                    )
        return self


def parse_alignment(raw: Mapping[str, Any] | None) -> AlignmentConfig:
    """Validate the scenario's ``alignment:`` mapping (``None``: all defaults).

    Errors become one ConfigError line, ``alignment.<key>: <what is wrong>``; an unknown
    key lists the allowed ones.
    """
    if raw is None:
        return AlignmentConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError("alignment: must be a mapping of options")
    try:
        return AlignmentConfig.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        # Drop pydantic's union-member tags such as 'dict[int,int]' from the key path.
        loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
        path = ".".join(["alignment", *loc])
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(AlignmentConfig.model_fields))
            raise ConfigError(f"{path}: unknown key; allowed: {allowed}") from None
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:  # a cross-field check: its message starts with the key at fault
            raise ConfigError(f"alignment.{msg}") from None
        if loc[0] == "capacity":  # pydantic reports only the first union member's error
            raise ConfigError(
                "alignment.capacity: must be a mapping client index -> experts it can "
                "train, or a list of one integer per client"
            ) from None
        given = err.get("input")
        plain = not isinstance(given, (dict, list, tuple)) and given is not None
        shown = f" (got {given!r})" if plain else ""
        raise ConfigError(f"{path}: {msg}{shown}") from None
