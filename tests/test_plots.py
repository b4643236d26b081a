"""Run and sweep plots, drawn from fake run directories the tests write themselves."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ holds the fake_run helper

from fake_run import write_fake_run  # noqa: E402

import nmoe_sim.plots as plots  # noqa: E402
import nmoe_sim.plots.base as plot_base  # noqa: E402
from nmoe_sim.errors import ConfigError  # noqa: E402
from nmoe_sim.plots import (  # noqa: E402
    PLOTS,
    load_run,
    make_comm_vs_accuracy_figure,
    make_gating_figure,
    make_latency_cdf_figure,
    make_stage_costs_figure,
    make_topology_figure,
    plot_path,
    plot_run,
)

RUN_PLOTS = ["comm_vs_accuracy", "stage_costs", "latency_cdf", "topology",
             "gating_nmoe", "gating_local", "gating_centralized"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_run(tmp_path_factory.mktemp("run") / "20260101-000000-seed0")


def test_registry_lists_the_run_plots() -> None:
    assert PLOTS.names() == ["accuracy_vs_rounds", "comm_vs_accuracy", "gating", "latency_cdf",
                             "stage_costs", "topology"]


def test_plot_run_writes_png_and_svg_of_every_plot(run_dir: Path) -> None:
    written = plot_run(run_dir)
    expected = {run_dir / "plots" / f"{n}.{ext}" for n in RUN_PLOTS for ext in ("png", "svg")}
    assert set(written) == expected
    for path in expected:
        data = path.read_bytes()
        assert len(data) > 1000
        assert data.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in data[:2000]
    # fedavg has an empty gating matrix: no heatmap; and no temporary files are left behind.
    assert not (run_dir / "plots" / "gating_fedavg.png").exists()
    assert not [p for p in (run_dir / "plots").iterdir() if p.name.startswith(".")]


def test_comm_vs_accuracy_axes_and_systems(run_dir: Path) -> None:
    fig = make_comm_vs_accuracy_figure(load_run(run_dir))
    ax_bytes, ax_time = fig.axes
    assert "(MB)" in ax_bytes.get_xlabel()
    assert "(s)" in ax_time.get_xlabel()
    assert "F1" in ax_bytes.get_ylabel()
    assert ax_bytes.get_title() and ax_time.get_title()
    labels = [t.get_text() for t in ax_time.get_legend().get_texts()]
    # nmoe and fedavg have evaluated rounds (curves); local and centralized only a final F1.
    assert labels == ["nmoe", "fedavg", "local (final)", "centralized (final)"]
    nmoe_line = ax_bytes.get_lines()[0]
    # FedSC rounds carry no F1: only the 2 evaluated stage-3 rounds are drawn.
    assert list(nmoe_line.get_ydata()) == pytest.approx([75.0, 80.0])
    assert nmoe_line.get_xdata()[-1] == pytest.approx(0.9)  # 800 kB FedSC + 100 kB gate
    # Markers sit at the training cost (inference excluded, like the curves): 1 MB upload.
    local, centralized = ax_bytes.get_lines()[-2:]
    # local sits at the cost of the FE and expert it reuses (800 kB of FedSC), not at 0.
    assert list(local.get_xdata()) == pytest.approx([0.8]) and list(local.get_ydata()) == pytest.approx([55.0])
    assert list(centralized.get_xdata()) == pytest.approx([1.0])
    assert list(ax_time.get_lines()[-1].get_xdata()) == pytest.approx([8.0])


def test_stage_costs_units(run_dir: Path) -> None:
    fig = make_stage_costs_figure(load_run(run_dir))
    ylabels = [ax.get_ylabel() for ax in fig.axes]
    assert any("(MB)" in y for y in ylabels)
    assert any("(s)" in y for y in ylabels)
    assert any("(J)" in y for y in ylabels)
    assert all(ax.get_title() for ax in fig.axes)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks[:3] == ["stage1_fedsc", "stage2_experts", "stage3_fedgate"]


def test_latency_cdf_units_log_axis_and_percentiles(run_dir: Path) -> None:
    fig = make_latency_cdf_figure(load_run(run_dir))
    ax = fig.axes[0]
    assert "(s)" in ax.get_xlabel()
    assert ax.get_xscale() == "log"  # 0.2 ms (local) to ~0.3 s spans > 2 decades
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(texts) == 4 and all("p50" in t and "p95" in t and "p99" in t for t in texts)
    assert "1 undelivered" in texts[0]


def test_gating_heatmap_title_and_annotations(run_dir: Path) -> None:
    fig = make_gating_figure(load_run(run_dir), "nmoe")
    ax = fig.axes[0]
    assert "F1 80.0%" in ax.get_title() and "LR 70.0%" in ax.get_title()
    assert "client" in ax.get_ylabel() and "expert" in ax.get_xlabel()
    assert len(ax.texts) == 16  # 4 x 4 cells annotated (n <= 12)


def test_topology_units_and_colorbar(run_dir: Path) -> None:
    fig = make_topology_figure(load_run(run_dir))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (m)" and ax.get_ylabel() == "y (m)"
    assert "(dB)" in fig.axes[1].get_ylabel()  # the colorbar
    assert len(ax.collections) >= 4  # bs links, d2d links, base station, clients
    styles = {c.get_linestyle()[0][1] is None for c in ax.collections[:2]}
    assert styles == {True, False}  # one solid (d2d), one dashed (bs)


def test_missing_optional_file_skips_only_its_plot(tmp_path: Path, monkeypatch, caplog) -> None:
    run = write_fake_run(tmp_path / "run")
    (run / "queries.csv").unlink()
    (run / "topology.json").unlink()
    # Rendering is covered above; here only which figures get built matters (and is fast).
    saved: list[str] = []
    monkeypatch.setattr(plot_base, "save_figure", lambda fig, stem: saved.append(stem.name) or [])
    with caplog.at_level(logging.INFO):
        plot_run(run)
    assert set(saved) == set(RUN_PLOTS) - {"latency_cdf", "topology"}
    assert "latency_cdf skipped" in caplog.text and "topology skipped" in caplog.text


def test_plot_path_dispatches_and_rejects_bogus_dirs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(plots, "plot_run", lambda d: ["run", d])
    monkeypatch.setattr(plots, "plot_sweep", lambda d: ["sweep", d])
    run = write_fake_run(tmp_path / "run")
    assert plot_path(run) == ["run", run]
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "table.csv").write_text("point_id,system\n")
    assert plot_path(sweep) == ["sweep", sweep]
    bogus = tmp_path / "nothing_here"
    bogus.mkdir()
    with pytest.raises(ConfigError, match="nothing_here.*metrics.json.*table.csv"):
        plot_path(bogus)
    with pytest.raises(ConfigError, match="no such directory"):
        plot_path(tmp_path / "absent")
