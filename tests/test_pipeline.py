"""The whole pipeline on the tiny scenario through ``runner.run``: the run directory,
metrics, exact stage bytes, determinism, and that every option changes what runs."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from nmoe_sim.config import Scenario, build_scenario, load_raw, load_scenario
from nmoe_sim.errors import ConfigError
from nmoe_sim.runner import run
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import build_world

from conftest import REPO_ROOT, TINY_CLASSIFIER_PARAMS, TINY_FEDSC_PARAMS, TINY_GATE_PARAMS, tiny_cfg

DOC = (REPO_ROOT / "docs" / "results-format.md").read_text()
SYSTEMS = {"nmoe", "local", "centralized", "fedavg"}


def run_cfg(cfg: Scenario, run_dir: Path) -> tuple[dict[str, Any], Path]:
    run_dir.mkdir(parents=True)
    return run(cfg, run_dir), run_dir


def run_tiny(tmp_path: Path, *overrides: str, name: str = "run") -> tuple[dict[str, Any], Path]:
    return run_cfg(tiny_cfg(*overrides), tmp_path / name)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    return run_tiny(tmp_path_factory.mktemp("tiny"))


# --------------------------------------------------------------------------- run directory
def documented_files() -> list[str]:
    """The first column of the file table in docs/results-format.md."""
    names = re.findall(r"^\| `([^`]+)` \|", DOC, flags=re.M)
    assert "metrics.json" in names and "events.csv" in names
    return names


def documented_header(name: str) -> list[str]:
    section = DOC.split(f"## `{name}`", 1)[1]
    return re.search(r"^`([a-z0-9_,]+)`", section, flags=re.M).group(1).split(",")  # type: ignore[union-attr]


def test_run_directory_has_every_documented_file(tiny_run: tuple[dict[str, Any], Path]) -> None:
    _, run_dir = tiny_run
    for name in documented_files():
        if name == "plots/":
            continue  # drawn by the CLI (output.plots); checked in test_cli
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob(".*.tmp"))  # atomic writes leave no temporaries
    for name in ("rounds.csv", "gating.csv", "events.csv", "hops.csv", "queries.csv", "clients.csv"):
        with (run_dir / name).open() as f:
            assert f.readline().strip().split(",") == documented_header(name), name
    # config.yaml is the resolved scenario: it loads back to the same config.
    assert load_scenario(run_dir / "config.yaml") == tiny_cfg()


def test_metrics_systems_and_scores(tiny_run: tuple[dict[str, Any], Path]) -> None:
    metrics, run_dir = tiny_run
    assert json.loads((run_dir / "metrics.json").read_text())["systems"].keys() == SYSTEMS
    assert metrics["scenario"] == "tiny" and metrics["seed"] == 0 and metrics["run_id"] == run_dir.name
    # 80 stratified train samples = 8 per class; 4 clients with one class each hold 32.
    assert metrics["dataset"] == {"name": "digits", "num_classes": 10, "train_samples": 80,
                                  "test_samples": 40, "queries": 40}
    for name, s in metrics["systems"].items():
        for key in ("f1_macro", "accuracy", "local_ratio"):
            assert 0.0 <= s[key] <= 1.0, (name, key)
        assert s["queries"] == 40
        assert s["failed_queries"] == 0  # ideal channel
        for row in s["gating"]:
            assert sum(row) == pytest.approx(1.0, abs=1e-5)
        assert sum(map(sum, s["gating_counts"])) == (40 if name != "fedavg" else 0)
    assert metrics["systems"]["local"]["local_ratio"] == 1.0
    assert metrics["systems"]["local"]["gating"] == [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
    assert metrics["systems"]["fedavg"]["gating"] == []
    gating = read_csv(run_dir / "gating.csv")
    assert {r["system"] for r in gating} == {"nmoe", "local", "centralized"}
    assert len(gating) == 3 * 4 * 4


def test_metrics_stages_exact_bytes(tiny_run: tuple[dict[str, Any], Path]) -> None:
    metrics, _ = tiny_run
    stages = metrics["stages"]
    assert set(stages) == {"stage1_fedce", "stage2_experts", "stage3_fedgate", "inference_nmoe",
                           "inference_local", "baseline_centralized", "inference_centralized",
                           "baseline_fedavg", "inference_fedavg"}
    for name, s in stages.items():
        # Direction columns count hops: a relayed transfer loads two of them, so their sum
        # is the link-level payload, at least the end-to-end one. Ideal links lose nothing.
        per_hop = s["bytes_up"] + s["bytes_down"] + s["bytes_d2d"]
        assert s["bytes"] <= per_hop == s["link_bytes"], name
        assert s["bytes_delivered"] == s["bytes"], name
        assert s["sim_time_s"] == pytest.approx(s["end_s"] - s["start_s"]) and s["sim_time_s"] >= 0
        assert s["failed_transfers"] == 0
        assert s["energy_j"] == pytest.approx(s["device_energy_j"] + s["infrastructure_energy_j"]), name
    model_bytes = TINY_CLASSIFIER_PARAMS * 4
    # 2 rounds x 4 clients x (one download + one upload) of the classifier.
    assert stages["stage1_fedce"]["bytes_up"] == stages["stage1_fedce"]["bytes_down"] == 2 * 4 * model_bytes == 20800
    assert stages["stage1_fedce"]["rounds"] == 2 and stages["stage1_fedce"]["start_s"] == 0.0
    # FedAvg baseline: the same classifier, the same rounds.
    assert stages["baseline_fedavg"]["bytes"] == stages["stage1_fedce"]["bytes"]
    # Stage 2: (count, sum_d, sumsq_d) = 2*8+1 values, up and back, per client.
    assert stages["stage2_experts"]["bytes_up"] == stages["stage2_experts"]["bytes_down"] == 4 * 17 * 4
    assert stages["stage2_experts"]["start_s"] == stages["stage1_fedce"]["end_s"]
    assert stages["stage3_fedgate"]["start_s"] == stages["stage2_experts"]["end_s"]
    # Centralized: 32 raw samples of 64 one-byte pixels + a label byte go up.
    assert stages["baseline_centralized"]["bytes_up"] == 32 * 65
    # FedAvg and local inference run on the device: nothing on the air.
    assert stages["inference_fedavg"]["bytes"] == stages["inference_local"]["bytes"] == 0


def test_records_files_agree_with_metrics(tiny_run: tuple[dict[str, Any], Path]) -> None:
    metrics, run_dir = tiny_run
    events = read_csv(run_dir / "events.csv")
    # Each system ran in its own clock: events come grouped by system, in time within it.
    systems = [e["system"] for e in events]
    assert list(dict.fromkeys(systems)) == ["nmoe", "local", "centralized", "fedavg"]  # the order they ran
    assert systems == sorted(systems, key=["nmoe", "local", "centralized", "fedavg"].index)
    for system in set(systems):
        starts = [float(e["start_s"]) for e in events if e["system"] == system]
        assert starts == sorted(starts), system
    for name, s in metrics["stages"].items():
        mine = [e for e in events if e["kind"] == "transfer" and e["stage"] == name]
        assert {e["system"] for e in mine} <= {s["system"]}, name
        assert sum(int(e["size_bytes"]) for e in mine) == s["bytes"], name
        assert sum(int(e["link_bytes"]) for e in mine) == s["link_bytes"], name
    rounds = read_csv(run_dir / "rounds.csv")
    keys = [(r["system"], r["stage"], int(r["round"])) for r in rounds]
    assert keys == [("nmoe", "stage1_fedce", 0), ("nmoe", "stage1_fedce", 1), ("nmoe", "stage3_fedgate", 0),
                    ("nmoe", "stage3_fedgate", 1), ("fedavg", "baseline_fedavg", 0), ("fedavg", "baseline_fedavg", 1)]
    nmoe_cum = [int(r["cum_bytes"]) for r in rounds if r["system"] == "nmoe"]
    assert nmoe_cum == sorted(nmoe_cum) and nmoe_cum[:2] == [20800, 41600]
    queries = read_csv(run_dir / "queries.csv")
    assert len(queries) == 4 * 40
    topo = json.loads((run_dir / "topology.json").read_text())
    assert sorted(n["id"] for n in topo["nodes"]) == ["0", "1", "2", "3", "bs"]
    assert sorted(e["kind"] for e in topo["edges"]) == ["bs"] * 4 + ["d2d"] * 4  # ring of 4
    assert len(metrics["links"]) == 8


# --------------------------------------------------------------------------- determinism
def without_run_identity(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in ("wall_time_s", "run_id")}


def test_same_seed_same_results_other_seed_differs(tiny_run: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    first, first_dir = tiny_run
    again, again_dir = run_tiny(tmp_path, name="again")
    assert without_run_identity(again) == without_run_identity(first)
    for name in ("events.csv", "rounds.csv", "queries.csv", "hops.csv", "gating.csv"):
        assert (again_dir / name).read_bytes() == (first_dir / name).read_bytes(), name
    other, other_dir = run_tiny(tmp_path, "seed=1", name="other")
    assert without_run_identity(other)["systems"] != without_run_identity(first)["systems"]
    assert (other_dir / "events.csv").read_bytes() != (first_dir / "events.csv").read_bytes()


# --------------------------------------------------------------------------- options
def test_stage1_algorithm_changes_stage_names_and_bytes(tmp_path: Path) -> None:
    metrics, _ = run_tiny(tmp_path, "stage1.algorithm=fedsc", "baselines.systems=[local]")
    stages = metrics["stages"]
    assert "stage1_fedsc" in stages and "stage1_fedce" not in stages
    model, corr = TINY_FEDSC_PARAMS * 4, 4 * 4 * 4
    # Fresh correlations: the model each way every round; from round 1 (alpha < 1) each
    # client's correlation goes up and the mean of the others' comes back, before training.
    assert stages["stage1_fedsc"]["bytes_down"] == 2 * 4 * model + 4 * corr == 21632
    assert stages["stage1_fedsc"]["bytes_up"] == 2 * 4 * model + 4 * corr == 21632
    assert stages["stage2_experts"]["start_s"] == stages["stage1_fedsc"]["end_s"]


@pytest.mark.parametrize("algorithm", ["rangate", "rollgate", "fedgate"])
def test_every_gate_algorithm_runs(tmp_path: Path, algorithm: str) -> None:
    metrics, run_dir = run_tiny(tmp_path, f"stage3.algorithm={algorithm}", "baselines.systems=[local]")
    stage = f"stage3_{algorithm}"
    assert [s for s in metrics["stages"] if s.startswith("stage3")] == [stage]
    rounds = [r for r in read_csv(run_dir / "rounds.csv") if r["stage"] == stage]
    assert len(rounds) == (1 if algorithm == "rangate" else 2)
    assert all(r["f1_macro"] != "" for r in rounds)
    if algorithm == "rangate":  # untrained: nothing is exchanged
        assert metrics["stages"][stage]["bytes"] == 0
    else:  # features out to each other expert and probabilities back: D2D
        assert metrics["stages"][stage]["bytes_d2d"] > 0
    assert sum(map(sum, metrics["systems"]["nmoe"]["gating_counts"])) == 40


def test_rollgate_passes_the_gate_over_d2d_links_of_the_ring(tmp_path: Path) -> None:
    # direct_first: the hand-overs take the ring's D2D links (min_airtime may relay them
    # through the base station when that costs less airtime).
    metrics, run_dir = run_tiny(tmp_path, "stage3.algorithm=rollgate", "baselines.systems=[local]",
                                "network.channel={bs: urban_micro, d2d: urban_micro_d2d}",
                                "network.routing=direct_first")
    gate_bytes = TINY_GATE_PARAMS * 4
    events = read_csv(run_dir / "events.csv")
    laps = [e for e in events if e["kind"] == "transfer" and e["stage"] == "stage3_rollgate"
            and e["tag"].startswith("lap")]
    # Lap 0: 0->1->2->3 (holder starts at 0); lap 1: 3->0->1->2->3. Ring neighbours: one hop.
    assert [(e["src"], e["dst"]) for e in laps] == [("0", "1"), ("1", "2"), ("2", "3"), ("3", "0"),
                                                   ("0", "1"), ("1", "2"), ("2", "3")]
    assert all(int(e["size_bytes"]) == gate_bytes and e["hops"] == "1" for e in laps)
    assert all(float(e["airtime_s"]) > 0 for e in laps)  # a real radio, not the ideal link
    assert metrics["stages"]["stage3_rollgate"]["bytes_d2d"] >= 10 * gate_bytes  # 7 passes + 3 final hand-outs
    hops = read_csv(run_dir / "hops.csv")
    assert any(h["stage"] == "stage3_rollgate" and h["u"] != "bs" and h["v"] != "bs" for h in hops)


@pytest.mark.parametrize("local_part,shared_params", [("none", 144), ("bias", 140), ("head", 72)])
@pytest.mark.parametrize("sync_every,upload_rounds", [(1, [0, 1, 2, 3]), (2, [1, 3])])
def test_fedgate_sync_every_and_local_part(tmp_path: Path, sync_every: int, upload_rounds: list[int],
                                           local_part: str, shared_params: int) -> None:
    metrics, run_dir = run_tiny(tmp_path, "stage3.rounds=4", f"stage3.fedgate.sync_every={sync_every}",
                                f"stage3.fedgate.local_part={local_part}", "stage3.fedgate.personal=none",
                                "baselines.systems=[local]")
    # Shared part of the gate (144 params): 'bias' keeps head.bias (4) local, 'head' keeps
    # head and noise layers (36 + 36) local, leaving the trunk (72).
    ups = [e for e in read_csv(run_dir / "events.csv")
           if e["stage"] == "stage3_fedgate" and e["tag"].endswith("/up")]
    assert sorted({int(e["tag"][1:].split("/")[0]) for e in ups}) == upload_rounds
    assert len(ups) == 4 * len(upload_rounds)
    assert {int(e["size_bytes"]) for e in ups} == {shared_params * 4}
    assert metrics["stages"]["stage3_fedgate"]["bytes_up"] == 4 * len(upload_rounds) * shared_params * 4


@pytest.mark.parametrize("sync_every,upload_rounds", [(1, [0, 1, 2, 3]), (2, [1, 3])])
def test_ditto_fedgate_syncs_the_shared_gate_and_serves_with_personal_ones(
        tmp_path: Path, sync_every: int, upload_rounds: list[int]) -> None:
    metrics, run_dir = run_tiny(tmp_path, "stage3.rounds=4", f"stage3.fedgate.sync_every={sync_every}",
                                "stage3.fedgate.personal=ditto", "baselines.systems=[local]")
    events = [e for e in read_csv(run_dir / "events.csv") if e["stage"] == "stage3_fedgate"]
    ups = [e for e in events if e["tag"].endswith("/up")]
    assert sorted({int(e["tag"][1:].split("/")[0]) for e in ups}) == upload_rounds
    assert {int(e["size_bytes"]) for e in ups} == {TINY_GATE_PARAMS * 4}  # the whole shared gate
    assert not [e for e in events if e["tag"] == "final/down"]  # personal gates serve: no final broadcast
    # Two gates trained per client and round: twice a shared-only FedGate's FLOPs.
    _, plain_dir = run_tiny(tmp_path, "stage3.rounds=4", f"stage3.fedgate.sync_every={sync_every}",
                            "stage3.fedgate.personal=none", "baselines.systems=[local]", name="plain")
    flops = lambda d: sorted(float(e["flops"]) for e in read_csv(d / "events.csv")
                             if e["stage"] == "stage3_fedgate" and e["tag"].endswith("/train"))
    assert flops(run_dir) == [2 * f for f in flops(plain_dir)]


def test_ditto_pull_sets_how_far_the_personal_gate_strays() -> None:
    import copy

    from nmoe_sim.engine.tasks import execute
    from nmoe_sim.fl.exchange import EXCHANGES
    from nmoe_sim.fl.stage3 import FedGate

    def personal_distance(prox: float) -> float:
        world = build_world(tiny_cfg("stage3.fedgate.personal=ditto", f"stage3.fedgate.prox={prox}",
                                     "stage3.local_epochs=10"), SeedStreams(0))
        sim = world.new_sim("nmoe")
        from nmoe_sim.pipeline import train_shared

        spans: list = []
        proc = sim.env.process(train_shared(world, sim, spans))
        sim.env.run(until=proc)
        parts = proc.value
        ex = sim.env.process(EXCHANGES.get("features", "x")(world, sim, parts, "stage3_fedgate"))
        sim.env.run(until=ex)
        algo = FedGate(world, parts, ex.value, "stage3_fedgate")
        task = algo.task(0, 0)
        anchor = task.args["anchor"]  # the shared gate the client downloaded
        algo.collect(0, 0, execute(task, copy.deepcopy(task.template)))
        return sum(float(((algo.personal[0].state_dict()[k] - anchor[k]) ** 2).sum()) for k in anchor)

    # lr 0.05 x prox 10 = 0.5: a stable pull that keeps the personal gate by the shared one.
    # Measured (squared distance after 10 local epochs): 0.0059 at prox 10, 1.37 at 1e-6.
    near, far = personal_distance(10.0), personal_distance(1e-6)
    assert near < 0.05 * far


def test_queries_local_vs_global_changes_query_labels() -> None:
    def labels(mode: str) -> list[tuple[set[int], set[int]]]:
        world = build_world(tiny_cfg(f"data.queries={mode}"), SeedStreams(0))
        return [(set(c.y_train.tolist()), set(c.y_query.tolist())) for c in world.clients]

    local = labels("local")
    assert all(len(train) == 1 and query == train for train, query in local)  # own class only
    glob = labels("global")
    assert [t for t, _ in glob] == [t for t, _ in local]  # same training split
    assert all(not q <= t for t, q in glob)  # clients meet classes they never trained on
    assert len(set().union(*(q for _, q in glob))) == 10


def test_baseline_subset_runs_only_those(tmp_path: Path) -> None:
    metrics, run_dir = run_tiny(tmp_path, "baselines.systems=[fedavg]")
    assert set(metrics["systems"]) == {"nmoe", "fedavg"}
    assert not any("centralized" in s or "local" in s for s in metrics["stages"])
    assert {r["system"] for r in read_csv(run_dir / "queries.csv")} == {"nmoe", "fedavg"}


def test_max_queries_per_client_caps_queries(tmp_path: Path) -> None:
    metrics, run_dir = run_tiny(tmp_path, "inference.max_queries_per_client=3", "baselines.systems=[local]")
    assert metrics["dataset"]["queries"] == 12
    assert all(s["queries"] == 12 for s in metrics["systems"].values())
    rows = read_csv(run_dir / "queries.csv")
    assert sorted((r["system"], r["client"]) for r in rows) == sorted(
        (s, str(c)) for s in ("nmoe", "local") for c in range(4) for _ in range(3))


def test_harsh_channel_still_finishes_with_failures(tmp_path: Path) -> None:
    metrics, _ = run_tiny(tmp_path, "network.channel=harsh", "network.topology.radius_m=200.0",
                          "baselines.systems=[local]")
    assert sum(s["failed_transfers"] for s in metrics["stages"].values()) > 0
    for s in metrics["systems"].values():
        assert 0.0 <= s["f1_macro"] <= 1.0


def test_dead_network_failures_are_data_and_queries_fall_back_to_the_own_expert(tmp_path: Path) -> None:
    dead = "{model: wireless, fading: none, outage_snr_db: 1000.0, max_attempts: 1, retx_timeout_s: 0.01}"
    metrics, run_dir = run_tiny(tmp_path, f"network.channel={{bs: {dead}, d2d: {dead}}}", "baselines.systems=[local]")
    s1 = metrics["stages"]["stage1_fedce"]
    # Every download fails, so nobody trains or uploads: 2 rounds x 4 failed downloads.
    assert (s1["transfers"], s1["failed_transfers"], s1["bytes_up"]) == (8, 8, 0)
    rounds = [r for r in read_csv(run_dir / "rounds.csv") if r["stage"] == "stage1_fedce"]
    assert [(r["participants"], r["failures"]) for r in rounds] == [("4", "4"), ("4", "4")]
    assert [float(r["end_s"]) for r in rounds] == pytest.approx([0.01, 0.02])  # one ACK timeout each
    nmoe, local = metrics["systems"]["nmoe"], metrics["systems"]["local"]
    counts = nmoe["gating_counts"]
    remote = sum(map(sum, counts)) - sum(counts[i][i] for i in range(4))
    assert remote > 0
    assert nmoe["failed_queries"] == remote  # every query routed to another client's expert
    # ... is answered by the client's own expert, exactly as the local baseline answers it.
    assert (nmoe["f1_macro"], nmoe["accuracy"]) == (local["f1_macro"], local["accuracy"])
    delivered = [q["delivered"] for q in read_csv(run_dir / "queries.csv") if q["system"] == "nmoe"]
    assert delivered.count("False") == remote


# --------------------------------------------------------------------------- shipped scenarios
SCENARIOS = sorted((REPO_ROOT / "scenarios").rglob("*.yaml"))


def test_scenarios_exist() -> None:
    assert REPO_ROOT / "scenarios" / "quickstart.yaml" in SCENARIOS


@pytest.mark.parametrize("path", SCENARIOS, ids=[str(p.relative_to(REPO_ROOT / "scenarios")) for p in SCENARIOS])
def test_shipped_scenario_validates(path: Path) -> None:
    cfg = load_scenario(path)
    assert cfg.name


def test_quickstart_tiny_variant_runs(tmp_path: Path) -> None:
    raw = load_raw(REPO_ROOT / "scenarios" / "quickstart.yaml", [
        "stage1.rounds=1", "stage2.epochs=1", "stage3.rounds=1", "stage3.local_epochs=1",
        "baselines.fedavg.rounds=1", "baselines.centralized.epochs=1",
        "data.max_train_samples=100", "data.max_test_samples=30", "output.plots=false",
    ])
    metrics, run_dir = run_cfg(build_scenario(raw), tmp_path / "quickstart")
    assert metrics["scenario"] == "quickstart"
    assert set(metrics["systems"]) == SYSTEMS
    assert {"stage1_fedsc", "stage2_experts", "stage3_fedgate"} <= set(metrics["stages"])
    assert metrics["stages"]["stage1_fedsc"]["bytes"] > 0
    assert all(math.isfinite(s["sim_time_s"]) for s in metrics["stages"].values())
    assert (run_dir / "metrics.json").is_file()


# --------------------------------------------------------------------------- the ledger's attribution
def test_unusual_stage_names_still_get_every_byte_they_moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Costs are summed by (system, stage) as stamped at the source, never by parsing names."""
    from nmoe_sim.fl import stage1, stage3

    class RenamedFedCE(stage1.FedCE):
        def __init__(self, world: Any, cfg: Any, probe: bool = False) -> None:
            super().__init__(world, cfg, stage="fe_learning_v2", probe=probe)

    monkeypatch.setitem(stage1.FE_ALGORITHMS._items, "fedce", RenamedFedCE)
    monkeypatch.setitem(stage3.GATE_ALGORITHMS._items, "fedgate", stage3.GateMethod("my-gate", stage3.run_fedgate))
    metrics, run_dir = run_tiny(tmp_path, "network.channel={bs: urban_micro, d2d: urban_micro_d2d}")
    nmoe, local = metrics["systems"]["nmoe"], metrics["systems"]["local"]
    assert nmoe["stages"] == ["fe_learning_v2", "stage2_experts", "my-gate", "inference_nmoe"]
    assert local["stages"] == ["fe_learning_v2", "stage2_experts", "inference_local"]
    events = read_csv(run_dir / "events.csv")
    moved = [e for e in events if e["kind"] == "transfer" and e["system"] == "nmoe"]
    assert {e["stage"] for e in moved} == {"fe_learning_v2", "stage2_experts", "my-gate", "inference_nmoe"}
    assert nmoe["bytes"] == sum(int(e["size_bytes"]) for e in moved) > 0
    assert nmoe["bytes_delivered"] == sum(int(e["size_bytes"]) for e in moved if e["delivered"] == "True")
    fe = metrics["stages"]["fe_learning_v2"]
    assert fe["rounds"] == 2 and fe["bytes"] == 2 * 2 * 4 * TINY_CLASSIFIER_PARAMS * 4
    rounds = [r for r in read_csv(run_dir / "rounds.csv") if r["system"] == "nmoe"]
    assert [r["stage"] for r in rounds] == ["fe_learning_v2"] * 2 + ["my-gate"] * 2
    assert int(rounds[1]["cum_bytes"]) == fe["bytes"]  # the running totals see the renamed stage


def test_clients_csv_adds_up_to_the_stage_device_energy(tiny_run: tuple[dict[str, Any], Path]) -> None:
    metrics, run_dir = tiny_run
    rows = read_csv(run_dir / "clients.csv")
    for name, s in metrics["stages"].items():
        mine = [r for r in rows if r["stage"] == name and r["system"] == s["system"]]
        assert sum(float(r["device_energy_j"]) for r in mine) == pytest.approx(s["device_energy_j"], abs=1e-12), name
        assert sum(int(r["bytes_received"]) for r in mine) == s["bytes_down_delivered"] + s["bytes_d2d_delivered"], name
        assert sum(int(r["bytes_sent"]) for r in mine) == s["bytes_up_delivered"] + s["bytes_d2d_delivered"], name


def test_local_steps_cap_the_gate_rounds_and_the_fedavg_baseline(tmp_path: Path) -> None:
    # stage3.local_steps and baselines.fedavg.local_steps (TrainConfig's cap, as stage 1's):
    # a round trains the first N batches of its local epochs, and is charged for those samples.
    # Batch 2, 3 local epochs: capped at 1 step a client trains on 2 samples a round, uncapped
    # on 3 x its n; so (capped FLOPs) x 3n == (uncapped FLOPs) x 2, event by event.
    common = ("stage3.algorithm=fedgate", "stage3.rounds=2", "stage3.batch_size=2", "stage3.local_epochs=3",
              "baselines.systems=[fedavg]", "baselines.fedavg.rounds=2", "baselines.fedavg.batch_size=2",
              "baselines.fedavg.local_epochs=3")
    _, capped = run_tiny(tmp_path, *common, "stage3.local_steps=1", "baselines.fedavg.local_steps=1", name="capped")
    _, whole = run_tiny(tmp_path, *common, name="whole")
    n = {str(c.idx): c.num_samples for c in build_world(tiny_cfg(*common), SeedStreams(0)).clients}

    def train_flops(run_dir: Path, stage: str) -> list[tuple[str, str, float]]:
        return [(e["tag"], e["node"], float(e["flops"])) for e in read_csv(run_dir / "events.csv")
                if e["stage"] == stage and e["kind"] == "compute" and e["tag"].endswith("/train")]

    for stage in ("stage3_fedgate", "baseline_fedavg"):
        a, b = train_flops(capped, stage), train_flops(whole, stage)
        assert len(a) == len(b) == 2 * len(n) and [t[:2] for t in a] == [t[:2] for t in b]
        for (_, node, fa), (_, _, fb) in zip(a, b):
            assert min(n.values()) > 2 and fa * 3 * n[node] == pytest.approx(fb * 2, rel=1e-12)
    with pytest.raises(ConfigError, match=r"stage3\.local_steps"):
        tiny_cfg("stage3.local_steps=0")
