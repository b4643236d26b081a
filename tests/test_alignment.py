"""Client-expert alignment math: config, fitness, load, capacity, assignment, aggregation."""

from __future__ import annotations

import itertools
import math
import typing

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from nmoe_sim.errors import ConfigError
from nmoe_sim.fl.alignment import (
    ASSIGNERS,
    FITNESS_SIGNALS,
    AlignmentConfig,
    LoadMonitor,
    aggregate_experts,
    assign,
    client_capacities,
    coefficient_of_variation,
    effective_load_bounds,
    expert_capacity,
    fitness_signal,
    init_fitness,
    parse_alignment,
    profile_capacity,
    resolve_load_bounds,
    update_fitness,
    usage_weighted_average,
)
from nmoe_sim.fl.alignment import assignment as assignment_mod


# ------------------------------------------------------------------ config
def test_config_defaults_valid_frozen_and_documented() -> None:
    cfg = parse_alignment(None)
    assert cfg == AlignmentConfig()
    with pytest.raises(ValidationError):
        cfg.experts = 3  # type: ignore[misc]
    missing = [n for n, f in AlignmentConfig.model_fields.items() if not f.description]
    assert missing == []


def test_config_literals_match_registries() -> None:
    fields = AlignmentConfig.model_fields
    assert sorted(typing.get_args(fields["assignment"].annotation)) == ASSIGNERS.names()
    assert sorted(typing.get_args(fields["fitness"].annotation)) == FITNESS_SIGNALS.names()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"bogus": 1}, "alignment.bogus: unknown key; allowed:"),
        ({"beta": 0}, "alignment.beta"),
        ({"participation": 1.5}, "alignment.participation"),
        ({"load_min": 3, "load_max": 2}, "alignment.load_max: 2 is below load_min=3"),
        ({"experts": 4, "fixed_capacity": 5}, "alignment.fixed_capacity: 5 exceeds experts=4"),
        ({"experts": 4, "capacity": {0: 9}}, "alignment.capacity: client 0 given 9"),
        ({"capacity": [1, "a"]}, "alignment.capacity: must be a mapping"),
        ({"assignment": "best"}, "alignment.assignment"),
    ],
)
def test_config_errors_are_one_line_and_name_the_key(raw: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_alignment(raw)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_config_capacity_accepts_mapping_or_tuple() -> None:
    assert parse_alignment({"capacity": {"2": 3}}).capacity == {2: 3}
    assert parse_alignment({"capacity": [1, 2]}).capacity == (1, 2)


# ------------------------------------------------------------------ fitness
def test_update_fitness_follows_ema_and_keeps_untried_pairs() -> None:
    q = np.array([[0.5, 0.5, 0.25], [0.75, 0.125, 0.5]])
    trained = np.array([[True, False, True], [False, True, False]])
    signal = np.array([[1.0, np.nan, 0.0], [0.0, 0.625, np.nan]])
    new = update_fitness(q, trained, signal, beta=0.25)
    expected = np.array([
        [0.75 * 0.5 + 0.25 * 1.0, 0.5, 0.75 * 0.25 + 0.25 * 0.0],
        [0.75, 0.75 * 0.125 + 0.25 * 0.625, 0.5],
    ])
    assert np.array_equal(new, expected)  # dyadic numbers: exact
    assert new[0, 0] == 0.625 and new[1, 1] == 0.25
    assert q[0, 0] == 0.5  # input untouched


def test_update_fitness_rejects_bad_beta_and_shapes() -> None:
    q = init_fitness(2, 3, 0.5)
    with pytest.raises(ValueError):
        update_fitness(q, np.ones((2, 3), bool), q, beta=0.0)
    with pytest.raises(ValueError):
        update_fitness(q, np.ones((3, 2), bool), q, beta=0.5)


def test_loss_signal_is_exp_minus_alpha_loss() -> None:
    loss = np.array([[0.0, 1.0], [2.0, math.log(2.0)]])
    s = fitness_signal("loss", None, loss, loss_alpha=0.5)
    expected = np.array([[1.0, math.exp(-0.5)], [math.exp(-1.0), 2.0 ** -0.5]])
    np.testing.assert_allclose(s, expected, rtol=1e-15, atol=0)


def test_accuracy_signal_passes_through_and_checks_range() -> None:
    acc = np.array([[0.25, 1.0]])
    assert np.array_equal(fitness_signal("accuracy", acc, None, 1.0), acc)
    with pytest.raises(ValueError):
        fitness_signal("accuracy", acc * 100, None, 1.0)
    with pytest.raises(ConfigError, match="alignment.fitness.*known: accuracy, loss"):
        fitness_signal("f1", acc, None, 1.0)


# ------------------------------------------------------------------ load
def test_coefficient_of_variation() -> None:
    assert coefficient_of_variation(np.full(5, 3.0)) == 0.0
    assert coefficient_of_variation(np.zeros(4)) == 0.0
    x = np.array([1.0, 2.0, 3.0, 10.0])
    assert coefficient_of_variation(x) == pytest.approx(np.std(x) / np.mean(x), rel=1e-15)


def test_load_monitor_deficit_accumulates_for_under_served_expert() -> None:
    mon = LoadMonitor(n_experts=3, decay=0.5)
    a1 = np.array([[1, 1, 0], [1, 1, 0]], dtype=bool)  # loads 2, 2, 0; fair share 4/3
    mon.observe(a1, a1 * 10.0)
    np.testing.assert_allclose(mon.deficit, [0, 0, 4 / 3], rtol=0, atol=1e-15)
    a2 = np.array([[1, 1, 0], [1, 0, 1]], dtype=bool)  # loads 2, 1, 1
    mon.observe(a2, a2 * np.array([[5.0, 3.0, 0.0], [1.0, 0.0, 1.0]]))
    np.testing.assert_allclose(mon.deficit, [0, 1 / 3, 0.5 * 4 / 3 + 1 / 3], rtol=0, atol=1e-15)
    assert mon.rounds == 2
    np.testing.assert_allclose(mon.utilization(), [0.6, 0.3, 0.1], rtol=1e-15)
    # Never forgetting, an expert nobody trains keeps gaining priority every round.
    never = LoadMonitor(n_experts=2, decay=1.0)
    seen = []
    for _ in range(4):
        never.observe(np.array([[True, False]] * 2), np.ones((2, 2)))
        seen.append(never.deficit[1])
    assert seen == [1.0, 2.0, 3.0, 4.0] and never.deficit[0] == 0.0


def test_load_monitor_before_any_round() -> None:
    mon = LoadMonitor(n_experts=4)
    assert np.array_equal(mon.utilization(), np.zeros(4)) and mon.utilization_cv() == 0.0


# ------------------------------------------------------------------ capacity
BASE = dict(fe_bytes=400_000, expert_bytes=100_000, expert_train_flops_per_round=4e9,
            round_budget_s=10.0, n_experts=8)


@pytest.mark.parametrize(
    ("memory_bytes", "flops_per_s", "uplink_bps", "k", "binding"),
    [
        (1_000_000, 1e12, 1e9, 2, "memory"),  # (1e6 - 4e5) / (3 * 1e5) = 2
        (1e12, 1e9, 1e9, 2, "compute"),  # 10 s * 1e9 / 4e9 = 2.5
        (1e12, 1e12, 240_000, 3, "link"),  # 10 s * 2.4e5 / 8e5 = 3
        (1e12, 1e12, 1e9, 8, "experts"),
        (300_000, 1e12, 1e9, 1, "memory"),  # cannot even hold the FE: still trains one
    ],
)
def test_capacity_binding_constraint(memory_bytes, flops_per_s, uplink_bps, k, binding) -> None:
    prof = profile_capacity(memory_bytes, flops_per_s, uplink_bps, **BASE)
    assert (prof.k, prof.binding) == (k, binding)
    assert expert_capacity(memory_bytes, flops_per_s, uplink_bps, **BASE) == k


def test_capacity_floor_is_robust_to_float_rounding() -> None:
    prof = profile_capacity(1e12, 1.0, 1e12, fe_bytes=0, expert_bytes=1,
                            expert_train_flops_per_round=0.1, round_budget_s=0.3, n_experts=8)
    assert prof.compute_k == 3  # 0.3 / 0.1 = 2.9999999999999996 in floats


def test_client_capacities_sources_and_overrides() -> None:
    fixed = AlignmentConfig(experts=4, capacity_from="fixed", fixed_capacity=2)
    assert client_capacities(fixed, 3).tolist() == [2, 2, 2]
    over = fixed.model_copy(update={"capacity": {1: 4}})
    assert client_capacities(over, 3).tolist() == [2, 4, 2]
    prof = AlignmentConfig(experts=4, capacity=(1, 3))
    assert client_capacities(prof, 2, [9, 9]).tolist() == [1, 3]
    assert client_capacities(AlignmentConfig(experts=4), 3, [0, 9, 2]).tolist() == [1, 4, 2]
    with pytest.raises(ConfigError, match="alignment.capacity: client index 5"):
        client_capacities(fixed.model_copy(update={"capacity": {5: 1}}), 3)
    with pytest.raises(ConfigError, match="alignment.capacity: 2 values"):
        client_capacities(prof, 3, [1, 1, 1])


# ------------------------------------------------------------------ assignment
def _check_bounds(x: np.ndarray, cap: np.ndarray, active: np.ndarray, lo: int, hi: int) -> None:
    n_experts = x.shape[1]
    assert np.array_equal(x.sum(axis=1), np.where(active, np.minimum(cap, n_experts), 0))
    loads = x.sum(axis=0)
    assert loads.min() >= lo and loads.max() <= hi


def test_alignment_respects_capacity_and_load_bounds_on_random_cases() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        n_clients, n_experts = int(rng.integers(2, 14)), int(rng.integers(2, 7))
        cap = rng.integers(1, n_experts + 1, n_clients)
        active = rng.random(n_clients) < 0.8
        q = rng.random((n_clients, n_experts))
        deficit = rng.random(n_experts) * rng.integers(0, 2)
        load_min = int(rng.integers(0, 4))
        load_max = max(load_min, int(math.ceil(cap.sum() / n_experts)) + int(rng.integers(0, 3)))
        x = assign("alignment", q, cap, load_min, load_max, deficit, 0.3, rng, active)
        lo, hi = effective_load_bounds(np.where(active, cap, 0), n_experts, load_min, load_max)
        _check_bounds(x, cap, active, lo, hi)
        assert lo == min(load_min, int(np.minimum(np.where(active, cap, 0), n_experts).sum())
                         // n_experts)


_ALL_3x4 = np.array(list(itertools.product([0, 1], repeat=12)), dtype=bool).reshape(-1, 3, 4)


def _brute_force(score: np.ndarray, cap: np.ndarray, lo: int, hi: int) -> tuple[float, np.ndarray]:
    ok = (np.all(_ALL_3x4.sum(axis=2) == cap, axis=1)
          & np.all((_ALL_3x4.sum(axis=1) >= lo) & (_ALL_3x4.sum(axis=1) <= hi), axis=1))
    feasible = _ALL_3x4[ok]
    values = (feasible * score).sum(axis=(1, 2))
    best = int(np.argmax(values))
    return float(values[best]), feasible[best]


@pytest.mark.parametrize("seed", range(18))
def test_alignment_equals_brute_force_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cap = rng.integers(1, 3, 3)
    # Coarse fitness values make exact ties common: the tie-breaking is tested too.
    q = rng.integers(0, 4, (3, 4)) / 4 if seed % 2 else rng.random((3, 4))
    deficit = rng.random(4) * 5 if seed % 3 else np.zeros(4)
    weight = 0.5
    load_min, load_max = [(1, 2), (0, 3), (1, 3)][seed % 3]
    x = assign("alignment", q, cap, load_min, load_max, deficit, weight, rng)
    lo, hi = effective_load_bounds(cap, 4, load_min, load_max)
    score = q + weight * deficit / deficit.max() if deficit.max() > 0 else q
    best, _ = _brute_force(score, cap, lo, hi)
    assert (x * score).sum() == pytest.approx(best, abs=1e-9)
    # With the documented perturbation the optimum is unique: the very same assignment.
    tie = assignment_mod.TIE_EPS * assignment_mod._tie_break(3, 4)
    _, exact = _brute_force(score + tie, cap, lo, hi)
    assert np.array_equal(x, exact)


def test_deficit_steers_alignment_to_under_served_expert() -> None:
    q = np.array([[0.9, 0.8, 0.1], [0.9, 0.8, 0.1]])
    cap = np.array([1, 1])
    rng = np.random.default_rng(0)
    no_history = assign("alignment", q, cap, 0, 1, np.zeros(3), 1.0, rng)
    assert no_history[:, :2].sum() == 2 and not no_history[:, 2].any()
    history = assign("alignment", q, cap, 0, 1, np.array([0.0, 0.0, 2.0]), 1.0, rng)
    assert history[:, 2].sum() == 1 and history[:, 0].sum() == 1


def test_alignment_is_deterministic_under_ties() -> None:
    q = np.full((6, 5), 0.5)
    cap = np.array([2, 1, 2, 2, 1, 2])
    runs = [assign("alignment", q, cap, 1, 2, np.zeros(5), 0.1, np.random.default_rng(s))
            for s in range(3)]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])


def test_infeasible_lower_bound_is_relaxed() -> None:
    cap = np.array([1, 1])  # 2 places for 4 experts that each want >= 1 client
    x = assign("alignment", np.random.default_rng(1).random((2, 4)), cap, 1, None,
               np.zeros(4), 0.0, np.random.default_rng(0))
    assert x.sum() == 2 and x.sum(axis=0).max() == 1
    assert effective_load_bounds(cap, 4, 1, None) == (0, 2)


def test_too_tight_upper_bound_is_a_config_error() -> None:
    cap = np.array([2, 2, 2])  # 6 places, at most 1 client x 4 experts = 4
    with pytest.raises(ConfigError, match=r"alignment.load_max: 1 .* set load_max >= 2"):
        assign("alignment", np.ones((3, 4)), cap, 1, 1, np.zeros(4), 0.0,
               np.random.default_rng(0))
    cfg = AlignmentConfig(experts=4, load_max=1)
    with pytest.raises(ConfigError, match="alignment.load_max"):
        resolve_load_bounds(cfg, cap)
    assert resolve_load_bounds(AlignmentConfig(experts=4, load_slack=1), cap) == (1, 3)
    with pytest.raises(ConfigError, match="alignment.load_min/load_max"):
        assign("alignment", np.ones((3, 4)), cap, 3, 2, np.zeros(4), 0.0,
               np.random.default_rng(0))


def test_greedy_takes_top_k_by_fitness_ties_to_lower_index() -> None:
    q = np.array([[0.1, 0.9, 0.5, 0.9], [0.3, 0.3, 0.3, 0.3], [0.2, 0.1, 0.4, 0.3]])
    x = assign("greedy", q, np.array([2, 2, 3]), 1, 1, np.ones(4), 10.0,
               np.random.default_rng(0))
    assert [np.flatnonzero(r).tolist() for r in x] == [[1, 3], [0, 1], [0, 2, 3]]
    # No load bounds: everyone may pile onto the same expert.
    same = assign("greedy", np.tile([0.0, 1.0, 0.5], (4, 1)), np.ones(4, int), 1, 1,
                  np.zeros(3), 0.0, np.random.default_rng(0))
    assert same[:, 1].all()


def test_random_respects_capacity_and_is_deterministic_for_a_seed() -> None:
    q = np.zeros((20, 6))
    cap = np.random.default_rng(3).integers(1, 7, 20)
    a = assign("random", q, cap, 1, 3, np.zeros(6), 0.0, np.random.default_rng(42))
    b = assign("random", q, cap, 1, 3, np.zeros(6), 0.0, np.random.default_rng(42))
    c = assign("random", q, cap, 1, 3, np.zeros(6), 0.0, np.random.default_rng(43))
    assert np.array_equal(a.sum(axis=1), cap)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_unlimited_gives_every_client_every_expert() -> None:
    x = assign("unlimited", np.zeros((3, 5)), np.array([1, 1, 1]), 1, 1, np.zeros(5), 0.0,
               np.random.default_rng(0))
    assert x.all()


@pytest.mark.parametrize("kind", ["alignment", "greedy", "random", "unlimited"])
def test_inactive_clients_get_no_expert(kind: str) -> None:
    active = np.array([True, False, True, False, True])
    x = assign(kind, np.random.default_rng(0).random((5, 3)), np.full(5, 2), 1, 3,
               np.zeros(3), 0.1, np.random.default_rng(0), active)
    assert not x[~active].any() and x[active].any()


def test_unknown_assignment_lists_known() -> None:
    with pytest.raises(ConfigError, match="alignment.assignment.*known: alignment, greedy"):
        assign("best", np.zeros((1, 1)), np.ones(1, int), 0, 1, np.zeros(1), 0.0,
               np.random.default_rng(0))


# ------------------------------------------------------------------ aggregation
def test_usage_weighted_average_of_arrays() -> None:
    states = [np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 6.0])]
    out = usage_weighted_average(states, np.array([1.0, 0.0, 3.0]))
    assert np.array_equal(out, np.array([4.0, 5.0]))
    assert np.array_equal(usage_weighted_average(states, np.zeros(3)), np.array([3.0, 4.0]))
    with pytest.raises(ValueError):
        usage_weighted_average(states, np.ones(2))
    with pytest.raises(ValueError):
        usage_weighted_average(states, np.array([1.0, -1.0, 1.0]))


def test_usage_weighted_average_of_state_dicts() -> None:
    g = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(3, 2, generator=g), "b": torch.randn(2, generator=g)}
              for _ in range(3)]
    usage = np.array([10.0, 30.0, 60.0])
    out = usage_weighted_average(states, usage)
    for key in ("w", "b"):
        hand = 0.1 * states[0][key] + 0.3 * states[1][key] + 0.6 * states[2][key]
        assert torch.allclose(out[key], hand, rtol=0, atol=1e-6)
        mean = (states[0][key] + states[1][key] + states[2][key]) / 3
        assert torch.allclose(usage_weighted_average(states, np.zeros(3))[key], mean,
                              rtol=0, atol=1e-6)
        assert out[key].dtype == torch.float32


def test_aggregate_experts_touches_only_trained_experts() -> None:
    current = [{"w": torch.full((2,), float(e))} for e in range(3)]
    updates = {
        0: [(4, {"w": torch.tensor([2.0, 4.0])}, 1.0), (7, {"w": torch.tensor([6.0, 8.0])}, 3.0)],
        1: [(2, {"w": torch.tensor([9.0, 9.0])}, 0.0)],
    }
    out = aggregate_experts(current, updates)
    assert torch.equal(out[0]["w"], torch.tensor([5.0, 7.0]))
    assert torch.equal(out[1]["w"], torch.tensor([9.0, 9.0]))
    assert torch.equal(out[2]["w"], current[2]["w"])
    assert out[2]["w"].data_ptr() != current[2]["w"].data_ptr()
    assert torch.equal(current[0]["w"], torch.zeros(2))  # inputs untouched
    with pytest.raises(ValueError):
        aggregate_experts(current, {3: updates[1]})


def test_alignment_does_not_depend_on_client_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # Same problem, clients listed in another order (the tie-break matrix moving with
    # them): the solver's internal choices must not leak into the answer.
    rng = np.random.default_rng(5)
    q = rng.integers(0, 3, (30, 6)) / 2  # many exact ties
    cap = rng.integers(1, 4, 30)
    hi = int(math.ceil(cap.sum() / 6))
    x = assign("alignment", q, cap, 1, hi, np.zeros(6), 0.1, rng)
    perm = rng.permutation(30)
    u = assignment_mod._tie_break(30, 6)
    monkeypatch.setattr(assignment_mod, "_tie_break", lambda c, e: u[perm])
    y = assign("alignment", q[perm], cap[perm], 1, hi, np.zeros(6), 0.1, rng)
    assert np.array_equal(x[perm], y)
