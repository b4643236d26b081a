"""Shared fixtures: a tiny scenario (digits, 4 clients, one class each, tiny widths, ideal
channel) that runs the whole pipeline in well under a second, and helpers to build it.

Tiny widths (``model`` below) on digits (1 x 8 x 8 inputs, 10 classes), used for the exact
byte counts in the tests:

* FeatureExtractor, channels (4,), feature_dim 8: conv 1->4 3x3 = 4*9 + 4 = 40 params; the
  8x8 map is pooled to 4x4, so fc 4*4*4 = 64 -> 8 = 64*8 + 8 = 520. FE = 560 params.
* Classifier head 8 -> 10: 8*10 + 10 = 90. Classifier (FedCE model) = 650 params.
* ProjectionHead 8 -> 8 -> 4: (8*8 + 8) + (8*4 + 4) = 72 + 36 = 108. FedSC model = 668.
* Gate 8 -> 8 -> 4 experts: trunk 72, head 36, noise 36 = 144 params.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

# On a small, busy CI box torch's intra-op thread pool costs milliseconds per tiny op
# (threads spin and wait for each other); one thread keeps every tiny run well under a
# second. Set before torch is imported so subprocesses started by tests inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from nmoe_sim.config import Scenario, apply_override, build_scenario, resolve_presets  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parent.parent

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "data": {
        "dataset": "digits",
        "clients": 4,
        "partition": {"kind": "classes_per_client", "classes_per_client": 1},
        "max_train_samples": 80,
        "max_test_samples": 40,
    },
    "model": {"feature_dim": 8, "fe_channels": [4], "expert_hidden": 8, "gate_hidden": 8,
              "proj_dim": 4, "top_k": 1},
    "stage1": {"algorithm": "fedce", "rounds": 2, "batch_size": 16},
    "stage2": {"epochs": 2, "batch_size": 16},
    "stage3": {"algorithm": "fedgate", "rounds": 2, "batch_size": 16},
    "baselines": {"centralized": {"epochs": 2, "batch_size": 32}, "fedavg": {"rounds": 2, "batch_size": 16}},
    "inference": {"arrival_rate_hz": 5.0},
    "network": {"channel": "ideal"},
    "output": {"plots": False},
    # Save at every round boundary, whatever the host's speed: the resume tests count saves.
    "runtime": {"checkpoint_every_s": 0},
}

# Hand-computed parameter counts of the tiny widths (see the module docstring).
TINY_FE_PARAMS = 560
TINY_CLASSIFIER_PARAMS = 650
TINY_FEDSC_PARAMS = 668
TINY_GATE_PARAMS = 144


def tiny_raw(*overrides: str) -> dict[str, Any]:
    """The tiny scenario as a raw mapping, with ``dotted.key=value`` overrides applied."""
    raw = resolve_presets(copy.deepcopy(TINY))
    for item in overrides:
        apply_override(raw, item)
    return resolve_presets(raw)


def tiny_cfg(*overrides: str) -> Scenario:
    return build_scenario(tiny_raw(*overrides))


def write_yaml(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture()
def tiny_yaml(tmp_path: Path) -> Path:
    """The tiny scenario (presets unexpanded, as a user writes it) in a YAML file."""
    return write_yaml(tmp_path / "tiny.yaml", copy.deepcopy(TINY))


def one_error_line(err: str, *needles: str) -> str:
    """The CLI's stderr is exactly one ``error:`` line holding every needle; returns it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
