"""Checkpoints and ``--resume``: a run stopped at a round or stage boundary and resumed ends
with the same metrics.json and CSVs, byte for byte, as a run never stopped.

The stop is injected in-process here (an exception raised right after the chosen
checkpoint was saved, as a kill there would leave it); ``test_resume_cli.py`` kills real
subprocesses with SIGKILL and SIGINT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import simpy

from nmoe_sim.config import Scenario
from nmoe_sim.engine import checkpoint as ck
from nmoe_sim.engine.checkpoint import CHECKPOINT_FILE, Checkpoints
from nmoe_sim.engine.status import read_status
from nmoe_sim.runner import run

from conftest import tiny_cfg

# Fading channel with per-block rates (block clocks, SharedRadios wakes queued at a round's
# end), FedSC's prelude barrier, FedGate and every baseline: what a checkpoint must carry.
OVERRIDES = ("network.channel=urban_micro", "stage1.algorithm=fedsc", "stage1.rounds=3", "stage3.rounds=3")


class Killed(BaseException):
    """The injected stop: raised right after the chosen checkpoint is on disk."""


def run_files(run_dir: Path) -> dict[str, bytes]:
    """metrics.json without wall time and run id (as tests/golden_cases.py strips them, key
    order and format kept), and every CSV and topology.json, as bytes."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    metrics.pop("wall_time_s")
    metrics.pop("run_id")
    out = {"metrics.json": json.dumps(metrics, indent=2).encode()}
    for path in sorted(run_dir.glob("*.csv")) + [run_dir / "topology.json"]:
        out[path.name] = path.read_bytes()
    return out


def record_saves(monkeypatch: pytest.MonkeyPatch, stop_after: str | None = None) -> list[tuple[str, str]]:
    """Wrap Checkpoints.save: note every save made, and stop the run after ``stop_after``."""
    saves: list[tuple[str, str]] = []
    original = Checkpoints.save

    def save(self: Checkpoints, where: str, kind: str) -> bool:
        made = original(self, where, kind)
        if made:
            saves.append((where, kind))
            if where == stop_after:
                raise Killed(where)
        return made

    monkeypatch.setattr(Checkpoints, "save", save)
    return saves


def stop_and_resume(cfg: Scenario, run_dir: Path, where: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    run_dir.mkdir()
    record_saves(monkeypatch, stop_after=where)
    with pytest.raises(Killed):
        run(cfg, run_dir, checkpoint=True)
    assert not (run_dir / "metrics.json").exists()
    saved = ck.load(run_dir)
    assert saved is not None and saved.where == where
    monkeypatch.undo()
    return run(saved.cfg, run_dir, checkpoint=True, resume=saved)


_REFERENCE: list[tuple[dict[str, bytes], list[tuple[str, str]]]] = []  # computed once per session


@pytest.fixture()
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """The run never stopped, with checkpoints off and with the default (rounds): the same
    files; and where a checkpointed run saves. (test_resume_cli.py uses it too.)"""
    if not _REFERENCE:
        mp = pytest.MonkeyPatch()
        try:
            plain = tmp_path_factory.mktemp("plain")
            none = record_saves(mp)
            run(tiny_cfg(*OVERRIDES, "runtime.checkpoint=off"), plain, checkpoint=True)
            assert none == [] and not (plain / CHECKPOINT_FILE).exists()  # off: nothing saved
            mp.undo()
            saving = tmp_path_factory.mktemp("saved")
            saves = record_saves(mp)
            run(tiny_cfg(*OVERRIDES), saving, checkpoint=True)
        finally:
            mp.undo()
        assert run_files(saving) == run_files(plain)  # saving never changes what is computed
        _REFERENCE.append((run_files(plain), saves))
    return _REFERENCE[0]


# Where the run of OVERRIDES saves, in order: every round and stage boundary.
EVERY_SAVE = [
    *[(f"nmoe stage1_fedsc round {r}", "round") for r in range(3)],
    ("nmoe stage1_fedsc done", "stage"),
    ("nmoe stage2_experts done", "stage"),
    *[(f"nmoe stage3_fedgate round {r}", "round") for r in range(3)],
    ("nmoe stage3_fedgate done", "stage"),
    ("nmoe inference done", "stage"),
    ("local done", "stage"),
    ("centralized done", "stage"),
    *[(f"fedavg baseline_fedavg round {r}", "round") for r in range(2)],
    ("fedavg done", "stage"),
]


def test_saves_at_every_round_and_stage_boundary(reference: Any) -> None:
    _, saves = reference
    assert saves == EVERY_SAVE


@pytest.mark.parametrize("where", [
    "nmoe stage1_fedsc round 0",  # stage 1, mid-stage (FedSC: a prelude barrier every round)
    # stage 1's last round: the driver has nothing left to run
    pytest.param("nmoe stage1_fedsc round 2", marks=pytest.mark.slow),
    "nmoe stage1_fedsc done",  # a stage boundary inside the pipeline's process
    # a stage boundary between processes
    pytest.param("nmoe stage2_experts done", marks=pytest.mark.slow),
    "nmoe stage3_fedgate round 1",  # stage 3, mid-stage
    "fedavg baseline_fedavg round 0",  # the FedAvg baseline, mid-stage
])
def test_resumed_run_equals_the_uninterrupted_one(reference: Any, tmp_path: Path, where: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    want, _ = reference
    stop_and_resume(tiny_cfg(*OVERRIDES), tmp_path / "run", where, monkeypatch)
    got = run_files(tmp_path / "run")
    assert list(got) == list(want)
    for name in want:
        assert got[name] == want[name], name
    assert read_status(tmp_path / "run")["state"] == "finished"
    assert not (tmp_path / "run" / CHECKPOINT_FILE).exists()  # a finished run keeps none


def test_rollgate_saves_after_every_lap_and_resumes_after_one(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """RollGate's laps are rounds: each lap's record is a round boundary that saves (the gate
    on its way round the ring, who holds it, its generators), and a run stopped after lap 1
    (lap 2 starts with a hand-over from lap 1's last holder) ends as the run never stopped."""
    cfg = tiny_cfg(*OVERRIDES, "stage3.algorithm=rollgate")
    base = tmp_path / "base"
    base.mkdir()
    saves = record_saves(monkeypatch)
    run(cfg, base, checkpoint=True)
    monkeypatch.undo()
    assert saves == [(w.replace("fedgate", "rollgate"), kind) for w, kind in EVERY_SAVE]
    stop_and_resume(cfg, tmp_path / "run", "nmoe stage3_rollgate round 1", monkeypatch)
    got, want = run_files(tmp_path / "run"), run_files(base)
    for name in want:
        assert got[name] == want[name], name
    assert list(got) == list(want)


def test_a_resume_that_replays_differently_is_caught(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: a resumed driver that redraws its participants (as a run
    that lost its RNG state would) changes the results."""
    cfg = tiny_cfg(*OVERRIDES, "stage3.participation=0.5")
    base = tmp_path / "base"
    base.mkdir()
    run(cfg, base)
    from nmoe_sim.fl.rounds import RoundDriver

    original = RoundDriver.run

    def forgetful(self: RoundDriver, *args: Any) -> Any:
        if self.next_round:  # resumed mid-stage: lose the stream's state
            import numpy as np

            self.rng = np.random.default_rng(12345)
        return original(self, *args)

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record_saves(monkeypatch, stop_after="nmoe stage3_fedgate round 0")
    with pytest.raises(Killed):
        run(cfg, run_dir, checkpoint=True)
    monkeypatch.undo()
    monkeypatch.setattr(RoundDriver, "run", forgetful)
    saved = ck.load(run_dir)
    run(saved.cfg, run_dir, checkpoint=True, resume=saved)
    assert run_files(run_dir)["rounds.csv"] != run_files(base)["rounds.csv"]


def test_alignment_resumes_mid_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import REPO_ROOT
    from nmoe_sim.config import load_scenario

    cfg = load_scenario(REPO_ROOT / "scenarios" / "alignment_quick.yaml", [
        "data.max_train_samples=200", "data.max_test_samples=60", "alignment.rounds=3", "output.plots=false",
        "alignment.compare=[alignment, random]", "runtime.checkpoint_every_s=0"])
    base = tmp_path / "base"
    base.mkdir()
    run(cfg, base)
    stop_and_resume(cfg, tmp_path / "run", "random alignment_random round 1", monkeypatch)
    assert run_files(tmp_path / "run") == run_files(base)


@pytest.mark.parametrize("setting", ["runtime.checkpoint=stages",
                                     pytest.param("runtime.checkpoint_every_s=86400", marks=pytest.mark.slow)])
def test_checkpoint_stages_saves_only_at_stage_boundaries(reference: Any, tmp_path: Path, setting: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``stages``, or ``rounds`` with a day between round saves: every stage boundary, no round."""
    want, all_saves = reference
    saves = record_saves(monkeypatch)
    run(tiny_cfg(*OVERRIDES, setting), tmp_path, checkpoint=True)
    assert saves == [s for s in all_saves if s[1] == "stage"] and len(saves) == 7
    assert run_files(tmp_path) == want


def test_no_checkpoint_where_a_process_is_still_alive(tmp_path: Path) -> None:
    """A save that would need a live process (here one waiting on a timer) is skipped and
    leaves the last checkpoint as it was; with none alive it saves."""
    cfg = tiny_cfg()
    from nmoe_sim.seeds import SeedStreams
    from nmoe_sim.world import build_world

    world = build_world(cfg, SeedStreams(cfg.seed))
    world.checkpoints = cps = Checkpoints(tmp_path, "rounds", world)
    sim = world.new_sim("nmoe")

    def waiter() -> Any:
        yield sim.env.timeout(5.0)

    with cps.frame("test", lambda: {"sim": sim}):
        assert cps.save("idle", "round")
        before = (tmp_path / CHECKPOINT_FILE).read_bytes()
        sim.env.process(waiter())
        sim.env.run(until=1.0)
        assert not cps.save("busy", "round")
        assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
        assert cps.skipped == 1 and cps.saves == 1
        sim.env.run()  # the waiter ends: nothing alive
        assert cps.save("idle again", "round")
    assert ck.load(tmp_path).where == "idle again"


def test_restored_environment_keeps_clock_counter_and_queue(tmp_path: Path) -> None:
    """The saved environment comes back at the same time with the same event ids, and a
    process started on resume acts first at that instant (before a timer due then)."""
    cfg = tiny_cfg()
    from nmoe_sim.seeds import SeedStreams
    from nmoe_sim.world import build_world

    world = build_world(cfg, SeedStreams(cfg.seed))
    world.checkpoints = cps = Checkpoints(tmp_path, "rounds", world)
    env = simpy.Environment()
    env.timeout(2.0)
    env.run(until=1.5)
    order: list[str] = []
    due = env.timeout(0)  # due at the saved instant
    with cps.frame("env", lambda: {"env": env, "due": due, "order": order}):
        assert cps.save("t=1.5", "stage")
    world2 = build_world(cfg, SeedStreams(cfg.seed))
    world2.checkpoints = cps2 = Checkpoints(tmp_path, "rounds", world2)
    cps2.restore(ck.load(tmp_path))
    with cps2.frame("env", dict) as fr:
        env2, order2 = fr.env, fr.order
        assert env2.now == 1.5
        assert [(t, p, e) for t, p, e, _ in env2._queue] == [(t, p, e) for t, p, e, _ in env._queue]
        assert ck._next_eid(env2) == ck._next_eid(env)
        fr.due.callbacks.append(lambda _ev: order2.append("timer"))

        def go_on() -> Any:
            order2.append("resumed")
            yield env2.timeout(0)

        env2.process(go_on())
        env2.run()
    assert order2 == ["resumed", "timer"]
    assert env2.now == 2.0


def test_a_failing_run_is_marked_failed_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nmoe_sim.systems.nmoe as nmoe_system

    def broken(*_args: Any) -> Any:
        raise RuntimeError("stage table broke\nsecond line")

    monkeypatch.setattr(nmoe_system, "stage_table", broken)
    with pytest.raises(RuntimeError):
        run(tiny_cfg("stage1.rounds=1", "stage3.rounds=1", "baselines.systems=[local]"), tmp_path, checkpoint=True)
    status = read_status(tmp_path)
    assert status["state"] == "failed"
    assert status["reason"] == "RuntimeError: stage table broke"  # one line
    assert status["checkpoint"]["where"] == "local done"  # what a resume would go on from


def test_round_saves_wait_checkpoint_every_s_of_wall_time(tmp_path: Path) -> None:
    """A round boundary saves once ``every_s`` of host time has passed since the last save
    (or the start); a stage boundary always saves. The clock is injected."""
    cfg = tiny_cfg()
    from nmoe_sim.seeds import SeedStreams
    from nmoe_sim.world import build_world

    now = [0.0]
    world = build_world(cfg, SeedStreams(cfg.seed))
    world.checkpoints = cps = Checkpoints(tmp_path, "rounds", world, wall0=0.0, every_s=10.0, clock=lambda: now[0])
    made = []
    for t, kind in [(3, "round"), (12, "round"), (15, "round"), (16, "stage"), (20, "round"), (26.5, "round")]:
        now[0] = t
        made.append(cps.save(f"t={t}", kind))
    assert made == [False, True, False, True, False, True]
    assert ck.load(tmp_path).where == "t=26.5"
