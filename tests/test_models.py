"""Models: exact FLOP counts from the real modules, parameter counts, the noisy top-k gate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmoe_sim.models import (
    Classifier,
    ContrastiveModel,
    Expert,
    FeatureExtractor,
    Gate,
    forward_flops_per_sample,
    param_bytes,
    param_count,
    topk_route,
    train_flops_per_sample,
)
from nmoe_sim.models.build import make_gate
from nmoe_sim.seeds import SeedStreams

from conftest import (
    TINY_CLASSIFIER_PARAMS,
    TINY_FE_PARAMS,
    TINY_FEDSC_PARAMS,
    TINY_GATE_PARAMS,
    tiny_cfg,
)


# --------------------------------------------------------------------------- FLOPs
def test_feature_extractor_forward_flops_exact() -> None:
    fe = FeatureExtractor((1, 8, 8), (16, 32), 64)
    # 2 FLOPs per multiply-accumulate, biases and element-wise ops not counted:
    #   conv1 1->16, 3x3, on 8x8:            2 * 16 * (1*9) * 64  =  18432
    #   pool -> 4x4; conv2 16->32, 3x3:      2 * 32 * (16*9) * 16 = 147456
    #   pool -> 2x2; fc 32*2*2 = 128 -> 64:  2 * 128 * 64         =  16384
    assert 2 * 16 * 9 * 64 + 2 * 32 * 16 * 9 * 16 + 2 * 128 * 64 == 182272
    assert forward_flops_per_sample(fe, (1, 8, 8)) == 182272.0
    assert train_flops_per_sample(fe, (1, 8, 8)) == 3 * 182272.0


def test_feature_extractor_skips_pooling_below_4x4() -> None:
    # 8x8 -> pool 4x4 -> pool 2x2 -> (2x2 < 4: no pool) stays 2x2: fc in = 8 * 2 * 2.
    fe = FeatureExtractor((1, 8, 8), (2, 4, 8), 5)
    assert fe.fc.in_features == 32
    assert fe(torch.zeros(3, 1, 8, 8)).shape == (3, 5)


def test_expert_flops_and_train_is_three_forward() -> None:
    e = Expert(64, 32, 10)
    # Linear 64->32 and 32->10: 2*64*32 + 2*32*10 = 4096 + 640.
    assert forward_flops_per_sample(e, (64,)) == 4736.0
    assert train_flops_per_sample(e, (64,)) == 3 * 4736.0


def test_flop_count_restores_training_mode() -> None:
    e = Expert(4, 4, 2)
    e.train()
    forward_flops_per_sample(e, (4,))
    assert e.training
    e.eval()
    forward_flops_per_sample(e, (4,))
    assert not e.training


def test_tiny_model_param_counts() -> None:
    fe = FeatureExtractor((1, 8, 8), (4,), 8)
    assert param_count(fe) == TINY_FE_PARAMS == 560
    assert param_count(Classifier(fe, 10)) == TINY_CLASSIFIER_PARAMS == 650
    assert param_count(ContrastiveModel(FeatureExtractor((1, 8, 8), (4,), 8), 4)) == TINY_FEDSC_PARAMS == 668
    assert param_count(Gate(8, 8, 4)) == TINY_GATE_PARAMS == 144
    assert param_bytes(Classifier(fe, 10), 2) == 1300


# --------------------------------------------------------------------------- gate
def test_topk_route_picks_largest_and_weights_sum_to_one() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.0],
                           [5.0, 4.0, 3.0, 6.0]])
    w, idx = topk_route(logits, 2)
    np.testing.assert_array_equal(idx.numpy(), [[1, 3], [3, 0]])
    np.testing.assert_allclose(w.sum(1).numpy(), [1.0, 1.0], rtol=1e-6)
    # softmax over the two kept logits: e^2/(e^2+e^1) and e^6/(e^6+e^5), both 1/(1+e^-1).
    top = 1.0 / (1.0 + np.exp(-1.0))
    np.testing.assert_allclose(w.numpy(), [[top, 1 - top], [top, 1 - top]], rtol=1e-6)
    w1, idx1 = topk_route(logits, 1)
    np.testing.assert_array_equal(idx1.numpy(), [[1], [3]])
    np.testing.assert_allclose(w1.numpy(), [[1.0], [1.0]])


def test_topk_route_random_logits() -> None:
    logits = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    w, idx = topk_route(logits, 3)
    np.testing.assert_allclose(w.sum(1).numpy(), np.ones(50), rtol=1e-6)
    expect = np.argsort(-logits.numpy(), axis=1)[:, :3]
    np.testing.assert_array_equal(np.sort(idx.numpy(), 1), np.sort(expect, 1))
    assert torch.all(w[:, :-1] >= w[:, 1:])  # sorted by logit, largest first


def make_test_gate(noisy: bool = True) -> Gate:
    cfg = tiny_cfg(f"model.gate_noise={str(noisy).lower()}")
    return make_gate(cfg, 4, SeedStreams(0), "test-gate")


def test_gate_noise_only_in_train_mode_with_generator() -> None:
    gate = make_test_gate()
    h = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        clean = gate.head(gate.trunk(h))
        gate.eval()
        assert torch.equal(gate(h, torch.Generator().manual_seed(2)), clean)  # eval: no noise
        gate.train()
        assert torch.equal(gate(h), clean)  # no generator: no noise
        noisy_a = gate(h, torch.Generator().manual_seed(2))
        noisy_b = gate(h, torch.Generator().manual_seed(2))
        noisy_c = gate(h, torch.Generator().manual_seed(3))
    assert not torch.allclose(noisy_a, clean)
    assert torch.equal(noisy_a, noisy_b)  # the injected generator decides the noise
    assert not torch.equal(noisy_a, noisy_c)


def test_gate_without_noise_flag_never_adds_noise() -> None:
    gate = make_test_gate(noisy=False)
    gate.train()
    h = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(gate(h, torch.Generator().manual_seed(2)), gate.head(gate.trunk(h)))


def test_seeded_construction_is_repeatable_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = make_gate(tiny_cfg(), 4, SeedStreams(0), "g")
    b = make_gate(tiny_cfg(), 4, SeedStreams(0), "g")
    c = make_gate(tiny_cfg(), 4, SeedStreams(1), "g")
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.head.weight, c.head.weight)


@pytest.mark.parametrize("k", [1, 2])
def test_gate_logits_shape(k: int) -> None:
    gate = make_test_gate()
    w, idx = topk_route(gate(torch.zeros(3, 8)), k)
    assert w.shape == idx.shape == (3, k)


def test_all_expert_probs_equals_each_expert_in_turn() -> None:
    from nmoe_sim.models import Expert, all_expert_probs

    torch.manual_seed(0)
    experts = [Expert(8, 16, 10) for _ in range(5)]
    feats = torch.randn(7, 8)
    got = all_expert_probs(experts, feats)
    assert got.shape == (5, 7, 10)
    with torch.no_grad():
        want = torch.stack([torch.softmax(e(feats), -1) for e in experts])
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert torch.allclose(got.sum(-1), torch.ones(5, 7))


def test_the_projection_batchnorm_is_torchs_without_running_statistics() -> None:
    from nmoe_sim.models.modules import BatchNorm, ProjectionHead

    h = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    ours, ref = BatchNorm(8), torch.nn.BatchNorm1d(8, track_running_stats=False)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    for mode in (True, False):  # batch statistics in training and in evaluation alike
        ours.train(mode), ref.train(mode)
        torch.testing.assert_close(ours(h), ref(h), rtol=1e-5, atol=1e-5)
    assert torch.equal(ours(h[:1]), ours.bias.detach()[None])  # one sample: the bias, not an error
    head = ProjectionHead(8, 4, batchnorm=True)
    assert [type(m).__name__ for m in head.net] == ["Linear", "BatchNorm", "ReLU", "Linear"]
    assert [type(m).__name__ for m in ProjectionHead(8, 4).net] == ["Linear", "ReLU", "Linear"]


def test_the_group_norm_fe_normalises_each_sample_alone_and_federates_as_weights() -> None:
    plain = FeatureExtractor((1, 8, 8), (16, 32), 64)
    grouped = FeatureExtractor((1, 8, 8), (16, 32), 64, norm="group")
    norms = [m for m in grouped.conv if isinstance(m, torch.nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in norms] == [(8, 16), (8, 32)]
    # Weights and biases only: no running statistics for FedAvg to average badly.
    assert list(grouped.buffers()) == [] and set(grouped.state_dict()) == {n for n, _ in grouped.named_parameters()}
    assert param_count(grouped) == param_count(plain) + 2 * (16 + 32)
    # The same FLOPs (normalisation is element-wise, not counted, as ReLU is not).
    assert forward_flops_per_sample(grouped, (1, 8, 8)) == forward_flops_per_sample(plain, (1, 8, 8))
    # A sample's features do not depend on the batch it comes in.
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    grouped.train()
    torch.testing.assert_close(grouped(x)[:1], grouped(x[:1]), rtol=1e-6, atol=1e-6)
    # Group counts divide the width (8 where it does, else the largest divisor of 8 that does).
    assert [m.num_groups for m in FeatureExtractor((1, 8, 8), (12, 6), 4, norm="group").conv
            if isinstance(m, torch.nn.GroupNorm)] == [4, 2]
    with pytest.raises(Exception, match=r"model\.fe_norm"):
        tiny_cfg("model.fe_norm=batch")
