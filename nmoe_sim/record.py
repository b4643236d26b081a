"""Typed records of everything that happens in simulated time, and the recorder that keeps them.

Observation stays out of the data path: processes hand records to a :class:`Recorder`;
nothing prints. Results files (events.csv, hops.csv, rounds.csv, queries.csv, clients.csv)
are views of these lists.

Every cost-carrying record is stamped with the ``system`` whose simulated world produced it
and the ``stage`` that caused it, by the Network or executor of that world; costs are summed
by (system, stage), never recovered from names. Energy is split by who pays it: the
devices' batteries (clients' radios and compute) or the infrastructure (base station and
edge server).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Callable, Iterable

DIRECTIONS = ("up", "down", "d2d")  # client -> BS, BS -> client, client -> client (one hop)


class FailureReason(StrEnum):
    """Why a client's round work or a transfer did not get through: a fixed vocabulary.

    A StrEnum, so CSV and JSON write the plain value ("outage") exactly as the strings
    used before the vocabulary existed.
    """

    OUTAGE = "outage"  # the channel: every attempt of a hop in outage
    DEADLINE = "deadline"  # the round closed first
    INTERRUPTED = "interrupted"  # aborted with no cause given
    CRASHED = "crashed"  # the client (or a hop's end point) crashed (faults: crash, crash_rate)
    DROPPED_OUT = "dropped_out"  # the participant dropped out of the round (faults: dropout)
    LINK_DOWN = "link_down"  # a hop's link or radio was down (faults: link_down, radio_down)
    BS_OUTAGE = "bs_outage"  # the base station was down (faults: bs_outage)
    QUERY_TIMEOUT = "query_timeout"  # a query stopped waiting for an expert's answer


@dataclass(frozen=True)
class TransferRecord:
    """One end-to-end transfer of ``size_bytes`` from ``src`` to ``dst`` (possibly multi-hop)."""

    system: str
    stage: str
    tag: str
    src: str
    dst: str
    size_bytes: int  # payload offered end to end
    start_s: float
    end_s: float
    attempts: int
    delivered: bool
    hops: int  # hops of the route chosen (not all of them are tried when one fails)
    airtime_s: float
    energy_j: float  # radio energy of every hop tried, = device + infrastructure
    device_energy_j: float
    infrastructure_energy_j: float
    link_bytes: int  # payload delivered summed over hops: a 2-hop relay loads two links
    route: tuple[str, ...] = ()
    reason: str = ""  # "" when delivered; "outage" or "deadline" otherwise
    snr_db: float = float("nan")  # mean SNR over the blocks the first hop saw

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class HopRecord:
    """One link-level transmission of a transfer: the data behind per-link statistics."""

    system: str
    stage: str
    tag: str
    u: str
    v: str
    direction: str  # one of DIRECTIONS, from the node kinds of u and v
    size_bytes: int
    start_s: float
    end_s: float
    attempts: int
    delivered: bool
    airtime_s: float
    tx_energy_j: float  # paid by u
    rx_energy_j: float  # paid by v
    snr_db: float  # mean over the coherence blocks seen, dB
    device_energy_j: float = 0.0
    infrastructure_energy_j: float = 0.0


@dataclass(frozen=True)
class ComputeRecord:
    system: str
    stage: str
    tag: str
    node: str
    flops: float
    start_s: float
    end_s: float
    energy_j: float
    device_energy_j: float = 0.0
    infrastructure_energy_j: float = 0.0


@dataclass(frozen=True)
class RoundRecord:
    """One round of a federated stage, with the running totals a curve needs."""

    system: str
    stage: str
    round: int
    rounds_total: int
    start_s: float
    end_s: float
    participants: int
    failures: int
    cum_bytes: int  # offered payload of the system's stages so far
    cum_bytes_delivered: int  # of which arrived
    cum_sim_time_s: float
    cum_energy_j: float
    f1_macro: float = float("nan")
    accuracy: float = float("nan")
    # Stage 1's feature checks after this round, where measured (nmoe_sim.fl.probes).
    probe_linear: float = float("nan")
    probe_knn: float = float("nan")
    effective_rank: float = float("nan")


@dataclass(frozen=True)
class QueryRecord:
    system: str
    client: int
    query: int
    start_s: float
    end_s: float  # when the client holds its answer (from the experts or its fallback)
    experts: tuple[int, ...]
    delivered: bool

    @property
    def latency_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault (docs/faults.md), stamped with the system whose clock it hit and
    the stage that system was running (the latest one to start a transfer or computation;
    "" before any)."""

    system: str
    stage: str
    tag: str  # the fault kind, with its size where it has one ("storm +20 dB", "straggler x3")
    reason: str  # the FailureReason it causes where it causes one
    start_s: float
    end_s: float  # inf for a crash with no rejoin; start_s for an instant (dropout)
    node: str = ""  # a crashed, dropped, slowed or silenced node
    src: str = ""  # a downed or faded link's end points (canonical order); "" otherwise
    dst: str = ""


@dataclass(frozen=True)
class FailureRecord:
    """A participant whose round produced no update for aggregation, and why."""

    system: str
    stage: str
    round: int
    client: int
    phase: str  # "download", "prelude", "compute" or "upload"
    reason: str  # a FailureReason value
    time_s: float  # when the driver learned of it (the round's close at the latest)


@dataclass
class StageTotals:
    """Running totals of one (system, stage), kept as records arrive (O(1) per record)."""

    bytes: int = 0
    bytes_delivered: int = 0
    hop_bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))
    hop_bytes_delivered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))
    transfers: int = 0
    failed_transfers: int = 0
    radio_energy_j: float = 0.0
    compute_energy_j: float = 0.0
    device_energy_j: float = 0.0
    infrastructure_energy_j: float = 0.0
    flops: float = 0.0

    @property
    def energy_j(self) -> float:
        return self.radio_energy_j + self.compute_energy_j

    def add(self, rec: Any) -> None:
        if isinstance(rec, TransferRecord):
            self.bytes += rec.size_bytes
            self.bytes_delivered += rec.size_bytes if rec.delivered else 0
            self.transfers += 1
            self.failed_transfers += not rec.delivered
            self.radio_energy_j += rec.energy_j
        elif isinstance(rec, HopRecord):
            # Energy is taken from the transfer (the sum of its hops), never twice.
            self.hop_bytes[rec.direction] += rec.size_bytes
            self.hop_bytes_delivered[rec.direction] += rec.size_bytes if rec.delivered else 0
            return
        elif isinstance(rec, ComputeRecord):
            self.compute_energy_j += rec.energy_j
            self.flops += rec.flops
        self.device_energy_j += rec.device_energy_j
        self.infrastructure_energy_j += rec.infrastructure_energy_j


@dataclass
class Recorder:
    transfers: list[TransferRecord] = field(default_factory=list)
    hops: list[HopRecord] = field(default_factory=list)
    computes: list[ComputeRecord] = field(default_factory=list)
    rounds: list[RoundRecord] = field(default_factory=list)
    queries: list[QueryRecord] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    # Observers (e.g. a progress bar) called with every record; they must not mutate it.
    listeners: list[Callable[[Any], None]] = field(default_factory=list)
    totals: dict[tuple[str, str], StageTotals] = field(default_factory=lambda: defaultdict(StageTotals))
    systems: list[str] = field(default_factory=list)  # in the order they first recorded (ran)

    def add(self, rec: Any) -> None:
        table = {
            TransferRecord: self.transfers,
            HopRecord: self.hops,
            ComputeRecord: self.computes,
            RoundRecord: self.rounds,
            QueryRecord: self.queries,
            FaultRecord: self.faults,
            FailureRecord: self.failures,
        }[type(rec)]
        table.append(rec)
        if rec.system not in self.systems:
            self.systems.append(rec.system)
        if isinstance(rec, (TransferRecord, HopRecord, ComputeRecord)):
            self.totals[(rec.system, rec.stage)].add(rec)
        for listener in self.listeners:
            listener(rec)

    def stage_totals(self, system: str, stage: str) -> StageTotals:
        """The running totals of one stage of one system (zeros if it recorded nothing)."""
        return self.totals.get((system, stage)) or StageTotals()

    def sum_of(self, system: str, stages: Iterable[str], attr: str) -> float:
        """One total (e.g. ``bytes_delivered``) summed over the given stages of ``system``."""
        return sum(getattr(self.stage_totals(system, s), attr) for s in stages)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def record_row(rec: Any) -> dict[str, Any]:
    """A record as a flat row; tuples (a route, a query's experts) joined by spaces.

    Records hold only scalars and tuples of scalars, so reading the fields directly gives
    what ``dataclasses.asdict`` gives without its recursive deep copy (a 1,000-client run
    writes hundreds of thousands of rows; asdict was most of the CSV time).
    """
    names = _FIELD_NAMES.get(type(rec))
    if names is None:
        names = _FIELD_NAMES[type(rec)] = tuple(f.name for f in fields(rec))
    row = {name: getattr(rec, name) for name in names}
    for name in names:
        if isinstance(row[name], tuple):
            row[name] = " ".join(str(x) for x in row[name])
    return row
