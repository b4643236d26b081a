"""Bandwidth budgets as fluid processor sharing: each radio is time-shared by its flows.

Pure scheduling, no channel model: a flow arrives with its bits and the rate it would get
alone (``rate_full_bps``, from the link's SNR); the scheduler divides each radio's time
equally among the flows on it. Two equal flows on one radio each take twice as long as
one alone. A flow's own rate may change while it is served (block fading: the rate follows
the SNR of each coherence block). :class:`nmoe_sim.net.network.Network` owns one instance
per simulated world.

The cost of an event grows with the flows it touches, not with every flow in the world:
a flow's progress is kept lazily (bits left at a reference time, and its rate since), so
an event updates only the flows that share a radio with the flow that started or ended,
or the one flow whose rate changed; completions come from a heap of finish times.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Callable, Hashable

import numpy as np
import simpy

_SLOT = attrgetter("slot")


class Call:
    """``lambda _event: fn(*args)`` as an object that pickles (``fn`` a bound method), so a
    checkpoint can save the timers queued with it (``engine/checkpoint.py``)."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn, self.args = fn, args

    def __call__(self, _event: Any) -> None:
        self.fn(*self.args)


@dataclass(eq=False)
class Flow:
    """One hop's payload in service: ``rate_bps = share * rate_full_bps``."""

    bits: float
    rate_full_bps: float
    radios: tuple[Hashable, ...]
    done: simpy.Event
    remaining_bits: float  # as of ``ref_s``
    rate_bps: float = 0.0
    ref_s: float = 0.0
    seq: int = 0  # start order: ties complete in it, deterministically
    version: int = 0  # bumped whenever its finish time changes; stale heap entries skip
    active: bool = True
    env: simpy.Environment | None = field(default=None, repr=False)
    # While a member of a FlowArrays its arrays hold the four fields above them that
    # change (remaining_bits, ref_s, rate_bps, rate_full_bps); they are written back when
    # it leaves.
    group: "FlowArrays | None" = field(default=None, repr=False)
    slot: int = -1
    # Its radios' flow tables (SharedRadios._on_radio's values, which live as long as the
    # scheduler): its share divisor is max(map(len, radio_flows)), without the lookups.
    radio_flows: tuple[dict[int, "Flow"], ...] = field(default=(), repr=False)

    def remaining_at(self, now_s: float) -> float:
        return self.remaining_bits - self.rate_bps * (now_s - self.ref_s)

    @property
    def sent_bits(self) -> float:
        now = self.env.now if self.env is not None else self.ref_s
        return self.bits - max(self.remaining_at(now), 0.0)


class FlowArrays:
    """Flows re-rated together (one block clock's), their state as arrays in start order.

    A block clock gives every flow it carries a new rate at every boundary: one
    :meth:`SharedRadios.set_rates` pass and one heap entry per flow and block, n^2 of them
    when n flows share a radio for n times as long. A member's bits left, reference time,
    rates, share divisor and finish estimate live here instead, so a boundary is a few
    array operations (:meth:`SharedRadios.step_group`), each element computed with the
    scalar path's float operations in the same order (``x - r * 0.0`` is ``x`` for the
    finite rates used, so the sync is unconditional), and the group counts in the heap's
    order through its earliest (finish, seq) (:meth:`SharedRadios._top`): every wake, and
    every stale wake, falls where it did. ``extra`` names columns the owner keeps per member
    (the hop's running airtime and energy); ``on_release(group, slot, item)`` is called
    when a member leaves, before its slot is freed, so the owner can write them back.
    """

    CORE = ("rem", "ref", "rate", "rate_full", "div", "finish")

    def __init__(self, extra: tuple[str, ...] = (),
                 on_release: Callable[["FlowArrays", int, Any], None] | None = None) -> None:
        self.names = self.CORE + tuple(extra)
        for name in self.names:
            setattr(self, name, np.empty(0))
        self.flows: list[Flow] = []
        self.items: list[Any] = []
        self.alive = np.empty(0, dtype=bool)
        self.on_release = on_release
        self._pending: list[tuple[Flow, Any, tuple[float, ...]]] = []
        self._dead = 0

    def __len__(self) -> int:
        return len(self.flows) - self._dead + len(self._pending)

    def flush(self) -> None:
        """Members added since the last call get their slots (joins come in bursts)."""
        if not self._pending:
            return
        base = len(self.flows)
        values = np.array([v for _, _, v in self._pending], dtype=float).reshape(len(self._pending), -1)
        for j, name in enumerate(self.names):
            setattr(self, name, np.concatenate([getattr(self, name), values[:, j]]))
        for i, (f, item, _) in enumerate(self._pending):
            f.slot = base + i
            self.flows.append(f)
            self.items.append(item)
        self.alive = np.concatenate([self.alive, np.ones(len(self._pending), dtype=bool)])
        self._pending = []

    def compact(self) -> None:
        """Drop the slots of members that left (slots move: only between boundaries' work)."""
        self.flush()
        if not self._dead:
            return
        keep = self.alive
        for name in self.names:
            setattr(self, name, getattr(self, name)[keep])
        idx = np.flatnonzero(keep).tolist()
        self.flows = [self.flows[i] for i in idx]
        self.items = [self.items[i] for i in idx]
        for slot, f in enumerate(self.flows):
            f.slot = slot
        self.alive = np.ones(len(self.flows), dtype=bool)
        self._dead = 0

    def rerate(self, slots: np.ndarray, now_s: float, rates_full_bps: np.ndarray, div: np.ndarray) -> None:
        """set_rate's arithmetic for the members at ``slots``: brought to ``now_s``, their
        rates ``rates_full_bps / div``, and their finish estimates."""
        rem = self.rem[slots] - self.rate[slots] * (now_s - self.ref[slots])
        rate = rates_full_bps / div
        self.rem[slots], self.ref[slots], self.rate[slots] = rem, now_s, rate
        self.finish[slots] = now_s + np.where(0.0 > rem, 0.0, rem) / rate

    def remaining_at(self, slot: int, now_s: float) -> float:
        """Flow.remaining_at of a member, from its arrays."""
        return float(self.rem[slot]) - float(self.rate[slot]) * (now_s - float(self.ref[slot]))

    def top(self) -> tuple[float, int, int, Flow] | None:
        """The member first in the heap's order (finish_s, seq), as a heap-entry tuple."""
        self.flush()
        if len(self.flows) == self._dead:
            return None
        i = int(np.argmin(self.finish))  # first of equal minima: slots are in start order
        if not self.alive[i]:  # only when every live finish estimate is inf
            i = int(np.flatnonzero(self.alive)[0])
        f = self.flows[i]
        return (float(self.finish[i]), f.seq, f.version, f)

    def release(self, flow: Flow, now_s: float) -> None:
        """``flow`` leaves (finished or cancelled): brought to ``now_s`` and written back."""
        self.flush()
        slot = flow.slot
        if self.on_release is not None:
            self.on_release(self, slot, self.items[slot])
        rem, ref = float(self.rem[slot]), float(self.ref[slot])
        rate = float(self.rate[slot])
        if now_s != ref:
            rem, ref = rem - rate * (now_s - ref), now_s
        flow.remaining_bits, flow.ref_s, flow.rate_bps = rem, ref, rate
        flow.rate_full_bps = float(self.rate_full[slot])
        self.alive[slot] = False
        self.finish[slot] = math.inf
        self._dead += 1
        flow.group, flow.slot = None, -1


class SharedRadios:
    """Fluid processor sharing: each radio is time-shared equally among its active flows.

    A flow's share is the minimum over its radios of 1 / (active flows on that radio).
    """

    # Flows within this fraction of their size of the end finish together with the due one.
    REL_TOL = 1e-9

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._on_radio: dict[Hashable, dict[int, Flow]] = {}  # radio -> its flows by seq (start order)
        self._heap: list[tuple[float, int, int, Flow]] = []  # (finish_s, seq, version, flow)
        self._seq = itertools.count()
        self._wake_version = 0
        self._wake_at_s: float | None = None
        self._active = 0
        self._groups: list[FlowArrays] = []

    @property
    def active(self) -> int:
        return self._active

    def start(self, bits: float, rate_full_bps: float, radios: tuple[Hashable, ...]) -> Flow:
        if not (bits > 0 and rate_full_bps > 0):
            raise ValueError(f"flow needs bits > 0 and rate > 0 (got {bits}, {rate_full_bps})")
        flow = Flow(bits, rate_full_bps, radios, self.env.event(), remaining_bits=bits,
                    ref_s=self.env.now, seq=next(self._seq), env=self.env)
        flow.radio_flows = tuple(self._on_radio.setdefault(r, {}) for r in radios)
        for on_r in flow.radio_flows:
            on_r[flow.seq] = flow
        self._active += 1
        self._rerate(self._sharing(flow))
        return flow

    def set_rate(self, flow: Flow, rate_full_bps: float) -> None:
        """Change the rate ``flow`` would get alone from now on (a new coherence block)."""
        if not rate_full_bps > 0:
            raise ValueError(f"flow rate must be > 0 (got {rate_full_bps})")
        flow.rate_full_bps = rate_full_bps
        if flow.active:
            self._rerate([flow])  # its radios' loads are unchanged: no one else's share moves

    def set_rates(self, flows: list[Flow], rates_full_bps: list[float]) -> None:
        """:meth:`set_rate` for many flows at one instant (a coherence-block boundary shared
        by every flow of a link class), with one wake scheduled for them all.

        Each flow gets exactly the arithmetic of its own :meth:`set_rate` call; only the
        wake is scheduled once, and wakes fire at the absolute finish time (see
        :func:`delay_to`), so not scheduling the intermediate ones moves no event.
        """
        now, heap, on_radio = self.env.now, self._heap, self._on_radio
        for f, rate_full_bps in zip(flows, rates_full_bps):
            if not rate_full_bps > 0:
                raise ValueError(f"flow rate must be > 0 (got {rate_full_bps})")
            f.rate_full_bps = rate_full_bps
            if not f.active:
                continue
            if now != f.ref_s:
                f.remaining_bits = f.remaining_bits - f.rate_bps * (now - f.ref_s)
                f.ref_s = now
            share_div = 0
            for r in f.radios:
                n = len(on_radio[r])
                if n > share_div:
                    share_div = n
            f.rate_bps = rate_bps = rate_full_bps / share_div
            f.version += 1
            rem = f.remaining_bits
            # (0.0 if 0.0 > rem else rem) is max(rem, 0.0) exactly, without the call.
            heapq.heappush(heap, (now + (0.0 if 0.0 > rem else rem) / rate_bps, f.seq, f.version, f))
        if len(heap) > 4 * self._active + 1024:
            self._heap = heap = [e for e in heap if e[2] == e[3].version]
            heapq.heapify(heap)
        self._schedule_wake()

    def new_group(self, extra: tuple[str, ...] = (),
                  on_release: Callable[[FlowArrays, int, Any], None] | None = None) -> FlowArrays:
        """A :class:`FlowArrays` whose members this scheduler serves from their arrays."""
        group = FlowArrays(extra, on_release)
        self._groups.append(group)
        return group

    def adopt(self, group: FlowArrays, flow: Flow, item: Any, extra: tuple[float, ...]) -> None:
        """Move the just-started, active ``flow`` into ``group`` (``extra``: the owner's columns)."""
        now = self.env.now
        if flow.group is not None or not flow.active or flow.ref_s != now:
            raise ValueError("adopt: only a flow started at this instant, not in a group")
        share_div = max(map(len, flow.radio_flows), default=0)
        rem = flow.remaining_bits
        # Its heap entry's finish time, recomputed from the same values; the entry goes stale.
        finish_s = now + (0.0 if 0.0 > rem else rem) / flow.rate_bps
        flow.version += 1
        flow.group = group
        group._pending.append((flow, item, (rem, flow.ref_s, flow.rate_bps, flow.rate_full_bps,
                                            float(share_div), finish_s) + tuple(extra)))

    def step_group(self, group: FlowArrays, slots: np.ndarray, rates_full_bps: np.ndarray) -> None:
        """:meth:`set_rates` for the members of ``group`` at ``slots`` (active, in start
        order), as array operations: each element gets set_rate's arithmetic, and the
        share divisors are the ones the last re-rate of each flow computed (a radio's load
        changes only with a start or an end, which re-rates every flow on it)."""
        if not bool(np.all(rates_full_bps > 0)):
            raise ValueError(f"flow rate must be > 0 (got {rates_full_bps[~(rates_full_bps > 0)][:1]})")
        group.rate_full[slots] = rates_full_bps
        group.rerate(slots, self.env.now, rates_full_bps, group.div[slots])
        self._schedule_wake()

    def cancel(self, flow: Flow) -> None:
        """Stop serving ``flow`` now (its bits sent so far stay in ``flow.sent_bits``)."""
        if flow.active:
            if flow.group is not None:
                flow.group.release(flow, self.env.now)
            self._sync(flow)
            self._remove(flow)

    # ------------------------------------------------------------------ internals
    def _sharing(self, flow: Flow) -> list[Flow]:
        """The flows whose share depends on ``flow``'s radios (itself included), in start order."""
        seen: dict[int, Flow] = {}
        for r in flow.radios:
            seen.update(self._on_radio.get(r, {}))
        return [seen[k] for k in sorted(seen)]

    def _sync(self, flow: Flow) -> None:
        """Bring a flow's bits left up to now, at the rate it had since its reference time."""
        now = self.env.now
        if now != flow.ref_s:
            flow.remaining_bits = flow.remaining_at(now)
            flow.ref_s = now

    def _rerate(self, flows: list[Flow]) -> None:
        """Recompute the shares of ``flows`` and their finish times; wake at the earliest."""
        # The hot loop of a crowded radio (every flow on a base station's radio is re-rated
        # when one joins or leaves): radio loads are looked up once per call, and _sync is
        # inlined with the same arithmetic.
        now, on_radio, heap = self.env.now, self._on_radio, self._heap
        load: dict[Hashable, int] = {}
        grouped: list[Flow] = []
        if self._groups:
            for g in self._groups:
                g.flush()
            grouped = [f for f in flows if f.group is not None]
            if grouped:
                flows = [f for f in flows if f.group is None]
        for f in flows:
            if now != f.ref_s:
                f.remaining_bits = f.remaining_bits - f.rate_bps * (now - f.ref_s)
                f.ref_s = now
            share_div = 0
            for r in f.radios:
                n = load.get(r)
                if n is None:
                    n = load[r] = len(on_radio[r])
                if n > share_div:
                    share_div = n
            f.rate_bps = f.rate_full_bps / share_div
            f.version += 1
            finish_s = now + max(f.remaining_bits, 0.0) / f.rate_bps
            heapq.heappush(heap, (finish_s, f.seq, f.version, f))
        if grouped:
            self._rerate_grouped(grouped, now)
        if len(heap) > 4 * self._active + 1024:
            # Stale entries (superseded finish times) pile up n per event on a crowded
            # radio; dropping them keeps memory to the live flows. The heap's order is a
            # total order on (finish_s, seq), so its layout never changes which flow is next.
            self._heap = heap = [e for e in heap if e[2] == e[3].version]
            heapq.heapify(heap)
        self._schedule_wake()

    def _rerate_grouped(self, flows: list[Flow], now: float) -> None:
        """:meth:`_rerate`'s arithmetic for flows held in groups, one array pass per group."""
        for g in self._groups:
            mine = flows if len(self._groups) == 1 else [f for f in flows if f.group is g]
            if not mine:
                continue
            slots = np.fromiter(map(_SLOT, mine), dtype=np.intp, count=len(mine))
            # The share divisor as _rerate computes it: the largest load among its radios.
            div = np.array([max(map(len, f.radio_flows)) for f in mine], dtype=float)
            g.div[slots] = div
            g.rerate(slots, now, g.rate_full[slots], div)

    def _remove(self, flow: Flow) -> None:
        for r in flow.radios:
            del self._on_radio[r][flow.seq]
        flow.active = False
        self._active -= 1
        flow.version += 1  # its heap entries are stale now
        self._rerate(self._sharing(flow))

    def _top(self) -> tuple[float, int, int, Flow] | None:
        while self._heap and self._heap[0][2] != self._heap[0][3].version:
            heapq.heappop(self._heap)
        top = self._heap[0] if self._heap else None
        for g in self._groups:
            t = g.top()
            if t is not None and (top is None or (t[0], t[1]) < (top[0], top[1])):
                top = t
        return top

    def _schedule_wake(self) -> None:
        top = self._top()
        if top is None or (self._wake_at_s is not None and self._wake_at_s <= top[0]):
            return  # nothing to finish, or an earlier (or equal) wake is already pending
        self._wake_version += 1
        version, self._wake_at_s = self._wake_version, top[0]
        timer = self.env.timeout(delay_to(self.env.now, top[0]))
        timer.callbacks.append(Call(self._on_wake, version))

    def _on_wake(self, version: int) -> None:
        if version != self._wake_version:
            return  # superseded by an earlier wake
        self._wake_at_s = None
        now = self.env.now
        finished: list[Flow] = []
        while (top := self._top()) is not None:
            finish_s, _, _, f = top
            g = f.group
            # Due, or within rounding of its end (with large `now`, now + dt - now need not
            # round back to dt, so a due flow can be a sliver short).
            if finish_s <= now or (f.remaining_at(now) if g is None else g.remaining_at(f.slot, now)) \
                    <= self.REL_TOL * f.bits:
                if g is None:
                    heapq.heappop(self._heap)
                else:
                    g.release(f, now)
                finished.append(f)
                f.version += 1
            else:
                break
        affected: dict[int, Flow] = {}
        for f in sorted(finished, key=lambda g: g.seq):  # start order: deterministic
            f.remaining_bits, f.ref_s = 0.0, now
            for r in f.radios:
                del self._on_radio[r][f.seq]
            f.active = False
            self._active -= 1
        for f in finished:
            for g in self._sharing(f):
                affected[g.seq] = g
        self._rerate([affected[k] for k in sorted(affected)])
        for f in sorted(finished, key=lambda g: g.seq):
            f.done.succeed()


def delay_to(now_s: float, at_s: float) -> float:
    """The delay that makes SimPy's ``now + delay`` land exactly on ``at_s`` (0 if past).

    ``now + (at - now)`` can miss ``at`` by an ulp when ``at - now`` is not exact (at more
    than twice now); nudging the delay by ulps fixes it, so an event's time depends only
    on the time it is meant for, never on when it was scheduled.
    """
    if at_s <= now_s:
        return 0.0
    delay = at_s - now_s
    while now_s + delay < at_s:
        delay = math.nextafter(delay, math.inf)
    while now_s + delay > at_s:
        delay = math.nextafter(delay, -math.inf)
    return delay
