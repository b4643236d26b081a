"""The SimPy wireless Network through which every byte of the pipeline moves.

``Network.transfer(src, dst, size_bytes)`` is a SimPy process: it routes the transfer (see
:mod:`nmoe_sim.net.routing`), then sends it hop after hop (store and forward). Each hop
samples its link's channel at the current simulated time and, by default, again at every
coherence-block boundary it spans (a block in outage fails the attempt, which is retried
up to ``max_attempts``), and is served by :class:`~nmoe_sim.net.sharing.SharedRadios`, a
fluid processor-sharing model of the radios' bandwidth budgets. Bytes offered and
delivered, airtime and energy (split between device batteries and infrastructure) are
charged to typed records (:mod:`nmoe_sim.record`), stamped with the network's system.
"""

from __future__ import annotations

import math
import zlib
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, Generator, Hashable

import networkx as nx
import numpy as np
import simpy

from nmoe_sim.config import LinkChannels
from nmoe_sim.net import channel
from nmoe_sim.net.fading import GainTable, LinkChannel
from nmoe_sim.net.fault_hooks import FaultHooks
from nmoe_sim.net.routing import ROUTING, airtime_weight_s_per_bit
from nmoe_sim.net.sharing import Call, Flow, FlowArrays, SharedRadios, delay_to
from nmoe_sim.record import HopRecord, Recorder, TransferRecord

if TYPE_CHECKING:
    from nmoe_sim.engine.faults import FaultState


def dbm_to_w(power_dbm: float) -> float:
    return 10.0 ** ((power_dbm - 30.0) / 10.0)


def node_order(node: Hashable) -> tuple[int, str | int]:
    """Clients (ints) first by number, then named nodes ('bs') by name: a stable total order."""
    if isinstance(node, (int, np.integer)):
        return (0, int(node))
    return (1, str(node))


def edge_key(u: Hashable, v: Hashable) -> tuple[Hashable, Hashable]:
    """The canonical orientation of an undirected edge (client before bs, lower id first)."""
    return (u, v) if node_order(u) <= node_order(v) else (v, u)


@dataclass
class _Hop:
    """Running account of one hop, kept outside the generator so an interrupt can close it."""

    u: Hashable
    v: Hashable
    start_s: float
    p_tx_w: float = 0.0
    p_rx_w: float = 0.0
    attempts: int = 0
    airtime_s: float = 0.0
    tx_energy_j: float = 0.0
    rx_energy_j: float = 0.0
    # One SNR per coherence block the hop spans (n^2 blocks at scale): packed doubles, 8
    # bytes each instead of a list's 40; np.mean sees the same float64 values either way.
    snrs_db: array = field(default_factory=lambda: array("d"))
    delivered: bool = False
    flow: Flow | None = None
    # The segment of the current flow sent at one rate: airtime is bits / rate per segment.
    seg_rate_bps: float = 0.0
    seg_sent0_bits: float = 0.0
    wait_start_s: float | None = None  # set while waiting for an ACK that will not come
    fault: str = ""  # the injected fault (a FailureReason) that failed the latest attempt

    def charge(self, airtime_s: float, rx: bool) -> None:
        self.airtime_s += airtime_s
        self.tx_energy_j += self.p_tx_w * airtime_s
        if rx:
            self.rx_energy_j += self.p_rx_w * airtime_s

    def close_segment(self) -> None:
        """Charge the airtime of the current flow's bits sent since the last rate change."""
        assert self.flow is not None
        sent = self.flow.sent_bits
        self.charge((sent - self.seg_sent0_bits) / self.seg_rate_bps, rx=True)
        self.seg_sent0_bits = sent

    @property
    def mean_snr_db(self) -> float:
        return float(np.mean(np.frombuffer(self.snrs_db))) if self.snrs_db else math.nan


def _end_once(ended: simpy.Event) -> None:
    if not ended.triggered:
        ended.succeed(True)


@dataclass
class _BlockClock:
    """The block boundaries k * T_c shared by every flow on links of one coherence time.

    With faults attached its flows are ``entries``, re-rated one by one (the fault hooks
    touch them between boundaries); without, they are the rows of ``group`` and their
    links' fading states the rows of ``gains``, stepped a boundary at a time as arrays.
    """

    coherence_time_s: float
    # flow seq (start order) -> [hop, link, flow, ended, first block still to rate]
    entries: dict[int, list[Any]] = field(default_factory=dict)
    armed_block: int | None = None
    group: FlowArrays | None = None  # items: (hop, link, flow, ended, the hop's SNR list)
    gains: GainTable = field(default_factory=GainTable)
    cfgs: list[Any] = field(default_factory=list)  # the ChannelConfigs of its flows' links


# A block clock's per-flow columns beside SharedRadios' (FlowArrays.extra): the first
# block still to rate, the hop's running account, and what each block's rate needs.
_HOP_COLUMNS = ("next_block", "bits", "tx_dbm", "bandwidth_hz", "p_tx_w", "p_rx_w", "seg_rate_bps",
                "seg_sent0_bits", "airtime_s", "tx_energy_j", "rx_energy_j", "gain_row", "cfg_idx")
_LINK, _SNRS, _BUDGET = itemgetter(1), itemgetter(4), attrgetter("_budget_db")


class Network(FaultHooks):
    """Emulated wireless network over a topology graph (see :mod:`nmoe_sim.net.topology`).

    One Network per simulated world, hence per system: it stamps ``system`` on every record.
    """

    def __init__(self, env: simpy.Environment, graph: nx.Graph, channels: LinkChannels,
                 tx_power_dbm: dict[Any, float], rx_power_w: dict[Any, float],
                 recorder: Recorder, rng: np.random.Generator, *, system: str,
                 routing: str = "min_airtime") -> None:
        missing = [n for n in graph.nodes if n not in tx_power_dbm or n not in rx_power_w]
        if missing:
            raise ValueError(f"Network: no tx/rx power for nodes {sorted(missing, key=node_order)}")
        self.env = env
        self.graph = graph
        self.recorder = recorder
        self.system = system
        # Who pays a radio's energy: the base station is infrastructure, clients are devices.
        self.infrastructure = frozenset(n for n in graph.nodes if graph.nodes[n]["kind"] == "bs")
        self._tx_power_dbm = dict(tx_power_dbm)
        self._rx_power_w = dict(rx_power_w)
        self._radios_busy = SharedRadios(env)
        self._clocks: dict[float, _BlockClock] = {}  # coherence time -> its block clock
        keys = sorted((edge_key(u, v) for u, v in graph.edges), key=lambda e: (
            node_order(e[0]), node_order(e[1])))
        self._links: dict[tuple[Hashable, Hashable], LinkChannel] = {}
        # Each link's stream is keyed by the link's end points, not its position in the edge
        # list, so adding a D2D link does not re-draw the shadowing of the others.
        base_seed = int(rng.integers(2**63))
        for key in keys:
            child = np.random.default_rng(
                np.random.SeedSequence([base_seed, zlib.crc32(f"{key[0]}|{key[1]}".encode())]))
            attrs = graph.edges[key]
            cfg = getattr(channels, attrs["kind"])  # 'bs' -> channels.bs, 'd2d' -> channels.d2d
            self._links[key] = LinkChannel(cfg, float(attrs["distance_m"]), attrs["kind"], child)
        self._router = ROUTING.get(routing, "network.routing")(sorted(graph.nodes, key=node_order),
                                                                self._route_weights(keys))
        self._bytes: Counter[tuple[Hashable, Hashable]] = Counter()
        self._airtime_s: Counter[tuple[Hashable, Hashable]] = Counter()
        # Injected faults (engine/faults.py), None in a scenario without them: every fault
        # hook below is behind that test, so such runs take exactly the old paths.
        self.faults: FaultState | None = None
        self._fault_flows: dict[int, list[Any]] = {}  # flow seq -> [hop, link, flow, ended]
        self._fault_loss_db: dict[int, float] = {}  # flow seq -> storm loss in its current rate

    # ------------------------------------------------------------------ queries
    def link(self, u: Hashable, v: Hashable) -> LinkChannel:
        return self._links[edge_key(u, v)]

    def route(self, src: Hashable, dst: Hashable) -> list[Any]:
        return self._router.route(src, dst)

    def _route_weights(self, edges: list[tuple[Hashable, Hashable]]) -> dict[tuple[Hashable, Hashable], float]:
        """Both directions' expected airtime per bit of each edge (net/routing.py)."""
        weights = {}
        for u, v in edges:
            link = self._links[edge_key(u, v)]
            for a, b in ((u, v), (v, u)):
                weights[(a, b)] = airtime_weight_s_per_bit(link, self._tx_power_dbm[a])
        return weights

    def reroute(self, edges: list[tuple[Hashable, Hashable]]) -> None:
        """Routing weights of ``edges`` recomputed from their links' current geometry (a client
        moved, net/mobility.py): a transfer started from now on takes the route the
        clients' present positions favour; one under way keeps its path."""
        self._router.reweight(self._route_weights(edges))

    def link_weight_s_per_bit(self, u: Hashable, v: Hashable) -> float:
        """The routing weight of the direct hop u -> v (expected airtime per bit)."""
        return self._router.weight(u, v)

    def route_cost_s_per_bit(self, src: Hashable, dst: Hashable) -> float:
        """Expected airtime per bit of the route from ``src`` to ``dst`` (0 when equal)."""
        path = self._router.route(src, dst)
        return sum(self._router.weight(u, v) for u, v in zip(path, path[1:]))

    def tx_power_dbm(self, node: Hashable) -> float:
        return self._tx_power_dbm[node]

    def mean_snr_db(self, u: Hashable, v: Hashable) -> float:
        """Mean SNR (no fading) of edge (u, v) in the direction u -> v."""
        return self.link(u, v).mean_snr_db(self._tx_power_dbm[u])

    def direction(self, u: Hashable, v: Hashable) -> str:
        """'up' (into the base station), 'down' (out of it) or 'd2d' (client to client)."""
        if v in self.infrastructure:
            return "up"
        if u in self.infrastructure:
            return "down"
        return "d2d"

    def link_stats(self, sim_end_s: float) -> list[dict[str, Any]]:
        """One row per edge, canonical orientation (mean_snr_db is u -> v, _vu the reverse)."""
        rows = []
        for (u, v), link in self._links.items():
            air = float(self._airtime_s[(u, v)])
            rows.append({
                "u": str(u), "v": str(v), "kind": self.graph.edges[u, v]["kind"],
                "distance_m": link.distance_m,
                "mean_snr_db": self.mean_snr_db(u, v), "mean_snr_db_vu": self.mean_snr_db(v, u),
                "bytes": int(self._bytes[(u, v)]), "airtime_s": air,
                "utilization": air / sim_end_s if sim_end_s > 0 else 0.0,
            })
        return rows

    # ------------------------------------------------------------------ transfers
    def transfer(self, src: Hashable, dst: Hashable, size_bytes: int, *, stage: str,
                 tag: str) -> simpy.Process:
        """Send ``size_bytes`` from ``src`` to ``dst``; the process's value is the TransferRecord.

        Interrupting the process (``proc.interrupt('deadline')``) aborts it at once: its
        bandwidth is freed and the record says delivered False with the cause as reason.
        """
        if size_bytes < 0:
            raise ValueError(f"transfer: size_bytes must be >= 0 (got {size_bytes})")
        path = self.route(src, dst) if self.faults is None else self.route_now(src, dst, stage)
        return self.env.process(self._transfer(path, int(size_bytes), stage, tag))

    def _transfer(self, path: list[Any], size_bytes: int, stage: str,
                  tag: str) -> Generator[simpy.Event, Any, TransferRecord]:
        start_s = self.env.now
        hops: list[_Hop] = []
        reason = ""
        try:
            for u, v in zip(path, path[1:]):
                hop = _Hop(u, v, self.env.now)
                hops.append(hop)
                yield from self._send_hop(hop, size_bytes)
                self._close_hop(hop, size_bytes, stage, tag)
                if not hop.delivered:
                    reason = hop.fault or "outage"
                    break
        except simpy.Interrupt as intr:
            reason = "interrupted" if intr.cause is None else str(intr.cause)
            hop = hops[-1]  # the only yields are inside hops, so the last one is open
            self._abort_hop(hop)
            self._close_hop(hop, size_bytes, stage, tag)
        device_j = sum(self._device_share_j(h) for h in hops)
        total_j = sum(h.tx_energy_j + h.rx_energy_j for h in hops)
        rec = TransferRecord(
            system=self.system, stage=stage, tag=tag, src=str(path[0]), dst=str(path[-1]),
            size_bytes=size_bytes, start_s=start_s, end_s=self.env.now,
            attempts=sum(h.attempts for h in hops), delivered=not reason, hops=len(path) - 1,
            airtime_s=sum(h.airtime_s for h in hops), energy_j=total_j,
            device_energy_j=device_j, infrastructure_energy_j=total_j - device_j,
            link_bytes=size_bytes * sum(h.delivered for h in hops),
            route=tuple(str(n) for n in path), reason=reason,
            snr_db=hops[0].mean_snr_db if hops else math.nan,
        )
        self.recorder.add(rec)
        return rec

    def _device_share_j(self, hop: _Hop) -> float:
        """The part of a hop's radio energy paid by client batteries (tx by u, rx by v)."""
        return ((hop.tx_energy_j if hop.u not in self.infrastructure else 0.0)
                + (hop.rx_energy_j if hop.v not in self.infrastructure else 0.0))

    def _radios(self, u: Hashable, v: Hashable) -> tuple[Hashable, Hashable]:
        # A client has one half-duplex radio for both directions; the base station has
        # separate uplink (receive) and downlink (transmit) radios.
        tx = (u, "down") if u in self.infrastructure else (u, "radio")
        rx = (v, "up") if v in self.infrastructure else (v, "radio")
        return (tx, rx)

    def _send_hop(self, hop: _Hop, size_bytes: int) -> Generator[simpy.Event, Any, None]:
        link = self.link(hop.u, hop.v)
        cfg = link.cfg
        if self.faults is not None and not (yield from self._wait_out_faults(hop, link)):
            return
        if link.ideal:
            hop.attempts += 1  # 1, or one more than the attempts a fault already failed
            hop.snrs_db.append(math.inf)
            if cfg.latency_s > 0:
                yield self.env.timeout(cfg.latency_s)
            hop.delivered = True
            return
        if size_bytes == 0:
            hop.delivered = True
            return
        hop.p_tx_w = dbm_to_w(self._tx_power_dbm[hop.u])
        hop.p_rx_w = self._rx_power_w[hop.v]
        while hop.attempts < cfg.max_attempts:
            if self.faults is not None and not (yield from self._wait_out_faults(hop, link)):
                return
            hop.attempts += 1
            sent = yield from self._attempt(hop, link, 8.0 * size_bytes)
            if sent is True:
                if cfg.latency_s > 0:
                    yield self.env.timeout(cfg.latency_s)
                hop.delivered = True
                return
            yield sent if isinstance(sent, simpy.Timeout) else self._retx_wait(hop, link)
            hop.wait_start_s = None
            hop.charge(cfg.retx_timeout_s, rx=False)

    def _block_rate_bps(self, hop: _Hop, link: LinkChannel) -> float:
        """Rate alone on the link in the current coherence block; 0 in outage."""
        snr_db = link.snr_db(self.env.now, self._tx_power_dbm[hop.u])
        if self.faults is not None:
            snr_db -= self.faults.loss_db(hop.u, hop.v)  # a deep-fade storm
        hop.snrs_db.append(snr_db)
        return link.cfg.bandwidth_hz * link.spectral_efficiency_bps_hz(snr_db)

    def _attempt(self, hop: _Hop, link: LinkChannel,
                 bits: float) -> Generator[simpy.Event, Any, bool | simpy.Timeout]:
        """One transmission of the whole payload: True when it got through; on an outage,
        False, or the retransmission timer already armed when a later block broke it.

        ``per_block``: the rate follows every coherence block the attempt spans, and a block
        in outage fails it. ``per_attempt``: the first block's rate holds to the end.
        """
        rate_bps = self._block_rate_bps(hop, link)
        if rate_bps <= 0:
            return False
        flow = hop.flow = self._radios_busy.start(bits, rate_bps, self._radios(hop.u, hop.v))
        hop.seg_rate_bps, hop.seg_sent0_bits = rate_bps, 0.0
        if self.faults is not None:
            # A fault that begins mid-flow breaks it (or re-rates it, a storm) through
            # `ended`, exactly as a coherence block in outage does.
            ended = self.env.event()
            flow.done.callbacks.append(Call(_end_once, ended))
            self._fault_flows[flow.seq] = [hop, link, flow, ended]  # the storm loss is in hop.snrs_db[-1]
            if link.cfg.rate_adaptation == "per_block" and link.varies_in_time:
                self._join_clock(hop, link, flow, ended)
            self._fault_loss_db[flow.seq] = self.faults.loss_db(hop.u, hop.v)
            outcome = yield ended
            self._fault_flows.pop(flow.seq, None)
            self._fault_loss_db.pop(flow.seq, None)
            if outcome is not True:
                return outcome
        elif link.cfg.rate_adaptation == "per_block" and link.varies_in_time:
            # Block boundaries are handled by the link class's block clock, not by waking
            # this process: the process wakes once, when the flow ends or a block in
            # outage breaks it.
            ended = self.env.event()
            flow.done.callbacks.append(Call(_end_once, ended))
            self._join_clock(hop, link, flow, ended)
            outcome = yield ended
            if outcome is not True:
                return outcome
        else:
            yield flow.done
        hop.close_segment()  # airtime: the channel's time alone, segment by segment
        hop.flow = None
        return True

    def _join_clock(self, hop: _Hop, link: LinkChannel, flow: Flow, ended: simpy.Event) -> None:
        """Put ``flow`` on the block clock of its link's coherence time.

        Every link of a class has its block boundaries at the same instants k * T_c, so
        one clock per coherence time re-rates all the flows it carries at each boundary:
        two SimPy events per boundary instant, not two per flow and block (with n flows
        sharing a base station's radio each lasting n times longer, those grew as n^2).
        """
        tc = link.cfg.coherence_time_s
        clock = self._clocks.get(tc)
        if clock is None:
            clock = self._clocks[tc] = _BlockClock(tc)
            if self.faults is None:
                clock.group = self._radios_busy.new_group(_HOP_COLUMNS, self._hop_written_back)
        next_block = link.block_index(self.env.now) + 1
        if clock.group is None:
            clock.entries[flow.seq] = [hop, link, flow, ended, next_block]
        else:
            cfg = link.cfg
            try:
                cfg_idx = next(i for i, c in enumerate(clock.cfgs) if c is cfg)
            except StopIteration:
                cfg_idx = len(clock.cfgs)
                clock.cfgs.append(cfg)
            row = clock.gains.row(link.process) if GainTable.tabled(link.process) else -1
            self._radios_busy.adopt(clock.group, flow, (hop, link, flow, ended, hop.snrs_db), (
                next_block, flow.bits, self._tx_power_dbm[hop.u], cfg.bandwidth_hz, hop.p_tx_w,
                hop.p_rx_w, hop.seg_rate_bps, hop.seg_sent0_bits, hop.airtime_s, hop.tx_energy_j,
                hop.rx_energy_j, row, cfg_idx))
        if clock.armed_block is None:
            self._arm_clock(clock, next_block)

    def attach_faults(self, faults: "FaultState") -> None:
        if any(c.group is not None and len(c.group) for c in self._clocks.values()):
            raise RuntimeError("attach_faults: flows already on an array block clock")
        if any(c.group is not None for c in self._clocks.values()):
            self._clocks = {}  # from now on clocks re-rate flow by flow, where the hooks see them
        super().attach_faults(faults)

    @staticmethod
    def _hop_written_back(group: FlowArrays, slot: int, item: Any) -> None:
        """A flow left its clock's arrays: its hop's running account, as of its last block."""
        hop = item[0]
        hop.seg_rate_bps = float(group.seg_rate_bps[slot])  # type: ignore[attr-defined]
        hop.seg_sent0_bits = float(group.seg_sent0_bits[slot])  # type: ignore[attr-defined]
        hop.airtime_s = float(group.airtime_s[slot])  # type: ignore[attr-defined]
        hop.tx_energy_j = float(group.tx_energy_j[slot])  # type: ignore[attr-defined]
        hop.rx_energy_j = float(group.rx_energy_j[slot])  # type: ignore[attr-defined]

    def _arm_clock(self, clock: "_BlockClock", block: int) -> None:
        clock.armed_block = block
        timer = self.env.timeout(delay_to(self.env.now, block * clock.coherence_time_s))
        timer.callbacks.append(Call(self._at_boundary, clock, block))

    def _at_boundary(self, clock: "_BlockClock", block: int) -> None:
        # The flows are re-rated one event after the boundary timer, where a process woken
        # by its own timer through a condition would act: anything already due at this
        # instant (a round deadline's interrupt, a flow's own completion) acts first,
        # exactly as when each boundary woke the hop's process, so results stay bit-identical.
        step = self.env.event()
        step.callbacks.append(Call(self._rerate_blocks, clock, block))
        step.succeed()

    def _rerate_blocks(self, clock: "_BlockClock", block: int) -> None:
        if clock.group is not None:
            self._rerate_block_arrays(clock, clock.group, block)
        else:
            self._rerate_block_flows(clock, block)

    def _rerate_block_arrays(self, clock: "_BlockClock", group: FlowArrays, block: int) -> None:
        """:meth:`_rerate_block_flows` on the clock's arrays: the same floats, element by
        element, in one NumPy call per step instead of a Python pass per flow.

        The links' gains come from the clock's :class:`GainTable` (processes it cannot step
        are asked one by one); SNRs are ``tx + budget + 10 log10(gain)`` in that order, the
        log10 by ``math`` per link (NumPy's SIMD log10 rounds differently); outages are
        handled flow by flow, in start order, before the others' new rates, as before.
        """
        clock.armed_block = None
        radios = self._radios_busy
        group.compact()
        g: Any = group
        due_mask = g.next_block <= block
        due = np.flatnonzero(due_mask)
        if due.size == 0:
            radios.step_group(group, due, np.empty(0))
            if len(group):
                self._arm_clock(clock, block + 1)
            return
        now = self.env.now
        items = group.items
        k = items[int(due[0])][1].block_index(now)
        log10, neg_inf = math.log10, -math.inf
        rows = g.gain_row[due].astype(np.intp)
        fading_db = np.empty(due.size)
        budget_db = np.empty(due.size)
        tabled = rows >= 0
        if tabled.any():
            urows, inverse = np.unique(rows[tabled], return_inverse=True)
            gains = clock.gains.gains(urows, k).tolist()
            fading_db[tabled] = np.array([10.0 * log10(x) if x > 0.0 else neg_inf for x in gains])[inverse]
        due_items = list(map(items.__getitem__, due.tolist()))
        for j in np.flatnonzero(~tabled).tolist():
            gain = due_items[j][1].process.gain(k)
            fading_db[j] = 10.0 * log10(gain) if gain > 0.0 else neg_inf
        budget_db[:] = list(map(_BUDGET, map(_LINK, due_items)))  # relocate() may change it
        snr_db = (g.tx_dbm[due] + budget_db) + fading_db
        # hop.snrs_db.append per flow, without a Python-level loop.
        deque(map(array.append, map(_SNRS, due_items), snr_db.tolist()), maxlen=0)
        cfg_idx = g.cfg_idx[due]
        if len(clock.cfgs) == 1:
            eff = channel.spectral_efficiency_bps_hz(clock.cfgs[0], snr_db)
        else:
            eff = np.empty(due.size)
            for ci, cfg in enumerate(clock.cfgs):
                m = cfg_idx == ci
                if m.any():
                    eff[m] = channel.spectral_efficiency_bps_hz(cfg, snr_db[m])
        rates = g.bandwidth_hz[due] * eff
        out = rates <= 0
        if out.any():
            for i in due[out].tolist():
                hop, link, flow, ended, _snrs = items[i]
                radios.cancel(flow)  # writes the hop's account back (_hop_written_back)
                hop.close_segment()
                hop.flow = None
                # Armed here, at this instant's place in the event order, as the hop's
                # process would have armed it when the failing boundary woke it.
                ended.succeed(self._retx_wait(hop, link))
            due, rates = due[~out], rates[~out]
        radios.step_group(group, due, rates)
        # hop.close_segment() for each: step_group brought the flows to now.
        rem = g.rem[due]
        sent = g.bits[due] - np.where(0.0 > rem, 0.0, rem)
        airtime_s = (sent - g.seg_sent0_bits[due]) / g.seg_rate_bps[due]
        g.airtime_s[due] = g.airtime_s[due] + airtime_s
        g.tx_energy_j[due] = g.tx_energy_j[due] + g.p_tx_w[due] * airtime_s
        g.rx_energy_j[due] = g.rx_energy_j[due] + g.p_rx_w[due] * airtime_s
        g.seg_sent0_bits[due] = sent
        g.seg_rate_bps[due] = rates
        g.next_block[due] = block + 1
        if len(group):
            self._arm_clock(clock, block + 1)

    def _rerate_block_flows(self, clock: "_BlockClock", block: int) -> None:
        """Block ``block`` begins: re-rate each flow on the clock (or drop it in outage), in
        start order, then charge each its segment sent at the old rate.

        The hot loop at scale (one pass per flow and block): the SNR is
        :meth:`LinkChannel.block_snr_db` inlined, with the same additions in the same order;
        ``0.0 if 0.0 > x else x`` is ``max(x, 0.0)`` exactly (NaN and -0.0 included).
        """
        clock.armed_block = None
        now = self.env.now
        entries, tx_power_dbm = clock.entries, self._tx_power_dbm
        due: list[list[Any]] = []
        # The rates of all due flows in one array call per channel config: the array and
        # scalar rate paths agree bit for bit (tested).
        groups: dict[int, tuple[Any, list[int], list[float]]] = {}
        dead: list[int] = []
        k: int | None = None  # the block index of now, the same for every link of this clock
        log10, neg_inf = math.log10, -math.inf
        faults = self.faults
        for seq, entry in entries.items():
            hop, link, flow, ended, next_block = entry
            if hop.flow is not flow or not flow.active or ended.triggered:
                dead.append(seq)  # finished, or aborted, before this block began
                continue
            if next_block > block:
                continue  # started in this very block: its rate is already this block's
            if k is None:
                k = link.block_index(now)
            gain = link.process.gain(k)
            snr_db = tx_power_dbm[hop.u] + link._budget_db + (10.0 * log10(gain) if gain > 0.0 else neg_inf)
            if faults is not None:
                snr_db -= faults.loss_db(hop.u, hop.v)
            hop.snrs_db.append(snr_db)
            cfg = link.cfg
            group = groups.get(id(cfg))
            if group is None:
                group = groups[id(cfg)] = (cfg, [], [])
            group[1].append(len(due))
            group[2].append(snr_db)
            due.append(entry)
        for seq in dead:
            del entries[seq]
        eff: list[float] = [0.0] * len(due)
        for cfg, idx, snrs in groups.values():
            for i, v in zip(idx, channel.spectral_efficiency_bps_hz(cfg, np.array(snrs)).tolist()):
                eff[i] = v
        live: list[list[Any]] = []
        flows: list[Flow] = []
        rates: list[float] = []
        for entry, e in zip(due, eff):
            hop, link, flow, ended, _nb = entry
            rate_bps = link.cfg.bandwidth_hz * e
            if rate_bps <= 0:
                del entries[flow.seq]
                self._radios_busy.cancel(flow)
                hop.close_segment()
                hop.flow = None
                # Armed here, at this instant's place in the event order, as the hop's
                # process would have armed it when the failing boundary woke it.
                ended.succeed(self._retx_wait(hop, link))
                continue
            entry[4] = block + 1
            live.append(entry)
            flows.append(flow)
            rates.append(rate_bps)
        self._radios_busy.set_rates(flows, rates)
        for (hop, _link, flow, _ended, _nb), rate_bps in zip(live, rates):
            # hop.close_segment() inlined: set_rates just brought the flow to now (ref_s ==
            # now), so its bits left are remaining_bits exactly (x - r * 0.0 is x).
            rem = flow.remaining_bits
            sent = flow.bits - (0.0 if 0.0 > rem else rem)
            airtime_s = (sent - hop.seg_sent0_bits) / hop.seg_rate_bps
            hop.airtime_s += airtime_s
            hop.tx_energy_j += hop.p_tx_w * airtime_s
            hop.rx_energy_j += hop.p_rx_w * airtime_s
            hop.seg_sent0_bits = sent
            hop.seg_rate_bps = rate_bps
        if entries:
            self._arm_clock(clock, block + 1)

    def _retx_wait(self, hop: _Hop, link: LinkChannel) -> simpy.Timeout:
        """After an outage the sender transmits until the ACK timeout, then tries again."""
        hop.wait_start_s = self.env.now
        return self.env.timeout(link.cfg.retx_timeout_s)

    def _abort_hop(self, hop: _Hop) -> None:
        """Charge what an interrupted hop used up to now and free its bandwidth."""
        if hop.flow is not None:
            self._radios_busy.cancel(hop.flow)
            hop.close_segment()
            hop.flow = None
        elif hop.wait_start_s is not None:
            hop.charge(self.env.now - hop.wait_start_s, rx=False)
            hop.wait_start_s = None
        hop.delivered = False

    def _close_hop(self, hop: _Hop, size_bytes: int, stage: str, tag: str) -> None:
        key = edge_key(hop.u, hop.v)
        self._airtime_s[key] += hop.airtime_s
        if hop.delivered:
            self._bytes[key] += size_bytes
        device_j = self._device_share_j(hop)
        self.recorder.add(HopRecord(
            system=self.system, stage=stage, tag=tag, u=str(hop.u), v=str(hop.v),
            direction=self.direction(hop.u, hop.v), size_bytes=size_bytes,
            start_s=hop.start_s, end_s=self.env.now, attempts=hop.attempts,
            delivered=hop.delivered, airtime_s=hop.airtime_s, tx_energy_j=hop.tx_energy_j,
            rx_energy_j=hop.rx_energy_j, snr_db=hop.mean_snr_db, device_energy_j=device_j,
            infrastructure_energy_j=hop.tx_energy_j + hop.rx_energy_j - device_j,
        ))
