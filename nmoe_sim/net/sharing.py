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
from typing import Any, Callable, Hashable

import simpy


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

    def remaining_at(self, now_s: float) -> float:
        return self.remaining_bits - self.rate_bps * (now_s - self.ref_s)

    @property
    def sent_bits(self) -> float:
        now = self.env.now if self.env is not None else self.ref_s
        return self.bits - max(self.remaining_at(now), 0.0)


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

    @property
    def active(self) -> int:
        return self._active

    def start(self, bits: float, rate_full_bps: float, radios: tuple[Hashable, ...]) -> Flow:
        if not (bits > 0 and rate_full_bps > 0):
            raise ValueError(f"flow needs bits > 0 and rate > 0 (got {bits}, {rate_full_bps})")
        flow = Flow(bits, rate_full_bps, radios, self.env.event(), remaining_bits=bits,
                    ref_s=self.env.now, seq=next(self._seq), env=self.env)
        for r in radios:
            self._on_radio.setdefault(r, {})[flow.seq] = flow
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

    def cancel(self, flow: Flow) -> None:
        """Stop serving ``flow`` now (its bits sent so far stay in ``flow.sent_bits``)."""
        if flow.active:
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
        if len(heap) > 4 * self._active + 1024:
            # Stale entries (superseded finish times) pile up n per event on a crowded
            # radio; dropping them keeps memory to the live flows. The heap's order is a
            # total order on (finish_s, seq), so its layout never changes which flow is next.
            self._heap = heap = [e for e in heap if e[2] == e[3].version]
            heapq.heapify(heap)
        self._schedule_wake()

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
        return self._heap[0] if self._heap else None

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
            # Due, or within rounding of its end (with large `now`, now + dt - now need not
            # round back to dt, so a due flow can be a sliver short).
            if finish_s <= now or f.remaining_at(now) <= self.REL_TOL * f.bits:
                heapq.heappop(self._heap)
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
