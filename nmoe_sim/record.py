"""Typed records of everything that happens in simulated time, and the recorder that keeps them.

Observation stays out of the data path: processes hand records to a :class:`Recorder`;
nothing prints. Results files (events.csv, rounds.csv, queries.csv) are views of these lists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable


def direction(src: str, dst: str) -> str:
    """'up' (client -> base station), 'down' (base station -> client) or 'd2d'."""
    if dst == "bs":
        return "up"
    if src == "bs":
        return "down"
    return "d2d"


@dataclass(frozen=True)
class TransferRecord:
    """One end-to-end transfer of ``size_bytes`` from ``src`` to ``dst`` (possibly multi-hop)."""

    stage: str
    tag: str
    src: str
    dst: str
    size_bytes: int
    start_s: float
    end_s: float
    attempts: int
    delivered: bool
    hops: int
    airtime_s: float
    energy_j: float
    reason: str = ""  # "" when delivered; "outage" or "deadline" otherwise
    snr_db: float = float("nan")  # mean SNR over the attempts of the first hop

    @property
    def direction(self) -> str:
        return direction(self.src, self.dst)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class HopRecord:
    """One link-level transmission of a transfer: the data behind per-link statistics."""

    stage: str
    tag: str
    u: str
    v: str
    size_bytes: int
    start_s: float
    end_s: float
    attempts: int
    delivered: bool
    airtime_s: float
    tx_energy_j: float
    rx_energy_j: float
    snr_db: float  # mean over attempts, dB


@dataclass(frozen=True)
class ComputeRecord:
    stage: str
    tag: str
    node: str
    flops: float
    start_s: float
    end_s: float
    energy_j: float


@dataclass(frozen=True)
class RoundRecord:
    """One round of a federated stage, with the running totals a curve needs."""

    system: str
    stage: str
    round: int
    start_s: float
    end_s: float
    participants: int
    failures: int
    cum_bytes: int
    cum_sim_time_s: float
    cum_energy_j: float
    f1_macro: float = float("nan")
    accuracy: float = float("nan")


@dataclass(frozen=True)
class QueryRecord:
    system: str
    client: int
    query: int
    start_s: float
    end_s: float
    experts: tuple[int, ...]
    delivered: bool

    @property
    def latency_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class Recorder:
    transfers: list[TransferRecord] = field(default_factory=list)
    hops: list[HopRecord] = field(default_factory=list)
    computes: list[ComputeRecord] = field(default_factory=list)
    rounds: list[RoundRecord] = field(default_factory=list)
    queries: list[QueryRecord] = field(default_factory=list)
    # Observers (e.g. a progress bar) called with every record; they must not mutate it.
    listeners: list[Callable[[Any], None]] = field(default_factory=list)

    def add(self, rec: Any) -> None:
        table = {
            TransferRecord: self.transfers,
            HopRecord: self.hops,
            ComputeRecord: self.computes,
            RoundRecord: self.rounds,
            QueryRecord: self.queries,
        }[type(rec)]
        table.append(rec)
        for listener in self.listeners:
            listener(rec)

    # -- running totals used by the round records and metrics
    def stage_bytes(self, stages: Iterable[str] | None = None) -> int:
        keep = None if stages is None else set(stages)
        return sum(t.size_bytes for t in self.transfers if keep is None or t.stage in keep)

    def stage_energy_j(self, stages: Iterable[str] | None = None) -> float:
        keep = None if stages is None else set(stages)
        e = sum(t.energy_j for t in self.transfers if keep is None or t.stage in keep)
        e += sum(c.energy_j for c in self.computes if keep is None or c.stage in keep)
        return e


def record_row(rec: Any) -> dict[str, Any]:
    row = asdict(rec)
    for f in fields(rec):
        if isinstance(row[f.name], tuple):
            row[f.name] = " ".join(str(x) for x in row[f.name])
    return row
