"""The shipped CIFAR-10 scenario (scenarios/paper/cifar10_main.yaml) on small synthetic
pickles written here in the real format: it runs end to end through the CLI, its FedSC
views use colour on 3-channel data, and a missing folder or a malformed pickle is one
error line naming the path, with no run directory left behind."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nmoe_sim.cli import main
from nmoe_sim.config import load_scenario
from nmoe_sim.data import load_dataset

from conftest import REPO_ROOT, one_error_line

SCENARIO = REPO_ROOT / "scenarios" / "paper" / "cifar10_main.yaml"
PER_BATCH, TEST_IMAGES = 30, 40  # 150 train images, 15 per class: one class per client works

# Shrink the shipped scenario to seconds; its model, views, network and systems stay as shipped.
TINY = (
    "stage1.rounds=1", "stage1.local_epochs=1", "stage1.batch_size=32", "stage1.fedsc.r_passes=1",
    "stage2.epochs=1", "stage3.rounds=1", "baselines.centralized.epochs=1", "baselines.fedavg.rounds=1",
    "inference.max_queries_per_client=2", "output.plots=false",
)


def cifar_batch(rng: np.random.Generator, labels: list[int]) -> dict[bytes, object]:
    """A batch as the real files hold it: b'data' uint8 (N, 3072), R then G then B plane,
    each class a colour of its own plus noise; b'labels' a list of Python ints."""
    hue = np.linspace(30, 225, 10)
    data = np.empty((len(labels), 3, 1024), np.float64)
    for i, y in enumerate(labels):
        data[i] = np.array([hue[y], hue[9 - y], hue[(y * 3) % 10]])[:, None]
    data += rng.normal(0, 20, data.shape)
    return {b"batch_label": b"synthetic", b"labels": list(labels),
            b"data": np.clip(data, 0, 255).astype(np.uint8).reshape(len(labels), 3072)}


def write_cifar_folder(folder: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for b in range(1, 6):
        batch = cifar_batch(rng, [(b + i) % 10 for i in range(PER_BATCH)])
        (folder / f"data_batch_{b}").write_bytes(pickle.dumps(batch, protocol=2))
    test = cifar_batch(rng, [i % 10 for i in range(TEST_IMAGES)])
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer",
                                  "dog", "frog", "horse", "ship", "truck")]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return folder


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar_folder(tmp_path_factory.mktemp("data") / "cifar-10-batches-py")


def run_cli(command: str, root: Path | str, out: Path, capsys: pytest.CaptureFixture[str],
            *extra: str) -> tuple[int, str, str]:
    sets = [a for item in (f"data.root={root}", *TINY, *extra) for a in ("--set", item)]
    rc = main([command, str(SCENARIO), *sets, "--out", str(out), *(["-q"] if command == "run" else [])])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# --------------------------------------------------------------------------- a good run
def test_shipped_scenario_runs_on_synthetic_pickles(cifar_root: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli("run", cifar_root, tmp_path / "out", capsys)
    assert rc == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "out" / "paper_cifar10_main"
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["systems"]) == {"nmoe", "local", "centralized", "fedavg"}
    assert {"stage1_fedsc", "stage2_experts", "stage3_fedgate"} <= set(metrics["stages"])
    assert metrics["stages"]["stage1_fedsc"]["bytes"] > 0
    # The whole synthetic set: the scenario's subsampling caps lie above it.
    assert metrics["dataset"] | {"queries": 0} == {"name": "cifar10", "num_classes": 10, "queries": 0,
                                                   "train_samples": 5 * PER_BATCH, "test_samples": TEST_IMAGES}
    for system in metrics["systems"].values():
        assert 0.0 <= system["f1_macro"] <= 1.0


def test_shipped_scenario_is_the_papers_main_setting() -> None:
    cfg = load_scenario(SCENARIO)
    assert (cfg.data.dataset, cfg.data.clients, cfg.data.partition.kind) == ("cifar10", 10, "classes_per_client")
    assert (cfg.stage1.algorithm, cfg.stage3.algorithm) == ("fedsc", "fedgate")
    assert set(cfg.baselines.systems) == {"local", "centralized", "fedavg"}
    assert cfg.sweep is not None and set(cfg.sweep.grid) == {"data.partition", "stage1.algorithm", "stage3.algorithm"}
    # Three conv blocks for 32x32 inputs (the Fashion-MNIST scenarios use two).
    assert len(cfg.model.fe_channels) == 3


def test_colour_views_apply_to_the_3_channel_data(cifar_root: Path) -> None:
    from nmoe_sim.data.augment import make_views

    cfg = load_scenario(SCENARIO, [f"data.root={cifar_root}"])
    ds = load_dataset(cfg.data, np.random.default_rng(0))
    assert ds.input_shape == (3, 32, 32)
    aug_cfg = cfg.stage1.fedsc.augment
    views = make_views(aug_cfg, ds.input_shape)
    assert views.colour is not None
    ops = {type(m).__name__ for m in views.colour}
    assert {"ColorJitter", "RandomGrayscale"} <= ops, ops
    # Same seed, same crops and flips: only the colour ops tell the two views apart.
    plain = make_views(aug_cfg.model_copy(update={"color_jitter": 0.0, "grayscale_p": 0.0}), ds.input_shape)
    assert plain.colour is None
    x = ds.x_train[:64]  # (64, 3, 32, 32)
    seed = 1234
    coloured, geometric = views.apply(x, seed), plain.apply(x, seed)
    means_c, means_g = coloured.mean(dim=(2, 3)), geometric.mean(dim=(2, 3))  # (64, 3)
    changed = (means_c - means_g).abs().amax(dim=1) > 1e-3
    assert changed.float().mean() > 0.5  # jitter has p 0.8
    # Grayscale (p 0.2) makes the three channels of a view equal; the inputs' never are.
    grey = (coloured - coloured[:, :1]).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert grey.any() and not (geometric - geometric[:, :1]).abs().amax(dim=(1, 2, 3)).lt(1e-5).any()
    assert torch.equal(views.apply(x, seed), coloured)  # a view is a function of its seed


# --------------------------------------------------------------------------- bad data
def test_every_dataset_has_a_files_check() -> None:
    from nmoe_sim.data.datasets import DATASET_FILES, DATASETS

    assert DATASET_FILES.names() == DATASETS.names()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_missing_folder_is_one_line_before_any_directory(tmp_path: Path, command: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "cifar-10-batches-py"
    rc, out, err = run_cli(command, missing, tmp_path / "out", capsys)
    assert rc == 2 and out == ""
    one_error_line(err, "data.root", "CIFAR-10 folder not found", str(missing),
                   "data_batch_1..data_batch_5", "test_batch", "batches.meta", "cifar.html")
    assert not (tmp_path / "out").exists()


def test_relative_root_names_the_folder_it_meant(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli("run", "data/cifar-10-batches-py", tmp_path / "out", capsys)
    assert rc == 2
    one_error_line(err, "data/cifar-10-batches-py", str(tmp_path / "data" / "cifar-10-batches-py"))


def test_missing_file_names_it(cifar_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_4", "data_batch_5", "batches.meta"):
        (folder / name).write_bytes((cifar_root / name).read_bytes())
    rc, _, err = run_cli("run", folder, tmp_path / "out", capsys)
    assert rc == 2
    one_error_line(err, "CIFAR-10 file not found", str(folder / "data_batch_3"), str(folder / "test_batch"))
    assert not (tmp_path / "out").exists()


def _good(rng: np.random.Generator) -> dict[bytes, object]:
    return cifar_batch(rng, [i % 10 for i in range(PER_BATCH)])


MALFORMED = {
    "string_labels": (lambda b: {**b, b"labels": ["cat"] * PER_BATCH}, "b'labels' holds strings"),
    "digit_string_labels": (lambda b: {**b, b"labels": [str(y) for y in b[b"labels"]]}, "b'labels' holds strings"),
    "string_data": (lambda b: {**b, b"data": "pixels"}, "b'data' holds a str"),
    "string_array_data": (lambda b: {**b, b"data": np.full((PER_BATCH, 3072), "x")}, "b'data' holds strings"),
    "float_data": (lambda b: {**b, b"data": np.full((PER_BATCH, 3072), 0.5)}, "b'data' holds floats"),
    "data_beyond_uint8": (lambda b: {**b, b"data": np.full((PER_BATCH, 3072), 300)}, "outside 0..255"),
    "flat_data": (lambda b: {**b, b"data": np.zeros(3072 * PER_BATCH, np.uint8)}, "b'data' has shape"),
    "image_shaped_data": (lambda b: {**b, b"data": np.zeros((PER_BATCH, 32, 32, 3), np.uint8)}, "b'data' has shape"),
    "labels_too_few": (lambda b: {**b, b"labels": b[b"labels"][:-1]}, "b'labels' has shape"),
    "label_out_of_range": (lambda b: {**b, b"labels": [10] * PER_BATCH}, "labels must lie in 0..9"),
    "str_keys": (lambda b: {k.decode(): v for k, v in b.items()}, "no b'data' or b'labels'"),
    "not_a_dict": (lambda b: [b[b"data"], b[b"labels"]], "holds a list, not a dict"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_pickle_is_one_line_naming_the_file(cifar_root: Path, tmp_path: Path, case: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    mutate, needle = MALFORMED[case]
    folder = tmp_path / "cifar"
    folder.mkdir()
    for path in cifar_root.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "data_batch_2").write_bytes(pickle.dumps(mutate(_good(np.random.default_rng(1))), protocol=2))
    rc, out, err = run_cli("run", folder, tmp_path / "out", capsys)
    assert rc == 2 and out == ""
    one_error_line(err, str(folder / "data_batch_2"), needle)
    assert not (tmp_path / "out").exists()  # no half-written run directory, nor the folders made for it


@pytest.mark.parametrize("case", ["truncated", "bad_meta"])
def test_corrupt_files_are_one_line(cifar_root: Path, tmp_path: Path, case: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cifar"
    folder.mkdir()
    for path in cifar_root.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    if case == "truncated":
        bad, needle = folder / "test_batch", "corrupt CIFAR-10 pickle"
        bad.write_bytes((cifar_root / "test_batch").read_bytes()[:500])
    else:
        bad, needle = folder / "batches.meta", "b'label_names'"
        bad.write_bytes(pickle.dumps({b"label_names": 10}, protocol=2))
    rc, _, err = run_cli("run", folder, tmp_path / "out", capsys)
    assert rc == 2
    one_error_line(err, str(bad), needle)
    assert not list((tmp_path / "out").rglob("config.yaml"))


def test_sweep_point_with_malformed_pickle_leaves_no_point_directory(
        cifar_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cifar"
    folder.mkdir()
    for path in cifar_root.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "data_batch_5").write_bytes(pickle.dumps({b"data": "x", b"labels": ["y"]}, protocol=2))
    rc, _, err = run_cli("sweep", folder, tmp_path / "out", capsys)
    # Every point fails on the file (a ConfigError only a run finds): each is listed with
    # its reason, the sweep goes on to the end, and one error line sums up (exit 1).
    *failed, last = err.strip().splitlines()
    assert rc == 1 and len(failed) == 54, err
    assert all(line.startswith("failed: ") and line.endswith(
        f"{folder / 'data_batch_5'}: not a CIFAR-10 python batch: b'data' holds a str; expected a pickled dict "
        "with b'data' (N x 3072 uint8) and b'labels' (N ints)") for line in failed), failed[0]
    assert last.startswith("error: 54 of 54 sweep points failed")
    sweep_dir = tmp_path / "out" / "paper_cifar10_main" / "sweep"
    assert [p.relative_to(sweep_dir).as_posix() for p in sweep_dir.rglob("config.yaml")] == ["config.yaml"]
