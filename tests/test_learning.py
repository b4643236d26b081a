"""Learned gates beat the trivial reference: RollGate and FedGate route queries better
than RanGate's uniform choice on one class per client, where only the right expert knows
the query's class."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmoe_sim.runner import run

from conftest import tiny_cfg

# Digits, 10 clients holding one class each, small widths; about a second per run.
SMALL = ("data.clients=10", "data.max_train_samples=600", "data.max_test_samples=200", "model.fe_channels=[8]",
         "model.feature_dim=16", "model.expert_hidden=16", "model.gate_hidden=16", "stage1.rounds=5",
         "stage2.epochs=5", "stage3.rounds=5", "baselines.systems=[]", "output.plots=false",
         "inference.max_queries_per_client=10")


def nmoe_f1(tmp_path: Path, gate: str) -> float:
    run_dir = tmp_path / gate
    run_dir.mkdir()
    return run(tiny_cfg(*SMALL, f"stage3.algorithm={gate}"), run_dir)["systems"]["nmoe"]["f1_macro"]


@pytest.mark.parametrize("gate", ["rollgate", "fedgate"])
def test_a_trained_gate_beats_random_routing(tmp_path: Path, gate: str) -> None:
    # Measured, seeds 0/1/2 (macro-F1), with FedSC's faithful stage 1 and FedGate's Ditto
    # personal gates (the defaults): rangate 0.057/0.080/0.060, rollgate 0.531/0.419/0.510,
    # fedgate 0.251/0.285/0.381 (before them: rollgate 0.548/0.447/0.455, fedgate
    # 0.329/0.235/0.363). The margin asked (seed 0) is 0.15.
    assert nmoe_f1(tmp_path, gate) >= nmoe_f1(tmp_path, "rangate") + 0.15
