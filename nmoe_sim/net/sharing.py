"""Bandwidth budgets as fluid processor sharing: each radio is time-shared by its flows.

Pure scheduling, no channel model: a flow arrives with its bits and the rate it would get
alone (``rate_full_bps``, from the link's SNR); the scheduler divides each radio's time
equally among the flows on it. Two equal flows on one radio each take twice as long as
one alone. A flow's own rate may change while it is served (block fading: the rate follows
the SNR of each coherence block). :class:`nmoe_sim.net.network.Network` owns one instance
per simulated world.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Hashable

import simpy


@dataclass(eq=False)
class Flow:
    """One hop's payload in service: ``rate_bps = share * rate_full_bps``."""

    bits: float
    rate_full_bps: float
    radios: tuple[Hashable, ...]
    done: simpy.Event
    remaining_bits: float
    rate_bps: float = 0.0

    @property
    def sent_bits(self) -> float:
        return self.bits - max(self.remaining_bits, 0.0)


class SharedRadios:
    """Fluid processor sharing: each radio is time-shared equally among its active flows.

    A flow's share is the minimum over its radios of 1 / (active flows on that radio). Rates
    are recomputed whenever a flow starts, ends or changes its rate; a version counter invalidates the timer
    set for the previous earliest completion, so only the latest timer completes flows.
    """

    # Flows within this fraction of their size of the end finish together with the due one.
    REL_TOL = 1e-9

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._flows: list[Flow] = []
        self._last_s = env.now
        self._version = 0

    @property
    def active(self) -> int:
        return len(self._flows)

    def start(self, bits: float, rate_full_bps: float, radios: tuple[Hashable, ...]) -> Flow:
        if not (bits > 0 and rate_full_bps > 0):
            raise ValueError(f"flow needs bits > 0 and rate > 0 (got {bits}, {rate_full_bps})")
        self._advance()
        flow = Flow(bits, rate_full_bps, radios, self.env.event(), remaining_bits=bits)
        self._flows.append(flow)
        self._reschedule()
        return flow

    def set_rate(self, flow: Flow, rate_full_bps: float) -> None:
        """Change the rate ``flow`` would get alone from now on (a new coherence block)."""
        if not rate_full_bps > 0:
            raise ValueError(f"flow rate must be > 0 (got {rate_full_bps})")
        self._advance()
        flow.rate_full_bps = rate_full_bps
        if flow in self._flows:
            self._reschedule()

    def cancel(self, flow: Flow) -> None:
        """Stop serving ``flow`` now (its bits sent so far stay in ``flow.sent_bits``)."""
        self._advance()
        if flow in self._flows:
            self._flows.remove(flow)
            self._reschedule()

    def _advance(self) -> None:
        dt = self.env.now - self._last_s
        if dt > 0:
            for f in self._flows:
                f.remaining_bits -= f.rate_bps * dt
        self._last_s = self.env.now

    def _reschedule(self) -> None:
        self._version += 1
        if not self._flows:
            return
        load = Counter(r for f in self._flows for r in f.radios)
        for f in self._flows:
            f.rate_bps = f.rate_full_bps / max(load[r] for r in f.radios)
        left_s = [max(f.remaining_bits, 0.0) / f.rate_bps for f in self._flows]
        dt = min(left_s)
        # Remember which flows are due: with large `now`, now + dt - now may not round back
        # to dt, so "remaining <= tol" alone could leave the due flow a sliver short forever.
        due = [f for f, s in zip(self._flows, left_s) if s <= dt * (1 + self.REL_TOL)]
        version = self._version
        timer = self.env.timeout(dt)
        timer.callbacks.append(lambda _ev: self._on_timer(version, due))

    def _on_timer(self, version: int, due: list[Flow]) -> None:
        if version != self._version:
            return  # a flow started or ended since: a newer timer is pending
        self._advance()
        done = set(due) | {f for f in self._flows if f.remaining_bits <= self.REL_TOL * f.bits}
        finished = [f for f in self._flows if f in done]  # start order: deterministic
        for f in finished:
            f.remaining_bits = 0.0
            self._flows.remove(f)
        self._reschedule()
        for f in finished:
            f.done.succeed()
