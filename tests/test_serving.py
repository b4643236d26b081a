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
# apart (~44 dB, ~0.5 ms). At 300 queries/s per client, expert 3's radio is offered ~2.7 s of
# airtime per second under topk: its queue grows while the queries last (30 per client).
HOT = [[0.0, 2.0, 0.0, 3.0], [0.0, 0.0, 2.0, 3.0], [2.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 3.0]]
_NARROW = _LINK[:-1] + ", bandwidth_hz: 1.0e+5}"
HOT_NET = (f"network.channel={{bs: {_NARROW}, d2d: {_NARROW}}}",
           "network.topology={kind: explicit, positions_m: [[0, 0], [10, 0], [0, 10], [1000, 0]], "
           "d2d_edges: [[0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [2, 3]], bs_position_m: [5, 5]}")


def test_load_aware_spreads_the_hot_experts_queries_and_lowers_p95_latency() -> None:
    common = (*HOT_NET, "inference.arrival_rate_hz=300", "data.max_test_samples=120")
    world, topk = serve(HOT, *common)
    hot_topk = sum(q.experts == (3,) for q in world.recorder.queries if q.client != 3)
    p95_topk = np.percentile([q.latency_s for q in world.recorder.queries if q.client != 3], 95)
    world, load = serve(HOT, *common, "inference.routing=load_aware")
    hot_load = sum(q.experts == (3,) for q in world.recorder.queries if q.client != 3)
    p95_load = np.percentile([q.latency_s for q in world.recorder.queries if q.client != 3], 95)
    assert hot_topk == 90  # topk: every query of clients 0-2 waits in expert 3's queue
    assert 0 < hot_load < 80  # load_aware still uses the hot expert while its queue is short
    # Measured: 78 ms under topk, 9.6 ms under load_aware (the second choices are idle and near).
    assert p95_load < 0.25 * p95_topk


@pytest.mark.parametrize("budget_s, cut", [(0.004, True), (0.02, False)])
def test_a_budgeted_query_never_exceeds_its_budget_by_more_than_its_fallback(budget_s: float, cut: bool) -> None:
    # The hot expert of the test above, now over Rayleigh fading that changes every 0.5 ms:
    # the budget's estimate (the SNR of the block the query decides in, legs in flight)
    # misjudges legs whose later blocks fade, and the deadline cuts them; their query then
    # computes its own expert after the budget, on its own device (a phone: 2e10 FLOP/s).
    fading = _NARROW[:-1].replace("fading: none", "fading: rayleigh") + ", coherence_time_s: 0.0005}"
    world, out = serve(HOT, HOT_NET[1], f"network.channel={{bs: {fading}, d2d: {fading}}}",
                       "inference.arrival_rate_hz=300", "data.max_test_samples=120",
                       "inference.routing=budgeted", f"inference.budgeted={{budget_s: {budget_s}, min_gain: 0.2}}")
    fallbacks = {c.tag.split("/")[0]: c for c in world.recorder.computes if c.tag.endswith("/fallback")}
    serves = [c for c in world.recorder.computes if c.tag.endswith("/serve")]
    fallback_s = serves[0].flops / 2e10
    for q in world.recorder.queries:
        assert q.latency_s <= budget_s + fallback_s + 1e-12, (q, fallbacks.get(f"q{q.client}.{q.query}"))
    # The tight budget is exercised (2 legs cut, measured; the slowest query then ends exactly
    # at budget + 14.4 ns, the fallback's 288 FLOPs); the loose one never binds.
    assert bool(fallbacks) == cut
    # min_gain 0.2 skips every expert the gate gives less (the 0.03 ones); none is ever asked.
    assert all(e in (c, {0: 1, 1: 2, 2: 0, 3: 3}[c], 3) for q in world.recorder.queries
               for c in [q.client] for e in q.experts)


# --------------------------------------------------------------------------- pure parts
def test_budgeted_skips_small_gains_and_falls_back_to_the_own_expert() -> None:
    from nmoe_sim.serving.policies import Costs, Query, budgeted
    cfg = tiny_cfg("inference.routing=budgeted", "inference.budgeted={budget_s: 0.01, min_gain: 0.2}").inference
    probs = np.array([0.05, 0.6, 0.15, 0.2])
    allowed = np.ones(4, dtype=bool)
    costs = Costs(np.array([0.0, 0.02, 0.001, 0.001]), np.full(4, 1e-6), np.zeros(4), np.zeros(4))
    # Expert 1 (best) is too slow, 2 gains too little, 3 fits: asked alone.
    got = budgeted(Query(probs, allowed, 0, 2), costs, cfg)
    assert got.idx.tolist() == [3, -1] and got.weights.tolist() == [1.0, 0.0]
    # Nothing fits: the own expert, whatever its gate weight.
    slow = Costs(np.array([0.0, 0.02, 0.02, 0.02]), np.full(4, 1e-6), np.zeros(4), np.zeros(4))
    got = budgeted(Query(probs, allowed, 0, 2), slow, cfg)
    assert got.idx.tolist() == [0, -1] and got.weights.tolist() == [1.0, 0.0]


def test_a_constant_rate_draws_the_same_gaps_as_before_and_bursts_invert_their_intensity() -> None:
    from nmoe_sim.serving.config import BurstConfig
    from nmoe_sim.serving.load import intensity_integral, inverse_intensity, next_arrival_s
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    assert [next_arrival_s(0.0, 5.0, None, a) for _ in range(5)] == [float(b.exponential(0.2)) for _ in range(5)]
    burst = BurstConfig(every_s=1.0, duration_s=0.25, factor=4.0)
    # Per period: 0.25 s at 20 Hz + 0.75 s at 5 Hz = 8.75 expected arrivals.
    assert intensity_integral(1.0, 5.0, burst) == pytest.approx(8.75)
    assert intensity_integral(2.1, 5.0, burst) == pytest.approx(17.5 + 0.1 * 20)
    for t in (0.0, 0.1, 0.25, 0.6, 3.3):
        assert inverse_intensity(intensity_integral(t, 5.0, burst), 5.0, burst) == pytest.approx(t)
    rng = np.random.default_rng(0)
    t, times = 0.0, []
    while t < 400.0:
        t += next_arrival_s(t, 5.0, burst, rng)
        times.append(t)
    in_burst = np.mean([(x % 1.0) < 0.25 for x in times])
    # 5 / 8.75 = 0.571 of arrivals fall in bursts; ~3,500 arrivals: sd ~0.008.
    assert in_burst == pytest.approx(5 / 8.75, abs=0.04)


@pytest.mark.parametrize("override, needle", [
    ("inference.routing=nearest", "topk"),
    ("inference.routing=budgeted", "inference.budgeted"),
    ("inference.bursts={every_s: 1.0, duration_s: 2.0, factor: 3.0}", "duration_s"),
    ("inference.channel_aware.weight_per_s=-1", "weight_per_s"),
])
def test_bad_routing_settings_are_one_line_errors_naming_the_key(override: str, needle: str) -> None:
    from nmoe_sim.errors import ConfigError
    with pytest.raises(ConfigError) as err:
        tiny_cfg(override)
    assert "\n" not in str(err.value) and needle in str(err.value) and "inference" in str(err.value)


def test_budgeted_refuses_faults() -> None:
    from nmoe_sim.errors import ConfigError
    with pytest.raises(ConfigError, match="budgeted"):
        tiny_cfg("inference.routing=budgeted", "inference.budgeted={budget_s: 0.1}",
                 "faults={events: [{kind: crash, clients: [1], at_s: 0.0}]}")


def test_new_keys_at_their_defaults_stay_out_of_the_resolved_config() -> None:
    # So a resolved config.yaml, and a sweep point's config hash, read as before these keys
    # existed; set ones are kept, and either form validates back to the same scenario.
    from nmoe_sim.config import build_scenario
    plain = tiny_cfg().to_dict()
    assert sorted(plain["inference"]) == ["arrival_rate_hz", "max_queries_per_client"]
    assert "mobility" not in plain["network"] and "queries_global_share" not in plain["data"]
    assert build_scenario(plain) == tiny_cfg()
    cfg = tiny_cfg("inference.routing=channel_aware", "network.mobility={speed_m_per_s: 1.0}")
    full = cfg.to_dict()
    assert full["inference"]["routing"] == "channel_aware" and full["network"]["mobility"]["speed_m_per_s"] == 1.0
    assert build_scenario(full) == cfg
