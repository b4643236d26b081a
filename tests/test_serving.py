"""Routing policies at inference (nmoe_sim/serving): tiny networks, exact or argued assertions.

The worlds are the conftest's tiny scenario (4 clients, digits, tiny widths) over an explicit
topology, with a router whose preferences are fixed (a :class:`FixedRouter`), so that what a
policy does is not hidden behind what a gate happened to learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from nmoe_sim.inference import run_inference
from nmoe_sim.models import topk_route
from nmoe_sim.pipeline import nmoe_spec, train_shared
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import build_world

from conftest import tiny_cfg

# Client 3 sits 20 km away: its base-station link and its D2D link to client 0 have a mean
# SNR near -55 dB, far below the -5 dB outage threshold; no fading, so every block is in
# outage. The other clients are 10 m apart with ~44 dB. (log-distance n = 3, 3.5 GHz.)
_LINK = ("{model: wireless, path_loss: log_distance, path_loss_exponent: 3.0, fading: none, shadowing_std_db: 0.0, "
         "retx_timeout_s: 0.05, max_attempts: 8}")
WIRELESS = f"network.channel={{bs: {_LINK}, d2d: {_LINK}}}"
FAR_EXPERT = ("network.topology={kind: explicit, positions_m: [[0, 0], [10, 0], [0, 10], [20000, 0]], "
              "d2d_edges: [[0, 1], [0, 2], [1, 2], [0, 3]], bs_position_m: [5, 5]}")


@dataclass
class FixedRouter:
    """Every query of client c gets the gate logits ``logits[c]`` (E,)."""

    logits: torch.Tensor  # (clients, E)
    k: int

    def route(self, client: int, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return topk_route(self.logits[client].expand(feats.shape[0], -1), self.k)


def serve(router_logits: list[list[float]], *overrides: str) -> Any:
    """Train the tiny parts, then run NMoE inference with the fixed router; the world."""
    world = build_world(tiny_cfg(*overrides), SeedStreams(0))
    sim = world.new_sim("nmoe")
    proc = sim.env.process(train_shared(world, sim, []))
    sim.env.run(until=proc)
    router = FixedRouter(torch.tensor(router_logits), world.cfg.model.top_k)
    inf = sim.env.process(run_inference(world, sim, nmoe_spec(world, proc.value, router, sim)))
    sim.env.run(until=inf)
    return world, inf.value


# Client 0's gate prefers expert 3 (p ~ 0.68), then 1 (p ~ 0.25); the others prefer their own.
PREFERS_FAR = [[0.0, 2.0, 0.0, 3.0], [0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 3.0]]


@pytest.mark.parametrize("csi", ["mean", "current"])
def test_channel_aware_avoids_the_expert_behind_a_link_in_outage_and_topk_does_not(csi: str) -> None:
    common = (WIRELESS, FAR_EXPERT, "inference.max_queries_per_client=4")
    world, out = serve(PREFERS_FAR, *common)
    q0 = [q for q in world.recorder.queries if q.client == 0]
    # topk sends every query of client 0 to expert 3; none of its features get through.
    assert [q.experts for q in q0] == [(3,)] * 4 and not any(q.delivered for q in q0)
    assert out.failed_queries == 4
    world, out = serve(PREFERS_FAR, *common, "inference.routing=channel_aware",
                       f"inference.channel_aware.csi={csi}")
    q0 = [q for q in world.recorder.queries if q.client == 0]
    # channel_aware takes the gate's next choice, a 10 m D2D hop away, and every query is answered.
    assert [q.experts for q in q0] == [(1,)] * 4 and all(q.delivered for q in q0)
    assert out.failed_queries == 0
    assert not [t for t in world.recorder.transfers if t.stage == "inference_nmoe" and "3" in (t.src, t.dst)
                and t.src != t.dst and "q3." not in t.tag]


def test_channel_aware_at_weight_zero_routes_as_topk() -> None:
    # A zero penalty leaves log p, whose order is the gate's: the same experts as topk.
    logits = [[0.0, 2.0, 1.0, 3.0], [1.0, 3.0, 0.0, 2.0], [2.0, 0.0, 3.0, 1.0], [0.0, 1.0, 2.0, 3.0]]
    common = (WIRELESS, FAR_EXPERT, "inference.max_queries_per_client=3", "model.top_k=2")
    a, _ = serve(logits, *common)
    b, _ = serve(logits, *common, "inference.routing=channel_aware", "inference.channel_aware.weight_per_s=0")
    assert [q.experts for q in a.recorder.queries] == [q.experts for q in b.recorder.queries]


# Every client's gate prefers expert 3, 1 km away over 100 kHz links (SNR ~7 dB, ~190 kbit/s:
# ~3 ms of its radio per query, out and back); the gates' second choices differ and sit 10 m
# apart (~44 dB, ~0.5 ms). At 200 queries/s per client, expert 3's radio is offered ~1.8 s of
# airtime per second under topk: its queue grows without bound.
HOT = [[0.0, 2.0, 0.0, 3.0], [0.0, 0.0, 2.0, 3.0], [2.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 3.0]]
_NARROW = _LINK[:-1] + ", bandwidth_hz: 1.0e+5}"
HOT_NET = (f"network.channel={{bs: {_NARROW}, d2d: {_NARROW}}}",
           "network.topology={kind: explicit, positions_m: [[0, 0], [10, 0], [0, 10], [1000, 0]], "
           "d2d_edges: [[0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [2, 3]], bs_position_m: [5, 5]}")


def test_load_aware_spreads_the_hot_experts_queries_and_lowers_p95_latency() -> None:
    common = (*HOT_NET, "inference.arrival_rate_hz=200", "inference.max_queries_per_client=10")
    world, topk = serve(HOT, *common)
    hot_topk = sum(q.experts == (3,) for q in world.recorder.queries if q.client != 3)
    p95_topk = np.percentile([q.latency_s for q in world.recorder.queries if q.client != 3], 95)
    world, load = serve(HOT, *common, "inference.routing=load_aware")
    hot_load = sum(q.experts == (3,) for q in world.recorder.queries if q.client != 3)
    p95_load = np.percentile([q.latency_s for q in world.recorder.queries if q.client != 3], 95)
    assert hot_topk == 30  # topk: every query of clients 0-2 waits in expert 3's queue
    assert 0 < hot_load < 30  # load_aware still uses the hot expert while its queue is short
    assert p95_load < 0.5 * p95_topk
