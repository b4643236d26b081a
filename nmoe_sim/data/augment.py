"""Random views for contrastive training (FedSC stage 1), after SimCLR (Chen et al., 2020):
random resized crop, horizontal flip, and for colour images colour jitter and grayscale
(the FedSC authors' CIFAR views). One-channel images get brightness/contrast jitter, a
small random affine, Gaussian blur, noise and random erasing instead (``augment.mono``,
:mod:`nmoe_sim.data.mono_views`), the usual substitutes in SSL on MNIST-like data: crop
and flip alone leave two views of a small grey image nearly alike.

kornia samples its parameters from the *global* torch RNG. To keep randomness injected,
each call forks the global RNG, seeds it from the caller's ``torch.Generator`` and restores
it afterwards: the same generator state gives the same view, and nothing else in the
process sees its random stream move.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn

from nmoe_sim.config import AugmentConfig
from nmoe_sim.data.mono_views import COLOR_SPAN_STD, MonoViews


# Inputs are standardized per channel (zero mean, unit std) but colour ops expect pixels in
# [0, 1]. For natural images the original [0, 1] range lands at roughly +-2 std (CIFAR-10:
# mean ~0.47, std ~0.25 per channel), so the fixed affine map u = x / (2 * span) + 0.5 with
# span = 2 approximately recovers the pixel scale. It is the same map for every batch (a
# per-batch min-max would make a view depend on its batch-mates), it is inverted exactly
# after the colour ops, and only values beyond +-2 std are clipped by kornia's [0, 1] clamp.


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return x / (2 * COLOR_SPAN_STD) + 0.5


def _from_unit(u: torch.Tensor) -> torch.Tensor:
    return (u - 0.5) * (2 * COLOR_SPAN_STD)


class ViewAugmenter:
    """``aug(x, gen)``: x (B, C, H, W) standardized float -> one random view, same shape."""

    def __init__(self, input_shape: tuple[int, int, int], geometric: nn.Module, colour: nn.Module | None) -> None:
        self.input_shape = input_shape
        self.geometric = geometric
        self.colour = colour

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw_seed(gen))

    @staticmethod
    def draw_seed(gen: torch.Generator) -> int:
        """The one draw a view takes from the caller's generator (a training task draws its
        views' seeds in advance, with its plan)."""
        return int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())

    def apply(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """The view of ``x`` that ``seed`` picks."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected (B, *{self.input_shape}) input, got {tuple(x.shape)}")
        # Fork the CUDA RNG of x's device as well, in case a kernel draws there.
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if devices:
                torch.manual_seed(seed)
            else:
                # The CPU generator alone: torch.manual_seed also queues a seed for every
                # accelerator backend, formatting a stack trace each time (a tenth of the
                # quickstart's FedSC time, measured by cProfile).
                torch.default_generator.manual_seed(seed)
            view = self.geometric(x)  # (B, C, H, W); crops and flips are range-agnostic
            if self.colour is not None:
                view = _from_unit(self.colour(_to_unit(view)))
        return view


def make_views(cfg: AugmentConfig, input_shape: tuple[int, int, int]) -> "ViewAugmenter | MonoViews":
    """Build the augmentation pipeline once for inputs of shape (C, H, W): kornia's for
    colour images, :class:`~nmoe_sim.data.mono_views.MonoViews` for one-channel ones."""
    channels, height, width = input_shape
    if channels == 1:
        return MonoViews(cfg, input_shape)
    geometric: list[nn.Module] = [
        K.RandomResizedCrop(size=(height, width), scale=(cfg.crop_scale_min, 1.0)),
    ]
    if cfg.flip:
        geometric.append(K.RandomHorizontalFlip())
    colour: list[nn.Module] = []
    if channels == 3:
        if cfg.color_jitter > 0:
            jitter = cfg.color_jitter
            colour.append(
                K.ColorJitter(
                    brightness=jitter,
                    contrast=jitter,
                    saturation=jitter,
                    hue=min(0.1, jitter / 4),
                    p=0.8,
                )
            )
        if cfg.grayscale_p > 0:
            colour.append(K.RandomGrayscale(p=cfg.grayscale_p))
    return ViewAugmenter(
        input_shape=(channels, height, width),
        geometric=nn.Sequential(*geometric),
        colour=nn.Sequential(*colour) if colour else None,
    )
