"""The stage-1 checks fit on a bounded, seeded subsample of the pooled data (a measurement
choice for cost at many clients): at or under the cap nothing changes, above it the checks
equal those on the documented subsample exactly."""

from __future__ import annotations

import numpy as np
import torch

from nmoe_sim.fl.probes import MAX_PROBE_TRAIN, measure, probe_subset


def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    return torch.randn(n, 6, generator=g) + y[:, None].float(), y


def test_subset_is_all_up_to_the_cap_then_seeded_sorted_and_distinct() -> None:
    assert MAX_PROBE_TRAIN == 10_000
    assert probe_subset(10_000) is None and probe_subset(5) is None
    keep = probe_subset(60_000)
    assert keep is not None and len(keep) == 10_000 and len(np.unique(keep)) == 10_000
    assert np.all(np.diff(keep) > 0) and keep[-1] < 60_000
    assert np.array_equal(keep, probe_subset(60_000))  # deterministic
    assert np.array_equal(keep, np.sort(np.random.default_rng(0).choice(60_000, 10_000, replace=False)))


def test_measure_above_the_cap_equals_measure_on_the_subsample() -> None:
    fe = torch.nn.Linear(6, 4)
    x, y = data(300, 1)
    xt, yt = data(100, 2)
    capped = measure(fe, x, y, xt, yt, 3, max_train=120)
    idx = torch.from_numpy(probe_subset(300, 120))
    assert capped == measure(fe, x[idx], y[idx], xt, yt, 3, max_train=120)
    assert measure(fe, x, y, xt, yt, 3) == measure(fe, x, y, xt, yt, 3, max_train=300)  # under the cap: whole pool
    assert capped != measure(fe, x, y, xt, yt, 3)
