"""Checkpoints of a run with injected faults: its pending faults (queued timers, not live
processes: engine/faults.py) are saved with the environment, so it saves at every round
and stage boundary, and a run stopped at one and resumed ends with the same files, byte for
byte, as the run never stopped.

Times are those of the tiny scenario under test_resume.OVERRIDES (urban micro channel):
stage 1 runs 0-0.043 s, stage 3 0.26-0.29 s, inference after; the FedAvg baseline 0-0.023 s
of its own clock. So at stage 1's first round (0.013 s) every fault kind is still pending:
crash 1 at 0.02 (back at 0.05), crash 3 at 0.1 for good, each client's next Poisson crash,
the link, radio and base-station intervals, the straggler's end and the whole storm.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nmoe_sim.engine.checkpoint import CHECKPOINT_FILE
from nmoe_sim.runner import run

from conftest import tiny_cfg
from test_resume import EVERY_SAVE, OVERRIDES, record_saves, run_files, stop_and_resume

FAULTS = ("faults.events=["
          "{kind: crash, clients: [1], at_s: 0.02, downtime_s: 0.03}, "
          "{kind: crash, clients: [3], at_s: 0.1}, "
          "{kind: crash_rate, rate_hz: 10.0, downtime_s: 0.01}, "
          "{kind: dropout, probability: 0.2}, "
          "{kind: link_down, link: [2, bs], start_s: 0.04, end_s: 0.045}, "
          "{kind: radio_down, node: 0, start_s: 0.097, end_s: 0.1}, "
          "{kind: bs_outage, start_s: 0.105, end_s: 0.106}, "
          "{kind: straggler, node: 2, slowdown: 2.0, start_s: 0.0, end_s: 0.05}, "
          "{kind: storm, links: [[0, bs]], extra_loss_db: 10.0, start_s: 0.03, end_s: 0.2}]")


def faulty_cfg() -> Any:
    return tiny_cfg(*OVERRIDES, FAULTS)


_REFERENCE: list[tuple[dict[str, bytes], list[tuple[str, str]]]] = []  # computed once per session


@pytest.fixture()
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """The faulty run never stopped, and where it saves."""
    if not _REFERENCE:
        mp = pytest.MonkeyPatch()
        try:
            plain = tmp_path_factory.mktemp("faulty")
            saves = record_saves(mp)
            run(faulty_cfg(), plain, checkpoint=True)
        finally:
            mp.undo()
        _REFERENCE.append((run_files(plain), saves))
    return _REFERENCE[0]


def test_a_run_with_faults_saves_at_every_round_and_stage_boundary(reference: Any) -> None:
    want, saves = reference
    assert saves == EVERY_SAVE  # as without faults: none skipped
    # The faults did happen, in every kind, after the first save (so they were pending there).
    events = want["events.csv"].decode().splitlines()
    faults = [line.split(",") for line in events if line.split(",")[1] == "fault"]
    header = events[0].split(",")
    tag, start = header.index("tag"), header.index("start_s")
    kinds_later = {f[tag].split(" ")[0] for f in faults if f[0] == "nmoe" and float(f[start]) > 0.013}
    assert kinds_later == {"crash", "dropout", "link_down", "radio_down", "bs_outage", "storm"}
    assert b"crashed" in want["failures.csv"] and b"dropped_out" in want["failures.csv"]


@pytest.mark.parametrize("where", [
    "nmoe stage1_fedsc round 0",  # every fault kind pending (module docstring)
    "nmoe stage1_fedsc done",  # a stage boundary: none saved here while faults were processes
    "nmoe stage3_fedgate round 1",  # crash 3 and the storm under way, Poisson crashes pending
    "nmoe inference done",  # after the queries' timeouts, Poisson crashes still pending
    "fedavg baseline_fedavg round 0",  # another system's world, its own pending faults
])
def test_a_run_with_faults_resumed_equals_the_uninterrupted_one(reference: Any, tmp_path: Path, where: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    want, _ = reference
    stop_and_resume(faulty_cfg(), tmp_path / "run", where, monkeypatch)
    got = run_files(tmp_path / "run")
    assert list(got) == list(want)
    for name in want:
        assert got[name] == want[name], name
    assert not (tmp_path / "run" / CHECKPOINT_FILE).exists()


def test_a_sweep_shares_stages_whose_world_has_faults_still_to_come(tmp_path: Path) -> None:
    """The same timers make stage 2's end snapshottable for a sweep (reuse.py): a later point
    takes stages 1-2 from the first, with a Poisson crash, a rejoin and a storm still queued,
    and equals that point run from scratch. (While faults were processes it recomputed.)"""
    from nmoe_sim.config import build_scenario
    from nmoe_sim.reuse import StageCache

    from test_reuse import point, summary

    events = [{"kind": "crash_rate", "rate_hz": 5.0, "downtime_s": 0.05},
              {"kind": "crash", "clients": [1], "at_s": 0.02, "downtime_s": 0.5},
              {"kind": "storm", "links": [[0, "bs"]], "extra_loss_db": 10.0, "start_s": 0.01, "end_s": 5.0},
              {"kind": "dropout", "probability": 0.2}]
    cache = StageCache()
    for name in ("fedgate", "rollgate"):
        for how, reuse in (("fresh", None), ("reused", cache)):
            (tmp_path / how / name).mkdir(parents=True)
            run(build_scenario(point(name, **{"faults.events": events})), tmp_path / how / name, reuse=reuse)
    assert summary(tmp_path / "reused" / "rollgate") == summary(tmp_path / "fresh" / "rollgate")
    reused = json.loads((tmp_path / "reused" / "rollgate" / "metrics.json").read_text())["reused"]
    assert reused["stage2_experts"] == "reused/fedgate"  # the origin: the first point's run
    assert cache.hits == 3  # the prefix and two baselines
