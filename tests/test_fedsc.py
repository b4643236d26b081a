"""FedSC as its authors run it: the fresh-correlation prelude (exact bytes, event order and
simulated times on a tiny network), R_ext as the mean of the others', the optimiser's
stabilisers (gradient clipping, cosine schedule) and the one-channel views."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from nmoe_sim.config import AugmentConfig, MonoViewsConfig, TrainConfig
from nmoe_sim.data.augment import make_views
from nmoe_sim.data.mono_views import MonoViews
from nmoe_sim.engine.tasks import TrainTask, execute
from nmoe_sim.fl.rounds import Failure
from nmoe_sim.fl.schedule import LR_SCHEDULES, round_lr
from nmoe_sim.fl.stage1 import FedSC
from nmoe_sim.models import forward_flops_per_sample

from conftest import TINY_FEDSC_PARAMS
from test_rounds import FakeAlgo, drive, world_of

LATENCY_S = 0.01
FLOPS_PER_S = 1e6
IDEAL_SLOW = ("network.channel={bs: {preset: ideal, latency_s: 0.01}, d2d: ideal}",
              "network.devices={profiles: {d: {flops_per_s: 1.0e+6, compute_power_w: 2.0}}, assign: [d]}")


def fedsc_world(*overrides: str) -> Any:
    return world_of("stage1.algorithm=fedsc", "stage1.rounds=2", *overrides)


def test_fresh_round_exchanges_correlations_before_anyone_trains() -> None:
    world = fedsc_world(*IDEAL_SLOW, "stage1.fedsc.r_passes=3")
    sim = world.new_sim("test")
    algo = FedSC(world, world.cfg.stage1)
    drive(sim, algo, world.cfg.stage1)
    model_bytes, corr_bytes = TINY_FEDSC_PARAMS * 4, 4 * 4 * 4  # proj_dim 4: a 4x4 float32 matrix
    tags: dict[str, list[int]] = {}
    for t in world.recorder.transfers:
        tags.setdefault(t.tag, []).append(t.size_bytes)
    # Round 0 has alpha = 1: R_ext has weight 0, so nothing but the model moves.
    assert tags == {"r0/down": [model_bytes] * 4, "r0/up": [model_bytes] * 4,
                    "r1/down": [model_bytes] * 4, "r1/prelude_up": [corr_bytes] * 4,
                    "r1/prelude_down": [corr_bytes] * 4, "r1/up": [model_bytes] * 4}

    # Round 1 in simulated time: download, the correlation over 3 passes (forward FLOPs),
    # its upload; the server waits for the last one, then replies; then training.
    fwd = forward_flops_per_sample(algo.model, (1, 8, 8))
    r1 = world.recorder.rounds[1]
    pre = {int(c.node): c for c in world.recorder.computes if c.tag == "r1/prelude"}
    train = {int(c.node): c for c in world.recorder.computes if c.tag == "r1/train"}
    for c in world.clients:
        assert pre[c.idx].flops == 2 * 3 * c.num_samples * fwd  # two views per pass
        assert pre[c.idx].start_s == pytest.approx(r1.start_s + LATENCY_S, rel=1e-12)
        assert pre[c.idx].end_s == pytest.approx(pre[c.idx].start_s + pre[c.idx].flops / FLOPS_PER_S, rel=1e-12)
    barrier_s = max(p.end_s for p in pre.values()) + LATENCY_S  # the slowest client's statistic arrived
    for c in world.clients:
        assert train[c.idx].start_s == pytest.approx(barrier_s + LATENCY_S, rel=1e-12)  # after the reply
        assert train[c.idx].flops == c.num_samples * algo.train_flops
    assert r1.end_s == pytest.approx(barrier_s + LATENCY_S + max(t.flops for t in train.values()) / FLOPS_PER_S
                                     + LATENCY_S, rel=1e-12)


def test_fresh_r_ext_is_the_mean_of_the_other_clients_correlations() -> None:
    world = fedsc_world("stage1.fedsc.noise_std=0")
    algo = FedSC(world, world.cfg.stage1)
    algo.configure(1, [0, 1, 2, 3])
    reports = {c: torch.full((4, 4), float(c)) for c in (0, 1, 3)}  # client 2's never arrived
    algo.combine(1, reports)
    assert torch.equal(algo.r_ext[0], torch.full((4, 4), 2.0))  # mean of 1 and 3
    assert torch.equal(algo.r_ext[2], torch.full((4, 4), 4 / 3))  # everyone else's
    assert [algo.reply_bytes(1, c) for c in range(4)] == [64] * 4
    task = algo.task(1, 0)
    assert torch.equal(task.args["r_ext"], algo.r_ext[0])
    assert task.upload_bytes == TINY_FEDSC_PARAMS * 4  # fresh: the correlation went up in the prelude


def test_fresh_statistic_is_the_correlation_of_clipped_projections_of_the_downloaded_model() -> None:
    world = fedsc_world("stage1.fedsc.r_passes=2")
    algo = FedSC(world, world.cfg.stage1)
    algo.configure(1, [0, 1, 2, 3])
    task = algo.prelude(1, 0)
    assert task.plan == () and task.report == "fedsc_correlation"
    [result] = [execute(task, FedSC(world, world.cfg.stage1).model)]
    r = result.report
    assert torch.equal(result.state["proj.net.0.weight"], algo.global_state["proj.net.0.weight"])  # nothing trained
    assert r.shape == (4, 4) and torch.allclose(r, r.T)
    # Recomputed by hand from the same seeds: the clipped projections of each pass's view.
    from nmoe_sim.fl.fedsc_loss import clip_norm

    model = FedSC(world, world.cfg.stage1).model
    model.load_state_dict(algo.global_state)
    model.eval()
    with torch.no_grad():
        z = torch.cat([clip_norm(model(algo.views.apply(task.x, seeds[0])), algo.sc.mu) for seeds in task.args["seeds"]])
    assert len(task.args["seeds"]) == 2 * 2  # two views per pass
    assert torch.allclose(r, z.T @ z / len(z), atol=1e-6)
    assert float(torch.linalg.eigvalsh(r).min()) >= -1e-6  # a correlation matrix


class PreludeAlgo(FakeAlgo):
    """FakeAlgo with a prelude of fixed FLOPs and sizes."""

    def __init__(self, sim: Any, **kw: Any) -> None:
        super().__init__(sim, **kw)
        self.combined: list[tuple[int, list[int], float]] = []

    def has_prelude(self, rnd: int) -> bool:
        return True

    def prelude(self, rnd: int, client: int) -> TrainTask:
        return TrainTask(client, client, self.template, self.template.state_dict(), torch.zeros(1, 1),
                         torch.zeros(1, dtype=torch.long), (), "cross_entropy", 0.0, 0.0, 0.0, 1e3, 20)

    def combine(self, rnd: int, reports: dict[int, Any]) -> None:
        self.combined.append((rnd, sorted(reports), self.sim.env.now))

    def reply_bytes(self, rnd: int, client: int) -> int:
        return 30


def test_a_client_whose_statistic_fails_leaves_the_round_without_holding_the_barrier() -> None:
    # The edge server transmits 20 dB above a phone: a threshold between the two SNRs lets
    # every download through and fails every upload (as in test_rounds).
    chan = "model: wireless, fading: none, shadowing_std_db: 0.0, max_attempts: 2, retx_timeout_s: 0.02"
    probe = world_of(f"network.channel={{bs: {{{chan}}}, d2d: ideal}}").new_sim("test")
    threshold = (probe.net.mean_snr_db("bs", 0) + probe.net.mean_snr_db(0, "bs")) / 2
    world = world_of(f"network.channel={{bs: {{{chan}, outage_snr_db: {threshold}}}, d2d: ideal}}")
    sim = world.new_sim("test")
    algo = PreludeAlgo(sim)
    drive(sim, algo, TrainConfig(rounds=1))
    [(_, results, failures, _)] = algo.aggregated
    assert results == [] and failures == [Failure(c, "prelude", "outage") for c in range(4)]
    assert [(r, got) for r, got, _ in algo.combined] == [(0, [])]  # the server still went on
    assert algo.updates == []  # nobody trained


def test_a_deadline_before_the_barrier_ends_the_round_without_combining() -> None:
    world = world_of(*IDEAL_SLOW)
    sim = world.new_sim("test")
    algo = PreludeAlgo(sim, flops=0.0)
    algo.prelude = lambda rnd, c: TrainTask(c, c, algo.template, algo.template.state_dict(),  # type: ignore[method-assign]
                                            torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), (), "cross_entropy",
                                            0.0, 0.0, 0.0, 1e6 * (c + 1), 20)  # client c: c+1 s
    drive(sim, algo, TrainConfig(rounds=1, deadline_s=2.5))
    [(_, results, failures, at_s)] = algo.aggregated
    assert at_s == pytest.approx(2.5)
    assert results == [] and algo.combined == []
    assert sorted((f.client, f.phase, f.reason) for f in failures) == [(c, "prelude", "deadline") for c in range(4)]


def test_stale_correlation_rides_on_the_model_upload() -> None:
    world = fedsc_world("stage1.fedsc.r_ext=stale")
    algo = FedSC(world, world.cfg.stage1)
    assert not algo.has_prelude(1)
    assert algo.task(0, 0).upload_bytes == TINY_FEDSC_PARAMS * 4 + 64


# --------------------------------------------------------------------------- the optimiser
def test_gradient_clipping_bounds_each_step() -> None:
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in module.state_dict().items()}
    x, y = torch.randn(8, 3) * 100, torch.zeros(8, dtype=torch.long)  # a huge gradient
    step = lambda clip: execute(TrainTask(0, 0, module, start, x, y, ((torch.arange(8),),), "cross_entropy",
                                          1.0, 0.0, 0.0, 0.0, 0, grad_clip_norm=clip), module)
    moved = lambda res: math.sqrt(sum(float(((res.state[k] - start[k]) ** 2).sum()) for k in start))
    assert moved(step(None)) > 10
    assert moved(step(0.5)) == pytest.approx(0.5, rel=1e-5)  # lr 1 x a gradient rescaled to norm 0.5


def test_cosine_schedule_is_the_authors_per_round_annealing() -> None:
    cfg = TrainConfig(rounds=4, lr=0.08, lr_schedule="cosine")
    assert [round_lr(cfg, r) for r in range(4)] == pytest.approx([0.08, 0.08 * (1 + math.cos(math.pi / 4)) / 2,
                                                                  0.04, 0.08 * (1 + math.cos(3 * math.pi / 4)) / 2])
    # The same as PyTorch's CosineAnnealingLR stepped once per round.
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.08)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 4)
    for r in range(4):
        assert round_lr(cfg, r) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert round_lr(TrainConfig(rounds=4, lr=0.08), 3) == 0.08
    assert set(LR_SCHEDULES) >= {"constant", "cosine"}


def test_stage1_defaults_are_the_authors_stabilisers_but_mu() -> None:
    cfg = world_of().cfg.stage1
    assert (cfg.weight_decay, cfg.grad_clip_norm, cfg.lr_schedule) == (5e-4, 3.0, "cosine")
    assert (cfg.fedsc.mu, cfg.fedsc.r_ext, cfg.fedsc.r_passes) == (1.0, "fresh", 5)
    task = FedSC(fedsc_world(), world_of("stage1.algorithm=fedsc").cfg.stage1).task(0, 0)
    assert (task.weight_decay, task.grad_clip_norm) == (5e-4, 3.0)


# --------------------------------------------------------------------------- views
OFF = dict(brightness_contrast=0, rotate_deg=0, translate=0, affine_p=0, blur_p=0, noise_std=0, erase_p=0)


def mono(crop: float = 1.0, flip: bool = False, **ops: float) -> Any:
    return make_views(AugmentConfig(crop_scale_min=crop, flip=flip, mono=MonoViewsConfig(**{**OFF, **ops})), (1, 8, 8))


X = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_one_channel_views_are_seeded_and_leave_the_global_rng_alone() -> None:
    views = make_views(AugmentConfig(flip=False), (1, 8, 8))
    assert isinstance(views, MonoViews)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    a, b, c = views.apply(X, 7), views.apply(X, 7), views.apply(X, 8)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == X.shape


def test_one_channel_identity_and_flip_are_exact() -> None:
    assert torch.allclose(mono().apply(X, 3), X, atol=1e-5)  # every op off, full crop: the input
    flipped = mono(flip=True).apply(X, 3)
    mirrored = [bool(torch.allclose(v, x.flip(-1), atol=1e-5)) for v, x in zip(flipped, X)]
    unchanged = [bool(torch.allclose(v, x, atol=1e-5)) for v, x in zip(flipped, X)]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 0.35 < sum(mirrored) / len(X) < 0.65  # p 0.5 (256 samples: 5 sigma is +-0.16)


def test_one_channel_noise_and_erasing_have_their_stated_sizes() -> None:
    noisy = mono(noise_std=0.1).apply(X, 4) - X  # (B,1,8,8)
    hit = noisy.flatten(1).abs().amax(1) > 0
    assert 0.35 < float(hit.float().mean()) < 0.65  # p 0.5
    assert float(noisy[hit].std()) == pytest.approx(0.1, rel=0.05)
    erased = mono(erase_p=1.0).apply(X + 10.0, 5)  # shifted so that no input pixel is 0
    share = (erased == 0).flatten(1).float().mean(1)  # the erased rectangle's share of the image
    assert float(share.min()) >= 1 / 64 and float(share.max()) <= 0.34  # area U(0.02, 0.25), rounded to pixels


def test_one_channel_blur_smooths_and_geometry_moves_pixels() -> None:
    rough = lambda v: float((v[..., 1:, :] - v[..., :-1, :]).pow(2).mean())  # vertical gradient energy
    assert rough(mono(blur_p=1.0).apply(X, 6)) < 0.6 * rough(X)
    rotated = mono(rotate_deg=30, affine_p=1.0).apply(X, 6)
    assert float((rotated - X).pow(2).mean()) > 0.3
    cropped = mono(crop=0.2).apply(X, 6)
    assert float((cropped - X).pow(2).mean()) > 0.3
    jittered = mono(brightness_contrast=0.4).apply(X.clamp(-2, 2), 6)
    assert jittered.abs().max() <= 2.0 + 1e-5  # intensity ops stay within the +-2 std span
    assert float((jittered - X.clamp(-2, 2)).abs().mean()) > 0.05


def test_colour_views_stay_with_three_channel_data() -> None:
    rgb = make_views(AugmentConfig(), (3, 8, 8))
    assert {type(m).__name__ for m in rgb.colour} == {"ColorJitter", "RandomGrayscale"}


@pytest.mark.parametrize("clients", [3, 5])
def test_alpha_one_over_k_is_each_clients_share_and_gives_round_0_a_prelude(clients: int) -> None:
    world = fedsc_world(f"data.clients={clients}", "stage1.fedsc.alpha_start=1/K", "stage1.fedsc.alpha_end=1/K")
    algo = FedSC(world, world.cfg.stage1)
    assert [algo.alpha(r) for r in range(2)] == [1.0 / clients] * 2
    assert algo.has_prelude(0)  # alpha < 1 from round 0: the others' correlation is needed at once
    other = fedsc_world(f"data.clients={clients}", "stage1.fedsc.alpha_start=1.0", "stage1.fedsc.alpha_end=1/K")
    mixed = FedSC(other, other.cfg.stage1)
    assert mixed.alpha(0) == 1.0 and not mixed.has_prelude(0) and mixed.alpha(1) == pytest.approx(1.0 / clients)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "1/k", "half", "true"])
def test_alpha_outside_the_unit_interval_or_not_1_over_k_is_refused(value: str) -> None:
    from nmoe_sim.errors import ConfigError

    with pytest.raises(ConfigError, match=r"stage1\.fedsc\.alpha_start: must be a number in \[0, 1\] or 1/K"):
        fedsc_world(f"stage1.fedsc.alpha_start={value}")


# --------------------------------------------------------------------------- large clients
def test_local_steps_cap_each_rounds_training_and_its_flops() -> None:
    world = fedsc_world(*IDEAL_SLOW, "stage1.fedsc.r_ext=stale", "stage1.batch_size=2", "stage1.local_epochs=3",
                        "stage1.local_steps=2")
    algo = FedSC(world, world.cfg.stage1)
    fwd = forward_flops_per_sample(algo.model, (1, 8, 8))
    for c in world.clients:
        task = algo.task(0, c.idx)
        assert [len(ep) for ep in task.plan] == [2] and [len(i) for i in task.plan[0]] == [2, 2]
        assert task.flops == 4 * 2 * 3 * fwd  # 4 samples, two views, a training step 3x forward
        # The stale correlation is the mean over the samples the round trained on: the same
        # steps as a whole epoch of a task holding only those 4 samples give the same matrix.
        res = execute(task, algo.scratch)
        idx = torch.cat(task.plan[0])
        alone = dataclasses.replace(task, x=task.x[idx], y=task.y[idx],
                                    plan=((torch.arange(0, 2), torch.arange(2, 4)),))
        assert c.num_samples > 4 and alone.num_samples == 4
        assert res.stat is not None
        torch.testing.assert_close(res.stat, execute(alone, algo.scratch).stat, rtol=1e-6, atol=1e-7)
    uncapped = fedsc_world(*IDEAL_SLOW, "stage1.batch_size=2", "stage1.local_epochs=3")
    task = FedSC(uncapped, uncapped.cfg.stage1).task(0, 0)
    assert len(task.plan) == 3 and task.flops == 3 * uncapped.clients[0].num_samples * 2 * 3 * fwd


def test_r_samples_measures_the_fresh_correlation_on_a_fresh_subset() -> None:
    world = fedsc_world("stage1.fedsc.alpha_start=1/K", "stage1.fedsc.alpha_end=1/K", "stage1.fedsc.r_samples=3",
                        "stage1.fedsc.r_passes=2")
    algo = FedSC(world, world.cfg.stage1)
    fwd = forward_flops_per_sample(algo.model, (1, 8, 8))
    data = world.clients[0]
    assert data.num_samples > 3
    a, b = algo.prelude(0, 0), algo.prelude(1, 0)
    for t in (a, b):
        assert len(t.x) == len(t.y) == 3 and t.flops == 2 * 2 * 3 * fwd
        # Each row is one of the client's own samples.
        assert all(bool((data.x_train == row).flatten(1).all(1).any()) for row in t.x)
    assert not torch.equal(a.x, b.x)  # drawn anew each round


def test_a_step_cap_and_a_subset_are_refused_below_their_minimum() -> None:
    from nmoe_sim.errors import ConfigError

    with pytest.raises(ConfigError, match=r"stage1\.local_steps"):
        fedsc_world("stage1.local_steps=0")
    with pytest.raises(ConfigError, match=r"stage1\.fedsc\.r_samples"):
        fedsc_world("stage1.fedsc.r_samples=1")
