"""Routing: which node path a transfer takes through the topology graph.

Routes minimise expected airtime per bit, the sum over hops of 1 / (B * E[spectral
efficiency]), the expectation taken over the link's fading law at its mean SNR with
outage blocks counting zero (:meth:`LinkChannel.mean_spectral_efficiency_bps_hz`). That is
the airtime a long transfer spends per bit on average, so a direct link that is in outage
most of the time loses to a good two-hop relay. Shadowing is fixed per link, so weights
are computed once and paths cached per source, until a client moves (``network.mobility``:
the moved links' weights are recomputed each mobility step, :meth:`Router.reweight`). The graph is undirected but the weights
are not: the SNR of u->v depends on u's transmit power (a 43 dBm base station vs a 23 dBm
phone).

Two policies (``network.routing``):
* ``min_airtime`` (default): the shortest expected-airtime path, direct link included.
* ``direct_first``: a direct link whenever one exists, else the shortest path (the
  behaviour before relaying was considered; kept to measure what relaying buys).
The weight leaves out retransmission timeouts and the per-hop protocol latency, which do
not scale with size: a relay costs store-and-forward delay that this weight does not see.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable, Iterable, Protocol

import networkx as nx

from nmoe_sim.config import ChannelConfig
from nmoe_sim.registry import Registry

# Among ideal links only hop count matters: a tiny constant per hop picks the fewest hops
# and never outweighs a real wireless hop (~1e-8 s/bit at 20 MHz and 5 bit/s/Hz).
IDEAL_WEIGHT_S_PER_BIT = 1e-15
# A link that never carries a bit (every block in outage) is kept as a last resort rather
# than removed, so that every pair stays reachable; a large finite weight makes any
# working detour preferable.
OUTAGE_WEIGHT_S_PER_BIT = 1e3


class MeanRateLink(Protocol):
    """The part of a LinkChannel that routing needs."""

    cfg: ChannelConfig

    @property
    def ideal(self) -> bool: ...

    def mean_spectral_efficiency_bps_hz(self, tx_power_dbm: float) -> float: ...


def airtime_weight_s_per_bit(link: MeanRateLink, tx_power_dbm: float) -> float:
    """Expected seconds of airtime per bit on ``link`` when sent at ``tx_power_dbm``."""
    if link.ideal:
        return IDEAL_WEIGHT_S_PER_BIT
    se = link.mean_spectral_efficiency_bps_hz(tx_power_dbm)
    if not se > 0 or not math.isfinite(se):
        return OUTAGE_WEIGHT_S_PER_BIT
    return 1.0 / (link.cfg.bandwidth_hz * se)


class Router:
    """Shortest expected-airtime paths over directed per-link weights, cached per source."""

    def __init__(self, nodes: Iterable[Hashable],
                 weights_s_per_bit: dict[tuple[Hashable, Hashable], float]) -> None:
        # Insertion order is deterministic (the caller's sorted order), so Dijkstra's tie
        # breaking, and hence every route, is reproducible.
        self._g = nx.DiGraph()
        self._g.add_nodes_from(nodes)
        for (u, v), w in weights_s_per_bit.items():
            self._g.add_edge(u, v, w=w)
        self._paths: dict[Hashable, dict[Hashable, list[Any]]] = {}

    def weight(self, u: Hashable, v: Hashable) -> float:
        return float(self._g.edges[u, v]["w"])

    def reweight(self, weights_s_per_bit: dict[tuple[Hashable, Hashable], float]) -> None:
        """New weights for some directed hops (a client moved, net/mobility.py); the cached
        paths are dropped only when a weight really changed."""
        changed = False
        for (u, v), w in weights_s_per_bit.items():
            if self._g.edges[u, v]["w"] != w:
                self._g.edges[u, v]["w"] = w
                changed = True
        if changed:
            self._paths.clear()

    def route(self, src: Hashable, dst: Hashable) -> list[Any]:
        """Node path from ``src`` to ``dst``, both included; ``[src]`` when they are equal."""
        for node in (src, dst):
            if node not in self._g:
                raise ValueError(f"route: unknown node {node!r}")
        if src == dst:
            return [src]
        return self._shortest(src, dst)

    def _shortest(self, src: Hashable, dst: Hashable) -> list[Any]:
        if src not in self._paths:
            self._paths[src] = nx.single_source_dijkstra_path(self._g, src, weight="w")
        path = self._paths[src].get(dst)
        if path is None:
            raise ValueError(f"route: no path from {src!r} to {dst!r}")
        return list(path)

    def route_avoiding(self, src: Hashable, dst: Hashable,
                       down: Callable[[Hashable, Hashable], bool]) -> list[Any] | None:
        """The policy's route over the hops u -> v that are not ``down`` (injected faults),
        by the same weights; None when every route crosses a down hop. Not cached: what is
        down changes with time."""
        try:
            return list(nx.dijkstra_path(self._g, src, dst, weight=lambda u, v, d: None if down(u, v) else d["w"]))
        except nx.NetworkXNoPath:
            return None


ROUTING: Registry[type[Router]] = Registry("routing policy")
ROUTING.register("min_airtime")(Router)


@ROUTING.register("direct_first")
class DirectFirstRouter(Router):
    """A direct link whenever one exists, however bad; otherwise the min-airtime path."""

    def _shortest(self, src: Hashable, dst: Hashable) -> list[Any]:
        if self._g.has_edge(src, dst):
            return [src, dst]
        return super()._shortest(src, dst)

    def route_avoiding(self, src: Hashable, dst: Hashable,
                       down: Callable[[Hashable, Hashable], bool]) -> list[Any] | None:
        if self._g.has_edge(src, dst) and not down(src, dst):
            return [src, dst]
        return super().route_avoiding(src, dst, down)
