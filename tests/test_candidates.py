"""Candidate experts (``stage3.candidates``): the exchange shrinks from n(n-1) pairs to n k
with exact transfer counts and bytes, the sets follow their rule, routers never leave
them, and a k that covers everyone is the default computation exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nmoe_sim.errors import ConfigError
from nmoe_sim.fl.candidates import candidate_masks, candidate_sets
from nmoe_sim.fl.exchange import EXCHANGES
from nmoe_sim.fl.routing import GateRouter, RandomRouter
from nmoe_sim.fl.stage3 import NMoEParts
from nmoe_sim.models import param_count
from nmoe_sim.models.build import make_expert, make_gate
from nmoe_sim.runner import run
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import build_world

from conftest import tiny_cfg

N, D, K = 4, 8, 10
# Five clients on a line, the base station far off; D2D links 0-1, 1-2 and 3-4 only.
LINE = ("data.clients=5", "network.topology={kind: explicit, positions_m: [[0, 0], [10, 0], [20, 0], [200, 0], "
        "[210, 0]], d2d_edges: [[0, 1], [1, 2], [3, 4]], bs_position_m: [100, 400]}",
        "network.channel={bs: urban_micro, d2d: {preset: urban_micro_d2d, shadowing_std_db: 0}}")


def exchanged(mode: str, *overrides: str) -> tuple[Any, list[Any], list[np.ndarray] | None]:
    world = build_world(tiny_cfg(*overrides), SeedStreams(0))
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(c.num_samples, D, generator=gen) for c in world.clients]
    experts = [make_expert(world.cfg, K, world.streams, f"expert{i}").eval() for i in range(world.n_clients)]
    parts = NMoEParts(None, experts, feats, None)  # type: ignore[arg-type]  # the exchange needs no FE
    sim = world.new_sim("test")
    cands = candidate_sets(world, sim)
    proc = sim.env.process(EXCHANGES.get(mode)(world, sim, parts, "s3", cands))
    sim.env.run(until=proc)
    return world, proc.value, cands


def test_nearest_candidates_are_the_cheapest_routes_ties_to_the_lower_id() -> None:
    world = build_world(tiny_cfg(*LINE, "stage3.candidates=1"), SeedStreams(0))
    sets = candidate_sets(world, world.new_sim("test"))
    # The D2D neighbour is the cheapest route; client 1 has two at the same distance, 0 and 2:
    # without shadowing their links are alike, so the tie goes to client 0.
    assert [s.tolist() for s in sets] == [[0, 1], [0, 1], [1, 2], [3, 4], [3, 4]]


def test_random_candidates_are_seeded_and_hold_k_others() -> None:
    def sets(seed: int) -> list[list[int]]:
        world = build_world(tiny_cfg(*LINE, "stage3.candidates=2", "stage3.candidate_rule=random"), SeedStreams(seed))
        return [s.tolist() for s in candidate_sets(world, world.new_sim("test"))]

    a = sets(0)
    assert a == sets(0) and a != sets(1)
    for c, s in enumerate(a):
        assert c in s and len(s) == 3 and s == sorted(set(s))


@pytest.mark.parametrize("mode", ["features", "expert_weights"])
def test_the_exchange_carries_only_candidate_pairs(mode: str) -> None:
    world, data, cands = exchanged(mode, "stage3.candidates=1")
    assert cands is not None
    ts = world.recorder.transfers
    n_c = [c.num_samples for c in world.clients]
    # Default topology (ideal ring): each client's one candidate besides itself.
    others = {c: [int(j) for j in s if j != c] for c, s in enumerate(cands)}
    if mode == "features":
        assert len(ts) == 2 * N  # one feature upload and one answer per client, not 2 N (N-1)
        assert sum(t.size_bytes for t in ts) == sum(n * (D + K) * 4 for n in n_c)
        assert sorted((int(t.src), int(t.dst)) for t in ts if t.tag.startswith("features")) == sorted(
            (c, j) for c, js in others.items() for j in js)
    else:
        expert_bytes = param_count(make_expert(world.cfg, K, world.streams, "x")) * 4
        wanted = sorted({j for js in others.values() for j in js})
        assert sorted(int(t.src) for t in ts if t.dst == "bs") == wanted  # the others' experts only
        downs = [t for t in ts if t.src == "bs"]
        assert len(downs) == N and {t.size_bytes for t in downs} == {expert_bytes}  # a bundle of one
    for c, d in enumerate(data):
        assert set(torch.nonzero(d.available).flatten().tolist()) == set(cands[c].tolist())


def test_routers_stay_inside_the_candidates() -> None:
    cfg = tiny_cfg("stage3.candidates=1", "model.top_k=2")
    world = build_world(cfg, SeedStreams(0))
    sets = candidate_sets(world, world.new_sim("test"))
    masks = candidate_masks(sets, N)
    feats = torch.randn(200, D, generator=torch.Generator().manual_seed(1))
    gate = make_gate(cfg, N, world.streams, "g")
    for router in (GateRouter([gate] * N, 2, masks), RandomRouter(N, 2, np.random.default_rng(0), sets)):
        for c in range(N):
            w, idx = router.route(c, feats)
            assert set(idx.flatten().tolist()) == set(sets[c].tolist())  # both used, nothing else
            assert torch.allclose(w.sum(1), torch.ones(200))
    # A full ranking (what the faults fallback asks for) holds the set and nothing else.
    _, ranked = GateRouter([gate] * N, N, masks).route(0, feats)
    assert ranked.shape[1] == len(sets[0]) and set(ranked.flatten().tolist()) == set(sets[0].tolist())
    # Without masks the gate would have chosen others: the mask is doing the work.
    _, free = GateRouter([gate] * N, 2).route(0, feats)
    assert not set(free.flatten().tolist()) <= set(sets[0].tolist())


def test_a_top_k_larger_than_the_candidate_set_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"model.top_k=3 exceeds the 2 experts .*stage3.candidates=1"):
        tiny_cfg("stage3.candidates=1", "model.top_k=3")
    with pytest.raises(ConfigError, match="candidate_rule"):
        tiny_cfg("stage3.candidate_rule=closest")


@pytest.mark.parametrize("gate", ["fedgate", "rollgate", "rangate"])
def test_candidates_covering_everyone_compute_exactly_the_default(tmp_path: Path, gate: str) -> None:
    def metrics(*extra: str) -> dict[str, Any]:
        d = tmp_path / "_".join((gate,) + extra).replace("=", "")
        d.mkdir()
        out = run(tiny_cfg(f"stage3.algorithm={gate}", "baselines.systems=[]", *extra), d)
        out.pop("wall_time_s", None)
        out.pop("run_id")
        return out

    assert metrics("stage3.candidates=3") == metrics()
