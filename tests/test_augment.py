"""Contrastive views: shape, injected determinism, and the global RNG left alone."""

from __future__ import annotations

import pytest
import torch

from nmoe_sim.config import AugmentConfig
from nmoe_sim.data.augment import make_views


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (1, 8, 8)])
def test_shape_and_dtype(shape: tuple[int, int, int]) -> None:
    aug = make_views(AugmentConfig(), shape)
    x = torch.randn(5, *shape, generator=gen(0))
    view = aug(x, gen(1))
    assert view.shape == x.shape and view.dtype == torch.float32
    assert torch.isfinite(view).all()


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 8, 8)])
def test_same_seed_same_view_other_seed_differs(shape: tuple[int, int, int]) -> None:
    aug = make_views(AugmentConfig(), shape)
    x = torch.randn(8, *shape, generator=gen(0))
    a, b, c = aug(x, gen(3)), aug(x, gen(3)), aug(x, gen(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, x)  # it does augment


def test_successive_calls_advance_the_generator() -> None:
    aug = make_views(AugmentConfig(), (3, 16, 16))
    x = torch.randn(4, 3, 16, 16, generator=gen(0))
    g = gen(9)
    first, second = aug(x, g), aug(x, g)
    assert not torch.allclose(first, second)


def test_global_rng_untouched() -> None:
    aug = make_views(AugmentConfig(), (3, 16, 16))
    x = torch.randn(4, 3, 16, 16, generator=gen(0))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    aug(x, gen(5))
    assert torch.equal(torch.get_rng_state(), before)


def test_geometry_only_stays_in_input_range() -> None:
    # Without colour ops a view only resamples the input (bilinear crop), so no value can
    # leave the input's range; a colour op applied by mistake to 1-channel-like data would.
    cfg = AugmentConfig(crop_scale_min=0.5, flip=True, color_jitter=0.0, grayscale_p=0.0)
    aug = make_views(cfg, (3, 8, 8))
    x = torch.randn(3, 3, 8, 8, generator=gen(0))
    view = aug(x, gen(1))
    assert view.min() >= x.min() - 1e-5 and view.max() <= x.max() + 1e-5


def test_colour_ops_keep_standardized_scale() -> None:
    cfg = AugmentConfig(crop_scale_min=1.0, flip=False, color_jitter=0.4, grayscale_p=1.0)
    aug = make_views(cfg, (3, 16, 16))
    x = torch.randn(16, 3, 16, 16, generator=gen(0)).clamp(-2, 2)
    view = aug(x, gen(2))
    # Grayscale with p=1: all three channels equal; values stay within the +-2 std span.
    assert torch.allclose(view[:, 0], view[:, 1], atol=1e-5)
    assert view.abs().max() <= 2.0 + 1e-5


def test_wrong_input_shape() -> None:
    aug = make_views(AugmentConfig(), (1, 8, 8))
    with pytest.raises(ValueError, match="expected"):
        aug(torch.zeros(2, 3, 8, 8), gen(0))


@pytest.mark.parametrize("off", [
    {"brightness_contrast": 0, "affine_p": 0, "blur_p": 0, "noise_std": 0, "erase_p": 0},  # crop only
    {"noise_std": 0, "erase_p": 0},  # the last two ops off
    {"blur_p": 0},  # an op in the middle off: still drawn, so the later ops' draws stay put
])
def test_ops_that_are_off_change_no_view(off: dict) -> None:
    # One-channel views skip the ops after the last one that is on; every view must equal
    # the one every op in turn makes from the same per-view generator.
    from nmoe_sim.data.mono_views import MonoViews

    views = MonoViews(AugmentConfig(crop_scale_min=0.6, flip=False, mono=off), (1, 8, 8))
    x = torch.randn(16, 1, 8, 8)
    gen = torch.Generator().manual_seed(7)
    full = views._geometry(x, gen, 16)
    for op in (views._intensity, views._blur, views._noise, views._erase):
        full = op(full, gen, 16, 8, 8)
    assert torch.equal(views.apply(x, 7), full)
