"""Run and sweep plots, drawn from fake run directories the tests write themselves."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

sys.path.insert(0, str(Path(__file__).parent))  # tests/ holds the fake_run helper

from fake_run import FALLBACK_LATENCY_S, SYSTEM_STAGES, write_fake_run  # noqa: E402

import nmoe_sim.plots as plots  # noqa: E402
import nmoe_sim.plots.base as plot_base  # noqa: E402
import nmoe_sim.table  # noqa: E402
from nmoe_sim.errors import ConfigError  # noqa: E402
from nmoe_sim.plots import (  # noqa: E402
    PLOTS,
    CsvTable,
    PlotSkipped,
    RunData,
    load_run,
    make_comm_vs_accuracy_figure,
    make_gating_figure,
    make_latency_cdf_figure,
    make_stage_costs_figure,
    make_sweep_f1_bar_figure,
    make_sweep_f1_vs_bytes_figure,
    make_topology_figure,
    plot_path,
    plot_run,
)

MB = 1e6

RUN_PLOTS = ["comm_vs_accuracy", "stage_costs", "latency_cdf", "topology",
             "gating_nmoe", "gating_local", "gating_centralized"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_run(tmp_path_factory.mktemp("run") / "20260101-000000-seed0")


def test_registry_lists_the_run_plots() -> None:
    assert PLOTS.names() == ["accuracy_vs_rounds", "comm_vs_accuracy", "gating", "latency_cdf",
                             "representation", "stage_costs", "topology"]


def test_plot_run_writes_png_by_default_and_svg_on_request(run_dir: Path) -> None:
    assert set(plot_run(run_dir)) == {run_dir / "plots" / f"{n}.png" for n in RUN_PLOTS}
    assert not list((run_dir / "plots").glob("*.svg"))
    written = plot_run(run_dir, ("png", "svg"))
    expected = {run_dir / "plots" / f"{n}.{ext}" for n in RUN_PLOTS for ext in ("png", "svg")}
    assert set(written) == expected
    for path in expected:
        data = path.read_bytes()
        assert len(data) > 1000
        assert data.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in data[:2000]
    # fedavg has an empty gating matrix: no heatmap; and no temporary files are left behind.
    assert not (run_dir / "plots" / "gating_fedavg.png").exists()
    assert not [p for p in (run_dir / "plots").iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- helpers
def _metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


def _edit_metrics(run: Path, edit) -> None:
    metrics = _metrics(run)
    edit(metrics)
    (run / "metrics.json").write_text(json.dumps(metrics))


def _drop_column(path: Path, column: str) -> None:
    """Rewrite a CSV without one column, as an older nmoe-sim would have written it."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
        header = [c for c in rows[0] if c != column]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, header, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _run_with(metrics: dict[str, Any], run_dir: Path) -> RunData:
    """A run held in memory: edited metrics without writing a file."""
    run = load_run(run_dir)
    return RunData(run.run_dir, metrics, run.rounds, run.gating, run.queries, run.topology)


# --------------------------------------------------------------------------- RunData
def test_system_stages_are_the_declared_ones(run_dir: Path) -> None:
    run = load_run(run_dir)
    for system, stages in SYSTEM_STAGES.items():
        assert run.system_stages(system) == stages
    # local reuses the NMoE's stage 1 and 2: declared, not guessed from its name.
    assert run.system_stages("local") == ["stage1_fedsc", "stage2_experts", "inference_local"]
    metrics = _metrics(run_dir)
    metrics["systems"]["nmoe"]["stages"].append("stage9_not_run")
    assert _run_with(metrics, run_dir).system_stages("nmoe") == SYSTEM_STAGES["nmoe"]
    del metrics["systems"]["nmoe"]["stages"]
    with pytest.raises(PlotSkipped, match=r"metrics\.json: systems\.nmoe has no 'stages'"):
        _run_with(metrics, run_dir).system_stages("nmoe")


def test_plots_do_not_use_the_tables_stage_guess(run_dir: Path, monkeypatch) -> None:
    def guessed(*args: Any, **kwargs: Any) -> list[str]:
        raise AssertionError("plots must read the declared systems.<name>.stages")

    monkeypatch.setattr(nmoe_sim.table, "system_stages", guessed, raising=False)
    run = load_run(run_dir)
    make_comm_vs_accuracy_figure(run)
    make_stage_costs_figure(run)


def test_fake_run_follows_the_schema(run_dir: Path) -> None:
    m = _metrics(run_dir)
    for name, st in m["stages"].items():
        energy = pytest.approx(st["energy_j"])
        assert st["device_energy_j"] + st["infrastructure_energy_j"] == energy
        assert st["compute_energy_j"] + st["radio_energy_j"] == energy
        assert st["link_bytes"] == sum(st[f"bytes_{d}_delivered"] for d in ("up", "down", "d2d"))
        assert st["bytes_delivered"] <= st["bytes"]
        assert ("arrival_window_s" in st) == ("busy_time_s" in st) == name.startswith("inference_")
    for system, sm in m["systems"].items():
        for key in ("bytes", "bytes_delivered", "energy_j", "device_energy_j",
                    "infrastructure_energy_j"):
            assert sm[key] == pytest.approx(sum(m["stages"][n][key] for n in sm["stages"]))
    # Delivered < offered somewhere, so plots reading the wrong one are caught.
    assert m["systems"]["nmoe"]["bytes_delivered"] < m["systems"]["nmoe"]["bytes"]
    headers = {name: (run_dir / name).read_text().splitlines()[0].split(",")
               for name in ("rounds.csv", "events.csv", "hops.csv", "clients.csv")}
    assert headers["rounds.csv"][2:4] == ["round", "rounds_total"]
    assert headers["rounds.csv"][8:10] == ["cum_bytes", "cum_bytes_delivered"]
    assert headers["events.csv"][0] == headers["hops.csv"][0] == "system"
    assert headers["hops.csv"][-2:] == ["device_energy_j", "infrastructure_energy_j"]
    assert headers["clients.csv"] == [
        "system", "stage", "client", "bytes_sent", "bytes_received", "tx_airtime_s",
        "rx_airtime_s", "compute_time_s", "compute_energy_j", "radio_energy_j", "device_energy_j"]


# --------------------------------------------------------------------------- comm vs accuracy
def test_comm_vs_accuracy_uses_delivered_bytes(run_dir: Path) -> None:
    fig = make_comm_vs_accuracy_figure(load_run(run_dir))
    ax_bytes, ax_time = fig.axes
    assert ax_bytes.get_xlabel() == "cumulative delivered communication (MB)"
    assert "(s)" in ax_time.get_xlabel()
    assert "F1" in ax_bytes.get_ylabel() and "(%)" in ax_bytes.get_ylabel()
    assert ax_bytes.get_title() and ax_time.get_title() and fig.get_suptitle()
    labels = [t.get_text() for t in ax_time.get_legend().get_texts()]
    # nmoe and fedavg have evaluated rounds (curves); local and centralized only a final F1.
    assert labels == ["nmoe", "fedavg", "local (final)", "centralized (final)"]
    nmoe_line = ax_bytes.get_lines()[0]
    # FedSC rounds carry no F1: only the 2 evaluated stage-3 rounds are drawn.
    assert list(nmoe_line.get_ydata()) == pytest.approx([75.0, 80.0])
    # Delivered: 760 kB of FedSC (one upload lost) + 100 kB of gate; offered was 0.9 MB.
    assert nmoe_line.get_xdata()[-1] == pytest.approx(0.86)
    # Markers sit at the delivered training cost of the declared stages (inference excluded,
    # like the curves): local pays the FE and expert it reuses, 760 of 800 kB delivered.
    local, centralized = ax_bytes.get_lines()[-2:]
    assert list(local.get_xdata()) == pytest.approx([0.76])
    assert list(local.get_ydata()) == pytest.approx([55.0])
    assert list(centralized.get_xdata()) == pytest.approx([0.9])  # 900 kB of the 1 MB upload
    assert list(ax_time.get_lines()[-1].get_xdata()) == pytest.approx([8.0])


def test_comm_vs_accuracy_of_an_old_run_is_skipped_naming_the_column(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path / "run")
    _drop_column(run / "rounds.csv", "cum_bytes_delivered")
    with pytest.raises(PlotSkipped, match=r"rounds\.csv has no column 'cum_bytes_delivered'"):
        make_comm_vs_accuracy_figure(load_run(run))
    # The final markers need the stages' delivered bytes too.
    (run / "rounds.csv").unlink()
    _edit_metrics(run, lambda m: m["stages"]["baseline_centralized"].pop("bytes_delivered"))
    missing = r"metrics\.json: stages\.baseline_centralized has no 'bytes_delivered'"
    with pytest.raises(PlotSkipped, match=missing):
        make_comm_vs_accuracy_figure(load_run(run))


# --------------------------------------------------------------------------- stage costs
def _bars(container: BarContainer) -> list[float]:
    return [bar.get_height() for bar in container.patches]


def test_stage_costs_bytes_are_delivered_per_direction_with_offered_shown(run_dir: Path) -> None:
    fig = make_stage_costs_figure(load_run(run_dir))
    ax_b = fig.axes[0]
    stages = _metrics(run_dir)["stages"]
    names = [t.get_text() for t in ax_b.get_xticklabels()]
    assert names == list(stages)
    up, down, d2d, offered = ax_b.containers
    for container, field in ((up, "bytes_up_delivered"), (down, "bytes_down_delivered"),
                             (d2d, "bytes_d2d_delivered")):
        assert _bars(container) == pytest.approx([stages[n][field] / MB for n in names])
    # The outline is what was offered over the same links: the gap is the lost traffic.
    i_fedsc, i_inf = names.index("stage1_fedsc"), names.index("inference_nmoe")
    assert _bars(offered)[i_fedsc] == pytest.approx(0.8)
    assert sum(_bars(c)[i_fedsc] for c in (up, down, d2d)) == pytest.approx(0.76)
    assert all(not bar.get_fill() for bar in offered.patches)
    # The relayed inference answer loads two links: 130 kB delivered on links, 120 kB offered
    # end to end (the marker), 140 kB offered on links (the outline).
    assert sum(_bars(c)[i_inf] for c in (up, down, d2d)) == pytest.approx(0.13)
    assert _bars(offered)[i_inf] == pytest.approx(0.14)
    (end_to_end,) = ax_b.get_lines()
    assert list(end_to_end.get_ydata()) == pytest.approx([stages[n]["bytes"] / MB for n in names])
    assert "(MB)" in ax_b.get_ylabel() and "link direction" in ax_b.get_ylabel()
    assert "delivered" in ax_b.get_title().lower() and "relayed" in ax_b.get_title()
    legend = [t.get_text() for t in ax_b.get_legend().get_texts()]
    assert legend[0].startswith("delivered up") and legend[-1].startswith("offered end to end")


def test_stage_costs_energy_by_payer_and_by_kind(run_dir: Path) -> None:
    fig = make_stage_costs_figure(load_run(run_dir))
    ax_e = fig.axes[2]
    stages = _metrics(run_dir)["stages"]
    device, infra, compute, radio = ax_e.containers
    for container, field in ((device, "device_energy_j"), (infra, "infrastructure_energy_j"),
                             (compute, "compute_energy_j"), (radio, "radio_energy_j")):
        assert _bars(container) == pytest.approx([st[field] for st in stages.values()])
    # Centralized training: 1.5 J on the clients, 1.5 J at the edge server.
    i = list(stages).index("baseline_centralized")
    assert (_bars(device)[i], _bars(infra)[i]) == pytest.approx((1.5, 1.5))
    assert all(bar.get_hatch() for bar in [*compute.patches, *radio.patches])
    legend = " ".join(t.get_text() for t in ax_e.get_legend().get_texts())
    assert "devices" in legend and "infrastructure" in legend and "compute" in legend
    assert "(J)" in ax_e.get_ylabel() and ax_e.get_title()


def test_stage_costs_time_shows_busy_time_and_the_arrival_window_apart(run_dir: Path) -> None:
    fig = make_stage_costs_figure(load_run(run_dir))
    ax_t = fig.axes[1]
    training, busy, window = ax_t.containers
    labels = [t.get_text() for t in ax_t.get_legend().get_texts()]
    assert labels[2] == "query arrival window"
    # Inference stages in order: nmoe, centralized, fedavg, local.
    assert _bars(busy) == pytest.approx([0.6, 0.5, 0.01, 0.01])
    assert _bars(window) == pytest.approx([1.5, 1.2, 0.45, 0.45])
    assert all(bar.get_hatch() and bar.get_alpha() < 1 for bar in window.patches)
    assert _bars(training) == pytest.approx([12.0, 3.0, 4.0, 8.0, 9.0])
    assert "(s)" in ax_t.get_ylabel() and ax_t.get_title()
    assert ax_t.get_ylim()[1] > 12.0  # nothing clipped here


def test_a_long_arrival_window_is_clipped_with_its_value_printed(run_dir: Path) -> None:
    metrics = _metrics(run_dir)
    metrics["stages"]["inference_nmoe"]["arrival_window_s"] = 300.0
    ax_t = make_stage_costs_figure(_run_with(metrics, run_dir)).axes[1]
    assert ax_t.get_ylim()[1] == pytest.approx(1.3 * 12.0)  # scaled to the service times
    assert [t.get_text() for t in ax_t.texts] == ["300 s ↑"]


def test_stage_costs_of_an_old_run_is_skipped_naming_the_key(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path / "run")
    _edit_metrics(run, lambda m: m["stages"]["stage1_fedsc"].pop("bytes_up_delivered"))
    missing = r"metrics\.json: stages\.stage1_fedsc has no 'bytes_up_delivered'"
    with pytest.raises(PlotSkipped, match=missing):
        make_stage_costs_figure(load_run(run))
    run = write_fake_run(tmp_path / "run2")
    _edit_metrics(run, lambda m: m["stages"]["inference_nmoe"].pop("busy_time_s"))
    with pytest.raises(PlotSkipped, match=r"stages\.inference_nmoe has no 'busy_time_s'"):
        make_stage_costs_figure(load_run(run))


# --------------------------------------------------------------------------- latency CDF
def _legend(fig) -> dict[str, str]:
    return {t.get_text().split(" ")[0].rstrip(":"): t.get_text()
            for t in fig.legends[0].get_texts()}


def test_latency_cdf_counts_every_query_like_the_summary(run_dir: Path) -> None:
    fig = make_latency_cdf_figure(load_run(run_dir))
    ax = fig.axes[0]
    assert "(s)" in ax.get_xlabel() and "CDF" in ax.get_ylabel()
    assert ax.get_xscale() == "log"  # 0.2 ms (local) to ~0.5 s spans > 2 decades
    assert "all queries" in ax.get_title()
    legend = _legend(fig)
    assert list(legend) == ["nmoe", "local", "centralized", "fedavg"]
    assert all("p50" in t and "p95" in t and "p99" in t for t in legend.values())
    assert "(1 undelivered)" in legend["nmoe"]
    # The legend's p95 is the summary table's: over all queries, the undelivered one (at
    # its fallback latency) included; without it the p95 would differ.
    with open(run_dir / "queries.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["system"] == "nmoe"]
    every = np.array([float(r["latency_s"]) for r in rows])
    delivered = np.array([float(r["latency_s"]) for r in rows if r["delivered"] == "True"])
    assert FALLBACK_LATENCY_S in every and every.size == delivered.size + 1
    p95 = _metrics(run_dir)["systems"]["nmoe"]["latency_s"]["p95"]
    assert np.percentile(every, 95) == pytest.approx(p95)
    assert f"p95 {p95:.3g} s" in legend["nmoe"]
    assert f"p95 {np.percentile(delivered, 95):.3g} s" not in legend["nmoe"]


def test_latency_cdf_identical_systems_stay_distinguishable(run_dir: Path) -> None:
    fig = make_latency_cdf_figure(load_run(run_dir))
    legend = _legend(fig)
    # local and fedavg both answer every query on the device in 0.2 ms: one curve hides the
    # other unless the legend says so and the styles differ.
    assert "identical to fedavg" in legend["local"]
    assert "identical to local" in legend["fedavg"]
    assert "identical" not in legend["nmoe"] + legend["centralized"]
    lines = dict(zip(legend, fig.axes[0].get_lines()))
    assert len({line.get_linestyle() for line in lines.values()}) == 4
    assert len({line.get_marker() for line in lines.values()}) == 4
    np.testing.assert_array_equal(lines["local"].get_xdata(), lines["fedavg"].get_xdata())


def test_latency_cdf_of_an_old_run_is_skipped_naming_the_column(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path / "run")
    _drop_column(run / "queries.csv", "delivered")
    with pytest.raises(PlotSkipped, match=r"queries\.csv has no column 'delivered'"):
        make_latency_cdf_figure(load_run(run))


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
    monkeypatch.setattr(plot_base, "save_figure", lambda fig, stem, formats: saved.append(stem.name) or [])
    with caplog.at_level(logging.INFO):
        plot_run(run)
    assert set(saved) == set(RUN_PLOTS) - {"latency_cdf", "topology"}
    assert "latency_cdf skipped" in caplog.text and "topology skipped" in caplog.text


def test_plot_path_dispatches_and_rejects_bogus_dirs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(plots, "plot_run", lambda d, formats: ["run", d])
    monkeypatch.setattr(plots, "plot_sweep", lambda d, formats: ["sweep", d])
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


def test_an_old_run_skips_the_plots_it_cannot_draw_without_a_traceback(
        tmp_path: Path, monkeypatch, caplog) -> None:
    run = write_fake_run(tmp_path / "run")
    _drop_column(run / "rounds.csv", "cum_bytes_delivered")
    _drop_column(run / "queries.csv", "delivered")
    _edit_metrics(run, lambda m: m["stages"]["stage2_experts"].pop("device_energy_j"))
    saved: list[str] = []
    monkeypatch.setattr(plot_base, "save_figure", lambda fig, stem, formats: saved.append(stem.name) or [])
    with caplog.at_level(logging.INFO):
        plot_run(run)
    assert set(saved) == set(RUN_PLOTS) - {"comm_vs_accuracy", "stage_costs", "latency_cdf"}
    assert "rounds.csv has no column 'cum_bytes_delivered'" in caplog.text
    assert "queries.csv has no column 'delivered'" in caplog.text
    assert "stages.stage2_experts has no 'device_energy_j'" in caplog.text


# --------------------------------------------------------------------------- sweep plots
def _sweep_table(n_seeds: dict[str, int]) -> CsvTable:
    """A table.csv as the plots read it: one row per (point, system), std 0 for one seed."""
    rows = []
    for k, (point, seeds) in enumerate(n_seeds.items()):
        for j, system in enumerate(("nmoe", "local")):
            rows.append({
                "point_id": point, "stage1.algorithm": point, "system": system,
                "n_seeds": str(seeds),
                "f1_macro_mean": str(0.6 + 0.1 * j + 0.01 * k),
                "f1_macro_std": str(0.02 if seeds > 1 else 0.0),
                "system_bytes_delivered_mean": str(1e6 * (1 + j + k)),
                "system_bytes_delivered_std": str(1e5 if seeds > 1 else 0.0),
            })
    return CsvTable(tuple(rows), "table.csv", tuple(rows[0]))


def _errorbars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_sweep_plots_draw_no_error_bars_for_a_single_seed() -> None:
    table = _sweep_table({"fedce": 1, "fedsc": 1})
    ax = make_sweep_f1_vs_bytes_figure(table).axes[0]
    assert _errorbars(ax) == []
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["nmoe", "local"]
    assert ax.get_title() and "(MB)" in ax.get_xlabel() and "(%)" in ax.get_ylabel()
    ax = make_sweep_f1_bar_figure(table).axes[0]
    assert _errorbars(ax) == []
    assert all(c.errorbar is None for c in ax.containers if isinstance(c, BarContainer))
    assert ax.get_title() and "(%)" in ax.get_ylabel()


def test_sweep_plots_keep_error_bars_over_two_seeds_or_more() -> None:
    table = _sweep_table({"fedce": 2, "fedsc": 1})  # one point failed a seed
    ax = make_sweep_f1_vs_bytes_figure(table).axes[0]
    bars = _errorbars(ax)
    assert len(bars) == 2  # one per system, each over the 2-seed point only (fedce)
    for container, x_mb in zip(bars, (1.0, 2.0)):
        data_line, _, (xerr, yerr) = container.lines
        assert list(data_line.get_xdata()) == pytest.approx([x_mb])
        assert len(xerr.get_segments()) == len(yerr.get_segments()) == 1
    # Every point is still drawn (the 1-seed ones as bare markers), one legend entry each.
    points = [x for line in ax.get_lines() if line.get_marker() in ("o", "s")
              for x in line.get_xdata()]
    assert sorted(points) == pytest.approx([1.0, 2.0, 2.0, 3.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["nmoe", "local"]
    ax = make_sweep_f1_bar_figure(table).axes[0]
    bars = _errorbars(ax)
    assert len(bars) == 2
    (yerr,) = bars[0].lines[2]
    assert len(yerr.get_segments()) == 1
    assert yerr.get_segments()[0][:, 1] == pytest.approx([60.0 - 2.0, 60.0 + 2.0])


def test_sweep_table_without_n_seeds_is_skipped_naming_the_column() -> None:
    rows = tuple({k: v for k, v in r.items() if k != "n_seeds"}
                 for r in _sweep_table({"fedce": 2}).rows)
    table = CsvTable(rows, "sweep/table.csv", tuple(rows[0]))
    with pytest.raises(PlotSkipped, match=r"sweep/table\.csv has no column 'n_seeds'"):
        make_sweep_f1_bar_figure(table)
    with pytest.raises(PlotSkipped, match="n_seeds"):
        make_sweep_f1_vs_bytes_figure(table)


def test_gating_heatmap_of_a_thousand_clients_stays_a_readable_size(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path / "run")
    n = 1000
    share = np.eye(n).tolist()

    def big(m: dict[str, Any]) -> None:
        m["systems"]["nmoe"]["gating"] = share

    _edit_metrics(run, big)
    fig = make_gating_figure(load_run(run), "nmoe")
    width_in, height_in = fig.get_size_inches()
    assert max(width_in, height_in) <= 16  # was 0.45 inch a client: 452 inches
    ax = fig.axes[0]
    assert len(ax.texts) == 0 and len(ax.get_xticks()) <= 25 and len(ax.get_yticks()) <= 25


# --------------------------------------------------------------------------- representation
def test_representation_plots_the_probe_rounds_beside_the_untrained_fe(tmp_path: Path) -> None:
    from conftest import tiny_cfg

    from nmoe_sim.plots import make_representation_figure
    from nmoe_sim.runner import run

    run(tiny_cfg("stage1.algorithm=fedsc", "stage1.rounds=4", "stage1.probe_every=2", "baselines.systems=[local]"),
        tmp_path)
    data = load_run(tmp_path)
    rep = data.stages["stage1_fedsc"]["representation"]
    fig = make_representation_figure(data)
    ax_acc, ax_rank = fig.axes[:2]
    probe = next(l for l in ax_acc.get_lines() if l.get_label() == "stage1_fedsc: linear probe")
    assert list(probe.get_xdata()) == [0.0, 2.0, 4.0]  # untrained, then measured after rounds 2 and 4
    assert probe.get_ydata()[0] == pytest.approx(rep["untrained"]["linear_probe"] * 100)
    assert probe.get_ydata()[-1] == pytest.approx(rep["linear_probe"] * 100)
    untrained = next(l for l in ax_acc.get_lines() if l.get_label() == "linear probe, untrained FE")
    assert untrained.get_ydata()[0] == pytest.approx(rep["untrained"]["linear_probe"] * 100)
    assert ax_acc.get_ylabel().endswith("(%)") and "rank" in ax_rank.get_ylabel()
    assert "untrained" in fig._suptitle.get_text()
    assert tmp_path / "plots" / "representation.png" in plot_run(tmp_path)


def test_representation_of_a_run_without_probes_is_skipped(run_dir: Path) -> None:
    from nmoe_sim.plots import make_representation_figure

    with pytest.raises(PlotSkipped, match="probe_linear"):
        make_representation_figure(load_run(run_dir))
