"""nmoe-sim installed as a package (not editable): the channel and topology presets and the
shipped scenarios travel as package data and are found from any working directory.

The fast test builds the package's files the way a wheel gets them (``setup.py build_py``,
package data included) into a folder without the repository around it; the slow one
installs the package for real into a fresh virtual environment and runs a scenario there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from nmoe_sim.config import CHANNEL_PRESETS_DIR, SCENARIOS_DIR, TOPOLOGY_PRESETS_DIR, preset_names

# What the installed copy must see: every preset and every shipped scenario of the checkout.
CHECK = """
import sys
from pathlib import Path
import nmoe_sim
from nmoe_sim.config import CHANNEL_PRESETS_DIR, TOPOLOGY_PRESETS_DIR, SCENARIOS_DIR, preset_names
from nmoe_sim.net.topology import resolve_file
site = Path(nmoe_sim.__file__).resolve().parent
for folder in (CHANNEL_PRESETS_DIR, TOPOLOGY_PRESETS_DIR, SCENARIOS_DIR):
    assert folder.resolve().is_relative_to(site), (folder, site)
print(preset_names(CHANNEL_PRESETS_DIR))
print(preset_names(TOPOLOGY_PRESETS_DIR))
print(sorted(str(p.relative_to(SCENARIOS_DIR)) for p in SCENARIOS_DIR.rglob('*.yaml')))
for rel in sys.argv[1:]:
    nmoe_sim.scenario('scenarios/' + rel)  # validates, presets expanded
assert resolve_file('topologies/campus.graphml').resolve().is_relative_to(site)
print('ok')
"""


def _expected(shipped: list[str]) -> str:
    return "\n".join([str(preset_names(CHANNEL_PRESETS_DIR)), str(preset_names(TOPOLOGY_PRESETS_DIR)),
                      str(shipped), "ok"])


def _shipped_scenarios() -> list[str]:
    return sorted(str(p.relative_to(SCENARIOS_DIR)) for p in SCENARIOS_DIR.rglob("*.yaml"))


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def test_package_data_finds_every_preset_and_scenario_without_the_repo(tmp_path: Path) -> None:
    assert CHANNEL_PRESETS_DIR == REPO_ROOT / "channel"  # the checkout reads the top-level folders
    lib = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)], cwd=REPO_ROOT,
                   check=True, capture_output=True)
    assert not (lib / "channel").exists()  # only inside the package, nowhere else
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shipped = _shipped_scenarios()
    assert {"quickstart.yaml", "paper/fmnist_main.yaml"} <= set(shipped)
    out = subprocess.run([sys.executable, "-c", CHECK, *shipped], cwd=elsewhere, capture_output=True, text=True,
                         env=_clean_env(PYTHONPATH=str(lib)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _expected(shipped)


@pytest.mark.slow
def test_pip_install_without_e_runs_the_quickstart_from_anywhere(tmp_path: Path) -> None:
    """A real non-editable install into a fresh venv (its dependencies from this Python's
    site-packages, so nothing is downloaded), then the README's run from another folder."""
    env_dir = tmp_path / "venv"
    # No pip of its own: a venv's bundled setuptools is older than this Python's, and this
    # Python's pip and setuptools (from the system site-packages) build the wheel.
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    py = env_dir / "bin" / "python"
    # From a copy of the source: pip builds in the source tree, and a build/ folder left there
    # by an earlier build would ship its stale files (seen: a scenario since deleted).
    src = tmp_path / "src"
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "results", ".hypothesis", ".pytest_cache", "__pycache__", "data"))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)],
                   check=True, capture_output=True, cwd=tmp_path, env=_clean_env())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shipped = _shipped_scenarios()
    out = subprocess.run([str(py), "-c", CHECK, *shipped], cwd=elsewhere, capture_output=True, text=True,
                         env=_clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _expected(shipped)
    tiny = ["--set", "stage1.rounds=1", "--set", "stage3.rounds=1", "--set", "stage2.epochs=1",
            "--set", "baselines.systems=[local]", "--set", "data.max_train_samples=200",
            "--set", "data.max_test_samples=50", "--set", "output.plots=false"]
    run = subprocess.run([str(env_dir / "bin" / "nmoe-sim"), "run", "scenarios/quickstart.yaml", *tiny, "-q",
                          "--out", str(tmp_path / "runs")], cwd=elsewhere, capture_output=True, text=True,
                         env=_clean_env())
    assert run.returncode == 0, run.stderr
    assert (Path(run.stdout.strip().splitlines()[-1]) / "metrics.json").is_file()
