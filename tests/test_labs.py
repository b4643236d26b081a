"""The course labs (docs/labs/): every notebook runs at its tiny size, every figure a lab
shows has a title and axis labels with units, and the handouts match what ships.

The five notebooks run in one kernel, one after another, with the kernel's namespace
cleared (``%reset -f``) before each: every cell of every notebook runs as written, while
torch and the rest are imported once (a kernel's imports took about 8 s of the 10 s
each notebook took alone on the shared 2-core box).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.manager import KernelManager  # noqa: E402  (nbclient's own dependency)

from conftest import REPO_ROOT  # noqa: E402
from nmoe_sim.config import SCENARIOS_DIR, load_scenario  # noqa: E402

LABS = REPO_ROOT / "docs" / "labs"
NOTEBOOKS = sorted(LABS.glob("lab*.ipynb"))
UNITS = re.compile(r"\(.+\)")  # "simulated time (s)", "macro-F1 (0-1)", "attempts per hop (-)"
CATEGORICAL = {"stage", "expert", "setting"}  # axes of names, which have no unit

# Before anything else in the kernel: every figure displayed is recorded (title, and each
# data axis's labels) by wrapping the function IPython's inline backend renders figures
# with; `%matplotlib inline` in each notebook binds the wrapper when it registers.
RECORD = r'''
import builtins
from IPython.core import pylabtools
builtins._lab_figures = []
builtins._lab_print_figure = pylabtools.print_figure  # on builtins: %reset -f clears the namespace
def _recording(fig, *args, **kwargs):
    import builtins
    axes = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    builtins._lab_figures.append({"lab": builtins._lab_name, "title": suptitle or axes[0].get_title(),
                                  "labels": [[ax.get_xlabel(), ax.get_ylabel()] for ax in axes]})
    return builtins._lab_print_figure(fig, *args, **kwargs)
pylabtools.print_figure = _recording
'''
REPORT = "import builtins, json; print('FIGURES ' + json.dumps(builtins._lab_figures))"
# How many figures each lab shows (its handout's figures).
FIGURES = {"lab1_channel": 4, "lab2_fedavg": 2, "lab3_stages": 3, "lab4_gating": 4, "lab5_alignment": 3}


def test_every_lab_has_a_notebook_a_handout_an_answer_key_and_a_scenario() -> None:
    assert [p.stem for p in NOTEBOOKS] == sorted(FIGURES)
    index = (LABS / "README.md").read_text()
    for name in FIGURES:
        handout = (LABS / f"{name}.md").read_text()
        assert f"{name}.md" in index and (LABS / "answers" / f"{name}.md").is_file()
        for heading in ("## Learning goals", "## Predict", "## Figures"):
            assert heading in handout, (name, heading)
        assert f"scenarios/labs/{name}.yaml" in handout
        load_scenario(SCENARIOS_DIR / "labs" / f"{name}.yaml")  # ships and validates


def test_notebooks_run_at_tiny_size_and_their_figures_are_labelled(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NMOE_LAB_SIZE", "tiny")
    monkeypatch.setenv("NMOE_LAB_OUT", str(tmp_path / "runs"))
    combined = nbformat.v4.new_notebook()
    combined.cells.append(nbformat.v4.new_code_cell(RECORD))
    for path in NOTEBOOKS:
        combined.cells.append(nbformat.v4.new_code_cell(f"%reset -f\nimport builtins; builtins._lab_name = {path.stem!r}"))
        combined.cells += nbformat.read(path, as_version=4).cells
    combined.cells.append(nbformat.v4.new_code_cell(REPORT))
    # IPC sockets, not TCP ports: a port picked free can be taken by another process before
    # the kernel binds it (seen here: a heartbeat "Address already in use").
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "kernel"))
    client = nbclient.NotebookClient(combined, km=km, timeout=300,
                                     resources={"metadata": {"path": str(tmp_path)}})  # cwd: not the repo
    client.execute()  # CellExecutionError, with the failing cell and traceback, if any cell fails
    report = "".join(o.get("text", "") for o in combined.cells[-1].outputs)
    figures = json.loads(report.split("FIGURES ", 1)[1])
    shown = {name: sum(f["lab"] == name for f in figures) for name in FIGURES}
    assert shown == FIGURES
    # A panel sharing its neighbour's axis may leave its own label empty; the figure may not.
    unlabelled = [fig for fig in figures if not fig["title"] or not any(x for x, _ in fig["labels"])
                  or not any(y for _, y in fig["labels"])]
    no_units = sorted({(fig["lab"], fig["title"], label) for fig in figures for pair in fig["labels"]
                       for label in pair if label and label not in CATEGORICAL and not UNITS.search(label)})
    assert not unlabelled and not no_units, (unlabelled, no_units)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(FIGURES)  # each lab's own folder


def test_lab1_measurements_agree_with_the_closed_forms_they_are_set_against() -> None:
    """What lab 1 asks students to check holds for the model's own fading process: outage
    within 4 standard errors of 1 - exp(-g/s), capacity within 1 % of the E1 closed form,
    and the block correlation of |h|^2 following the AR(1) (rho^2 per block), not Jakes."""
    import numpy as np

    from nmoe_sim.config import ChannelConfig
    from nmoe_sim.labs import channel_lab

    bs = load_scenario(SCENARIOS_DIR / "labs" / "lab1_channel.yaml").network.channel.bs
    n = 20_000
    table = channel_lab.fading_table(bs, np.array([0.0, 10.0, 20.0]), n=n, seed=3)
    p = table["outage_closed_form"]
    assert (abs(table["outage_measured"] - p) <= 4 * np.sqrt(p * (1 - p) / n)).all(), table
    assert np.allclose(table["capacity_measured_bps_hz"], table["capacity_closed_form_bps_hz"], rtol=0.01)
    assert (table["capacity_no_fading_bps_hz"] > table["capacity_closed_form_bps_hz"]).all()  # Jensen
    corr = channel_lab.block_correlation(bs, lags_blocks=(1, 4), n=5_000, seed=3)
    assert np.allclose(corr["measured"], corr["ar1_model"], atol=0.04), corr
    assert abs(corr["measured"].iloc[1] - corr["jakes"].iloc[1]) > 0.3  # lag 4: Jakes ~0, the model ~0.47
    assert isinstance(bs, ChannelConfig) and bs.fading == "rayleigh"
