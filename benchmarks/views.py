#!/usr/bin/env python
"""What FedSC's random views cost against the training step they feed (a figure, not a test).

For the digits (8x8, batch 32) and Fashion-MNIST (28x28, batch 64) shapes, prints the wall
time of one view by kornia's one-channel pipeline (crop, affine, jitter, blur, noise,
erasing: the ops ``MonoViews`` replaced), one view by ``MonoViews`` (what FedSC uses for
one-channel data), and one SGD step of the FE + projection head on two views, at one torch
thread (as the batched executor's workers run). Medians of ``--repeat`` interleaved rounds
of ``--calls`` calls each.

    python benchmarks/views.py
    python benchmarks/views.py --repeat 5 --calls 200
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import kornia.augmentation as K
import torch
from torch import nn

from nmoe_sim.config import AugmentConfig
from nmoe_sim.data.augment import make_views
from nmoe_sim.models import ContrastiveModel, FeatureExtractor

SHAPES = {"digits 8x8, batch 32": ((1, 8, 8), 32, (16, 32), 32),
          "Fashion-MNIST 28x28, batch 64": ((1, 28, 28), 64, (16, 32), 64)}


def kornia_mono(shape: tuple[int, int, int]) -> nn.Module:
    """The kornia pipeline with the same ops and probabilities as ``augment.mono``."""
    _, h, w = shape
    return nn.Sequential(
        K.RandomResizedCrop((h, w), scale=(0.6, 1.0)), K.RandomAffine(15, translate=(0.1, 0.1), p=0.5),
        K.ColorJitter(brightness=0.4, contrast=0.4, p=0.8), K.RandomGaussianBlur((3, 3), (0.1, 1.0), p=0.5),
        K.RandomGaussianNoise(std=0.1, p=0.5), K.RandomErasing(scale=(0.02, 0.25), p=0.25))


def per_call_ms(fn: Callable[[int], object], calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name, (shape, batch, channels, dim) in SHAPES.items():
        x = torch.randn(batch, *shape)
        ours = make_views(AugmentConfig(crop_scale_min=0.6, flip=False), shape)
        theirs = kornia_mono(shape)
        model = ContrastiveModel(FeatureExtractor(shape, channels, dim), dim)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step(_: int) -> None:
            loss = model(x).pow(2).mean() + model(x).pow(2).mean()  # two views' forward and backward
            opt.zero_grad()
            loss.backward()
            opt.step()

        times: dict[str, list[float]] = {"kornia view": [], "MonoViews view": [], "training step": []}
        for _ in range(args.repeat):  # interleaved, so a busy spell hits all three alike
            times["kornia view"].append(per_call_ms(lambda i: theirs(x), args.calls))
            times["MonoViews view"].append(per_call_ms(lambda i: ours.apply(x, i), args.calls))
            times["training step"].append(per_call_ms(step, args.calls))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name}: kornia view {med['kornia view']:.2f} ms, MonoViews view {med['MonoViews view']:.2f} ms, "
              f"training step (2 views) {med['training step']:.2f} ms; a step's two views: kornia "
              f"{2 * med['kornia view'] / med['training step']:.2f}x the step, MonoViews "
              f"{2 * med['MonoViews view'] / med['training step']:.2f}x")


if __name__ == "__main__":
    main()
