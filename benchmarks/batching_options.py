#!/usr/bin/env python
"""Which way of running many clients' SGD steps is fastest on this machine (a figure, not a test).

The engine issue asks to measure what batching wins before building on it. This script
takes the peer_fedavg CNN (``Conv2d(1,32,3)-ReLU-Pool-Conv2d(32,64,3)-ReLU-Pool-
Linear(3136,128)-ReLU-Linear(128,10)`` on 28x28 inputs) and times, on the same random
data, ``--clients`` clients each taking ``--steps`` SGD steps of batch 32, five ways:

* ``loop``: one client after another, one step at a time (the plain PyTorch loop);
* ``loop channels_last``: the same with NHWC activations and weights;
* ``vmap``: ``torch.func.vmap`` of ``grad(functional_call)`` over the clients' stacked
  parameters (PyTorch turns the batched convolutions into grouped convolutions);
* ``unfold+bmm``: the clients' convolutions as ``unfold`` + one batched matmul per layer
  (every client's im2col against its own weights), all clients in one autograd graph;
* ``shards``: one worker process per core (``--workers``), each with one thread, taking
  its share of the clients through ``loop``.

Each way runs ``--repeat`` times interleaved with the others; the median wall time gives
samples/s and achieved GFLOP/s (training FLOPs from FlopCounterMode), printed beside a
2048^2 matmul at the same thread count.

    python benchmarks/batching_options.py --threads 2
    python benchmarks/batching_options.py --threads 1 --clients 16 --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import matmul_gflops  # noqa: E402  (benchmarks/common.py)
from nmoe_sim.models import train_flops_per_sample  # noqa: E402

BATCH, LR = 32, 0.05


def make_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def data(clients: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(clients, steps, BATCH, 1, 28, 28, generator=g),
            torch.randint(0, 10, (clients, steps, BATCH), generator=g))


def way_loop(x: torch.Tensor, y: torch.Tensor, channels_last: bool = False) -> None:
    model = make_cnn()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for c in range(x.shape[0]):
        model.load_state_dict(start)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        for s in range(x.shape[1]):
            xb = x[c, s].contiguous(memory_format=torch.channels_last) if channels_last else x[c, s]
            loss = F.cross_entropy(model(xb), y[c, s])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def way_vmap(x: torch.Tensor, y: torch.Tensor) -> None:
    from torch.func import functional_call, grad, vmap

    model = make_cnn()
    k = x.shape[0]
    params = {n: p.detach().unsqueeze(0).repeat(k, *[1] * p.dim()) for n, p in model.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (xb,)), yb)

    step = vmap(grad(loss))
    for s in range(x.shape[1]):
        g = step(params, x[:, s], y[:, s])
        params = {n: params[n] - LR * g[n] for n in params}


def _bconv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """K clients' 3x3 same-padding convolutions: x (K,B,C,H,W), w (K,O,C,3,3) -> (K,B,O,H,W)."""
    k, bsz, c, h, wd = x.shape
    cols = F.unfold(x.reshape(k * bsz, c, h, wd), 3, padding=1)  # (K*B, C*9, H*W)
    cols = cols.reshape(k, bsz, c * 9, h * wd).transpose(1, 2).reshape(k, c * 9, bsz * h * wd)
    out = torch.bmm(w.reshape(k, -1, c * 9), cols) + b[:, :, None]  # (K,O,B*H*W)
    return out.reshape(k, -1, bsz, h, wd).transpose(1, 2)


def way_unfold(x: torch.Tensor, y: torch.Tensor) -> None:
    model = make_cnn()
    k = x.shape[0]
    p = [t.detach().unsqueeze(0).repeat(k, *[1] * t.dim()).requires_grad_() for t in model.parameters()]
    for s in range(x.shape[1]):
        xb = x[:, s]  # (K,B,1,28,28)
        h = F.max_pool2d(F.relu(_bconv(xb, p[0], p[1])).flatten(0, 1), 2)
        h = h.reshape(k, BATCH, *h.shape[1:])
        h = F.max_pool2d(F.relu(_bconv(h, p[2], p[3])).flatten(0, 1), 2).reshape(k, BATCH, -1)
        h = F.relu(torch.baddbmm(p[5][:, None, :], h, p[4].transpose(1, 2)))
        logits = torch.baddbmm(p[7][:, None, :], h, p[6].transpose(1, 2))
        # Sum of the clients' mean losses: each client's gradient is its own mean-loss gradient.
        loss = F.cross_entropy(logits.flatten(0, 1), y[:, s].flatten(), reduction="sum") / BATCH
        grads = torch.autograd.grad(loss, p)
        with torch.no_grad():
            for t, g in zip(p, grads):
                t -= LR * g


def _shard(args: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.set_num_threads(1)
    way_loop(*args)


def way_shards(x: torch.Tensor, y: torch.Tensor, pool: mp.pool.Pool, workers: int) -> None:
    shards = [(x[i::workers], y[i::workers]) for i in range(workers)]
    pool.map(_shard, shards)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = data(args.clients, args.steps)
    flops = train_flops_per_sample(make_cnn(), (1, 28, 28))
    samples = args.clients * args.steps * BATCH
    print(f"{args.clients} clients x {args.steps} steps x batch {BATCH}, {flops / 1e6:.1f} MFLOP per training "
          f"sample, {args.threads} torch threads; 2048^2 matmul {matmul_gflops():.1f} GFLOP/s")
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers) as pool:
        ways: dict[str, Callable[[], None]] = {
            "loop": lambda: way_loop(x, y),
            "loop channels_last": lambda: way_loop(x, y, channels_last=True),
            "vmap": lambda: way_vmap(x, y),
            "unfold+bmm": lambda: way_unfold(x, y),
            f"shards ({args.workers} x 1 thread)": lambda: way_shards(x, y, pool, args.workers),
        }
        for run in ways.values():  # warm-up: kernels, allocator, worker imports
            run()
        walls: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeat):
            for name, run in ways.items():
                t0 = time.perf_counter()
                run()
                walls[name].append(time.perf_counter() - t0)
    base = samples / statistics.median(walls["loop"])
    for name, w in walls.items():
        rate = samples / statistics.median(w)
        print(f"  {name:24} {rate:7.0f} samples/s  {rate * flops / 1e9:6.1f} GFLOP/s  {rate / base:5.2f}x loop  "
              f"(walls {', '.join(f'{v:.2f}' for v in w)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
