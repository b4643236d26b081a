"""Both executors reproduce the golden results of every shipped scenario exactly (the FE
checks' measurements within their BLAS tolerance, tests/golden_cases.py).

``local`` is the reference; ``batched`` runs every round's tasks through its two worker
processes, where it must give the same bits: the same
reference ``execute`` at one torch thread. See tests/golden_cases.py for what is frozen,
and how (and when) to regenerate it.
"""

from __future__ import annotations

import json

import pytest


from golden_cases import CASES, golden_path, has_fashion_mnist, mismatches, run_case


@pytest.mark.parametrize("executor", ["local", "batched"])
@pytest.mark.parametrize("name", list(CASES))
def test_golden_results_reproduce_exactly(name: str, executor: str) -> None:
    if CASES[name][2] and not has_fashion_mnist():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    path = golden_path(name)
    assert path.is_file(), f"no golden file {path}: run python tests/golden_cases.py {name}"
    want = json.loads(path.read_text(encoding="utf-8"))
    overrides = (f"runtime.executor={executor}", "runtime.workers=2")
    got = json.loads(json.dumps(run_case(name, overrides)))  # the same JSON round trip as the file
    differ = mismatches(want, got)  # exactly, but the FE checks' measurements (see golden_cases.py)
    assert not differ, f"{name}: {len(differ)} values differ from {path.name}, first {differ[:5]}"


def test_only_the_fe_checks_measurements_have_a_tolerance() -> None:
    want = {"stages": {"s1": {"bytes": 100, "representation": {"linear_probe": 0.62, "effective_rank": 34.272807}}},
            "rounds_csv": [{"probe_linear": "0.62", "cum_bytes": "8"}]}

    def changed(path: tuple, value: object) -> dict:
        got = json.loads(json.dumps(want))
        node = got
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
        return got

    rep = ("stages", "s1", "representation")
    assert mismatches(want, want) == []
    assert mismatches(want, changed((*rep, "linear_probe"), 0.63)) == []  # one borderline sample of 100
    assert mismatches(want, changed((*rep, "effective_rank"), 34.272806)) == []  # BLAS's last bits
    assert mismatches(want, changed(("rounds_csv", 0, "probe_linear"), "0.63")) == []
    assert mismatches(want, changed((*rep, "linear_probe"), 0.65)) == ["stages.s1.representation.linear_probe"]
    assert mismatches(want, changed((*rep, "effective_rank"), 34.27)) == ["stages.s1.representation.effective_rank"]
    assert mismatches(want, changed(("stages", "s1", "bytes"), 101)) == ["stages.s1.bytes"]  # exact elsewhere
    assert mismatches(want, changed(("rounds_csv", 0, "cum_bytes"), "8.0")) == ["rounds_csv[0].cum_bytes"]
    assert mismatches(want, {**want, "extra": 1}) == ["extra"]
