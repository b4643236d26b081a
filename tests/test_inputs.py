"""No silent nonsense: every bad input of issue 11 is one ``error:`` line and exit status 2,
with no traceback and no run directory left behind; presets and overrides compose."""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing
from pathlib import Path
import pytest
import yaml

from nmoe_sim.cli import main
from nmoe_sim.config import CHANNEL_PRESETS_DIR, ChannelConfig, load_scenario
from nmoe_sim.errors import ConfigError, TrainingDiverged
from nmoe_sim.registry import Registry
from nmoe_sim.record import RoundRecord
from nmoe_sim.yaml_read import MAX_EXPANDED_NODES, MAX_FILE_BYTES

from conftest import TINY, one_error_line, tiny_cfg


def alias_bomb() -> str:
    """Nine levels of nine references: 9**9 strings once expanded, in about 400 bytes."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "\n".join(lines) + "\n"


# name -> (file content, what the one error line must contain besides the file's path)
BAD_FILES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "binary": (b"\x80\x81\x00\xffname: x\n", ("not a UTF-8 text file",)),
    "nul_byte": (b"name: a\x00b\n", ("invalid YAML",)),
    "empty": (b"", ("the scenario file is empty",)),
    "only_comments": (b"# nothing here\n", ("the scenario file is empty",)),
    "duplicate_section": (b"stage1:\n  rounds: 2\nstage2:\n  epochs: 1\nstage1:\n  lr: 0.1\n",
                          ("line 5: duplicate key stage1 (first given on line 1)",)),
    "duplicate_nested": (b"stage1:\n  rounds: 2\n  fedsc:\n    mu: 1\n    mu: 2\n",
                         ("line 5: duplicate key stage1.fedsc.mu (first given on line 4)",)),
    "too_large": (b"name: big\n#" + b"x" * MAX_FILE_BYTES + b"\n", ("larger than a scenario may be",)),
    "alias_bomb": (alias_bomb().encode(), (f"more than {MAX_EXPANDED_NODES:,} values once YAML aliases",)),
    "recursive_alias": (b"a: &a [1, *a]\n", ("line 1: a YAML alias refers to a node that contains it",)),
    "not_a_mapping": (b"- 1\n- 2\n", ("a scenario must be a YAML mapping",)),
}
# name -> (scenario mapping, the key path the error names, what it says)
BAD_VALUES: dict[str, tuple[dict, str, str]] = {
    "lr_inf": ({"stage1": {"lr": float("inf")}}, "stage1.lr:", "finite number"),
    "lr_nan": ({"stage2": {"lr": float("nan")}}, "stage2.lr:", "finite number"),
    "deadline_minus_inf": ({"stage3": {"deadline_s": float("-inf")}}, "stage3.deadline_s:", "finite"),
    "nested_tuple_nan": ({"network": {"channel": {"bs": {"mcs_table": [[float("nan"), 1.0]]}}}},
                         "network.channel.bs.mcs_table.0.0:", "finite number"),
    "position_inf": ({"network": {"topology": {"kind": "explicit", "positions_m": [[0, float("inf")]]}}},
                     "network.topology.positions_m.0.1:", "finite number"),
    "alignment_rounds_bool": ({"system": "alignment", "alignment": {"rounds": True}},
                              "alignment.rounds:", "not true/false"),
    "alignment_lr_inf": ({"system": "alignment", "alignment": {"lr": float("inf")}},
                         "alignment.lr:", "finite number"),
    "alignment_deadline_bool": ({"system": "alignment", "alignment": {"deadline_s": False}},
                                "alignment.deadline_s:", "not true/false"),
    "name_dotdot": ({"name": ".."}, "name:", "must not be only dots"),
    "preset_path": ({"network": {"channel": {"bs": "../scenarios/quickstart"}}},
                    "network.channel.bs:", "unknown preset '../scenarios/quickstart'; known: harsh"),
}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize("command", ["run", "validate", "sweep"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_scenario_file_is_one_line_naming_it(tmp_path: Path, case: str, command: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    content, needles = BAD_FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(content)
    out = tmp_path / "out"
    argv = [command, str(path)] + (["--print"] if command == "validate" else ["--out", str(out)])
    rc, stdout, err = run_cli(argv, capsys)
    assert rc == 2 and stdout == ""  # validate --print wrote nothing of the bomb
    one_error_line(err, str(path), *needles)
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_value_is_one_line_naming_its_key(tmp_path: Path, case: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    raw, key, needle = BAD_VALUES[case]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["run", str(path), "--out", str(out), "-q"], capsys)
    assert rc == 2 and stdout == ""
    line = one_error_line(err, key, needle)
    assert line.startswith(f"error: {key}")
    assert not out.exists()


def test_set_value_is_parsed_with_the_same_bounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\n")
    bomb = "[" + ",".join(["&a [1,2,3,4,5,6,7,8,9,10]"] + ["*a"] * 9) + "]"
    rc, _, err = run_cli(["validate", str(path), "--set", f"stage1.lr={bomb}"], capsys)
    assert rc == 2
    one_error_line(err, "stage1.lr:")  # a list, not a float: refused by the schema
    deep = "[" * 50 + "1" + "]" * 50
    rc, _, err = run_cli(["validate", str(path), "--set", "stage1.lr=.inf"], capsys)
    assert rc == 2
    one_error_line(err, "stage1.lr:", "finite number")
    rc, _, err = run_cli(["validate", str(path), "--set", f"name={deep}"], capsys)
    assert rc == 2
    one_error_line(err, "name:")


def test_a_scenario_just_within_the_size_bound_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "padded.yaml"
    text = "name: padded\n"
    path.write_text(text + "#" + "x" * (MAX_FILE_BYTES - len(text) - 2) + "\n")
    assert path.stat().st_size == MAX_FILE_BYTES
    assert load_scenario(path).name == "padded"


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text("stage1: &s1 {rounds: 2, lr: 0.1}\nstage3:\n  <<: *s1\n  rounds: 3\n")
    cfg = load_scenario(path)
    assert (cfg.stage3.rounds, cfg.stage3.lr) == (3, 0.1)


# --------------------------------------------------------------------------- presets and --set
def preset(name: str) -> ChannelConfig:
    return ChannelConfig(**yaml.safe_load((CHANNEL_PRESETS_DIR / f"{name}.yaml").read_text()))


QUICKSTART = Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.yaml"


@pytest.mark.parametrize("override", ["network.channel.bs.preset=harsh", "network.channel.bs=harsh"])
def test_set_naming_a_preset_changes_the_resolved_channel(override: str) -> None:
    base = load_scenario(QUICKSTART)  # bs: urban_micro, d2d: urban_micro_d2d
    assert base.network.channel.bs == preset("urban_micro") != preset("harsh")
    cfg = load_scenario(QUICKSTART, [override])
    assert cfg.network.channel.bs == preset("harsh")
    assert cfg.network.channel.d2d == base.network.channel.d2d


def test_set_inside_a_preset_named_by_string_overrides_that_key_only() -> None:
    cfg = load_scenario(QUICKSTART, ["network.channel.bs.bandwidth_hz=1e6", "network.topology.radius_m=7"])
    want = preset("urban_micro").model_copy(update={"bandwidth_hz": 1e6})
    assert cfg.network.channel.bs == want
    assert cfg.network.topology.radius_m == 7 and cfg.network.topology.kind == "ring"  # ring10 kept
    # The order of overrides does not matter between a preset and a key inside it.
    for order in (["network.channel.bs.preset=harsh", "network.channel.bs.bandwidth_hz=1e6"],
                  ["network.channel.bs.bandwidth_hz=1e6", "network.channel.bs.preset=harsh"]):
        assert load_scenario(QUICKSTART, order).network.channel.bs == preset("harsh").model_copy(
            update={"bandwidth_hz": 1e6})


def test_set_one_channel_preset_for_both_link_classes() -> None:
    cfg = load_scenario(QUICKSTART, ["network.channel=ideal"])
    assert cfg.network.channel.bs == cfg.network.channel.d2d == preset("ideal")


# --------------------------------------------------------------------------- training that diverges
def test_non_finite_loss_stops_the_gather_naming_stage_round_and_client() -> None:
    import torch

    from nmoe_sim.fl.stage1 import FedCE
    from nmoe_sim.seeds import SeedStreams
    from nmoe_sim.world import build_world

    world = build_world(tiny_cfg("runtime.executor=local"), SeedStreams(0))
    algo = FedCE(world, world.cfg.stage1)
    sim = world.new_sim("test")
    good, bad = algo.task(0, 0), algo.task(0, 1)
    start = {k: v.clone() for k, v in bad.start.items()}
    next(v for v in start.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    bad, needle = dataclasses.replace(bad, start=start), r"the training loss of client 1 became nan"
    jobs = [sim.executor.submit(good, stage="stage1_fedce", tag="r0/train"),
            sim.executor.submit(bad, stage="stage1_fedce", tag="r0/train")]
    sim.env.run()
    with pytest.raises(TrainingDiverged, match=rf"^stage1_fedce r0/train: {needle} \(training diverged\); "
                                               r"lower that stage's lr or set its grad_clip_norm$"):
        sim.executor.gather(jobs)
    assert issubclass(TrainingDiverged, ConfigError)  # one line and exit 2 at the CLI
    assert torch.isfinite(torch.tensor(sim.executor.gather(jobs[:1])[0].loss))  # the good one ran


def test_finite_loss_but_overflowed_parameters_also_stop_the_run() -> None:
    # A last step can blow the parameters up after its (finite) loss was taken.
    import torch

    from nmoe_sim.engine.executors import Job, check_finite_loss
    from nmoe_sim.engine.tasks import TaskResult

    task = type("T", (), {"client": None})()
    job = Job(task, stage="centralized", tag="train")  # type: ignore[arg-type]
    job.result = TaskResult(None, {"steps": torch.tensor(3), "fc.weight": torch.tensor([1.0, float("inf")])},
                            8, 0, loss=0.25)
    with pytest.raises(TrainingDiverged, match=r"^centralized train: the server's trained parameter fc\.weight "
                                               r"holds NaN or inf \(training diverged\)"):
        check_finite_loss(job)
    job.result = dataclasses.replace(job.result, state={"fc.weight": torch.ones(2)})
    check_finite_loss(job)  # finite: nothing to say


@pytest.mark.parametrize("rounds, needle", [
    # Round 1 blows the model up. Which check sees it first depends on the CPU's float kernels:
    # a loss that is already NaN (an AMD EPYC with AVX-512), or a finite loss whose last step
    # overflowed the parameters (the machine this test was written on). Both stop the run.
    (2, r"stage1_fedce r1/train: (client 0's trained parameter|the training loss of client 0 became nan)"),
    (1, r"the trained feature extractor gives NaN or inf features"),  # caught where stage 1 is measured
])
def test_diverging_run_is_one_line_and_leaves_no_directory(tmp_path: Path, rounds: int, needle: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "baselines": {"systems": []}}))
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["run", str(path), "--out", str(out), "-q", "--set", "stage1.lr=1e30",
                               "--set", "stage1.grad_clip_norm=null", "--set", "runtime.executor=local",
                               "--set", f"stage1.rounds={rounds}"], capsys)
    assert rc == 2 and stdout == ""
    assert re.search(needle, one_error_line(err, "(training diverged); lower ")), err
    assert not out.exists()


# --------------------------------------------------------------------------- registries vs schema
def test_alignment_schema_derives_from_the_strict_base() -> None:
    from nmoe_sim.fl.alignment.config import AlignmentConfig
    from nmoe_sim.strict import Strict

    assert issubclass(AlignmentConfig, Strict)
    assert AlignmentConfig.model_config["frozen"] and AlignmentConfig.model_config["extra"] == "forbid"


# (schema class, field) -> the registry its Literal names ("module:attribute").
SCHEMA_REGISTRIES: dict[tuple[str, str], str] = {
    ("Scenario", "system"): "nmoe_sim.systems:SYSTEMS",
    ("DataConfig", "dataset"): "nmoe_sim.data.datasets:DATASETS",
    ("DataConfig", "queries"): "nmoe_sim.data.partition:QUERY_SPLITS",
    ("PartitionConfig", "kind"): "nmoe_sim.data.partition:PARTITIONS",
    ("TrainConfig", "lr_schedule"): "nmoe_sim.fl.schedule:LR_SCHEDULES",
    ("Stage1Config", "lr_schedule"): "nmoe_sim.fl.schedule:LR_SCHEDULES",
    ("Stage3Config", "lr_schedule"): "nmoe_sim.fl.schedule:LR_SCHEDULES",
    ("Stage1Config", "algorithm"): "nmoe_sim.fl.stage1:FE_ALGORITHMS",
    ("Stage3Config", "algorithm"): "nmoe_sim.fl.stage3:GATE_ALGORITHMS",
    ("Stage3Config", "target"): "nmoe_sim.engine.losses:GATE_TARGETS",
    ("Stage3Config", "expert_outputs"): "nmoe_sim.fl.exchange:EXCHANGES",
    ("Stage3Config", "candidate_rule"): "nmoe_sim.fl.candidates:CANDIDATE_RULES",
    ("BaselinesConfig", "systems"): "nmoe_sim.fl.baselines:BASELINES",
    ("ChannelConfig", "path_loss"): "nmoe_sim.net.channel:PATH_LOSS",
    ("ChannelConfig", "rate_model"): "nmoe_sim.net.channel:RATE_MODELS",
    ("ChannelConfig", "fading"): "nmoe_sim.net.fading:FADING",
    ("TopologyConfig", "kind"): "nmoe_sim.net.topology:TOPOLOGIES",
    ("NetworkConfig", "routing"): "nmoe_sim.net.routing:ROUTING",
    ("RuntimeConfig", "executor"): "nmoe_sim.engine.executors:EXECUTORS",
    ("InferenceConfig", "routing"): "nmoe_sim.serving.policies:POLICIES",
    ("AlignmentConfig", "assignment"): "nmoe_sim.fl.alignment.assignment:ASSIGNERS",
    ("AlignmentConfig", "compare"): "nmoe_sim.fl.alignment.assignment:ASSIGNERS",
    ("AlignmentConfig", "fitness"): "nmoe_sim.fl.alignment.fitness:FITNESS_SIGNALS",
    ("AlignmentConfig", "capacity_from"): "nmoe_sim.fl.alignment.capacity:CAPACITY_SOURCES",
}


def _schema_classes() -> dict[str, type]:
    import nmoe_sim.config  # noqa: F401  # every schema class, the alignment one included
    from nmoe_sim.strict import Strict

    out: dict[str, type] = {}
    todo = [Strict]
    while todo:
        for sub in todo.pop().__subclasses__():
            out[sub.__name__] = sub
            todo.append(sub)
    return out


def _literal_values(annotation: object) -> set[str]:
    """The strings of every Literal inside an annotation (through Optional, tuple, ...)."""
    if typing.get_origin(annotation) is typing.Literal:
        return {v for v in typing.get_args(annotation) if isinstance(v, str)}
    return set().union(*(_literal_values(a) for a in typing.get_args(annotation)))


def _registry(target: str) -> Registry:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


# Registries no scenario string picks from directly (a task names its loss; every plot is
# drawn; `nmoe-sim sweep --executor` picks how a sweep's points run).
NOT_PICKED_BY_A_SCENARIO = {"nmoe_sim.engine.losses:LOSSES", "nmoe_sim.engine.losses:REPORTS",
                            "nmoe_sim.plots.base:PLOTS", "nmoe_sim.data.datasets:DATASET_FILES",
                            "nmoe_sim.api.figures:FIGURES",  # RunResult.plot(name): picked in Python
                            "nmoe_sim.sweep:SWEEP_EXECUTORS"}  # sweep --executor: picked by a CLI flag
# Picked by ``faults.events[].kind``, where each kind's schema registers itself under its own
# ``kind`` Literal, so they agree by construction; APPLIERS is keyed by the same kinds
# (tests/test_faults_rounds.py checks the two registries agree).
KEYED_BY_THEIR_OWN_SCHEMAS = {"nmoe_sim.engine.fault_config:FAULT_KINDS", "nmoe_sim.engine.faults:APPLIERS"}


def _all_registries() -> dict[int, tuple[str, Registry]]:
    """Every Registry object in nmoe_sim, by identity, with one name it goes by."""
    import pkgutil

    import nmoe_sim

    found: dict[int, tuple[str, Registry]] = {}
    for info in pkgutil.walk_packages(nmoe_sim.__path__, "nmoe_sim."):
        for name, obj in vars(importlib.import_module(info.name)).items():
            if isinstance(obj, Registry):
                found.setdefault(id(obj), (f"{info.name}:{name}", obj))
    return found


def test_every_literal_that_names_a_registry_lists_exactly_its_keys() -> None:
    classes = _schema_classes()
    for (cls, field), target in SCHEMA_REGISTRIES.items():
        values = _literal_values(classes[cls].model_fields[field].annotation)
        assert values == set(_registry(target)), (cls, field, target)
    # Every registry is either picked by a schema Literal listed above or by no scenario key.
    registries = _all_registries()
    known = {id(_registry(t)) for t in (*SCHEMA_REGISTRIES.values(), *NOT_PICKED_BY_A_SCENARIO,
                                        *KEYED_BY_THEIR_OWN_SCHEMAS)}
    unlisted = sorted(name for key, (name, _) in registries.items() if key not in known)
    assert not unlisted, f"add each to SCHEMA_REGISTRIES with the Literal that picks it: {unlisted}"
    # And no Literal is missing from the table: one sharing two or more names with a
    # registry is that registry's (one shared word, like 'local' or 'none', is chance).
    for cls_name, cls in classes.items():
        for field, info in cls.model_fields.items():
            values = _literal_values(info.annotation)
            for target, reg in registries.values():
                if len(values & set(reg)) >= 2:
                    assert (cls_name, field) in SCHEMA_REGISTRIES, (cls_name, field, target)


# --------------------------------------------------------------------------- a stage that learned nothing
def _round(stage: str, rnd: int, participants: int, failures: int) -> RoundRecord:
    return RoundRecord("nmoe", stage, rnd, 2, 0.0, 1.0, participants, failures, 0, 0, 1.0, 0.0)


def test_no_update_is_every_participant_failing_in_every_round() -> None:
    from nmoe_sim.metrics import no_update_arrived, stage_costs
    from nmoe_sim.record import Recorder

    rec = Recorder()
    for r in (_round("s_dead", 0, 4, 4), _round("s_dead", 1, 2, 2),
              _round("s_one", 0, 4, 4), _round("s_one", 1, 4, 3)):
        rec.add(r)
    assert no_update_arrived(rec, "nmoe", "s_dead")
    assert not no_update_arrived(rec, "nmoe", "s_one")  # one update arrived in round 1
    assert not no_update_arrived(rec, "nmoe", "s_none")  # no rounds: not a federated stage
    assert not no_update_arrived(rec, "other", "s_dead")  # another system's world
    assert stage_costs(rec, "nmoe", "s_dead", 0.0, 1.0)["no_update"] is True
    assert "no_update" not in stage_costs(rec, "nmoe", "s_one", 0.0, 1.0)  # as before: goldens unchanged


def test_a_deadline_no_update_can_meet_is_flagged_and_warned_once(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from nmoe_sim.runner import run

    cfg = tiny_cfg("stage1.deadline_s=1e-9", "stage3.deadline_s=1e-9", "baselines.systems=[]",
                   "runtime.executor=local")
    with caplog.at_level(logging.WARNING):
        metrics = run(cfg, tmp_path)
    stages = metrics["stages"]
    assert stages["stage1_fedce"]["no_update"] and stages["stage3_fedgate"]["no_update"]
    assert "no_update" not in stages["stage2_experts"] and "no_update" not in stages["inference_nmoe"]
    warned = [r.getMessage() for r in caplog.records if "no client update arrived" in r.getMessage()]
    # Stage 1's own warning (with its representation checks), and one for stage 3.
    assert len(warned) == 2 and warned[0].startswith("stage1_fedce: no client update arrived in any round")
    assert warned[1].startswith("stage3_fedgate (nmoe): no client update arrived in any of its 2 rounds")
    assert '"no_update": true' in (tmp_path / "metrics.json").read_text()
