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


def test_fedsc_projection_checks_take_the_same_subsample(monkeypatch) -> None:
    """FedSC's view agreement and spectral loss (whose z1 z0^T is (n, n)) use the probes'
    subsample: the whole pool at or under the cap, exactly the indexed subset above it."""
    import nmoe_sim.fl.probes as probes
    from nmoe_sim.fl.stage1 import FedSC
    from nmoe_sim.seeds import SeedStreams
    from nmoe_sim.world import build_world

    from conftest import tiny_cfg
    from test_rounds import drive

    cfg = tiny_cfg("stage1.algorithm=fedsc", "stage1.rounds=1")
    world = build_world(cfg, SeedStreams(0))
    algo = FedSC(world, cfg.stage1, probe=True)
    drive(world.new_sim("t"), algo, cfg.stage1)
    n = len(algo.pooled[0])
    seen: list[torch.Tensor] = []
    views = algo.views
    monkeypatch.setattr(algo, "views", lambda x, gen: (seen.append(x), views(x, gen))[1])
    whole = algo.representation()
    assert seen[-1] is algo.pooled[0]
    monkeypatch.setattr(probes, "MAX_PROBE_TRAIN", n)  # at the cap: still the whole pool
    assert algo.representation() == whole and seen[-1] is algo.pooled[0]
    monkeypatch.setattr(probes, "MAX_PROBE_TRAIN", n // 2)
    capped = algo.representation()
    assert torch.equal(seen[-1], algo.pooled[0][torch.from_numpy(probe_subset(n, n // 2))])
    assert capped["spectral_loss"] == capped["spectral_loss"]  # measured (not NaN)
