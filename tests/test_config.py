"""Schema edge cases: values YAML parses into the wrong type, and top-level cross-checks."""

from __future__ import annotations

import pytest

from nmoe_sim.config import build_scenario
from nmoe_sim.errors import ConfigError


@pytest.mark.parametrize("raw, key", [
    ({"stage1": {"rounds": True}}, "stage1.rounds"),
    ({"stage2": {"lr": False}}, "stage2.lr"),
    ({"data": {"max_train_samples": True}}, "data.max_train_samples"),
])
def test_booleans_are_not_numbers(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: expected a number, not true/false"):
        build_scenario(raw)


def test_booleans_still_set_boolean_fields() -> None:
    cfg = build_scenario({"stage1": {"fedsc": {"share_correlation": False}}, "model": {"gate_noise": False}})
    assert cfg.stage1.fedsc.share_correlation is False and cfg.model.gate_noise is False


def test_top_level_cross_check_names_its_keys_without_placeholder() -> None:
    with pytest.raises(ConfigError) as err:
        build_scenario({"model": {"top_k": 11}, "data": {"clients": 10}})
    assert str(err.value) == "model.top_k=11 exceeds data.clients=10"
