"""Dataset readers and loaders on tiny files written by the tests themselves."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from nmoe_sim.config import DataConfig
from nmoe_sim.data import DATASETS, Dataset, load_dataset
from nmoe_sim.data.cifar import read_cifar10
from nmoe_sim.data.datasets import FASHION_MNIST_CLASSES, stratified_subsample
from nmoe_sim.data.idx import read_idx
from nmoe_sim.errors import ConfigError


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


# --------------------------------------------------------------------------- IDX
@pytest.mark.parametrize(
    "dtype, code",
    [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C),
     (np.float32, 0x0D), (np.float64, 0x0E)],
)
def test_read_idx_raw_roundtrip_all_dtypes(tmp_path: Path, dtype: type, code: int) -> None:
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / "a-idx3"
    path.write_bytes(idx_bytes(array, code))
    out = read_idx(path)
    assert out.shape == (2, 3, 4)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, array)


def test_read_idx_gzip_by_suffix_and_by_magic(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    blob = gzip.compress(idx_bytes(labels, 0x08))
    (tmp_path / "l.gz").write_bytes(blob)
    (tmp_path / "renamed").write_bytes(blob)  # gzip without the suffix
    for name in ("l.gz", "renamed"):
        out = read_idx(tmp_path / name)
        assert out.shape == (5,)
        np.testing.assert_array_equal(out, labels)


def test_read_idx_truncated_names_file(tmp_path: Path) -> None:
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((4, 5, 5), np.uint8), 0x08)[:-7])
    with pytest.raises(ConfigError, match="truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "blob, fragment",
    [
        (b"\x00\x00", "header needs 4"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 0), "two zero bytes"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 0), "dtype code 0x07"),
        (b"\x00\x00\x08\x02" + struct.pack(">I", 1), "truncated IDX header"),
        (idx_bytes(np.zeros(3, np.uint8), 0x08) + b"x", "corrupt"),
    ],
)
def test_read_idx_rejects_bad_headers(tmp_path: Path, blob: bytes, fragment: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(blob)
    with pytest.raises(ConfigError, match=fragment) as err:
        read_idx(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_read_idx_truncated_gzip_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 50), np.uint8), 0x08))[:20])
    with pytest.raises(ConfigError, match="gzip") as err:
        read_idx(path)
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        read_idx(tmp_path / "nope")


# --------------------------------------------------------------------------- CIFAR-10
def write_cifar(folder: Path, names: list[bytes] | None = None) -> None:
    folder.mkdir(parents=True)
    for i in range(1, 6):
        # Image k of batch i: red plane = 10*i + k, green = 100, blue = 200.
        data = np.empty((5, 3072), np.uint8)
        for k in range(5):
            data[k, :1024], data[k, 1024:2048], data[k, 2048:] = 10 * i + k, 100, 200
        batch = {b"data": data, b"labels": [(i + k) % 10 for k in range(5)]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    test = {b"data": np.full((3, 3072), 7, np.uint8), b"labels": [9, 8, 7]}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    if names is not None:
        (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))


def test_read_cifar10_shapes_channel_order_labels_names(tmp_path: Path) -> None:
    names = [f"c{i}".encode() for i in range(10)]
    write_cifar(tmp_path / "cifar", names)
    x_train, y_train, x_test, y_test, class_names = read_cifar10(tmp_path / "cifar")
    assert x_train.shape == (25, 3, 32, 32) and x_train.dtype == np.uint8
    assert x_test.shape == (3, 3, 32, 32)
    assert y_train.dtype == np.int64 and y_train[:5].tolist() == [1, 2, 3, 4, 5]
    assert y_test.tolist() == [9, 8, 7]
    # Image 2 of batch 3 (index 12): R plane first, then G, then B.
    assert (x_train[12, 0] == 32).all()
    assert (x_train[12, 1] == 100).all() and (x_train[12, 2] == 200).all()
    assert class_names == tuple(f"c{i}" for i in range(10))


def test_read_cifar10_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data_batch_1.*cifar.html"):
        read_cifar10(tmp_path / "absent")
    write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 10))}))
    with pytest.raises(ConfigError, match="data_batch_3.*b'labels'"):
        read_cifar10(tmp_path / "c")


def test_read_cifar10_refuses_arbitrary_pickled_code(tmp_path: Path) -> None:
    write_cifar(tmp_path / "c")

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    (tmp_path / "c" / "test_batch").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ConfigError, match="test_batch.*not allowed"):
        read_cifar10(tmp_path / "c")


def test_cifar10_loader_default_names_and_parent_root(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py")  # no batches.meta
    ds = load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), np.random.default_rng(0))
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.class_names[0] == "airplane"
    with pytest.raises(ConfigError, match="^data.root: CIFAR-10 folder not found: .*x; .*data_batch_1..data_batch_5"):
        load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "x")),
                     np.random.default_rng(0))


# --------------------------------------------------------------------------- Fashion-MNIST
def write_fashion(folder: Path, n_train: int = 40, n_test: int = 20, gz: bool = True) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for stem, arr, code in ((f"{prefix}-images-idx3-ubyte", images, 0x08),
                                (f"{prefix}-labels-idx1-ubyte", labels, 0x08)):
            blob = idx_bytes(arr, code)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / stem).write_bytes(blob)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_loader_from_root(tmp_path: Path, gz: bool) -> None:
    write_fashion(tmp_path / "fm", gz=gz)
    ds = load_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path / "fm")),
                      np.random.default_rng(0))
    assert ds.x_train.shape == (40, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert ds.y_train.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert ds.class_names == FASHION_MNIST_CLASSES and ds.class_names[0] == "T-shirt/top"
    assert abs(float(ds.x_train.mean())) < 1e-5


def test_fashion_mnist_missing_root_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path)),
                     np.random.default_rng(0))
    msg = str(err.value)
    assert msg.startswith("data.root: Fashion-MNIST file not found: ")
    assert "train-images-idx3-ubyte(.gz)" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "\n" not in msg


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_real_files_default_root() -> None:
    ds = load_dataset(DataConfig(dataset="fashion_mnist"), np.random.default_rng(0))
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_train.numpy()).tolist() == [6000] * 10


# --------------------------------------------------------------------------- digits
def test_digits_shapes_normalization_stratified_split() -> None:
    ds = load_dataset(DataConfig(dataset="digits", test_fraction=0.25), np.random.default_rng(0))
    assert isinstance(ds, Dataset) and ds.name == "digits"
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert len(ds.y_test) == pytest.approx(0.25 * 1797, abs=1)
    assert ds.x_train.dtype.is_floating_point and ds.y_train.dtype.is_signed
    assert abs(float(ds.x_train.mean())) < 1e-5 and float(ds.x_train.std()) == pytest.approx(1, abs=1e-3)
    # Stratified: every class keeps ~25% of its samples in the test split.
    test_counts = np.bincount(ds.y_test.numpy(), minlength=10)
    total = test_counts + np.bincount(ds.y_train.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * total) <= 1)


def test_digits_determinism_and_subsampling() -> None:
    cfg = DataConfig(dataset="digits", max_train_samples=200, max_test_samples=50)
    a = load_dataset(cfg, np.random.default_rng(3))
    b = load_dataset(cfg, np.random.default_rng(3))
    c = load_dataset(cfg, np.random.default_rng(4))
    assert a.x_train.shape == (200, 1, 8, 8) and a.x_test.shape == (50, 1, 8, 8)
    assert np.bincount(a.y_train.numpy()).tolist() == [20] * 10  # stratified
    assert (a.x_train == b.x_train).all() and (a.y_test == b.y_test).all()
    assert not (a.x_train == c.x_train).all()
    assert abs(float(a.x_train.mean())) < 1e-5  # statistics after subsampling


def test_stratified_subsample_proportions() -> None:
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    idx = stratified_subsample(labels, 10, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [6, 3, 1]
    assert np.all(np.diff(idx) > 0)
    assert len(stratified_subsample(labels, 500, np.random.default_rng(0))) == 100


def test_registry_lists_datasets() -> None:
    assert DATASETS.names() == ["cifar10", "digits", "fashion_mnist"]
    with pytest.raises(ConfigError, match="data.dataset: unknown dataset 'mnist'; known: cifar10"):
        DATASETS.get("mnist", "data.dataset")
