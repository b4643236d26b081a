"""The ``faults:`` schema: which devices, links and radios break, when, and for how long.

Pure pydantic, no simulation: ``config.py`` imports :class:`FaultsConfig` for its
``Scenario.faults`` field, and :mod:`nmoe_sim.engine.faults` turns it into a schedule.
Each entry of ``faults.events`` names its ``kind``; the kind picks its schema from the
:data:`FAULT_KINDS` registry (an unknown kind lists the known ones), so adding a kind is one
class and one registration, never a new branch. docs/faults.md describes every key.

Nodes are written as in the topology: clients by number (``3``), the base station as
``bs``; a link is a pair of nodes (``[0, bs]``, ``[2, 5]``), in either order.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from nmoe_sim.strict import Strict
from nmoe_sim.registry import Registry

def _no_bool(value: Any) -> Any:
    # `node: true` would otherwise be read as client 1.
    if isinstance(value, bool):
        raise ValueError("expected a client number or bs, not true/false")
    return value


Node = Annotated[Union[int, Literal["bs"]], BeforeValidator(_no_bool)]
def _no_bool_client(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a client number, not true/false")
    return value


ClientId = Annotated[int, BeforeValidator(_no_bool_client), Field(ge=0)]
LinkSpec = tuple[Node, Node]


class _Interval(Strict):
    """A fault that holds over [start_s, end_s) of every system's simulated clock."""

    start_s: float = Field(ge=0, allow_inf_nan=False)
    end_s: float = Field(gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> "_Interval":
        if not self.end_s > self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        return self


class CrashFault(Strict):
    """Clients that crash at ``at_s`` and rejoin ``downtime_s`` later (never, when null).

    ``clients`` names them; ``fraction`` instead draws fraction * n distinct clients (rounded
    half up, at least one) from the ``faults/crash`` seed stream.
    """

    kind: Literal["crash"] = "crash"
    clients: Optional[tuple[ClientId, ...]] = Field(None, min_length=1)
    fraction: Optional[float] = Field(None, gt=0, le=1, allow_inf_nan=False)
    at_s: float = Field(0.0, ge=0, allow_inf_nan=False)
    downtime_s: Optional[float] = Field(None, gt=0, allow_inf_nan=False, description="null: the client never rejoins")

    @model_validator(mode="after")
    def _one_target(self) -> "CrashFault":
        if (self.clients is None) == (self.fraction is None):
            raise ValueError("give exactly one of clients (a list of client ids) or fraction (0 < f <= 1)")
        return self


class CrashRateFault(Strict):
    """Every client (or those listed) crashes as a Poisson process of ``rate_hz`` while up,
    and rejoins after ``downtime_s``; times come from the ``faults/crash_rate/<client>`` streams."""

    kind: Literal["crash_rate"] = "crash_rate"
    rate_hz: float = Field(gt=0, allow_inf_nan=False)
    downtime_s: float = Field(gt=0, allow_inf_nan=False)
    clients: Optional[tuple[ClientId, ...]] = Field(None, min_length=1, description="null: every client")


class DropoutFault(Strict):
    """Each participant of each federated round drops out with ``probability`` (drawn from
    ``faults/dropout/<stage>/r<round>``): it does nothing that round."""

    kind: Literal["dropout"] = "dropout"
    probability: float = Field(gt=0, le=1, allow_inf_nan=False)


class LinkDownFault(_Interval):
    """One link carries nothing over the interval."""

    kind: Literal["link_down"] = "link_down"
    link: LinkSpec


class RadioDownFault(_Interval):
    """A node's radio is off over the interval: every link touching it is down."""

    kind: Literal["radio_down"] = "radio_down"
    node: Node


class BsOutageFault(_Interval):
    """The base station is down over the interval: every hop into or out of ``bs``."""

    kind: Literal["bs_outage"] = "bs_outage"


class StragglerFault(_Interval):
    """A device computes ``slowdown`` times slower (its FLOP/s divided by it) for every
    computation that starts inside the interval."""

    kind: Literal["straggler"] = "straggler"
    node: Node
    slowdown: float = Field(gt=0, allow_inf_nan=False)


class StormFault(_Interval):
    """A deep-fade storm: ``extra_loss_db`` more path loss on each named link over the interval."""

    kind: Literal["storm"] = "storm"
    links: tuple[LinkSpec, ...] = Field(min_length=1)
    extra_loss_db: float = Field(gt=0, allow_inf_nan=False)


# faults.events[*].kind -> its schema. The runtime side (engine/faults.py) keys its
# appliers by the same names; a test checks the two tables agree.
FAULT_KINDS: Registry[type[Strict]] = Registry("fault kind")
for _cls in (CrashFault, CrashRateFault, DropoutFault, LinkDownFault, RadioDownFault, BsOutageFault,
             StragglerFault, StormFault):
    FAULT_KINDS.register(_cls.model_fields["kind"].default)(_cls)

FaultSpec = Union[CrashFault, CrashRateFault, DropoutFault, LinkDownFault, RadioDownFault, BsOutageFault,
                  StragglerFault, StormFault]


class FaultsConfig(Strict):
    """``faults:``; the default (no events) is a run without faults, bit for bit as before."""

    events: tuple[FaultSpec, ...] = ()
    query_timeout_s: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="how long a query waits for an expert's answer before it falls back")

    @field_validator("events", mode="before")
    @classmethod
    def _by_kind(cls, value: Any) -> Any:
        # The kind picks the schema through the registry: the error names the entry and
        # lists the known kinds, instead of pydantic's union of eight failed attempts.
        if not isinstance(value, (list, tuple)):
            raise ValueError("expected a list of fault entries, each with a 'kind'")
        out = []
        for i, entry in enumerate(value):
            if isinstance(entry, Strict):
                out.append(entry)
                continue
            kind = entry.get("kind") if isinstance(entry, dict) else None
            if not isinstance(kind, str) or kind not in FAULT_KINDS:
                raise ValueError(f"entry {i}: unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS.names())}")
            try:
                out.append(FAULT_KINDS.get(kind).model_validate(entry))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"entry {i} ({kind}){': ' + where if where else ''}: {err['msg']}") from None
        return out

    @model_validator(mode="after")
    def _one_dropout(self) -> "FaultsConfig":
        if sum(ev.kind == "dropout" for ev in self.events) > 1:
            raise ValueError("events: at most one dropout entry (its probability applies to every round)")
        return self

    @property
    def active(self) -> bool:
        return bool(self.events)
