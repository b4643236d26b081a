"""Memory fixes for many clients change no value: FedSC's R_ext, averaged through one
reused stacking buffer, equals the plain per-client stack and mean bit for bit."""

from __future__ import annotations

import torch

from nmoe_sim.fl.stage1 import FedSC
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import build_world

from conftest import tiny_cfg


def test_r_ext_through_one_buffer_equals_a_fresh_stack_per_client() -> None:
    cfg = tiny_cfg("stage1.algorithm=fedsc")
    world = build_world(cfg, SeedStreams(0))
    algo = FedSC(world, cfg.stage1)
    g = torch.Generator().manual_seed(3)
    p = 7
    # Clients 0, 2, 3, 5 have sent a correlation; 1 and 4 have not (their R_ext averages all).
    algo.uploaded = {c: torch.randn(p, p, generator=g) for c in (5, 0, 3, 2)}
    clients = [0, 1, 2, 3, 4, 5]
    algo.r_ext = {}
    algo._set_r_ext(clients)
    for c in clients:
        want = torch.stack([r for j, r in sorted(algo.uploaded.items()) if j != c]).mean(0)
        assert torch.equal(algo.r_ext[c], want)
        assert algo.r_ext[c].data_ptr() != algo.r_ext[clients[0] if c else 1].data_ptr()  # no shared buffer
    algo.uploaded = {0: torch.randn(p, p, generator=g)}
    algo.r_ext = {}
    algo._set_r_ext([0, 1])
    assert set(algo.r_ext) == {1} and torch.equal(algo.r_ext[1], algo.uploaded[0].unsqueeze(0).mean(0))
