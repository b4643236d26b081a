"""Fuzzing the loader: whatever a scenario holds, loading it raises nothing but ConfigError.

Property-based (hypothesis): the shipped scenarios, read as the user's raw trees, are
mutated (a value replaced by another type or an out-of-range number, a key deleted,
renamed or added, a value nested deeper or a mapping flattened to one of its values) and
given random ``--set`` overrides, then passed to the function the CLI loads with. The YAML
reader gets random text too. Derandomized with a bounded number of examples, so the
suite stays deterministic and takes a few seconds; ``NMOE_FUZZ_EXAMPLES=20000 pytest
tests/test_fuzz.py`` searches longer, with fresh random draws.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmoe_sim.config import Scenario, read_scenario_file, scenario_from_raw
from nmoe_sim.errors import ConfigError
from nmoe_sim.yaml_read import parse_yaml_text

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").rglob("*.yaml"))
RAW = {p.relative_to(p.parents[1]).as_posix(): read_scenario_file(p) for p in SCENARIOS}
# NMOE_FUZZ_EXAMPLES=N runs a longer, randomized search by hand (CI keeps the default).
_LONG = int(os.environ.get("NMOE_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_LONG or 250, deadline=None, derandomize=not _LONG, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Values a mistaken or hostile scenario might hold: other types, edge numbers, preset-like
# and path-like names, deeper structures.
LEAF = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 10**9, 2**63, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "harsh", "ideal", "ring10", "campus", "../channel/harsh", "/etc/passwd", "auto",
                     "fedsc", "nmoe", "alignment", "1e400", "nan", "\x00", "é", "a" * 300]),
    st.text(max_size=12),
)
VALUE = st.recursive(LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-3, 3), st.booleans()), inner, max_size=4),
), max_leaves=8)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in the tree (mapping keys and list indices)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


def parent_of(tree: Any, path: tuple) -> Any:
    for part in path[:-1]:
        tree = tree[part]
    return tree


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    tree = copy.deepcopy(RAW[draw(st.sampled_from(sorted(RAW)))])
    for _ in range(draw(st.integers(1, 4))):
        everywhere = paths(tree)
        if not everywhere:
            break
        path = draw(st.sampled_from(everywhere))
        parent, key = parent_of(tree, path), path[-1]
        op = draw(st.sampled_from(["replace", "delete", "rename", "add", "deeper", "shallower", "scale"]))
        if op == "replace":
            parent[key] = draw(VALUE)
        elif op == "delete":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = parent.pop(key)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["unknown", "preset", "kind", "rounds", "bs", "grid", "0"]))] = draw(VALUE)
        elif op == "deeper":
            parent[key] = draw(st.sampled_from([lambda v: {"x": v}, lambda v: [v], lambda v: {"preset": v}]))(
                parent[key])
        elif op == "shallower" and isinstance(parent[key], (dict, list)) and parent[key]:
            inner = parent[key]
            parent[key] = next(iter(inner.values())) if isinstance(inner, dict) else inner[0]
        elif op == "scale" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = parent[key] * draw(st.sampled_from([-1, 0, 1e300, 1e-300, 10**20]))
    return tree


@st.composite
def overrides(draw: st.DrawFn) -> list[str]:
    keys = st.one_of(
        st.sampled_from(["stage1.lr", "network.channel.bs.preset", "network.channel", "network.topology",
                         "network.topology.radius_m", "data.clients", "sweep.grid", "alignment.rounds",
                         "model.top_k", "runtime.workers", "name", "seed", "x.y.z", "stage1..lr", ""]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz._0", max_size=20),
    )
    values = st.one_of(
        st.sampled_from(["harsh", "ideal", "ring10", "true", ".inf", ".nan", "[1, 2]", "{a: 1}", "null",
                         "&a [*a]", "'unterminated", "- x", "1e999", "-5", "[[[[1]]]]", "!!python/object:os.system"]),
        st.text(max_size=15),
    )
    items = draw(st.lists(st.tuples(keys, values), max_size=3))
    return [f"{k}={v}" for k, v in items] + draw(st.lists(st.sampled_from(["no_equals", "=1"]), max_size=1))


@FUZZ
@given(raw=mutated(), sets=overrides())
def test_loader_raises_nothing_but_config_error(raw: dict[str, Any], sets: list[str]) -> None:
    try:
        cfg = scenario_from_raw(raw, sets, "fuzzed.yaml")
    except ConfigError as exc:
        text = str(exc)
        assert text and "\n" not in text, text  # one line
        return
    assert isinstance(cfg, Scenario)


@FUZZ
@given(text=st.one_of(
    st.text(max_size=200),
    st.builds(lambda s, t: s[: len(s) // 2] + t + s[len(s) // 2:],
              st.sampled_from(sorted(p.read_text() for p in SCENARIOS)), st.text(max_size=20)),
))
def test_yaml_reader_raises_nothing_but_config_error(text: str) -> None:
    try:
        raw = parse_yaml_text(text, "fuzzed.yaml")
    except ConfigError as exc:
        assert "\n" not in str(exc), str(exc)
        return
    if isinstance(raw, dict):
        try:
            scenario_from_raw(raw, (), "fuzzed.yaml")
        except ConfigError:
            pass


@settings(FUZZ, max_examples=_LONG or 100)
@given(raw=mutated(), grid=st.dictionaries(
    st.sampled_from(["stage1.algorithm", "network.channel.bs.preset", "network.channel", "model.top_k",
                     "data.clients", "seed", "sweep.seeds", "stage1.lr", "", "a..b", "network.topology"]),
    st.one_of(st.lists(VALUE, max_size=3), VALUE), max_size=3),
    seeds=st.one_of(st.lists(st.integers(-2, 3), max_size=3), VALUE))
def test_sweep_expansion_raises_nothing_but_config_error(raw: dict[str, Any], grid: Any, seeds: Any) -> None:
    from nmoe_sim.sweep import expand_sweep

    try:
        expand_sweep({**raw, "sweep": {"grid": grid, "seeds": seeds}})
    except ConfigError as exc:
        assert "\n" not in str(exc), str(exc)


def test_the_fuzzer_starts_from_every_shipped_scenario_and_each_loads() -> None:
    assert len(RAW) >= 5 and "scenarios/quickstart.yaml" in RAW
    for name, raw in RAW.items():
        assert isinstance(scenario_from_raw(raw, (), name), Scenario), name


@pytest.mark.parametrize("raw", [
    {"network": {"channel": {"bs": {"preset": ["harsh"]}}}},
    {"network": {"topology": {"preset": None}}},
    {"network": {"channel": {"bs": 5, "d2d": "harsh"}}},
    {"network": "ring10"},
    {True: 1},
    {"stage1": {"lr": 10**400}},
    {"data": {"clients": 2**80}},
    {"\n": "x"},  # found by the fuzzer: an unknown key holding a newline broke the one line
    {"stage1": {"a\nb": 1}},
])
def test_tricky_trees_are_config_errors(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        scenario_from_raw(raw, (), "found.yaml")
    assert "\n" not in str(caught.value)
