"""Topology building: where the clients and the base station stand and which D2D links exist.

Graph conventions that the rest of the package relies on:

* client nodes are the ints ``0..n_clients-1``; the base station / edge server is ``"bs"``;
* node attrs: ``pos`` = ``(x_m, y_m)``, ``kind`` = ``'client' | 'bs'``;
* edge attrs: ``kind`` = ``'bs'`` (client <-> base station) or ``'d2d'`` (client <-> client),
  ``distance_m`` (2-D Euclidean);
* every client has a ``'bs'`` edge: the cellular link is always there, so every pair of
  nodes is reachable (client -> bs -> client relay) even without D2D links.

A generator only decides positions and D2D pairs (a :class:`Layout`); :func:`build_topology`
assembles the graph the same way for every kind, so the conventions hold by construction.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import networkx as nx
import numpy as np

from nmoe_sim.config import REPO_ROOT, TopologyConfig, asset_dir
from nmoe_sim.errors import ConfigError
from nmoe_sim.registry import Registry

log = logging.getLogger(__name__)

BS = "bs"
KEY = "network.topology"
# Enough tries that a sensible range almost always yields a connected D2D graph, few enough
# that an impossible range (too short for the area) fails fast.
MAX_RESAMPLES = 100

Point = tuple[float, float]


@dataclass
class Layout:
    """What a generator decides: client positions (index = client id), BS position, D2D pairs."""

    clients_m: list[Point]
    bs_m: Point
    d2d: set[tuple[int, int]] = field(default_factory=set)


Generator = Callable[[TopologyConfig, int, np.random.Generator], Layout]
TOPOLOGIES: Registry[Generator] = Registry("topology kind")


def _pair(i: int, j: int) -> tuple[int, int]:
    return (i, j) if i < j else (j, i)


def _distance_m(a: Point, b: Point) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _circle(n: int, radius_m: float) -> list[Point]:
    return [
        (radius_m * math.cos(2 * math.pi * i / n), radius_m * math.sin(2 * math.pi * i / n))
        for i in range(n)
    ]


def _pairs_within(points: list[Point], range_m: float) -> set[tuple[int, int]]:
    return {
        (i, j)
        for i, j in itertools.combinations(range(len(points)), 2)
        if _distance_m(points[i], points[j]) <= range_m
    }


def _bs_or(cfg: TopologyConfig, default: Point) -> Point:
    if cfg.bs_position_m is None:
        return default
    return (float(cfg.bs_position_m[0]), float(cfg.bs_position_m[1]))


@TOPOLOGIES.register("ring")
def ring(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> Layout:
    """Clients evenly on a circle around the BS, each joined to its two ring neighbours."""
    d2d = {_pair(i, (i + 1) % n) for i in range(n) if (i + 1) % n != i}
    return Layout(_circle(n, cfg.radius_m), _bs_or(cfg, (0.0, 0.0)), d2d)


@TOPOLOGIES.register("star")
def star(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> Layout:
    """Clients on a circle with no D2D links: client-to-client traffic relays through the BS."""
    return Layout(_circle(n, cfg.radius_m), _bs_or(cfg, (0.0, 0.0)))


@TOPOLOGIES.register("grid")
def grid(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> Layout:
    """Row-major grid of ceil(sqrt(n)) columns with 4-neighbour links; BS at the grid centre."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pts = [(float((i % cols) * cfg.spacing_m), float((i // cols) * cfg.spacing_m)) for i in range(n)]
    d2d: set[tuple[int, int]] = set()
    for i in range(n):
        if i % cols + 1 < cols and i + 1 < n:
            d2d.add((i, i + 1))
        if i + cols < n:
            d2d.add((i, i + cols))
    centre = ((cols - 1) * cfg.spacing_m / 2, (rows - 1) * cfg.spacing_m / 2)
    return Layout(pts, _bs_or(cfg, centre), d2d)


@TOPOLOGIES.register("random_geometric")
def random_geometric(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> Layout:
    """Uniform placement in an area_m square; D2D links between all pairs within d2d_range_m.

    Placements are redrawn until the D2D graph is connected (so that D2D-only routing is
    possible), at most MAX_RESAMPLES times; the last draw is kept otherwise.
    """
    if cfg.d2d_range_m is None:
        raise ConfigError(f"{KEY}.d2d_range_m: required for kind random_geometric (a range in m > 0)")
    for attempt in range(1, MAX_RESAMPLES + 1):
        xy = rng.uniform(0.0, cfg.area_m, size=(n, 2))
        pts = [(float(x), float(y)) for x, y in xy]
        d2d = _pairs_within(pts, cfg.d2d_range_m)
        g = nx.Graph(d2d)
        g.add_nodes_from(range(n))
        if nx.is_connected(g):
            break
    else:
        log.info("random_geometric: D2D graph still disconnected after %d draws "
                 "(area_m=%g, d2d_range_m=%g); keeping the last", attempt, cfg.area_m,
                 cfg.d2d_range_m)
    return Layout(pts, _bs_or(cfg, (cfg.area_m / 2, cfg.area_m / 2)), d2d)


@TOPOLOGIES.register("explicit")
def explicit(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> Layout:
    """Client positions and D2D pairs listed in the config; BS at (0, 0) unless bs_position_m."""
    if cfg.positions_m is None or len(cfg.positions_m) != n:
        found = "none" if cfg.positions_m is None else str(len(cfg.positions_m))
        raise ConfigError(f"{KEY}.positions_m: kind explicit needs one (x_m, y_m) per client: "
                          f"found {found}, data.clients is {n}")
    d2d: set[tuple[int, int]] = set()
    for i, j in cfg.d2d_edges or ():
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ConfigError(f"{KEY}.d2d_edges: pair ({i}, {j}) must join two distinct "
                              f"clients in 0..{n - 1}")
        d2d.add(_pair(i, j))
    pts = [(float(x), float(y)) for x, y in cfg.positions_m]
    return Layout(pts, _bs_or(cfg, (0.0, 0.0)), d2d)


def resolve_file(name: str) -> Path:
    """A relative path is looked up against the repository root, the installed package's
    assets (``topologies/campus.graphml`` ships there), then the working directory."""
    path = Path(name)
    if path.is_absolute():
        return path
    for base in (REPO_ROOT, asset_dir("topologies").parent, Path.cwd()):
        if (base / path).is_file():
            return base / path
    return REPO_ROOT / path


def _natural_key(node_id: str) -> list[object]:
    # "c2" sorts before "c10": GraphML ids are strings, but people number them.
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", node_id)]


def _node_pos(attrs: dict[str, object], node_id: str, path: Path) -> Point:
    for kx, ky in (("x_m", "y_m"), ("x", "y")):
        if kx in attrs and ky in attrs:
            try:
                return (float(attrs[kx]), float(attrs[ky]))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ConfigError(f"{KEY}.file: node {node_id!r} in {path} has non-numeric "
                                  f"{kx}/{ky}") from None
    raise ConfigError(f"{KEY}.file: node {node_id!r} in {path} has no x_m/y_m (or x/y) attributes")


@TOPOLOGIES.register("graphml")
def graphml(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> Layout:
    """Load a GraphML file: node attrs x_m/y_m (or x/y) and kind ('client' default, or 'bs').

    Client ids, sorted naturally, become 0..n-1; client-client edges become D2D links (edges
    to the BS are implied anyway). The BS stands at bs_position_m, else at the file's 'bs'
    node, else at the clients' centroid.
    """
    if not cfg.file:
        raise ConfigError(f"{KEY}.file: required for kind graphml (a .graphml path)")
    path = resolve_file(cfg.file)
    if not path.is_file():
        raise ConfigError(f"{KEY}.file: file not found: {cfg.file} (looked in {REPO_ROOT} and cwd)")
    try:
        g = nx.read_graphml(path)
    except Exception as exc:  # malformed XML surfaces as several exception types
        raise ConfigError(f"{KEY}.file: cannot read {path} as GraphML "
                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    kinds = {str(v): str(a.get("kind", "client")) for v, a in g.nodes(data=True)}
    bad = sorted(v for v, k in kinds.items() if k not in ("client", "bs"))
    if bad:
        raise ConfigError(f"{KEY}.file: node {bad[0]!r} in {path} has kind {kinds[bad[0]]!r}; "
                          "valid: client, bs")
    clients = sorted((v for v, k in kinds.items() if k == "client"), key=_natural_key)
    stations = [v for v, k in kinds.items() if k == "bs"]
    if len(clients) != n:
        raise ConfigError(f"{KEY}.file: {path.name} has {len(clients)} client nodes but "
                          f"data.clients is {n}")
    if len(stations) > 1:
        raise ConfigError(f"{KEY}.file: {path.name} has {len(stations)} 'bs' nodes; at most 1")
    index = {v: i for i, v in enumerate(clients)}
    pts = [_node_pos(g.nodes[v], v, path) for v in clients]
    if stations:
        default = _node_pos(g.nodes[stations[0]], stations[0], path)
    else:
        default = (sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n)
    d2d = {_pair(index[str(a)], index[str(b)]) for a, b in g.edges()
           if str(a) in index and str(b) in index and a != b}
    return Layout(pts, _bs_or(cfg, default), d2d)


def build_topology(cfg: TopologyConfig, n_clients: int, rng: np.random.Generator) -> nx.Graph:
    """Build the graph for ``cfg`` (see the module docstring for its conventions)."""
    if n_clients < 1:
        raise ConfigError(f"data.clients: must be >= 1 (got {n_clients})")
    layout = TOPOLOGIES.get(cfg.kind, f"{KEY}.kind")(cfg, n_clients, rng)
    d2d = set(layout.d2d)
    if cfg.d2d_range_m is not None:
        d2d |= _pairs_within(layout.clients_m, cfg.d2d_range_m)

    g = nx.Graph()
    for i, p in enumerate(layout.clients_m):
        g.add_node(i, pos=(float(p[0]), float(p[1])), kind="client")
    g.add_node(BS, pos=(float(layout.bs_m[0]), float(layout.bs_m[1])), kind="bs")
    for i, p in enumerate(layout.clients_m):
        g.add_edge(i, BS, kind="bs", distance_m=_distance_m(p, layout.bs_m))
    for i, j in sorted(d2d):
        g.add_edge(i, j, kind="d2d",
                   distance_m=_distance_m(layout.clients_m[i], layout.clients_m[j]))
    return g
