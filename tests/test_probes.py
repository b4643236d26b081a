"""Representation checks of stage 1: the probes against closed forms and trivial
references, a trained FE beating its untrained self, and the flags a reader must not miss."""

from __future__ import annotations

import logging

import pytest
import torch

from nmoe_sim.fl.fedsc_loss import spectral_loss
from nmoe_sim.fl.probes import collapsed_spectral_loss, effective_rank, knn_accuracy, linear_probe
from nmoe_sim.fl.stage1 import FedCE
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import build_world

from conftest import tiny_cfg
from test_rounds import drive


def blobs(n: int, d: int, classes: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = 4.0 * torch.randn(classes, d, generator=torch.Generator().manual_seed(99))
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, d, generator=g), y


def test_effective_rank_is_one_on_a_line_and_near_d_for_isotropic_features() -> None:
    g = torch.Generator().manual_seed(0)
    line = torch.randn(500, 1, generator=g) * torch.randn(1, 8, generator=g)  # rank 1
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    assert 7.5 < effective_rank(torch.randn(4000, 8, generator=g)) <= 8.0
    assert effective_rank(torch.ones(10, 4)) == 0.0  # every sample the same: no direction


def test_probes_separate_clusters_and_sit_at_chance_on_random_labels() -> None:
    x, y = blobs(600, 8, 4, 0.5, 1)
    xt, yt = blobs(400, 8, 4, 0.5, 2)
    assert linear_probe(x, y, xt, yt) > 0.95
    assert knn_accuracy(x, y, xt, yt, 4) > 0.95
    noise = torch.randint(0, 4, (600,), generator=torch.Generator().manual_seed(3))
    assert 0.15 < linear_probe(x, noise, xt, yt) < 0.4  # labels unrelated to the features: chance, 1/4
    assert linear_probe(x, torch.zeros_like(y), xt, yt) == float((yt == 0).double().mean())  # one class


def test_top_eigen_share_tells_one_line_from_a_spread() -> None:
    from nmoe_sim.fl.probes import top_eigen_share

    line = torch.randn(50, 1) * torch.tensor([[1.0, 2.0, 0.0]])  # every row on one line, any norm
    assert top_eigen_share(line.T @ line) == pytest.approx(1.0)
    assert top_eigen_share(torch.eye(4)) == pytest.approx(0.25)


def test_collapsed_value_is_the_lowest_loss_of_identical_projections() -> None:
    for mu in (0.25, 1.0, 4.0):
        # Every row the same vector v, over the norms the clipping radius allows.
        losses = [float(spectral_loss(z, z, 1.0, None)) for r2 in torch.linspace(0.01, mu, 400).tolist()
                  for z in [torch.full((16, 4), (r2 / 4) ** 0.5)]]
        assert min(losses) == pytest.approx(collapsed_spectral_loss(mu), abs=1e-4)
    assert collapsed_spectral_loss(1.0) == collapsed_spectral_loss(4.0) == -1.0  # at |v| = 1
    assert collapsed_spectral_loss(0.25) == pytest.approx(-2 * 0.25 + 0.25**2)  # at the radius


def test_fedce_beats_its_untrained_fe_by_a_clear_margin() -> None:
    # Measured (tiny widths, IID, 400 samples, 5 rounds, 40 test samples): seeds 0/1/2 give
    # probes 0.80/0.80/0.80 against 0.55/0.625/0.425 untrained; the margin asked is 0.15.
    cfg = tiny_cfg("data.partition={kind: iid}", "data.max_train_samples=400", "stage1.rounds=5",
                   "stage1.algorithm=fedce", "stage1.probe_every=2")
    world = build_world(cfg, SeedStreams(0))
    algo = FedCE(world, cfg.stage1, probe=True)
    drive(world.new_sim("t"), algo, cfg.stage1)
    rep = algo.representation()
    assert rep["linear_probe"] >= rep["untrained"]["linear_probe"] + 0.15
    assert rep["effective_rank"] > 2 and not rep["collapsed"] and rep["rounds_with_update"] == 5
    measured = [r.round for r in world.recorder.rounds if r.probe_linear == r.probe_linear]  # not NaN
    assert measured == [1, 3, 4]  # every 2 rounds, and after the last


# The quickstart's digits and widths, IID over its 10 clients, FedSC's defaults over 15
# rounds (the quickstart's stage 1 before it took the one-class recipe below), views by
# cropping only (the one-channel extras blur the 8x8 digits beyond recognition: IID, 0.849
# with them against 0.911 without, seed 0).
FEDSC_IID = ("data.partition.kind=iid", "stage1.rounds=15", "stage1.batch_size=32", "stage1.lr=0.05",
             "stage1.lr_schedule=cosine", "stage1.fedsc.alpha_start=1.0", "stage1.fedsc.alpha_end=0.2",
             "stage1.fedsc.r_passes=5")


def fedsc_representation(*overrides: str, iid: bool = True) -> dict:
    from nmoe_sim.config import load_scenario
    from nmoe_sim.fl.stage1 import FedSC

    from conftest import REPO_ROOT

    cfg = load_scenario(REPO_ROOT / "scenarios" / "quickstart.yaml", [*(FEDSC_IID if iid else ()), *overrides])
    world = build_world(cfg, SeedStreams(cfg.seed))
    algo = FedSC(world, cfg.stage1, probe=True)
    drive(world.new_sim("t"), algo, cfg.stage1)
    return algo.representation()


def test_fedsc_with_a_normalised_projection_head_beats_its_untrained_fe() -> None:
    # Measured, seeds 0/1/2: probe 0.911/0.927/0.904 against 0.804/0.836/0.809 untrained
    # (kNN 0.918/0.916/0.882 against 0.804/0.813/0.751), effective rank 9.5-10.9, the top
    # direction 24-25 % of the projections' correlation. The margin asked is 0.06.
    rep = fedsc_representation("model.proj_batchnorm=true")
    assert rep["linear_probe"] >= rep["untrained"]["linear_probe"] + 0.06
    assert rep["knn"] >= rep["untrained"]["knn"] + 0.06
    assert rep["effective_rank"] > 2 and rep["projection_top_share"] < 0.5
    assert not rep["collapsed"] and not rep["projection_collapsed"]


def test_the_quickstarts_fedsc_beats_its_untrained_fe_at_one_class_per_client() -> None:
    # The quickstart's stage 1 as shipped (one class per client, alpha = 1/K, 120 rounds of
    # one local epoch). Measured, seeds 0/1/2: probe 0.904/0.902/0.891 against 0.804/0.836/
    # 0.809 untrained (+0.100/+0.066/+0.082), effective rank 8.1/9.7/7.9, top direction
    # 50/36/44 % of the projections' correlation. Its previous stage 1 (15 rounds, alpha
    # 1 -> 0.2) probed 0.836 at seed 0 (+0.032, top direction 99.8 %) and fails here.
    rep = fedsc_representation(iid=False)
    assert rep["linear_probe"] >= rep["untrained"]["linear_probe"] + 0.06
    assert rep["effective_rank"] > 5 and rep["projection_top_share"] < 0.7
    assert not rep["collapsed"] and not rep["projection_collapsed"] and rep["rounds_with_update"] == 120


@pytest.mark.slow
def test_without_normalisation_fedscs_projections_collapse_and_are_flagged() -> None:
    # The same run with today's default head: one direction holds 99.8 % of the projections'
    # correlation (probe 0.860); the flag says so. What the default would need to change.
    rep = fedsc_representation()
    assert rep["projection_top_share"] >= 0.99 and rep["projection_collapsed"]


def test_a_stage_that_never_updated_is_flagged_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    from nmoe_sim.pipeline import warn_if_unlearned

    cfg = tiny_cfg("stage1.deadline_s=1e-9", "stage1.rounds=2")  # every download misses the deadline
    world = build_world(cfg, SeedStreams(0))
    algo = FedCE(world, cfg.stage1, probe=True)
    drive(world.new_sim("t"), algo, cfg.stage1)
    rep = algo.representation()
    assert rep["no_update"] and rep["rounds_with_update"] == 0
    assert rep["linear_probe"] == rep["untrained"]["linear_probe"]  # still the untrained FE
    with caplog.at_level(logging.WARNING):
        warn_if_unlearned("stage1_fedce", rep)
    assert "no client update arrived in any round" in caplog.text


def test_the_nmoe_run_reports_the_checks_in_metrics_and_rounds(tmp_path) -> None:
    from nmoe_sim.runner import run

    cfg = tiny_cfg("stage1.algorithm=fedsc")
    metrics = run(cfg, tmp_path)
    rep = metrics["stages"]["stage1_fedsc"]["representation"]
    assert set(rep) >= {"linear_probe", "knn", "effective_rank", "untrained", "collapsed", "no_update",
                        "view_agreement", "spectral_loss", "collapsed_spectral_loss", "projection_collapsed",
                        "projection_top_share"}
    header = (tmp_path / "rounds.csv").read_text().splitlines()[0].split(",")
    assert header[-3:] == ["probe_linear", "probe_knn", "effective_rank"]
