"""Sweep expansion, resumable running and the comparison tables, with a fake pipeline."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ holds the fake_run helper

from fake_run import write_fake_run  # noqa: E402

from nmoe_sim.config import build_scenario, dump_yaml, load_raw, resolve_presets  # noqa: E402
from nmoe_sim.errors import ConfigError  # noqa: E402
from nmoe_sim.plots import load_table, make_sweep_f1_vs_bytes_figure  # noqa: E402
from nmoe_sim.sweep import (  # noqa: E402
    SweepPoint,
    expand_sweep,
    load_points,
    point_raw,
    run_sweep,
    sweep_dir_for,
)
from nmoe_sim.table import aggregate_rows, collect_rows, write_tables  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent

GRID = {"stage1.algorithm": ["fedce", "fedsc"],
        "stage3.algorithm": ["rangate", "rollgate", "fedgate"]}


def scenario(grid: dict[str, list[Any]] | None = None, seeds: list[int] | None = None,
             plots: bool = False) -> dict[str, Any]:
    return {"name": "tiny", "data": {"clients": 4}, "output": {"plots": plots},
            "sweep": {"grid": GRID if grid is None else grid, "seeds": seeds or [0, 1]}}


class FakePipeline:
    """Stands in for the runner: writes a fake run directory and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], Path]] = []

    def __call__(self, raw: dict[str, Any], run_dir: Path) -> Path:
        self.calls.append((raw, run_dir))
        # F1 depends on the point and the seed, so the tables have something to average.
        bonus = 0.05 if raw["stage1"]["algorithm"] == "fedsc" else 0.0
        return write_fake_run(run_dir, scenario=raw["name"], seed=raw["seed"],
                              f1={"nmoe": 0.7 + bonus + 0.01 * raw["seed"]})


# --------------------------------------------------------------------------- expansion
def test_expand_is_grid_product_in_order_times_seeds() -> None:
    points = expand_sweep(scenario())
    assert len(points) == 2 * 3 * 2
    assert points[0] == SweepPoint(("stage1.algorithm=fedce", "stage3.algorithm=rangate"), 0)
    assert points[1] == SweepPoint(("stage1.algorithm=fedce", "stage3.algorithm=rangate"), 1)
    assert points[2].overrides == ("stage1.algorithm=fedce", "stage3.algorithm=rollgate")
    assert points[-1] == SweepPoint(("stage1.algorithm=fedsc", "stage3.algorithm=fedgate"), 1)
    assert points[0].point_id == "stage1.algorithm=fedce__stage3.algorithm=rangate"


def test_point_ids_are_stable_unique_and_safe(tmp_path: Path) -> None:
    raw = scenario(grid={"model.fe_channels": [[8, 16], [8, 32]], "data.clients": [4, 8]})
    first, again = expand_sweep(raw), expand_sweep(raw)
    assert [p.point_id for p in first] == [p.point_id for p in again]
    ids = {p.point_id for p in first}
    assert len(ids) == 4
    for pid in ids:
        assert "/" not in pid and " " not in pid and "[" not in pid
        (tmp_path / pid).mkdir()  # a real folder name
    assert SweepPoint((), 3).point_id == "base"
    assert SweepPoint((), 3).run_dir(tmp_path) == tmp_path / "base" / "seed3"


def test_point_raw_drops_sweep_and_applies_overrides() -> None:
    raw = scenario(grid={"model.fe_channels": [[8, 16]], "stage1.lr": [0.001]})
    (point, *_) = expand_sweep(raw)
    out = point_raw(raw, point)
    assert "sweep" not in out and "sweep" in raw  # the caller's mapping is untouched
    assert out["model"]["fe_channels"] == [8, 16]
    assert out["stage1"]["lr"] == 0.001 and out["seed"] == 0


def test_a_whole_block_as_grid_value_gives_each_fe_its_own_budget() -> None:
    # scenarios/paper/fmnist_full.yaml sweeps whole stage1 blocks: the FedCE points must not
    # get FedSC's 200 short rounds, nor the FedSC points FedCE's 15 whole epochs.
    raw = load_raw(REPO_ROOT / "scenarios" / "paper" / "fmnist_full.yaml", [])
    points = expand_sweep(raw)
    assert len(points) == 2 * 2 * 2 * 3  # partitions x FEs x gate settings x seeds
    by_fe: dict[str, Any] = {}
    for p in points:
        cfg = build_scenario(point_raw(raw, p))
        by_fe.setdefault(cfg.stage1.algorithm, set()).add(
            (cfg.stage1.rounds, cfg.stage1.local_steps, cfg.stage1.lr, cfg.stage1.lr_schedule,
             cfg.stage1.fedsc.alpha_start, cfg.stage1.fedsc.r_samples))
    assert by_fe == {"fedce": {(15, None, 0.05, "cosine", 1.0, None)},
                     "fedsc": {(200, 3, 0.1, "constant", "1/K", 1024)}}


def test_bad_grid_key_or_value_names_the_grid_key() -> None:
    with pytest.raises(ConfigError, match=r"^sweep\.grid\.stage1\.algorithmx\b"):
        expand_sweep(scenario(grid={"stage1.algorithm": ["fedce"], "stage1.algorithmx": [1]}))
    with pytest.raises(ConfigError, match=r"^sweep\.grid\.stage3\.algorithm\b.*bogus"):
        expand_sweep(scenario(grid={"stage3.algorithm": ["fedgate", "bogus"]}))
    with pytest.raises(ConfigError, match=r"^sweep\.grid\.seed\b"):
        expand_sweep(scenario(grid={"seed": [1, 2]}))
    with pytest.raises(ConfigError, match=r"^sweep\.grid\.data\.clients: give at least one"):
        expand_sweep(scenario(grid={"data.clients": []}))
    with pytest.raises(ConfigError, match=r"^sweep\.seeds"):
        expand_sweep(scenario(seeds=[0, 0]))
    with pytest.raises(ConfigError, match=r"^sweep: .*no sweep section"):
        expand_sweep({"name": "tiny"})


def test_cross_field_errors_name_the_point() -> None:
    raw = scenario(grid={"data.clients": [1, 4], "model.top_k": [2]})
    with pytest.raises(ConfigError, match=r"^sweep point data\.clients=1 model\.top_k=2: .*top_k"):
        expand_sweep(raw)


# --------------------------------------------------------------------------- running
def _statuses(sweep_dir: Path) -> list[str]:
    return [e["status"] for e in json.loads((sweep_dir / "points.json").read_text())["points"]]


def test_run_sweep_runs_then_skips_then_reruns_only_the_missing(tmp_path: Path) -> None:
    raw = scenario(plots=True)
    raw["output"]["plot_formats"] = ["png", "svg"]  # SVG on request
    pipe = FakePipeline()
    sweep_dir = run_sweep(raw, tmp_path, pipe, progress=False).sweep_dir
    assert sweep_dir == sweep_dir_for("tiny", tmp_path) == tmp_path / "tiny" / "sweep"
    assert len(pipe.calls) == 12
    first_raw, first_dir = pipe.calls[0]
    assert "sweep" not in first_raw and first_raw["stage3"]["algorithm"] == "rangate"
    assert first_dir == sweep_dir / "stage1.algorithm=fedce__stage3.algorithm=rangate" / "seed0"
    assert _statuses(sweep_dir) == ["ran"] * 12
    assert load_points(sweep_dir) == expand_sweep(raw)
    for name in ("table.csv", "table_raw.csv", "table.md", "points.json", "config.yaml",
                 "plots/sweep_f1_vs_bytes.png", "plots/sweep_f1_vs_bytes.svg",
                 "plots/sweep_f1_bar.png", "plots/sweep_f1_bar.svg"):
        assert (sweep_dir / name).stat().st_size > 0, name
    fig = make_sweep_f1_vs_bytes_figure(load_table(sweep_dir))
    assert "(MB)" in fig.axes[0].get_xlabel() and "(%)" in fig.axes[0].get_ylabel()
    assert len(fig.axes[0].get_legend().get_texts()) == 4  # one entry per system

    again = FakePipeline()
    run_sweep(scenario(), tmp_path, again, progress=False)
    assert again.calls == []
    assert _statuses(sweep_dir) == ["skipped"] * 12

    victim = expand_sweep(raw)[7]
    (victim.run_dir(sweep_dir) / "metrics.json").unlink()
    third = FakePipeline()
    run_sweep(scenario(), tmp_path, third, progress=False)
    assert [d for _, d in third.calls] == [victim.run_dir(sweep_dir)]
    assert _statuses(sweep_dir)[7] == "ran" and _statuses(sweep_dir).count("skipped") == 11


def _entries(sweep_dir: Path) -> list[dict[str, Any]]:
    return json.loads((sweep_dir / "points.json").read_text())["points"]


def test_failing_point_is_recorded_with_its_reason_and_the_sweep_goes_on(tmp_path: Path) -> None:
    pipe = FakePipeline()

    def flaky(raw: dict[str, Any], run_dir: Path) -> Path:
        if raw["stage3"]["algorithm"] == "rollgate":
            raise RuntimeError("boom\nsecond line of a long message")
        if raw["stage3"]["algorithm"] == "fedgate" and raw["seed"] == 1:
            raise ConfigError("data.root: malformed file")  # a ConfigError only the run finds
        return pipe(raw, run_dir)

    result = run_sweep(scenario(), tmp_path, flaky, progress=False)
    sweep_dir = result.sweep_dir
    points = expand_sweep(scenario())
    assert result.points == 12 and len(pipe.calls) == 12 - 4 - 2
    failed = {(p.point_id, p.seed): why for p, why in result.failed}
    assert failed == {
        ("stage1.algorithm=fedce__stage3.algorithm=rollgate", 0): "RuntimeError: boom",
        ("stage1.algorithm=fedce__stage3.algorithm=rollgate", 1): "RuntimeError: boom",
        ("stage1.algorithm=fedsc__stage3.algorithm=rollgate", 0): "RuntimeError: boom",
        ("stage1.algorithm=fedsc__stage3.algorithm=rollgate", 1): "RuntimeError: boom",
        ("stage1.algorithm=fedce__stage3.algorithm=fedgate", 1): "data.root: malformed file",
        ("stage1.algorithm=fedsc__stage3.algorithm=fedgate", 1): "data.root: malformed file",
    }
    entries = _entries(sweep_dir)
    assert [e["status"] for e in entries] == [
        "failed" if (p.point_id, p.seed) in failed else "ran" for p in points]
    assert {(e["id"], e["seed"]): e["reason"] for e in entries if "reason" in e} == failed
    # The tables hold the points that ran, and only those.
    raw_rows = list(csv.DictReader((sweep_dir / "table_raw.csv").open()))
    assert {(r["point_id"], int(r["seed"])) for r in raw_rows} == {
        (p.point_id, p.seed) for p in points if (p.point_id, p.seed) not in failed}

    # A rerun retries only the failed points (the others are finished and unchanged).
    again = FakePipeline()
    result = run_sweep(scenario(), tmp_path, again, progress=False)
    assert result.failed == () and sorted((d.parent.name, d.name) for _, d in again.calls) == sorted(
        (pid, f"seed{seed}") for pid, seed in failed)
    assert [e["status"] for e in _entries(sweep_dir)].count("skipped") == 6


def test_run_point_that_writes_no_metrics_is_a_failed_point(tmp_path: Path) -> None:
    result = run_sweep(scenario(seeds=[0]), tmp_path, lambda raw, d: d, progress=False)
    assert len(result.failed) == 6
    assert all(why.startswith("RuntimeError: run_point did not write") for _, why in result.failed)


def test_interrupt_stops_the_sweep_and_is_recorded(tmp_path: Path) -> None:
    def interrupted(raw: dict[str, Any], run_dir: Path) -> Path:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(scenario(), tmp_path, interrupted, progress=False)
    statuses = _statuses(sweep_dir_for("tiny", tmp_path))
    assert statuses[0] == "interrupted" and set(statuses[1:]) == {"pending"}


# --------------------------------------------------------------------------- provenance
def _hash_of(raw: dict[str, Any], point: SweepPoint) -> str:
    resolved = build_scenario(point_raw(raw, point)).to_dict()
    resolved.pop("output")
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_each_point_stores_the_hash_of_its_resolved_config(tmp_path: Path) -> None:
    raw = scenario(grid={"stage1.algorithm": ["fedce", "fedsc"]}, seeds=[0])
    sweep_dir = run_sweep(raw, tmp_path, FakePipeline(), progress=False).sweep_dir
    points = expand_sweep(raw)
    stored = [(p.run_dir(sweep_dir) / "config.sha256").read_text().strip() for p in points]
    assert stored == [_hash_of(raw, p) for p in points] and stored[0] != stored[1]
    assert [e["config_sha256"] for e in _entries(sweep_dir)] == stored
    # Output settings change no result: switching plots on reuses every point.
    again = FakePipeline()
    run_sweep(scenario(grid={"stage1.algorithm": ["fedce", "fedsc"]}, seeds=[0], plots=True), tmp_path,
              again, progress=False)
    assert again.calls == []


def test_changed_point_is_refused_and_nothing_is_overwritten(tmp_path: Path) -> None:
    raw = scenario(grid={"stage1.algorithm": ["fedce", "fedsc"]}, seeds=[0])
    sweep_dir = run_sweep(raw, tmp_path, FakePipeline(), progress=False).sweep_dir
    before = {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()}
    changed = {**raw, "stage2": {"epochs": 3}}
    pipe = FakePipeline()
    with pytest.raises(ConfigError, match=r"^sweep point stage1\.algorithm=fedce seed 0: its results in .*"
                                          r"different config .*\(and 1 more\); pass --rerun-changed"):
        run_sweep(changed, tmp_path, pipe, progress=False)
    assert pipe.calls == []
    assert {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()} == before  # config.yaml too

    # --rerun-changed: the changed points run again, and the new config is the sweep's.
    result = run_sweep(changed, tmp_path, pipe, progress=False, rerun_changed=True)
    assert len(pipe.calls) == 2 and all(r["stage2"]["epochs"] == 3 for r, _ in pipe.calls)
    assert "epochs: 3" in (sweep_dir / "config.yaml").read_text()
    for p in expand_sweep(changed):
        assert (p.run_dir(sweep_dir) / "config.sha256").read_text().strip() == _hash_of(changed, p)
    assert result.failed == ()


def test_grown_grid_reuses_unchanged_points_and_runs_the_new(tmp_path: Path) -> None:
    run_sweep(scenario(grid={"stage1.algorithm": ["fedce"]}, seeds=[0]), tmp_path, FakePipeline(),
              progress=False)
    pipe = FakePipeline()
    run_sweep(scenario(grid={"stage1.algorithm": ["fedce", "fedsc"]}, seeds=[0]), tmp_path, pipe,
              progress=False)
    assert [d.parent.name for _, d in pipe.calls] == ["stage1.algorithm=fedsc"]


def test_point_run_before_hashes_were_stored_is_checked_against_its_config_yaml(tmp_path: Path) -> None:
    raw = scenario(grid={"stage1.algorithm": ["fedce"]}, seeds=[0])
    point = expand_sweep(raw)[0]
    run_dir = point.run_dir(sweep_dir_for("tiny", tmp_path))
    write_fake_run(run_dir, scenario="tiny")
    (run_dir / "config.yaml").write_text(dump_yaml(build_scenario(point_raw(raw, point))))
    pipe = FakePipeline()
    run_sweep(raw, tmp_path, pipe, progress=False)
    assert pipe.calls == []  # same config: reused
    with pytest.raises(ConfigError, match="--rerun-changed"):
        run_sweep({**raw, "stage2": {"epochs": 3}}, tmp_path, pipe, progress=False)


def test_sweep_over_a_preset_key_gives_different_resolved_configs() -> None:
    raw = scenario(grid={"network.channel.bs.preset": ["urban_micro", "harsh"]}, seeds=[0])
    raw["network"] = {"channel": {"bs": "urban_micro", "d2d": "urban_micro_d2d"}}
    a, b = (build_scenario(point_raw(raw, p)).network.channel for p in expand_sweep(raw))
    assert a.d2d == b.d2d and a.bs != b.bs
    assert a.bs == build_scenario(resolve_presets({"network": {"channel": {"bs": "urban_micro"}}})).network.channel.bs
    assert b.bs == build_scenario(resolve_presets({"network": {"channel": {"bs": "harsh"}}})).network.channel.bs


# --------------------------------------------------------------------------- tables
@pytest.fixture()
def two_seed_sweep(tmp_path: Path) -> tuple[Path, list[SweepPoint]]:
    points = [SweepPoint(("stage1.algorithm=fedce",), 0), SweepPoint(("stage1.algorithm=fedce",), 1)]
    write_fake_run(points[0].run_dir(tmp_path), seed=0, f1={"nmoe": 0.80})
    write_fake_run(points[1].run_dir(tmp_path), seed=1, f1={"nmoe": 0.90}, bytes_scale=2.0)
    return tmp_path, points


def test_collect_rows_one_per_seed_and_system(two_seed_sweep) -> None:
    sweep_dir, points = two_seed_sweep
    rows = collect_rows(sweep_dir, points)
    assert [(r["seed"], r["system"]) for r in rows][:5] == [
        (0, "nmoe"), (0, "local"), (0, "centralized"), (0, "fedavg"), (1, "nmoe")]
    nmoe = rows[0]
    assert nmoe["stage1.algorithm"] == "fedce" and nmoe["point_id"] == "stage1.algorithm=fedce"
    assert nmoe["bytes_stage1_fedsc"] == 800_000
    # nmoe pays stage 1-3 and its inference: 800k + 0 + 100k + 120k.
    assert nmoe["system_bytes"] == 1_020_000
    # Delivered: stage 1 lost 40k of uploads and inference 10k: 760k + 0 + 100k + 110k.
    assert nmoe["system_bytes_delivered"] == 970_000
    # The run: 800k + 100k + 120k + 1000k + 100k + 600k (the other stages move nothing).
    assert nmoe["total_bytes"] == 2_720_000
    assert nmoe["sim_time_s"] == pytest.approx(40.5)
    assert nmoe["system_sim_time_s"] == pytest.approx(21.0)
    # local pays for the FE and expert it reuses (stages 1-2: 800k + 0) and nothing more.
    assert rows[1]["system_bytes"] == 800_000 and rows[1]["system_bytes_delivered"] == 760_000


def test_aggregate_means_and_sample_stds(two_seed_sweep) -> None:
    sweep_dir, points = two_seed_sweep
    agg = aggregate_rows(collect_rows(sweep_dir, points))
    assert [(a["point_id"], a["system"]) for a in agg] == [
        ("stage1.algorithm=fedce", s) for s in ("nmoe", "local", "centralized", "fedavg")]
    nmoe = agg[0]
    assert nmoe["n_seeds"] == 2 and nmoe["stage1.algorithm"] == "fedce"
    assert nmoe["f1_macro_mean"] == pytest.approx(0.85)
    assert nmoe["f1_macro_std"] == pytest.approx(math.sqrt(2 * 0.05**2))  # ddof=1
    assert nmoe["system_bytes_mean"] == pytest.approx(1.5 * 1_020_000)
    assert nmoe["system_bytes_std"] == pytest.approx(1_020_000 / math.sqrt(2))
    assert nmoe["energy_j_std"] == 0.0
    assert "seed_mean" not in nmoe
    single = aggregate_rows([{"point_id": "p", "seed": 0, "system": "s", "f1_macro": 0.5}])
    assert single[0]["f1_macro_std"] == 0.0 and single[0]["n_seeds"] == 1


def test_write_tables_csv_and_markdown(two_seed_sweep) -> None:
    sweep_dir, points = two_seed_sweep
    csv_path, md_path = write_tables(sweep_dir, points)
    with open(csv_path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and float(table[0]["f1_macro_mean"]) == pytest.approx(0.85)
    with open(sweep_dir / "table_raw.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 8
    md = md_path.read_text()
    assert "| Point | System | Seeds | F1 (%) |" in md
    # F1 85.0 ± 7.1 %, accuracy 86.0 ± 7.1 %, LR 70.0 ± 0.0 %, bytes 1.53 ± 0.72 MB.
    assert "| stage1.algorithm=fedce | nmoe | 2 | 85.0 ± 7.1 | 86.0 ± 7.1 | 70.0 ± 0.0 |" in md
    assert "| 1.53 ± 0.72 |" in md


def test_rows_carry_the_feature_checks_of_the_fe_a_system_serves_with() -> None:
    from nmoe_sim.table import run_rows

    rep = {"linear_probe": 0.8, "knn": 0.7, "effective_rank": 5.0}
    metrics = {"stages": {"stage1_fedsc": {"bytes": 1, "representation": rep}, "baseline_fedavg": {"bytes": 2}},
               "systems": {"nmoe": {"stages": ["stage1_fedsc"]}, "fedavg": {"stages": ["baseline_fedavg"]}}}
    nmoe, fedavg = run_rows(metrics)
    assert (nmoe["fe_linear_probe"], nmoe["fe_knn"], nmoe["fe_effective_rank"]) == (0.8, 0.7, 5.0)
    assert math.isnan(fedavg["fe_linear_probe"])  # its FE is not the NMoE's, and was not probed


# --------------------------------------------------------------------------- the CLI
def _cli_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
               *extra: str, fail_on: str | None = None) -> tuple[int, str, str]:
    """`nmoe-sim sweep` with the runner replaced by the fake one (and a point that fails)."""
    import yaml

    from nmoe_sim import cli

    def fake_run_one(cfg: Any, run_dir: Path, **_: Any) -> dict[str, Any]:
        if fail_on is not None and cfg.stage1.algorithm == fail_on:
            raise ValueError("no luck\nat all")
        write_fake_run(run_dir, scenario=cfg.name, seed=cfg.seed)
        return {}

    monkeypatch.setattr(cli, "run_one", fake_run_one)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(scenario(grid={"stage1.algorithm": ["fedce", "fedsc"]}, seeds=[0])))
    rc = cli.main(["sweep", str(path), "--out", str(tmp_path / "out"), *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_sweep_lists_failed_points_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _cli_sweep(tmp_path, monkeypatch, capsys, fail_on="fedsc")
    sweep_dir = tmp_path / "out" / "tiny" / "sweep"
    assert rc == 1 and out.strip() == str(sweep_dir)
    assert err.strip().splitlines() == [
        "failed: stage1.algorithm=fedsc seed 0: ValueError: no luck",
        f"error: 1 of 2 sweep points failed (listed above and in {sweep_dir / 'points.json'}); "
        "the others' results are in the tables",
    ]
    assert (sweep_dir / "stage1.algorithm=fedce" / "seed0" / "metrics.json").is_file()


def test_cli_sweep_refuses_a_changed_config_then_reruns_it_on_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli_sweep(tmp_path, monkeypatch, capsys)[0] == 0
    sweep_dir = tmp_path / "out" / "tiny" / "sweep"
    config_before = (sweep_dir / "config.yaml").read_text()
    rc, out, err = _cli_sweep(tmp_path, monkeypatch, capsys, "--set", "stage2.epochs=3")
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: sweep point stage1.algorithm=fedce seed 0: its results in ") and "--rerun-changed" in lines[0]
    assert (sweep_dir / "config.yaml").read_text() == config_before  # never a config that did not run
    rc, out, err = _cli_sweep(tmp_path, monkeypatch, capsys, "--set", "stage2.epochs=3", "--rerun-changed")
    assert rc == 0 and err == ""
    assert "epochs: 3" in (sweep_dir / "config.yaml").read_text()
