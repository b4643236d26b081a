"""Both executors reproduce the golden results of every shipped scenario exactly.

``local`` is the reference; ``batched`` runs every round's tasks through its two worker
processes, where it must give the same bits: the same
reference ``execute`` at one torch thread. See tests/golden_cases.py for what is frozen,
and how (and when) to regenerate it.
"""

from __future__ import annotations

import json

import pytest


from golden_cases import CASES, golden_path, has_fashion_mnist, run_case


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
    differ = [section for section in sorted(set(want) | set(got)) if got.get(section) != want.get(section)]
    assert not differ, f"{name}: {differ} differ from {path.name}"
