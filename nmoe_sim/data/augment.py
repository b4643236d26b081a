"""Random views for contrastive training (FedSC stage 1), after SimCLR (Chen et al., 2020):
random resized crop, horizontal flip, and for colour images colour jitter and grayscale
(the FedSC authors' CIFAR views). One-channel images get brightness/contrast jitter, a
small random affine, Gaussian blur, noise and random erasing instead (``augment.mono``),
the usual substitutes in SSL on MNIST-like data: with crop and flip alone the two views
were so alike that FedSC's projections collapsed onto them.

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


# Inputs are standardized per channel (zero mean, unit std) but colour ops expect pixels in
# [0, 1]. For natural images the original [0, 1] range lands at roughly +-2 std (CIFAR-10:
# mean ~0.47, std ~0.25 per channel), so the fixed affine map u = x / (2 * span) + 0.5 with
# span = 2 approximately recovers the pixel scale. It is the same map for every batch (a
# per-batch min-max would make a view depend on its batch-mates), it is inverted exactly
# after the colour ops, and only values beyond +-2 std are clipped by kornia's [0, 1] clamp.
COLOR_SPAN_STD = 2.0


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return x / (2 * COLOR_SPAN_STD) + 0.5


def _from_unit(u: torch.Tensor) -> torch.Tensor:
    return (u - 0.5) * (2 * COLOR_SPAN_STD)


class ViewAugmenter:
    """``aug(x, gen)``: x (B, C, H, W) standardized float -> one random view, same shape.

    Three stages, each in the value range its ops expect: ``geometric`` (crops, flips,
    affine: range-agnostic), ``colour`` (on pixels mapped to [0, 1]), ``post`` (noise and
    erasing, on the standardized values, so their sizes are in units of one pixel std).
    """

    def __init__(self, input_shape: tuple[int, int, int], geometric: nn.Module, colour: nn.Module | None,
                 post: nn.Module | None = None) -> None:
        self.input_shape = input_shape
        self.geometric = geometric
        self.colour = colour
        self.post = post

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
            if self.post is not None:
                view = self.post(view)
        return view


def make_views(cfg: AugmentConfig, input_shape: tuple[int, int, int]) -> ViewAugmenter:
    """Build the augmentation pipeline once for inputs of shape (C, H, W)."""
    channels, height, width = input_shape
    geometric: list[nn.Module] = [
        K.RandomResizedCrop(size=(height, width), scale=(cfg.crop_scale_min, 1.0)),
    ]
    if cfg.flip:
        geometric.append(K.RandomHorizontalFlip())
    colour: list[nn.Module] = []
    post: list[nn.Module] = []
    if channels == 1:
        # Colour jitter and grayscale mean nothing for one-channel images (digits,
        # Fashion-MNIST): intensity, geometry, blur, noise and occlusion instead.
        mono = cfg.mono
        if mono.affine_p > 0 and (mono.rotate_deg > 0 or mono.translate > 0):
            geometric.append(K.RandomAffine(degrees=mono.rotate_deg, translate=(mono.translate, mono.translate),
                                            p=mono.affine_p))
        if mono.brightness_contrast > 0:
            colour.append(K.ColorJitter(brightness=mono.brightness_contrast, contrast=mono.brightness_contrast,
                                        p=0.8))
        if mono.blur_p > 0:
            colour.append(K.RandomGaussianBlur(kernel_size=(3, 3), sigma=(0.1, 1.0), p=mono.blur_p))
        if mono.noise_std > 0:
            post.append(K.RandomGaussianNoise(mean=0.0, std=mono.noise_std, p=0.5))
        if mono.erase_p > 0:
            post.append(K.RandomErasing(scale=(0.02, 0.25), p=mono.erase_p))
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
        post=nn.Sequential(*post) if post else None,
    )
