"""What more than one benchmark script measures the same way."""

from __future__ import annotations

import statistics
import time

import torch


def matmul_gflops(repeat: int = 5) -> float:
    """A 2048 x 2048 float32 matmul's rate at the current thread count (median of ``repeat``):
    the reference a training throughput is quoted against."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * 2048**3 / statistics.median(times) / 1e9
