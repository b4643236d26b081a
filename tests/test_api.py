"""The Python API (nmoe_sim.api): scenarios from files, mappings and Scenarios with
overrides, runs as DataFrames and figures, and the same results as the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

import nmoe_sim
from conftest import TINY, tiny_cfg, write_yaml
from nmoe_sim.cli import main
from nmoe_sim.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> nmoe_sim.RunResult:
    out = tmp_path_factory.mktemp("api")
    return nmoe_sim.run(copy.deepcopy(TINY), {"stage1.rounds": 1}, out=out)


def test_scenario_from_file_mapping_and_scenario_agree(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "tiny.yaml", copy.deepcopy(TINY))
    from_file = nmoe_sim.scenario(path, ["stage1.rounds=3", "network.channel.bs=harsh"])
    from_map = nmoe_sim.scenario(copy.deepcopy(TINY), {"stage1.rounds": 3, "network.channel.bs": "harsh"})
    from_typed = nmoe_sim.scenario(tiny_cfg(), {"stage1.rounds": 3, "network.channel.bs": "harsh"})
    assert from_file == from_map == from_typed
    assert from_file.stage1.rounds == 3 and from_file.network.channel.bs.shadowing_std_db > 0
    assert nmoe_sim.scenario(tiny_cfg()) == tiny_cfg()  # no overrides: the same object's value


@pytest.mark.parametrize("source, overrides, needle", [
    (dict(TINY), {"stage1.rounds": 0}, "stage1.rounds"),
    (dict(TINY), {"stage1.nope": 1}, "stage1.nope: unknown key"),
    (dict(TINY), "stage1.rounds=3", "not the string"),
    ("no/such/file.yaml", None, "file not found"),
    (42, None, "expected a YAML file path, a mapping or a Scenario"),
])
def test_bad_input_is_one_config_error(source: object, overrides: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        nmoe_sim.scenario(source, overrides)  # type: ignore[arg-type]


def test_shipped_scenarios_found_by_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert nmoe_sim.scenario("scenarios/quickstart.yaml").name == "quickstart"
    assert nmoe_sim.scenario("quickstart.yaml").name == "quickstart"
    with pytest.raises(ConfigError, match="file not found"):
        nmoe_sim.scenario("scenarios/../setup.py")  # never climbs out of the shipped folder


def test_run_returns_dataframes(tiny_run: nmoe_sim.RunResult) -> None:
    systems = tiny_run.systems
    assert list(systems.index) == ["nmoe", "local", "centralized", "fedavg"]
    assert {"f1_macro", "accuracy", "local_ratio", "latency_s_p95", "bytes", "energy_j"} <= set(systems.columns)
    assert "gating" not in systems.columns  # lists are tables of their own
    assert tiny_run.systems.loc["nmoe", "f1_macro"] == tiny_run.metrics["systems"]["nmoe"]["f1_macro"]
    assert "stage1_fedce" in tiny_run.stages.index
    assert tiny_run.stages.loc["stage1_fedce", "rounds"] == 1  # the override reached the run
    rep = tiny_run.representation
    assert list(rep.index) == ["trained", "untrained"] and rep.loc["trained", "linear_probe"] > 0
    assert set(tiny_run.rounds["system"]) == {"nmoe", "fedavg"}
    assert len(tiny_run.events) == len(pd.read_csv(tiny_run.run_dir / "events.csv")) > 0
    for table in ("hops", "queries", "clients", "failures"):
        assert isinstance(getattr(tiny_run, table), pd.DataFrame)
    # Node ids are text in every table, so they join across files ("3" is "3", not 3 or 3.0).
    nodes = set(tiny_run.nodes.index)
    assert "bs" in nodes and set(tiny_run.hops["u"]) | set(tiny_run.hops["v"]) <= nodes
    assert set(tiny_run.events["node"].dropna()) <= nodes and set(tiny_run.links["u"]) <= nodes
    gating = tiny_run.gating()
    assert gating.shape == (4, 4) and gating.sum(axis=1).round(6).eq(1.0).all()
    with pytest.raises(ConfigError, match="unknown system 'nope'"):
        tiny_run.gating("nope")
    with pytest.raises(ConfigError, match="assignments.csv"):
        tiny_run.table("assignments")


def test_figures_inline_and_why_not(tiny_run: nmoe_sim.RunResult) -> None:
    for name in ("comm_vs_accuracy", "latency_cdf", "topology", "stage_costs", "gating"):
        fig = tiny_run.plot(name)
        assert isinstance(fig, Figure) and fig.axes[0].get_title()
    assert tiny_run.plot("gating", system="centralized").axes[0].get_title().startswith("centralized")
    with pytest.raises(ConfigError, match="plot accuracy_vs_rounds: not an alignment run"):
        tiny_run.plot("accuracy_vs_rounds")
    with pytest.raises(ConfigError, match="unknown figure 'nope'; known: accuracy_vs_rounds"):
        tiny_run.plot("nope")
    assert not (tiny_run.run_dir / "plots").exists()  # the tiny scenario says output.plots: false


def test_load_reads_what_the_cli_wrote(tmp_path: Path, tiny_run: nmoe_sim.RunResult, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml(tmp_path / "tiny.yaml", copy.deepcopy(TINY))
    assert main(["run", str(path), "--set", "stage1.rounds=1", "--out", str(tmp_path), "-q"]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    loaded = nmoe_sim.load(run_dir)
    # Same scenario, same seed: the CLI and the API compute the same metrics.
    strip = lambda m: {k: v for k, v in m.items() if k not in ("run_id", "wall_time_s")}  # noqa: E731
    assert strip(loaded.metrics) == strip(json.loads((tiny_run.run_dir / "metrics.json").read_text()))
    for table in ("rounds", "events", "hops", "queries", "clients", "failures", "gating"):
        pd.testing.assert_frame_equal(loaded.table(table), tiny_run.table(table))
    assert loaded.config == tiny_run.config
    with pytest.raises(ConfigError, match="not a run directory"):
        nmoe_sim.load(tmp_path)


def test_a_bad_run_leaves_no_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Fashion-MNIST"):
        nmoe_sim.run(copy.deepcopy(TINY), {"data.dataset": "fashion_mnist", "data.root": str(tmp_path / "none")},
                     out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
