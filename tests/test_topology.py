"""Topology generators: graph conventions, per-kind structure, presets and config errors."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from nmoe_sim.config import TOPOLOGY_PRESETS_DIR, TopologyConfig, build_scenario, resolve_presets
from nmoe_sim.errors import ConfigError
from nmoe_sim.net.topology import BS, TOPOLOGIES, build_topology


def build(n: int = 10, seed: int = 0, **kw: typing.Any) -> nx.Graph:
    return build_topology(TopologyConfig(**kw), n, np.random.default_rng(seed))


def d2d_pairs(g: nx.Graph) -> set[tuple[int, int]]:
    return {tuple(sorted((u, v))) for u, v, k in g.edges(data="kind") if k == "d2d"}


def check_conventions(g: nx.Graph, n: int) -> None:
    assert set(g.nodes) == set(range(n)) | {BS}
    assert g.nodes[BS]["kind"] == "bs"
    for i in range(n):
        assert g.nodes[i]["kind"] == "client"
        assert g.edges[i, BS]["kind"] == "bs"  # every client has its cellular link
    for u, v, attrs in g.edges(data=True):
        (xu, yu), (xv, yv) = g.nodes[u]["pos"], g.nodes[v]["pos"]
        assert attrs["distance_m"] == pytest.approx(math.hypot(xu - xv, yu - yv))
        assert attrs["kind"] == ("bs" if BS in (u, v) else "d2d")


def test_registry_covers_every_schema_kind() -> None:
    kinds = typing.get_args(TopologyConfig.model_fields["kind"].annotation)
    assert set(TOPOLOGIES.names()) == set(kinds)


def test_ring_neighbours_and_radius() -> None:
    g = build(kind="ring", radius_m=50.0)
    check_conventions(g, 10)
    assert g.number_of_nodes() == 11 and g.number_of_edges() == 20
    assert d2d_pairs(g) == {tuple(sorted((i, (i + 1) % 10))) for i in range(10)}
    assert g.nodes[BS]["pos"] == (0.0, 0.0)
    assert all(g.edges[i, BS]["distance_m"] == pytest.approx(50.0) for i in range(10))


def test_ring_of_two_and_one_has_no_self_loops() -> None:
    assert d2d_pairs(build(2, kind="ring")) == {(0, 1)}
    g1 = build(1, kind="ring")
    check_conventions(g1, 1)
    assert d2d_pairs(g1) == set()


def test_star_has_no_d2d_edges() -> None:
    g = build(7, kind="star", radius_m=30.0)
    check_conventions(g, 7)
    assert d2d_pairs(g) == set() and g.number_of_edges() == 7


def test_grid_four_neighbours_and_centred_bs() -> None:
    g = build(10, kind="grid", spacing_m=10.0)  # 4 columns x 3 rows, last row 2 clients
    check_conventions(g, 10)
    assert len(d2d_pairs(g)) == 13
    assert (0, 1) in d2d_pairs(g) and (0, 4) in d2d_pairs(g) and (3, 4) not in d2d_pairs(g)
    assert g.nodes[BS]["pos"] == (15.0, 10.0)
    assert all(g.edges[e]["distance_m"] == pytest.approx(10.0) for e in d2d_pairs(g))


def test_random_geometric_respects_range_and_is_connected() -> None:
    g = build(12, seed=3, kind="random_geometric", area_m=200.0, d2d_range_m=80.0)
    check_conventions(g, 12)
    pos = {i: g.nodes[i]["pos"] for i in range(12)}
    for i in range(12):
        assert all(0.0 <= c <= 200.0 for c in pos[i])
        for j in range(i + 1, 12):
            near = math.dist(pos[i], pos[j]) <= 80.0
            assert ((i, j) in d2d_pairs(g)) == near
    assert nx.is_connected(g.subgraph(range(12)))
    assert g.nodes[BS]["pos"] == (100.0, 100.0)


def test_random_geometric_is_deterministic_per_seed() -> None:
    kw = dict(kind="random_geometric", d2d_range_m=80.0)
    a, b, c = build(seed=7, **kw), build(seed=7, **kw), build(seed=8, **kw)
    assert nx.to_dict_of_dicts(a) == nx.to_dict_of_dicts(b)
    assert dict(a.nodes(data="pos")) == dict(b.nodes(data="pos"))
    assert dict(a.nodes(data="pos")) != dict(c.nodes(data="pos"))


def test_random_geometric_needs_a_range() -> None:
    with pytest.raises(ConfigError, match=r"network\.topology\.d2d_range_m"):
        build(kind="random_geometric")


def test_d2d_range_adds_edges_to_any_kind() -> None:
    g = build(10, kind="star", radius_m=50.0, d2d_range_m=35.0)  # neighbours ~30.9 m apart
    assert d2d_pairs(g) == {tuple(sorted((i, (i + 1) % 10))) for i in range(10)}


def test_explicit_positions_edges_and_errors() -> None:
    g = build(3, kind="explicit", positions_m=((0, 0), (3, 4), (6, 8)), d2d_edges=((2, 1),),
              bs_position_m=(0.0, 10.0))
    check_conventions(g, 3)
    assert d2d_pairs(g) == {(1, 2)} and g.edges[1, 2]["distance_m"] == pytest.approx(5.0)
    assert g.edges[0, BS]["distance_m"] == pytest.approx(10.0)
    with pytest.raises(ConfigError, match=r"positions_m.*found 2.*data\.clients is 3"):
        build(3, kind="explicit", positions_m=((0, 0), (1, 1)))
    with pytest.raises(ConfigError, match=r"d2d_edges"):
        build(2, kind="explicit", positions_m=((0, 0), (1, 1)), d2d_edges=((0, 2),))


@pytest.mark.parametrize("name", ["ring10", "grid", "random_geometric", "star", "campus"])
def test_presets_validate_and_build(name: str) -> None:
    text = (TOPOLOGY_PRESETS_DIR / f"{name}.yaml").read_text()
    assert text.startswith("#")  # each preset says what it models
    scn = build_scenario(resolve_presets({"data": {"clients": 10}, "network": {"topology": name}}))
    g = build_topology(scn.network.topology, 10, np.random.default_rng(0))
    check_conventions(g, 10)


def test_campus_graphml_preset() -> None:
    scn = build_scenario(resolve_presets({"network": {"topology": {"preset": "campus"}}}))
    g = build_topology(scn.network.topology, 10, np.random.default_rng(0))
    assert scn.network.topology.kind == "graphml"
    assert g.nodes[BS]["pos"] == (0.0, 0.0)  # the file's rooftop BS
    assert g.nodes[0]["pos"] == (-65.0, 45.0)  # c0 -> 0 (ids sorted naturally)
    assert len(d2d_pairs(g)) == 9 and (0, 1) in d2d_pairs(g)
    assert nx.is_connected(g.subgraph(range(10)))


def test_graphml_wrong_client_count() -> None:
    cfg = TopologyConfig(kind="graphml", file="topologies/campus.graphml")
    with pytest.raises(ConfigError, match=r"network\.topology\.file.*10 client nodes.*data\.clients is 8"):
        build_topology(cfg, 8, np.random.default_rng(0))


def test_graphml_relative_to_cwd_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "two.graphml").write_text(
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
        '<key id="x" for="node" attr.name="x" attr.type="double"/>'
        '<key id="y" for="node" attr.name="y" attr.type="double"/>'
        '<graph edgedefault="undirected">'
        '<node id="n10"><data key="x">10</data><data key="y">0</data></node>'
        '<node id="n2"><data key="x">2</data><data key="y">0</data></node>'
        '<edge source="n2" target="n10"/></graph></graphml>')
    monkeypatch.chdir(tmp_path)
    g = build_topology(TopologyConfig(kind="graphml", file="two.graphml"), 2,
                       np.random.default_rng(0))
    assert g.nodes[0]["pos"] == (2.0, 0.0) and g.nodes[1]["pos"] == (10.0, 0.0)
    assert g.nodes[BS]["pos"] == (6.0, 0.0)  # no bs node in the file: clients' centroid
    assert d2d_pairs(g) == {(0, 1)}
    with pytest.raises(ConfigError, match=r"network\.topology\.file: file not found"):
        build_topology(TopologyConfig(kind="graphml", file="nope.graphml"), 2,
                       np.random.default_rng(0))
    (tmp_path / "bad.graphml").write_text("<graphml><graph>")
    with pytest.raises(ConfigError, match=r"network\.topology\.file: cannot read") as err:
        build_topology(TopologyConfig(kind="graphml", file="bad.graphml"), 2,
                       np.random.default_rng(0))
    assert "\n" not in str(err.value)
