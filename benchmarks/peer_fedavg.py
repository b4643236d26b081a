#!/usr/bin/env python
"""One exact FedAvg workload run two ways in one process: a plain sequential PyTorch loop,
and nmoe-sim's round driver on an ideal network with its local and its batched executor
(a figure, not a test).

Workload (fixed, so that other simulators can be measured on it too): Fashion-MNIST
60,000 training / 10,000 test images from Debian's IDX files, pixels / 255, no
normalisation, no augmentation; IID split ``numpy.random.default_rng(0).permutation(60000)``
cut by ``numpy.array_split`` into K clients; the CNN
``Conv2d(1,32,3,p=1)-ReLU-MaxPool2d(2)-Conv2d(32,64,3,p=1)-ReLU-MaxPool2d(2)-Flatten-
Linear(3136,128)-ReLU-Linear(128,10)``; 1 local epoch, batch 32 (last partial batch kept),
order ``default_rng([0, r, k]).permutation(n_k)``; SGD lr 0.05, no momentum, a fresh
optimiser each round; sample-weighted FedAvg. K=10 R=3 and K=100 R=2 by default.

For each (K, R) it runs the three ways alternately ``--repeat`` times and prints the
training samples per second of each (median), their ratios to the plain loop, the final
test accuracy of each (they must agree closely: same data, order and arithmetic), and the
achieved
training GFLOP/s against a 2048 x 2048 float32 matmul at the same thread count.

    python benchmarks/peer_fedavg.py                 # K=10 R=3 and K=100 R=2
    python benchmarks/peer_fedavg.py --sizes 10:1 --repeat 1 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Generator, Sequence

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nmoe_sim.config import TrainConfig, build_scenario, resolve_presets  # noqa: E402
from nmoe_sim.data.idx import read_idx  # noqa: E402
from nmoe_sim.engine.tasks import TrainTask  # noqa: E402
from nmoe_sim.fl.aggregate import fedavg  # noqa: E402
from nmoe_sim.fl.rounds import CostScope, Failure, LocalResult, RoundAlgorithm, RoundDriver  # noqa: E402
from common import matmul_gflops  # noqa: E402  (benchmarks/common.py)
from nmoe_sim.models import train_flops_per_sample  # noqa: E402
from nmoe_sim.seeds import SeedStreams  # noqa: E402
from nmoe_sim.world import build_world  # noqa: E402

FMNIST = Path("/usr/share/datasets/fashion-mnist")
BATCH, LR = 32, 0.05


def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    def read(name: str) -> np.ndarray:
        path = FMNIST / name
        if not path.exists():
            raise SystemExit(f"{path}: Fashion-MNIST IDX file not found (apt-get install dataset-fashion-mnist)")
        return read_idx(path)
    prefix = "train" if split == "train" else "t10k"
    x = read(f"{prefix}-images-idx3-ubyte.gz")
    y = read(f"{prefix}-labels-idx1-ubyte.gz")
    return torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def make_cnn() -> nn.Module:
    torch.manual_seed(0)  # the same initial model for both ways
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def client_order(r: int, k: int, n_k: int) -> np.ndarray:
    return np.random.default_rng([0, r, k]).permutation(n_k)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 2000]).argmax(1) for i in range(0, len(x), 2000)])
    return float((pred == y).float().mean())


# --------------------------------------------------------------------------- way 1: plain loop
def plain(parts: list[tuple[torch.Tensor, torch.Tensor]], rounds: int) -> dict[str, torch.Tensor]:
    model = make_cnn()
    global_state = copy.deepcopy(model.state_dict())
    for r in range(rounds):
        states, weights = [], []
        for k, (x, y) in enumerate(parts):
            model.load_state_dict(global_state)
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            order = torch.from_numpy(client_order(r, k, len(y)))
            for i in range(0, len(y), BATCH):
                idx = order[i : i + BATCH]
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            states.append({n: v.detach().clone() for n, v in model.state_dict().items()})
            weights.append(len(y))
        global_state = fedavg(states, weights)
    return global_state


# --------------------------------------------------------------------------- way 2: nmoe-sim
class BenchFedAvg(RoundAlgorithm):
    """The workload as a RoundAlgorithm whose local work is a described task."""

    stage = "bench_fedavg"

    def __init__(self, parts: list[tuple[torch.Tensor, torch.Tensor]], flops_per_sample: float) -> None:
        self.parts, self.flops = parts, flops_per_sample
        self.template = make_cnn()
        self.global_state = copy.deepcopy(self.template.state_dict())

    def download_bytes(self, rnd: int, client: int) -> int:
        return 4 * sum(p.numel() for p in self.template.parameters())

    def task(self, rnd: int, client: int) -> TrainTask:
        x, y = self.parts[client]
        order = torch.from_numpy(client_order(rnd, client, len(y)))
        plan = (tuple(order[i : i + BATCH] for i in range(0, len(y), BATCH)),)
        return TrainTask(client, client, self.template, self.global_state, x, y, plan, "cross_entropy",
                         LR, 0.0, 0.0, len(y) * self.flops, self.download_bytes(rnd, client))

    def aggregate(self, rnd: int, results: list[LocalResult], failures: list[Failure]) -> None:
        assert not failures, failures  # an ideal network loses nothing
        self.global_state = fedavg([r.update["state"] for r in results], [r.num_samples for r in results])


def nmoe(parts: list[tuple[torch.Tensor, torch.Tensor]], rounds: int, flops: float,
         executor: str) -> dict[str, torch.Tensor]:
    k = len(parts)
    cfg = build_scenario(resolve_presets({"name": "peer_fedavg", "data": {"dataset": "digits", "clients": k},
                                          "network": {"channel": "ideal", "topology": {"kind": "star"}},
                                          "runtime": {"executor": executor}}))
    world = build_world(cfg, SeedStreams(0))  # its topology, devices and network only
    sim = world.new_sim("fedavg")
    algo = BenchFedAvg(parts, flops)
    driver = RoundDriver(sim, k, np.random.default_rng(0))

    def body() -> Generator[Any, Any, None]:
        yield from driver.run(algo, TrainConfig(rounds=rounds), CostScope("fedavg", [algo.stage]))

    proc = sim.env.process(body())
    sim.env.run(until=proc)
    return algo.global_state


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["10:3", "100:2"], help="K:R pairs")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=60000, help="fewer only for a smoke test")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = load("train")
    x, y = x[: args.train_samples], y[: args.train_samples]
    xt, yt = load("test")
    flops = train_flops_per_sample(make_cnn(), (1, 28, 28))
    print(f"Fashion-MNIST {len(y)} / {len(yt)}, CNN {flops / 1e6:.1f} MFLOP per training sample, "
          f"{args.threads} torch threads; 2048^2 matmul: {matmul_gflops():.1f} GFLOP/s")
    plain([(x[:64], y[:64])], 1)  # warm-up: the first run of a process pays allocator and kernel setup
    warm = [(x[i * 512 : (i + 1) * 512], y[i * 512 : (i + 1) * 512]) for i in range(4)]
    nmoe(warm, 1, flops, "batched")  # ... and the batched executor starts its workers once per process
    perm = np.random.default_rng(0).permutation(len(y))
    for size in args.sizes:
        k, rounds = (int(v) for v in size.split(":"))
        parts = [(x[torch.from_numpy(p)], y[torch.from_numpy(p)]) for p in np.array_split(perm, k)]
        samples = rounds * len(y)
        ways = {"plain loop": lambda: plain(parts, rounds),
                "nmoe-sim (local executor)": lambda: nmoe(parts, rounds, flops, "local"),
                "nmoe-sim (batched executor)": lambda: nmoe(parts, rounds, flops, "batched")}
        walls: dict[str, list[float]] = {name: [] for name in ways}
        acc: dict[str, float] = {}
        for _ in range(args.repeat):  # interleaved: the ways meet the same machine load
            for name, run in ways.items():
                t0 = time.perf_counter()
                state = run()
                walls[name].append(time.perf_counter() - t0)
                model = make_cnn()
                model.load_state_dict(state)
                acc[name] = accuracy(model, xt, yt)
        print(f"K={k} R={rounds}:")
        rate = {}
        for name, w in walls.items():
            rate[name] = samples / statistics.median(w)
            print(f"  {name:28} {rate[name]:8.0f} samples/s  ({rate[name] * flops / 1e9:5.1f} GFLOP/s)  "
                  f"test accuracy {acc[name]:.4f}  (walls {', '.join(f'{v:.1f}' for v in w)} s)")
        for name in list(ways)[1:]:
            print(f"  {name} / plain: {rate[name] / rate['plain loop']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
