"""Pure federated math against independent numpy computations: FedAvg, FedSC's spectral
loss, norm clipping, the alpha schedule, mixture combination and routing scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmoe_sim.fl.aggregate import fedavg, weighted_average
from nmoe_sim.fl.fedsc_loss import alpha_schedule, clip_norm, correlation, spectral_loss
from nmoe_sim.fl.routing import combine, score


def random_states(rng: np.random.Generator, n: int) -> list[dict[str, torch.Tensor]]:
    return [{"w": torch.as_tensor(rng.normal(size=(3, 4)), dtype=torch.float32),
             "b": torch.as_tensor(rng.normal(size=(4,)), dtype=torch.float32)} for _ in range(n)]


# --------------------------------------------------------------------------- FedAvg
def test_fedavg_matches_numpy_sample_weighted_mean() -> None:
    rng = np.random.default_rng(1)
    states = random_states(rng, 3)
    samples = [10, 30, 60]
    out = fedavg(states, samples)
    p = np.array(samples, dtype=np.float64) / 100.0
    for key in ("w", "b"):
        expect = sum(pi * st[key].double().numpy() for pi, st in zip(p, states))
        np.testing.assert_allclose(out[key].numpy(), expect, rtol=1e-6, atol=1e-7)
        assert out[key].dtype == torch.float32
    # Not the plain mean: the weights matter.
    plain = np.mean([st["w"].numpy() for st in states], axis=0)
    assert not np.allclose(out["w"].numpy(), plain)


def test_weighted_average_inputs_untouched_and_not_aliased() -> None:
    rng = np.random.default_rng(2)
    states = random_states(rng, 2)
    before = [{k: v.clone() for k, v in s.items()} for s in states]
    out = weighted_average(states, [1.0, 3.0])
    assert set(out) == set(states[0])
    np.testing.assert_allclose(out["b"].numpy(), 0.25 * states[0]["b"].numpy() + 0.75 * states[1]["b"].numpy(),
                               rtol=1e-6)
    for s, b in zip(states, before):
        assert all(torch.equal(s[k], b[k]) for k in s)
    out["b"].add_(1.0)  # the result owns its storage
    assert all(torch.equal(s["b"], b["b"]) for s, b in zip(states, before))


def test_weighted_average_rejects_states_with_different_keys() -> None:
    rng = np.random.default_rng(4)
    a, b = random_states(rng, 2)
    del b["b"]
    with pytest.raises(ValueError, match="different keys"):
        weighted_average([a, b], [1.0, 1.0])


def test_zero_weights_fall_back_to_plain_mean() -> None:
    rng = np.random.default_rng(3)
    states = random_states(rng, 4)
    out = weighted_average(states, [0, 0, 0, 0])
    np.testing.assert_allclose(out["w"].numpy(), np.mean([s["w"].numpy() for s in states], axis=0), rtol=1e-6)


@pytest.mark.parametrize("weights", [[1.0], [1.0, 2.0, 3.0]])
def test_mismatched_lengths_rejected(weights: list[float]) -> None:
    states = random_states(np.random.default_rng(4), 2)
    with pytest.raises(ValueError, match="2 states but"):
        weighted_average(states, weights)
    with pytest.raises(ValueError, match="2 states but"):
        fedavg(states, [int(w) for w in weights])


def test_empty_and_negative_weights_rejected() -> None:
    with pytest.raises(ValueError, match="at least one state"):
        weighted_average([], [])
    with pytest.raises(ValueError, match="non-negative"):
        weighted_average(random_states(np.random.default_rng(5), 2), [1.0, -1.0])


# --------------------------------------------------------------------------- FedSC loss
def numpy_spectral_loss(z1: np.ndarray, z0: np.ndarray, alpha: float, r_ext: np.ndarray | None) -> float:
    """L = -(2/B) tr(z1 z0^T) + alpha ||R_loc||_F^2 + 2(1-alpha) tr(R_loc R_ext), R_loc = Z^T Z/(2B)."""
    b = z1.shape[0]
    z = np.concatenate([z1, z0], axis=0)  # (2B, P)
    r_loc = z.T @ z / (2 * b)
    align = -2.0 / b * np.trace(z1 @ z0.T)
    if r_ext is None:
        return float(align + np.sum(r_loc**2))
    return float(align + alpha * np.sum(r_loc**2) + 2.0 * (1.0 - alpha) * np.trace(r_loc @ r_ext))


@pytest.mark.parametrize("alpha", [1.0, 0.6, 0.0])
def test_spectral_loss_matches_formula(alpha: float) -> None:
    rng = np.random.default_rng(6)
    z1, z0 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    a = rng.normal(size=(3, 3))
    r_ext = a @ a.T / 3  # a symmetric PSD correlation, as the server shares
    got = spectral_loss(torch.as_tensor(z1), torch.as_tensor(z0), alpha, torch.as_tensor(r_ext))
    assert float(got) == pytest.approx(numpy_spectral_loss(z1, z0, alpha, r_ext), rel=1e-10)


def test_spectral_loss_without_r_ext_is_local_loss_and_ignores_alpha() -> None:
    rng = np.random.default_rng(7)
    z1, z0 = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    expect = numpy_spectral_loss(z1, z0, 1.0, None)
    for alpha in (1.0, 0.3):
        assert float(spectral_loss(torch.as_tensor(z1), torch.as_tensor(z0), alpha, None)) == pytest.approx(expect)
    # With r_ext given and alpha 1 the R_ext term vanishes: same value.
    r_ext = torch.eye(2, dtype=torch.float64)
    assert float(spectral_loss(torch.as_tensor(z1), torch.as_tensor(z0), 1.0, r_ext)) == pytest.approx(expect)


def test_spectral_loss_hand_example() -> None:
    # B = 1, P = 1, z1 = z0 = [1]: R_loc = (1 + 1)/2 = 1; L = -2 + alpha + 2(1-alpha) r.
    z = torch.tensor([[1.0]], dtype=torch.float64)
    assert float(spectral_loss(z, z, 0.5, torch.tensor([[3.0]], dtype=torch.float64))) == pytest.approx(-2 + 0.5 + 3.0)
    np.testing.assert_allclose(correlation(z, z).numpy(), [[1.0]])


def test_clip_norm_bounds_long_rows_and_keeps_short_ones() -> None:
    mu = 4.0  # radius 2
    z = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0], [0.0, -10.0]])
    out = clip_norm(z, mu)
    norms = out.norm(dim=1)
    np.testing.assert_allclose(norms.numpy(), [2.0, 1.0, 0.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(out[0].numpy(), [1.2, 1.6], rtol=1e-6)  # direction kept
    assert torch.equal(out[1], z[1])  # short vector untouched
    assert torch.equal(out[2], z[2])  # zero vector stays zero (no division by zero)
    assert torch.all(norms <= mu**0.5 + 1e-6)


def test_alpha_schedule_endpoints_and_linearity() -> None:
    assert alpha_schedule(0, 5, 1.0, 0.2) == pytest.approx(1.0)
    assert alpha_schedule(4, 5, 1.0, 0.2) == pytest.approx(0.2)
    assert alpha_schedule(2, 5, 1.0, 0.2) == pytest.approx(0.6)
    assert alpha_schedule(0, 1, 1.0, 0.2) == pytest.approx(0.2)  # one round: the end value


# --------------------------------------------------------------------------- mixture and scores
def test_combine_drops_undelivered_experts_and_renormalizes() -> None:
    # 3 experts, 2 queries, 2 classes. probs[e, q] = class probabilities of expert e on query q.
    probs = torch.tensor([
        [[0.9, 0.1], [0.2, 0.8]],  # expert 0
        [[0.5, 0.5], [0.6, 0.4]],  # expert 1
        [[0.1, 0.9], [1.0, 0.0]],  # expert 2
    ])
    idx = torch.tensor([[0, 2], [1, 2]])  # (Q, k=2)
    weights = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    all_ok = torch.ones(2, 2)
    out = combine(probs, weights, idx, all_ok)
    # q0: 0.75*[0.9,0.1] + 0.25*[0.1,0.9] = [0.7, 0.3]; q1: 0.5*[0.6,0.4] + 0.5*[1,0] = [0.8, 0.2]
    np.testing.assert_allclose(out.numpy(), [[0.7, 0.3], [0.8, 0.2]], rtol=1e-6)
    # Expert 0 lost for q0: only expert 2 remains, renormalised to weight 1 -> [0.1, 0.9].
    # Both lost for q1: all-zero row (the caller chooses the fallback).
    delivered = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    out = combine(probs, weights, idx, delivered)
    np.testing.assert_allclose(out.numpy(), [[0.1, 0.9], [0.0, 0.0]], atol=1e-7)


def test_score_local_ratio_and_gating_counts_by_hand() -> None:
    # Two clients, three experts, k = 2 routing slots per query.
    ys = [np.array([0, 1]), np.array([1])]
    preds = [np.array([0, 0]), np.array([1])]
    routes = [np.array([[0, 1], [0, 2]]), np.array([[1, 2]])]
    s = score(ys, preds, routes, num_classes=2, n_experts=3)
    np.testing.assert_array_equal(s.gating_counts, [[2, 1, 1], [0, 1, 1]])
    # Local slots: client 0 -> expert 0 twice, client 1 -> expert 1 once: 3 of 6 slots.
    assert s.local_ratio == pytest.approx(0.5)
    assert s.accuracy == pytest.approx(2 / 3)
    # Class 0: P = 1/2, R = 1 -> F1 2/3; class 1: P = 1, R = 1/2 -> F1 2/3.
    assert s.f1_macro == pytest.approx(2 / 3)


def test_score_without_routes_is_all_local() -> None:
    s = score([np.array([0, 1])], [np.array([0, 1])], None, 2, 0)
    assert (s.local_ratio, s.accuracy, s.f1_macro) == (1.0, 1.0, 1.0)
    assert s.gating_counts.size == 0
