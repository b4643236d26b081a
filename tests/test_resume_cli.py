"""``--resume`` as a user meets it: real processes killed with SIGKILL, stopped with Ctrl-C
(SIGINT to the process group), resumed with ``run_scenario.py --resume`` and ``nmoe-sim run
--resume``; status.json throughout; and the directories that cannot be resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nmoe_sim.cli import main
from nmoe_sim.config import load_scenario
from nmoe_sim.engine.checkpoint import CHECKPOINT_FILE
from nmoe_sim.engine.status import read_status
from nmoe_sim.runner import run

from conftest import REPO_ROOT, TINY, tiny_raw, write_yaml
from test_resume import OVERRIDES, reference, run_files  # noqa: F401  (reference: a fixture)

SHIM = [sys.executable, str(REPO_ROOT / "run_scenario.py")]
# The tree under test first on the path, whichever checkout the tests run from.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}

# A real SIGKILL, at a chosen checkpoint: the child kills itself right after that save is on
# disk (what a kill at that moment leaves), with no hook in the program itself.
KILL_AFTER = """
import os, signal, sys
from nmoe_sim.cli import main
from nmoe_sim.engine.checkpoint import Checkpoints
save = Checkpoints.save
def killing_save(self, where, kind):
    made = save(self, where, kind)
    if made and where == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
    return made
Checkpoints.save = killing_save
sys.exit(main(["run", *sys.argv[2:]]))
"""


def scenario(tmp_path: Path, **sections: dict) -> Path:
    raw = {**TINY, "network": {"channel": "urban_micro"}, **sections}
    return write_yaml(tmp_path / "scenario.yaml", raw)


def uninterrupted(yaml_path: Path, tmp_path: Path) -> dict[str, bytes]:
    ref = tmp_path / "reference"
    ref.mkdir()
    run(load_scenario(yaml_path, []), ref)
    return run_files(ref)


def only_run_dir(out: Path) -> Path:
    (run_dir,) = [p for p in (out / "tiny").iterdir()]
    return run_dir


def test_sigkill_at_a_round_then_resume_equals_the_uninterrupted_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], reference: Any) -> None:
    # test_resume's scenario (fading channel, FedSC, FedGate, every baseline) and its
    # uninterrupted run, as a user's YAML file.
    yaml_path = write_yaml(tmp_path / "scenario.yaml", tiny_raw(*OVERRIDES))
    out = tmp_path / "out"
    where = "nmoe stage3_fedgate round 0"
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER, where, str(yaml_path), "--out", str(out), "-q"],
                            env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_dir = only_run_dir(out)
    status = read_status(run_dir)
    assert status["state"] == "running"  # nobody could say otherwise: the process was killed
    assert status["checkpoint"] == {"where": where, "kind": "round"}
    assert status["command"] == f"nmoe-sim run --resume {run_dir}"
    assert not (run_dir / "metrics.json").exists()
    # A kill in the middle of a write leaves a hidden temporary: resuming removes it.
    (run_dir / ".metrics.json.k1ll3d.tmp").write_text("{half")
    (run_dir / f".{CHECKPOINT_FILE}.k1ll3d.tmp").write_bytes(b"\x80")

    # In this process (a second interpreter start costs seconds); the shim's --resume is run
    # as a subprocess below and in the slow Ctrl-C test.
    assert main(["run", "--resume", str(run_dir)]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == str(run_dir)
    assert f"resuming {run_dir} after {where}" in err
    assert read_status(run_dir)["state"] == "finished"
    assert sorted(p.name for p in run_dir.glob(".*")) == []
    assert not (run_dir / CHECKPOINT_FILE).exists()
    assert run_files(run_dir) == reference[0]


def ctrl_c(tmp_path: Path, sigterm: bool = False) -> tuple[Path, Path]:
    """Start a run, press Ctrl-C once it has saved a checkpoint (or send its process SIGTERM,
    as ``kill`` or a batch scheduler does); check what the user sees."""
    # Enough stage-1 rounds that the run is still going when Ctrl-C arrives.
    yaml_path = scenario(tmp_path, stage1={**TINY["stage1"], "rounds": 60})
    out = tmp_path / "out"
    proc = subprocess.Popen([*SHIM, str(yaml_path), "--out", str(out), "-q"], env=ENV, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list((out / "tiny").glob("*")) if (out / "tiny").exists() else []
        if runs and (read_status(runs[0]) or {}).get("checkpoint"):
            run_dir = runs[0]
            break
        time.sleep(0.01)
    assert run_dir is not None, "no checkpoint seen before the run ended"
    if sigterm:
        os.kill(proc.pid, signal.SIGTERM)  # the main process only: its workers are its to stop
    else:
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines() == [
        f"interrupted: {run_dir} (resume with: nmoe-sim run --resume {run_dir})"]
    status = read_status(run_dir)
    assert status["state"] == "interrupted"
    assert status["checkpoint"]["kind"] in ("round", "stage")
    assert not (run_dir / "metrics.json").exists()
    assert sorted(p.name for p in run_dir.glob(".*")) == []
    return yaml_path, run_dir


def test_ctrl_c_prints_one_line_marks_interrupted_and_exits_130(tmp_path: Path) -> None:
    ctrl_c(tmp_path)


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path: Path) -> None:
    # Without a handler SIGTERM ends the process at once: status.json would say running.
    _, run_dir = ctrl_c(tmp_path, sigterm=True)
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_ctrl_c_then_resume_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    yaml_path, run_dir = ctrl_c(tmp_path)
    resumed = subprocess.run([*SHIM, "--resume", str(run_dir), "-q"], env=ENV, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert read_status(run_dir)["state"] == "finished"
    assert run_files(run_dir) == uninterrupted(yaml_path, tmp_path)


def test_resuming_a_finished_run_says_so_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yaml_path = scenario(tmp_path)
    assert main(["run", str(yaml_path), "--out", str(tmp_path / "out"), "-q"]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["started"] and status["checkpoint"]["where"] == "fedavg done"
    assert not (run_dir / CHECKPOINT_FILE).exists()
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    again = subprocess.run([*SHIM, "--resume", str(run_dir)], env=ENV, cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stderr.strip() == f"already finished: {run_dir} (nothing to resume)"
    assert again.stdout.strip() == str(run_dir)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def _one_error_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --resume"), proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("case", ["empty_dir", "missing", "bad_checkpoint", "with_scenario"])
def test_what_cannot_be_resumed_is_one_error_line(tmp_path: Path, case: str) -> None:
    run_dir = tmp_path / "run"
    args = ["--resume", str(run_dir)]
    needles = [str(run_dir)]
    if case == "empty_dir":
        run_dir.mkdir()
        needles.append("not a run directory")
    elif case == "missing":
        needles.append("not a run directory")
    elif case == "bad_checkpoint":
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text("name: x\n")
        (run_dir / CHECKPOINT_FILE).write_bytes(b"not a pickle")
        needles.append("not a checkpoint")
    else:
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text("name: x\n")
        args = ["scenario.yaml", *args]
        needles = ["no scenario"]
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()} if run_dir.exists() else None
    proc = subprocess.run([*SHIM, *args], env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    _one_error_line(proc, *needles)
    # Nothing written, nothing removed.
    assert ({p.name: p.read_bytes() for p in run_dir.iterdir()} if run_dir.exists() else None) == before


@pytest.mark.slow
def test_a_run_stopped_before_any_checkpoint_starts_again_in_its_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """With checkpoints off, Ctrl-C (here raised at the end of the NMoE's stages) leaves no
    checkpoint: --resume runs the saved config.yaml again from the start, in the same folder."""
    import nmoe_sim.systems.nmoe as nmoe_system

    yaml_path = scenario(tmp_path, runtime={"checkpoint": "off"})
    real = nmoe_system.stage_table

    def ctrl_c(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(nmoe_system, "stage_table", ctrl_c)
    assert main(["run", str(yaml_path), "--out", str(tmp_path / "out"), "-q"]) == 130
    run_dir = only_run_dir(tmp_path / "out")
    assert capsys.readouterr().err.strip() == f"interrupted: {run_dir} (resume with: nmoe-sim run --resume {run_dir})"
    assert read_status(run_dir)["state"] == "interrupted"
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "status.json"]
    monkeypatch.setattr(nmoe_system, "stage_table", real)
    assert main(["run", "--resume", str(run_dir), "-q"]) == 0
    assert read_status(run_dir)["state"] == "finished"
    assert run_files(run_dir) == uninterrupted(yaml_path, tmp_path)


def test_a_run_still_running_elsewhere_is_not_resumed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: x\n")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / "status.json").write_text(json.dumps({"state": "running", "pid": other.pid}))
        proc = subprocess.run([*SHIM, "--resume", str(run_dir)], env=ENV, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        _one_error_line(proc, str(run_dir), f"still being run by process {other.pid}")
    finally:
        other.kill()
        other.wait()
    # Once that process is gone the same directory can be resumed (here: an unreadable
    # checkpoint is the next thing it finds).
    (run_dir / CHECKPOINT_FILE).write_bytes(b"junk")
    proc = subprocess.run([*SHIM, "--resume", str(run_dir)], env=ENV, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    _one_error_line(proc, "not a checkpoint")
