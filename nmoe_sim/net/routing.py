"""Routing: which node path a transfer takes through the topology graph.

A direct link is always used when one exists. Otherwise the route minimises the expected
airtime per bit, sum over hops of 1 / (B * spectral efficiency at the link's mean SNR).
Shadowing is fixed per link, so the weights are computed once, from mean SNRs (no fading),
and paths are cached per source. The graph is undirected but the weights are not: the SNR of
u->v depends on u's transmit power (a 43 dBm base station vs a 23 dBm phone).
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Iterable, Protocol

import networkx as nx

from nmoe_sim.config import ChannelConfig

# Among ideal links only hop count matters: a tiny constant per hop picks the fewest hops
# and never outweighs a real wireless hop (~1e-8 s/bit at 20 MHz and 5 bit/s/Hz).
IDEAL_WEIGHT_S_PER_BIT = 1e-15
# A link in outage on average is kept as a last resort rather than removed, so that every
# pair stays reachable; a large finite weight makes any working detour preferable.
OUTAGE_WEIGHT_S_PER_BIT = 1e3


class MeanRateLink(Protocol):
    """The part of a LinkChannel that routing needs."""

    cfg: ChannelConfig

    @property
    def ideal(self) -> bool: ...

    def mean_snr_db(self, tx_power_dbm: float) -> float: ...

    def spectral_efficiency_bps_hz(self, snr_db: float) -> float: ...


def airtime_weight_s_per_bit(link: MeanRateLink, tx_power_dbm: float) -> float:
    """Expected seconds of airtime per bit on ``link`` when sent at ``tx_power_dbm``."""
    if link.ideal:
        return IDEAL_WEIGHT_S_PER_BIT
    se = link.spectral_efficiency_bps_hz(link.mean_snr_db(tx_power_dbm))
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

    def route(self, src: Hashable, dst: Hashable) -> list[Any]:
        """Node path from ``src`` to ``dst``, both included; ``[src]`` when they are equal."""
        for node in (src, dst):
            if node not in self._g:
                raise ValueError(f"route: unknown node {node!r}")
        if src == dst:
            return [src]
        if self._g.has_edge(src, dst):
            return [src, dst]
        if src not in self._paths:
            self._paths[src] = nx.single_source_dijkstra_path(self._g, src, weight="w")
        path = self._paths[src].get(dst)
        if path is None:
            raise ValueError(f"route: no path from {src!r} to {dst!r}")
        return list(path)
