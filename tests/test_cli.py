"""The command line as a user meets it (subprocesses of ``run_scenario.py`` and
``python -m nmoe_sim.cli``): bad input is one ``error:`` line and exit status 2, a good
run prints its run directory last, and runs never share a directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nmoe_sim.cli import main
from nmoe_sim.config import CHANNEL_PRESETS_DIR, load_scenario, preset_names
from nmoe_sim.results import new_run_dir
from nmoe_sim.runner import run

from conftest import REPO_ROOT, tiny_cfg

SHIM = [sys.executable, str(REPO_ROOT / "run_scenario.py")]
MODULE_RUN = [sys.executable, "-m", "nmoe_sim.cli", "run"]
# A wide console so the summary table is never cut to fit 80 columns.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: ")
    for needle in needles:
        assert needle in line, (needle, line)
    return line


# --------------------------------------------------------------------------- user errors
CONFIG_ERRORS = {
    "unknown_key": (["--set", "stage1.roundz=3"], ["stage1.roundz", "unknown key", "allowed:", "rounds",
                                                   "local_epochs", "participation"]),
    "wrong_type": (["--set", "stage1.rounds=abc"], ["stage1.rounds", "integer", "'abc'"]),
    "out_of_range": (["--set", "stage1.rounds=0"], ["stage1.rounds", "greater than or equal to 1", "0"]),
    "unknown_preset": (["--set", "network.channel.bs=nope"],
                       ["network.channel.bs", "'nope'", "known:", *preset_names(CHANNEL_PRESETS_DIR)]),
    "not_key_value": (["--set", "stage1.rounds"], ["stage1.rounds", "KEY=VALUE"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_bad_override_is_one_error_line(tiny_yaml: Path, tmp_path: Path, case: str) -> None:
    args, needles = CONFIG_ERRORS[case]
    entry = "shim" if sorted(CONFIG_ERRORS).index(case) % 2 else "module"  # both entry points
    out = tmp_path / "out"
    proc = cli([*(SHIM if entry == "shim" else MODULE_RUN), str(tiny_yaml), *args, "--out", str(out)], tmp_path)
    assert_one_line_error(proc, *needles)
    assert proc.stdout == ""
    assert not out.exists()  # nothing is created for a scenario that does not validate


@pytest.mark.parametrize("key,allowed", [
    ("stage1.fedsc.augment.flipp=1", "color_jitter, crop_scale_min, flip, grayscale_p"),
    ("network.channel.d2d.latencyz=1", "latency_s"),
    ("network.devices.profiles={x: {flops_per_s: 1.0, compute_power_w: 1.0, foo: 1}}",
     "compute_power_w, flops_per_s, memory_bytes, rx_power_w, tx_power_dbm"),
])
def test_nested_unknown_key_lists_allowed_keys(tiny_yaml: Path, key: str, allowed: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tiny_yaml), "--set", key]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key; allowed: " in err[0] and allowed in err[0], err


def test_unknown_preset_lists_the_shipped_presets() -> None:
    assert {"ideal", "harsh", "urban_micro"} <= set(preset_names(CHANNEL_PRESETS_DIR))


@pytest.mark.parametrize("entry", ["shim", "module"])
def test_missing_scenario_file(tmp_path: Path, entry: str) -> None:
    missing = tmp_path / "no_such_scenario.yaml"
    proc = cli([*(SHIM if entry == "shim" else MODULE_RUN), str(missing)], tmp_path)
    assert_one_line_error(proc, str(missing), "not found")


def test_missing_dataset_names_the_file_and_the_package(tiny_yaml: Path, tmp_path: Path) -> None:
    proc = cli([*SHIM, str(tiny_yaml), "--set", "data.dataset=fashion_mnist", "--set", "data.root=/nonexistent",
                "--out", str(tmp_path / "out"), "-q"], tmp_path)
    assert_one_line_error(proc, "/nonexistent/train-images-idx3-ubyte", "apt-get install dataset-fashion-mnist")
    assert not list((tmp_path / "out").rglob("metrics.json"))


def test_invalid_yaml_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstage1: {rounds: 2\n")
    proc = cli([*MODULE_RUN, str(bad)], tmp_path)
    assert_one_line_error(proc, str(bad), "invalid YAML")


# --------------------------------------------------------------------------- good runs
def test_good_run_prints_its_run_directory_last_with_plots(tiny_yaml: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = cli([*SHIM, str(tiny_yaml), "--out", str(out), "--set", "output.plots=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert run_dir.is_dir() and run_dir.parent == out / "tiny"
    assert (run_dir / "metrics.json").is_file()
    assert "macro-F1" in proc.stdout  # the summary table comes before the path
    assert [p.name for p in (out / "tiny").iterdir()] == [run_dir.name]
    # The ideal channel's infinite SNRs (null in JSON) must not break the topology plot.
    pngs = {p.stem for p in (run_dir / "plots").glob("*.png")}
    assert {"topology", "stage_costs", "gating_nmoe"} <= pngs
    # The saved config reruns the same scenario, and a run in another process gives the
    # same events and metrics as one in this process (no hidden process-dependent state).
    cfg = load_scenario(run_dir / "config.yaml")
    assert cfg == load_scenario(tiny_yaml, ["output.plots=true"])
    here = tmp_path / "here"
    here.mkdir()
    run(cfg, here)
    assert (here / "events.csv").read_bytes() == (run_dir / "events.csv").read_bytes()
    drop = ("wall_time_s", "run_id")
    there, mine = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, here))
    assert {k: v for k, v in there.items() if k not in drop} == {k: v for k, v in mine.items() if k not in drop}


def test_runs_in_the_same_second_get_distinct_directories(tiny_yaml: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    made = []
    for _ in range(2):
        assert main(["run", str(tiny_yaml), "--out", str(out), "-q", "--set", "stage3.algorithm=rangate",
                     "--set", "baselines.systems=[local]"]) == 0
        made.append(Path(capsys.readouterr().out.strip().splitlines()[-1]))
    assert made[0] != made[1]
    assert all((d / "metrics.json").is_file() for d in made)
    # new_run_dir itself: the same second never reuses a name.
    stamp = time.strftime("%Y%m%d-%H%M%S")
    burst = [new_run_dir(tmp_path / "burst", "s", 3) for _ in range(3)]
    assert len(set(burst)) == 3 and all(d.is_dir() for d in burst)
    if all(d.name.startswith(stamp) for d in burst):
        assert [d.name for d in burst] == [f"{stamp}-seed3", f"{stamp}-seed3-2", f"{stamp}-seed3-3"]


def test_bad_out_folder_is_a_user_error(tiny_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", str(tiny_yaml), "--out", str(blocker)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out:")


# --------------------------------------------------------------------------- validate
def test_validate_ok_and_print(tiny_yaml: Path, tmp_path: Path) -> None:
    exe = shutil.which("nmoe-sim")
    validate = [exe, "validate"] if exe else [sys.executable, "-m", "nmoe_sim.cli", "validate"]
    proc = cli([*validate, str(tiny_yaml)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ok: {tiny_yaml}"
    proc = cli([*validate, str(tiny_yaml), "--print", "--set", "stage1.rounds=7"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout.rsplit("ok:", 1)[0])
    assert resolved["stage1"]["rounds"] == 7
    assert resolved["network"]["channel"]["bs"]["model"] == "ideal"  # the preset, expanded
    proc = cli([*validate, str(tiny_yaml), "--set", "stage1.roundz=3"], tmp_path)
    assert_one_line_error(proc, "stage1.roundz")


def test_validate_in_process_matches_config(tiny_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tiny_yaml), "--print"]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text.rsplit("ok:", 1)[0]) == tiny_cfg().to_dict()


def test_validate_and_the_system_registry_do_not_import_torch() -> None:
    """`nmoe-sim validate` and `--help` stay fast: the systems are registered lazily."""
    code = (
        "import sys\n"
        "from nmoe_sim.cli import main\n"
        "from nmoe_sim.systems import SYSTEMS\n"
        "assert SYSTEMS.names() == ['alignment', 'nmoe']\n"
        f"assert main(['validate', {str(REPO_ROOT / 'scenarios' / 'alignment_quick.yaml')!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'validate imported torch'\n"
        "assert 'pandas' not in sys.modules, 'validate imported pandas'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
