"""FedSC's random views for one-channel images, each op one batched kernel in plain torch.

Why not kornia here: on the quickstart's 8x8 digits, kornia's six per-batch ops cost 2.4x
the FE's own forward and backward pass (measured: 6.4 ms of views against 5.2 ms of
training per SGD step of two views, batch 32, one thread), and on 28x28 Fashion-MNIST
they were 39 % of a step: per-op overhead, not arithmetic. Here every random parameter
of a batch is drawn up front from a ``torch.Generator`` seeded by the view's seed (so
nothing touches the global RNG, and the same seed gives the same view), and the ops run
as one ``grid_sample`` (crop, flip, rotation and shift composed into one affine map per
sample), one pointwise brightness/contrast, one grouped 3x3 convolution (per-sample
Gaussian blur), one masked noise add and one masked erase.

The ops follow SimCLR-style augmentation (Chen et al., 2020) as kornia implements them:
random resized crop (area share U(crop_scale_min, 1), log-uniform aspect 3/4..4/3, the
whole image where that does not fit),
horizontal flip (p 0.5), a random affine (rotation U(+-deg), shift U(+-translate) of the
side, with p ``affine_p``), brightness (additive, U(+-b)) and contrast (multiplicative,
U(1 +- b)) on pixels mapped to [0, 1] with p 0.8, Gaussian blur (sigma U(0.1, 1)) with p
``blur_p``, additive Gaussian noise with p 0.5, and random erasing (area U(0.02, 0.25),
log-uniform aspect 0.3..3.3, filled with 0, the mean of a standardised image) with p
``erase_p``. Padding outside the image is 0 too.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from nmoe_sim.config import AugmentConfig

# Standardised values within +-2 std are mapped onto [0, 1] for intensity ops (why: augment.py).
COLOR_SPAN_STD = 2.0


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _coin(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


class MonoViews:
    """``views(x, gen)`` / ``views.apply(x, seed)``: x (B, 1, H, W) standardised -> a view."""

    def __init__(self, cfg: AugmentConfig, input_shape: tuple[int, int, int]) -> None:
        if input_shape[0] != 1:
            raise ValueError(f"MonoViews is for one-channel images, got shape {input_shape}")
        self.cfg, self.mono, self.input_shape = cfg, cfg.mono, input_shape
        ops = [(self._intensity, cfg.mono.brightness_contrast > 0), (self._blur, cfg.mono.blur_p > 0),
               (self._noise, cfg.mono.noise_std > 0), (self._erase, cfg.mono.erase_p > 0)]
        last_on = max((i for i, (_, on) in enumerate(ops) if on), default=-1)
        self._tail = [op for op, _ in ops[: last_on + 1]]

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw_seed(gen))

    @staticmethod
    def draw_seed(gen: torch.Generator) -> int:
        """The one draw a view takes from the caller's generator (as ViewAugmenter's)."""
        return int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())

    def apply(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected (B, *{self.input_shape}) input, got {tuple(x.shape)}")
        gen = torch.Generator().manual_seed(seed)  # parameters drawn on the CPU, in a fixed order
        b, _, h, w = x.shape
        view = self._geometry(x, gen, b)
        # An op that is off still draws its parameters, so the ops after it see the same
        # draws whatever it is set to; once every op left is off, nothing follows that could
        # use them (the generator is this view's alone), so the tail is skipped.
        for op in self._tail:
            view = op(view, gen, b, h, w)
        return view

    # ------------------------------------------------------------------ ops
    def _geometry(self, x: torch.Tensor, gen: torch.Generator, b: int) -> torch.Tensor:
        """Crop, flip, rotation and shift as one affine map per sample, sampled once."""
        cfg, mono = self.cfg, self.mono
        area = _uniform(gen, b, cfg.crop_scale_min, 1.0)
        ratio = torch.exp(_uniform(gen, b, math.log(3 / 4), math.log(4 / 3)))
        sx, sy = (area * ratio).sqrt(), (area / ratio).sqrt()  # crop side shares
        fits = (sx <= 1) & (sy <= 1)  # a crop that does not fit falls back to the whole image (torchvision's)
        sx, sy = torch.where(fits, sx, 1.0), torch.where(fits, sy, 1.0)
        cx = (1 - sx) * _uniform(gen, b, -1.0, 1.0)  # crop centre, in grid units ([-1, 1] spans the image)
        cy = (1 - sy) * _uniform(gen, b, -1.0, 1.0)
        flip = torch.where(_coin(gen, b, 0.5 if cfg.flip else 0.0), -1.0, 1.0)
        moved = _coin(gen, b, mono.affine_p)
        angle = torch.where(moved, _uniform(gen, b, -mono.rotate_deg, mono.rotate_deg), 0.0) * math.pi / 180
        tx = torch.where(moved, 2 * _uniform(gen, b, -mono.translate, mono.translate), 0.0)
        ty = torch.where(moved, 2 * _uniform(gen, b, -mono.translate, mono.translate), 0.0)
        # Output point p -> rotate and shift -> flip -> into the crop: input = C(F(A(p))).
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([
            torch.stack([sx * flip * cos, -sx * flip * sin, sx * flip * tx + cx], 1),
            torch.stack([sy * sin, sy * cos, sy * ty + cy], 1),
        ], 1).to(x.dtype)  # (B,2,3)
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _intensity(self, x: torch.Tensor, gen: torch.Generator, b: int, h: int, w: int) -> torch.Tensor:
        jitter = self.mono.brightness_contrast
        on = _coin(gen, b, 0.8)
        shift = torch.where(on, _uniform(gen, b, -jitter, jitter), 0.0)
        gain = torch.where(on, _uniform(gen, b, 1 - jitter, 1 + jitter), 1.0)
        if jitter <= 0:
            return x
        u = x / (2 * COLOR_SPAN_STD) + 0.5  # pixels in [0, 1] (approximately)
        u = (u * gain.view(b, 1, 1, 1).to(x) + shift.view(b, 1, 1, 1).to(x)).clamp(0.0, 1.0)
        return (u - 0.5) * (2 * COLOR_SPAN_STD)

    def _blur(self, x: torch.Tensor, gen: torch.Generator, b: int, h: int, w: int) -> torch.Tensor:
        on = _coin(gen, b, self.mono.blur_p)
        sigma = _uniform(gen, b, 0.1, 1.0)
        if not bool(on.any()):
            return x
        taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0]).view(1, 3) / (2 * sigma.view(b, 1) ** 2))
        taps = taps / taps.sum(1, keepdim=True)  # (B,3) normalised 1-D Gaussian
        identity = torch.tensor([0.0, 1.0, 0.0]).expand(b, 3)
        taps = torch.where(on.view(b, 1), taps, identity)
        kernel = (taps[:, :, None] * taps[:, None, :]).view(b, 1, 3, 3).to(x)  # separable -> 3x3
        padded = F.pad(x.reshape(1, b, *x.shape[2:]), (1, 1, 1, 1), mode="reflect")
        return F.conv2d(padded, kernel, groups=b).view_as(x)

    def _noise(self, x: torch.Tensor, gen: torch.Generator, b: int, h: int, w: int) -> torch.Tensor:
        on = _coin(gen, b, 0.5)
        if self.mono.noise_std <= 0:
            return x
        noise = torch.randn(x.shape, generator=gen).to(x) * self.mono.noise_std
        return x + noise * on.view(b, 1, 1, 1).to(x)

    def _erase(self, x: torch.Tensor, gen: torch.Generator, b: int, h: int, w: int) -> torch.Tensor:
        on = _coin(gen, b, self.mono.erase_p)
        area = _uniform(gen, b, 0.02, 0.25) * h * w
        ratio = torch.exp(_uniform(gen, b, math.log(0.3), math.log(3.3)))
        eh = (area * ratio).sqrt().round().clamp(1, h)
        ew = (area / ratio).sqrt().round().clamp(1, w)
        top = ((h - eh + 1) * torch.rand(b, generator=gen)).floor()
        left = ((w - ew + 1) * torch.rand(b, generator=gen)).floor()
        if not bool(on.any()):
            return x
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        inside = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
                  & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1)) & on.view(b, 1, 1))
        return x.masked_fill(inside.unsqueeze(1).to(x.device), 0.0)
