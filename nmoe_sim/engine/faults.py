"""Injected faults in simulated time: the state one Sim's network, executor and round
driver consult, and the timers that change it on schedule.

:class:`FaultState` is the only thing the hooks read: which nodes are crashed, which
links and radios are down, whether the base station is out, each node's compute slowdown
and each link's extra loss, all *as of now*. It is plain counters and dicts (no closures),
and every random draw comes from a named stream of :class:`~nmoe_sim.seeds.SeedStreams`
(``faults/crash``, ``faults/crash_rate/<client>``, ``faults/dropout/<stage>/r<round>``).

Each pending change is a queued timer whose callback is a picklable
:class:`~nmoe_sim.net.sharing.Call` (a module-level function or a bound method with its
arguments), never a waiting generator: so at a round boundary nothing but the saving
process is alive and a checkpoint saves the pending faults with the environment's queue
(``engine/checkpoint.py``). A timer is created where the process it replaces created its
first timeout, and each next one inside the callback of the previous at the same instant,
so every simulated time and the order of every tie are what generator processes gave.

Each fault kind of ``faults.events`` has an applier in :data:`APPLIERS`, keyed by the
kind names of :data:`~nmoe_sim.engine.fault_config.FAULT_KINDS`. docs/faults.md gives
the semantics of each; the network's and the executor's use of this state is in
``net/network.py`` and ``engine/executors.py``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Hashable, Iterable, Sequence

import networkx as nx
import numpy as np
import simpy

from nmoe_sim.engine.fault_config import (
    BsOutageFault, CrashFault, CrashRateFault, DropoutFault, FaultsConfig, LinkDownFault, RadioDownFault,
    StormFault, StragglerFault,
)
from nmoe_sim.errors import ConfigError
from nmoe_sim.net.sharing import Call
from nmoe_sim.record import FailureReason, FaultRecord, Recorder
from nmoe_sim.registry import Registry
from nmoe_sim.seeds import SeedStreams

BS = "bs"
Link = tuple[Hashable, Hashable]


def _canon(u: Hashable, v: Hashable) -> Link:
    from nmoe_sim.net.network import edge_key  # the network's own canonical orientation

    return edge_key(u, v)


class FaultState:
    """What is broken right now in one simulated world, and who to tell when it changes."""

    def __init__(self, cfg: FaultsConfig, env: simpy.Environment, graph: nx.Graph, streams: SeedStreams,
                 recorder: Recorder, *, system: str) -> None:
        self.cfg, self.env, self.graph, self.streams = cfg, env, graph, streams
        self.recorder, self.system = recorder, system
        self.stage = ""  # the stage the system last started work in (stamped on fault records)
        self.crashed: Counter[Hashable] = Counter()
        self.radio_down: Counter[Hashable] = Counter()
        self.link_down: Counter[Link] = Counter()
        self.bs_down = 0
        self.slowdown: dict[Hashable, list[float]] = {}
        self.extra_loss_db: dict[Link, list[float]] = {}
        self.dropout_p = 0.0  # set by the dropout applier
        self._watch: dict[Hashable, dict[simpy.Process, None]] = {}  # an ordered set per node
        self.on_change: list[Callable[[], None]] = []  # the network re-checks its flows
        for i, ev in enumerate(cfg.events):
            APPLIERS.get(ev.kind, f"faults.events.{i}.kind")(self, ev, f"faults.events.{i}")

    # ------------------------------------------------------------------ queries (as of now)
    def node_down(self, node: Hashable) -> FailureReason | None:
        """Why ``node`` cannot transmit or receive now, or None."""
        if self.crashed[node]:
            return FailureReason.CRASHED
        if node == BS and self.bs_down:
            return FailureReason.BS_OUTAGE
        if self.radio_down[node]:
            return FailureReason.LINK_DOWN
        return None

    def hop_down(self, u: Hashable, v: Hashable) -> FailureReason | None:
        """Why the hop u -> v carries nothing now, or None."""
        why = self.node_down(u) or self.node_down(v)
        if why is None and self.link_down[_canon(u, v)]:
            why = FailureReason.LINK_DOWN
        return why

    def loss_db(self, u: Hashable, v: Hashable) -> float:
        """Extra attenuation on link (u, v) now (storms add up in dB)."""
        losses = self.extra_loss_db.get(_canon(u, v))
        return sum(losses) if losses else 0.0

    def compute_time_s(self, node: Hashable, flops: float, flops_per_s: float) -> float:
        """A computation starting now: FLOP/s divided by the product of active slowdowns."""
        factor = math.prod(self.slowdown.get(node, ()))
        return flops * factor / flops_per_s if factor != 1.0 else flops / flops_per_s

    def path_down(self, path: Sequence[Hashable]) -> FailureReason | None:
        for u, v in zip(path, path[1:]):
            if (why := self.hop_down(u, v)) is not None:
                return why
        return None

    # ------------------------------------------------------------------ round participation
    def absent(self, stage: str, rnd: int, participants: Sequence[int]) -> dict[int, FailureReason]:
        """Participants that do nothing in this round: crashed now, or dropped out.

        The dropout draws come from a stream named by stage and round, one uniform per
        participant in client order, so every system (and a resumed run) draws the same.
        """
        out: dict[int, FailureReason] = {}
        draws = (self.streams.numpy(f"faults/dropout/{stage}/r{rnd}").random(len(participants))
                 if self.dropout_p > 0 else np.ones(len(participants)))
        for c, u in zip(participants, draws):
            if self.crashed[c]:
                out[c] = FailureReason.CRASHED
            elif u < self.dropout_p:
                out[c] = FailureReason.DROPPED_OUT
                self.record("dropout", FailureReason.DROPPED_OUT, float(self.env.now), float(self.env.now), node=c,
                            stage=stage)
        return out

    def watch(self, node: Hashable, proc: simpy.Process) -> None:
        """Interrupt ``proc`` with cause 'crashed' if ``node`` crashes while it runs."""
        self._watch.setdefault(node, {})[proc] = None

    def unwatch(self, node: Hashable, proc: simpy.Process) -> None:
        self._watch.get(node, {}).pop(proc, None)

    # ------------------------------------------------------------------ changes
    def record(self, tag: str, reason: str, start_s: float, end_s: float, *, node: Hashable = "",
               link: Link | None = None, stage: str | None = None) -> None:
        src, dst = (str(link[0]), str(link[1])) if link is not None else ("", "")
        self.recorder.add(FaultRecord(self.system, self.stage if stage is None else stage, tag, str(reason),
                                      start_s, end_s, str(node), src, dst))

    def changed(self) -> None:
        for fn in self.on_change:
            fn()

    def crash(self, node: Hashable) -> None:
        self.crashed[node] += 1
        # In the order they were watched, so the interrupts' event order is reproducible.
        for proc in list(self._watch.get(node, ())):
            if proc.is_alive:
                proc.interrupt(FailureReason.CRASHED)
        self.changed()

    def rejoin(self, node: Hashable) -> None:
        self.crashed[node] -= 1
        self.changed()

    def after(self, delay_s: float, fn: Callable[..., None], *args: Any) -> None:
        """Call ``fn(*args)`` ``delay_s`` from now: a queued timer that a checkpoint can save
        (``fn`` a module-level function or a bound method, as :class:`Call` needs)."""
        self.env.timeout(delay_s).callbacks.append(Call(fn, *args))

    def interval(self, start_s: float, end_s: float, on: Call, off: Call) -> None:
        """Run ``on`` at start_s and ``off`` at end_s of this world's clock.

        A fault from time 0 holds from the start: applied here, before any process of the
        world runs (a process would act only after those started at 0 took their first step).
        ``on`` and ``off`` are :class:`Call` objects (called with no event: ``None``).
        """
        if start_s <= self.env.now:
            on(None)
            self.after(end_s - self.env.now, self._interval_end, off)
        else:
            self.after(start_s, self._interval_begin, end_s, on, off)

    def _interval_begin(self, end_s: float, on: Call, off: Call) -> None:
        on(None)
        self.changed()
        # end_s - now, as the generator it replaces computed its second timeout.
        self.after(end_s - self.env.now, self._interval_end, off)

    def _interval_end(self, off: Call) -> None:
        off(None)
        self.changed()

# ---------------------------------------------------------------------- appliers
APPLIERS: Registry[Callable[[FaultState, Any, str], None]] = Registry("fault kind")


def _client(state: FaultState, c: int, key: str) -> int:
    if not (isinstance(c, int) and c in state.graph and c != BS):
        raise ConfigError(f"{key}: client {c} is not in the topology (clients 0..{_n_clients(state) - 1})")
    return c


def _n_clients(state: FaultState) -> int:
    return sum(1 for n in state.graph.nodes if n != BS)


def _node(state: FaultState, n: Hashable, key: str) -> Hashable:
    if n not in state.graph:
        raise ConfigError(f"{key}: node {n!r} is not in the topology (clients 0..{_n_clients(state) - 1} and bs)")
    return n


def _link(state: FaultState, link: Iterable[Hashable], key: str) -> Link:
    u, v = link
    if not state.graph.has_edge(u, v):
        raise ConfigError(f"{key}: no link {u}-{v} in the topology")
    return _canon(u, v)


@APPLIERS.register("crash")
def _crash(state: FaultState, ev: CrashFault, key: str) -> None:
    if ev.clients is not None:
        clients = [_client(state, c, f"{key}.clients") for c in ev.clients]
    else:
        n = _n_clients(state)
        k = max(1, math.floor(ev.fraction * n + 0.5))  # half up: 0.5 of 5 clients is 3, not round()'s 2
        clients = sorted(int(c) for c in state.streams.numpy("faults/crash").choice(n, size=k, replace=False))
    for c in clients:
        if ev.at_s <= state.env.now:  # down from the start (see FaultState.interval)
            _crash_now(state, c, ev.downtime_s)
            if ev.downtime_s is not None:
                state.after(ev.downtime_s, state.rejoin, c)
        else:
            state.after(ev.at_s, _crash_for, state, c, ev.downtime_s)


def _crash_for(state: FaultState, c: int, downtime_s: float | None) -> None:
    """Crash ``c`` now, and rejoin it ``downtime_s`` later (never, if None)."""
    _crash_now(state, c, downtime_s)
    if downtime_s is not None:
        state.after(downtime_s, state.rejoin, c)


def _crash_now(state: FaultState, c: int, downtime_s: float | None) -> None:
    now = float(state.env.now)
    state.record("crash", FailureReason.CRASHED, now, math.inf if downtime_s is None else now + downtime_s, node=c)
    state.crash(c)


@APPLIERS.register("crash_rate")
def _crash_rate(state: FaultState, ev: CrashRateFault, key: str) -> None:
    clients = ([_client(state, c, f"{key}.clients") for c in ev.clients] if ev.clients is not None
               else list(range(_n_clients(state))))
    for c in clients:
        _next_poisson_crash(state, c, ev.rate_hz, ev.downtime_s, state.streams.numpy(f"faults/crash_rate/{c}"))


# Each client's crashes go on while the world runs (the next is drawn when it rejoins);
# systems run with env.run(until=their process), so a pending crash does not keep a
# finished simulation alive.
def _next_poisson_crash(state: FaultState, c: int, rate_hz: float, downtime_s: float,
                        rng: np.random.Generator) -> None:
    state.after(float(rng.exponential(1.0 / rate_hz)), _poisson_crash, state, c, rate_hz, downtime_s, rng)


def _poisson_crash(state: FaultState, c: int, rate_hz: float, downtime_s: float, rng: np.random.Generator) -> None:
    _crash_now(state, c, downtime_s)
    state.after(downtime_s, _poisson_rejoin, state, c, rate_hz, downtime_s, rng)


def _poisson_rejoin(state: FaultState, c: int, rate_hz: float, downtime_s: float, rng: np.random.Generator) -> None:
    state.rejoin(c)
    _next_poisson_crash(state, c, rate_hz, downtime_s, rng)


@APPLIERS.register("dropout")
def _dropout(state: FaultState, ev: DropoutFault, key: str) -> None:
    state.dropout_p = ev.probability  # one entry at most (FaultsConfig checks)


# The interval faults' on/off actions are module-level functions wrapped in Call (not
# closures), so the timers that will run them pickle with the environment's queue.
@APPLIERS.register("link_down")
def _link_down(state: FaultState, ev: LinkDownFault, key: str) -> None:
    link = _link(state, ev.link, f"{key}.link")
    state.interval(ev.start_s, ev.end_s, Call(_count_down, state, "link_down", link, ev, {"link": link}),
                   Call(_count_up, state, "link_down", link))


@APPLIERS.register("radio_down")
def _radio_down(state: FaultState, ev: RadioDownFault, key: str) -> None:
    node = _node(state, ev.node, f"{key}.node")
    state.interval(ev.start_s, ev.end_s, Call(_count_down, state, "radio_down", node, ev, {"node": node}),
                   Call(_count_up, state, "radio_down", node))


def _count_down(state: FaultState, table: str, what: Hashable, ev: LinkDownFault | RadioDownFault,
                where: dict[str, Any]) -> None:
    """A link or a radio goes down: one more fault holds it (``state.<table>``), recorded."""
    getattr(state, table)[what] += 1
    state.record(ev.kind, FailureReason.LINK_DOWN, ev.start_s, ev.end_s, **where)


def _count_up(state: FaultState, table: str, what: Hashable) -> None:
    getattr(state, table).subtract([what])


@APPLIERS.register("bs_outage")
def _bs_outage(state: FaultState, ev: BsOutageFault, key: str) -> None:
    _node(state, BS, key)
    state.interval(ev.start_s, ev.end_s, Call(_bs_outage_on, state, ev), Call(_bs_outage_off, state))


def _bs_outage_on(state: FaultState, ev: BsOutageFault) -> None:
    state.bs_down += 1
    state.record("bs_outage", FailureReason.BS_OUTAGE, ev.start_s, ev.end_s, node=BS)


def _bs_outage_off(state: FaultState) -> None:
    state.bs_down -= 1


@APPLIERS.register("straggler")
def _straggler(state: FaultState, ev: StragglerFault, key: str) -> None:
    node = _node(state, ev.node, f"{key}.node")
    state.interval(ev.start_s, ev.end_s, Call(_straggler_on, state, node, ev), Call(_straggler_off, state, node, ev))


def _straggler_on(state: FaultState, node: Hashable, ev: StragglerFault) -> None:
    state.slowdown.setdefault(node, []).append(ev.slowdown)
    state.record(f"straggler x{ev.slowdown:g}", "", ev.start_s, ev.end_s, node=node)


def _straggler_off(state: FaultState, node: Hashable, ev: StragglerFault) -> None:
    state.slowdown[node].remove(ev.slowdown)


@APPLIERS.register("storm")
def _storm(state: FaultState, ev: StormFault, key: str) -> None:
    links = [_link(state, lk, f"{key}.links.{i}") for i, lk in enumerate(ev.links)]
    state.interval(ev.start_s, ev.end_s, Call(_storm_on, state, links, ev), Call(_storm_off, state, links, ev))


def _storm_on(state: FaultState, links: list[Link], ev: StormFault) -> None:
    for link in links:
        state.extra_loss_db.setdefault(link, []).append(ev.extra_loss_db)
        state.record(f"storm +{ev.extra_loss_db:g} dB", "", ev.start_s, ev.end_s, link=link)


def _storm_off(state: FaultState, links: list[Link], ev: StormFault) -> None:
    for link in links:
        state.extra_loss_db[link].remove(ev.extra_loss_db)
