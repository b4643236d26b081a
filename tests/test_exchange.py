"""The expert-output exchange before stage 3, both ways: exact transfers and bytes, and the
same gate-training targets wherever the network delivered."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nmoe_sim.fl.exchange import EXCHANGES
from nmoe_sim.fl.stage3 import NMoEParts
from nmoe_sim.models import param_count
from nmoe_sim.models.build import make_expert
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import build_world

from conftest import tiny_cfg

N, D, K = 4, 8, 10


def exchanged(mode: str, *overrides: str) -> tuple[Any, list[Any]]:
    world = build_world(tiny_cfg(*overrides), SeedStreams(0))
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(c.num_samples, D, generator=gen) for c in world.clients]
    experts = [make_expert(world.cfg, K, world.streams, f"expert{i}").eval() for i in range(N)]
    parts = NMoEParts(None, experts, feats, None)  # type: ignore[arg-type]  # the exchange needs no FE
    sim = world.new_sim("test")
    proc = sim.env.process(EXCHANGES.get(mode)(world, sim, parts, "s3"))
    sim.env.run(until=proc)
    return world, proc.value


def test_features_exchange_is_all_to_all() -> None:
    world, data = exchanged("features")
    ts = world.recorder.transfers
    n_c = [c.num_samples for c in world.clients]
    assert len(ts) == 2 * N * (N - 1)  # features out and probabilities back, every ordered pair
    assert sum(t.size_bytes for t in ts) == sum(n * (N - 1) * (D + K) * 4 for n in n_c)
    assert all(d.available.all() for d in data)


def test_expert_weights_exchange_is_linear_in_clients_and_gives_the_same_targets() -> None:
    world, data = exchanged("expert_weights")
    expert_bytes = param_count(make_expert(world.cfg, K, world.streams, "x")) * 4
    ts = world.recorder.transfers
    assert [(t.src, t.dst) for t in ts if t.dst == "bs"] == [(str(j), "bs") for j in range(N)]
    downs = [t for t in ts if t.src == "bs"]
    assert len(ts) == 2 * N and len(downs) == N
    assert {t.size_bytes for t in downs} == {(N - 1) * expert_bytes}
    # Each client runs every expert on its own samples, on its own device.
    computes = world.recorder.computes
    assert sorted(c.node for c in computes) == [str(c) for c in range(N)]
    _, ref = exchanged("features")
    for got, want in zip(data, ref):
        assert got.available.all()
        # The same experts on the same samples; batched differently, so equal up to float rounding.
        torch.testing.assert_close(got.true_p, want.true_p, rtol=0, atol=1e-6)


def test_expert_weights_a_lost_upload_makes_that_expert_unavailable_to_the_others() -> None:
    # A 300 m ring on urban-micro links with one attempt and no relaying: with seed 0 the
    # uploads of clients 2 and 3 and the bundle to client 2 are lost (measured).
    world, data = exchanged("expert_weights", "network.channel={bs: {preset: urban_micro, max_attempts: 1}, d2d: ideal}",
                            "network.topology={kind: ring, radius_m: 300}", "network.routing=direct_first")
    arrived = {int(t.src) for t in world.recorder.transfers if t.dst == "bs" and t.delivered}
    got_bundle = {int(t.dst) for t in world.recorder.transfers if t.src == "bs" and t.delivered}
    assert arrived == {0, 1} and got_bundle == {0, 1, 3}
    for c, d in enumerate(data):
        want = {c} | (arrived - {c} if c in got_bundle else set())
        assert set(torch.nonzero(d.available).flatten().tolist()) == want, c


def test_unknown_exchange_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(Exception, match="expert_weights"):
        tiny_cfg("stage3.expert_outputs=broadcast")


@pytest.mark.parametrize("target", ["best_expert", "moe_loss"])
def test_a_gate_ranks_the_best_expert_it_heard_from_above_experts_it_never_heard_from(target: str) -> None:
    """A client whose outputs from experts 2 and 3 never arrived (lost transfers) trains on
    experts 0 and 1 only, its own expert 0 being the better. At inference every expert is
    open, so the gate must have learned to rank 0 above 2 and 3 too: with the logits of
    absent experts masked out of the loss (as before), they kept their initial lead and the
    client routed nothing to its own expert (seen on the harsh quickstart: expert 8 lost
    every query, its own client's included)."""
    from nmoe_sim.engine.losses import GATE_TARGETS

    logits = torch.tensor([[0.0, 0.0, 5.0, 5.0]], requires_grad=True)  # absent experts lead at first
    true_p = torch.tensor([[0.9, 0.1, 0.0, 0.0]])  # (B,E): only 0 and 1 reported
    available = torch.tensor([True, True, False, False])
    opt = torch.optim.SGD([logits], lr=1.0)
    for _ in range(200):
        opt.zero_grad()
        GATE_TARGETS.get(target, "stage3.target")(logits, true_p, available).backward()
        opt.step()
    assert int(logits.argmax()) == 0
