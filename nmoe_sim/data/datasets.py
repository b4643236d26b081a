"""Datasets as normalized NCHW tensors: digits (embedded in scikit-learn), Fashion-MNIST
(IDX files) and CIFAR-10 (python pickles), each read from its standard distribution.

Every loader goes through the same finish: optional stratified subsampling (to make runs
fast), then per-channel standardization with statistics of the (subsampled) train split
only, so nothing about the test set leaks into training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from nmoe_sim.config import DataConfig
from nmoe_sim.data.cifar import check_cifar10_folder, read_cifar10
from nmoe_sim.data.idx import read_idx
from nmoe_sim.errors import ConfigError
from nmoe_sim.registry import Registry

FASHION_MNIST_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_DEFAULT_ROOT = Path("data/cifar-10-batches-py")
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


# eq=False: a generated __eq__ would compare tensors elementwise and fail on truth value.
@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32, per-channel standardized on the train split
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, C, H, W) float32, standardized with the train statistics
    y_test: torch.Tensor  # (M,) int64
    num_classes: int
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


DatasetLoader = Callable[[DataConfig, np.random.Generator], Dataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def load_dataset(cfg: DataConfig, rng: np.random.Generator) -> Dataset:
    return DATASETS.get(cfg.dataset, "data.dataset")(cfg, rng)


# Each dataset's files-present check, reading nothing: the CLI runs it before it makes a
# run directory, so a wrong data.root is one error line and leaves nothing behind.
DatasetCheck = Callable[[DataConfig], None]
DATASET_FILES: Registry[DatasetCheck] = Registry("dataset")


def check_dataset_files(cfg: DataConfig) -> None:
    """Raise the loader's ConfigError now if a file the dataset needs is missing."""
    DATASET_FILES.get(cfg.dataset, "data.dataset")(cfg)


# --------------------------------------------------------------------------- shared finish
def stratified_subsample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` samples keeping class proportions (largest-remainder quotas)."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (n / len(labels))
    quota = np.floor(exact).astype(np.int64)
    # Hand the leftover samples to the classes with the largest fractional parts; a stable
    # sort keeps ties deterministic. Each gets at most +1, so quota <= ceil(exact) <= count.
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: n - int(quota.sum())]] += 1
    picked = [
        rng.choice(np.flatnonzero(labels == c), size=q, replace=False)
        for c, q in zip(classes, quota)
        if q > 0
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _standardize(
    x_train: np.ndarray, x_test: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel zero mean / unit std, statistics from the train split (float64 sums)."""
    x_train = x_train.astype(np.float64)  # (N, C, H, W)
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)  # (1, C, 1, 1)
    std = x_train.std(axis=(0, 2, 3), keepdims=True)
    std = np.where(std > 0, std, 1.0)  # a constant channel carries no information; keep it 0
    norm_train = ((x_train - mean) / std).astype(np.float32)
    norm_test = ((x_test.astype(np.float64) - mean) / std).astype(np.float32)
    return torch.from_numpy(norm_train), torch.from_numpy(norm_test)


def finish_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: tuple[str, ...],
    cfg: DataConfig,
    rng: np.random.Generator,
) -> Dataset:
    """Subsample (if asked) then standardize raw NCHW arrays into a :class:`Dataset`."""
    if cfg.max_train_samples is not None:
        keep = stratified_subsample(y_train, cfg.max_train_samples, rng)
        x_train, y_train = x_train[keep], y_train[keep]
    if cfg.max_test_samples is not None:
        keep = stratified_subsample(y_test, cfg.max_test_samples, rng)
        x_test, y_test = x_test[keep], y_test[keep]
    t_train, t_test = _standardize(x_train, x_test)
    return Dataset(
        name=name,
        x_train=t_train,
        y_train=torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        x_test=t_test,
        y_test=torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
        num_classes=len(class_names),
        class_names=tuple(class_names),
    )


# --------------------------------------------------------------------------- loaders
@DATASET_FILES.register("digits")
def _digits_files(cfg: DataConfig) -> None:
    """Embedded in scikit-learn: nothing to find."""


@DATASETS.register("digits")
def load_digits_dataset(cfg: DataConfig, rng: np.random.Generator) -> Dataset:
    """scikit-learn's 8x8 digits (values 0..16); no test split, so a stratified one is made."""
    bunch = load_digits()
    images = bunch.images[:, None, :, :]  # (1797, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=cfg.test_fraction,
        stratify=labels,
        random_state=int(rng.integers(0, 2**32 - 1)),
    )
    names = tuple(str(n) for n in bunch.target_names)
    return finish_dataset(
        "digits", images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
        names, cfg, rng,
    )


def _fashion_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"data.root: Fashion-MNIST file not found: {folder / stem}(.gz); install it with "
        "'apt-get install dataset-fashion-mnist' or set data.root to a folder holding the "
        "four IDX files"
    )


def _fashion_paths(cfg: DataConfig) -> dict[str, Path]:
    folder = Path(cfg.root).expanduser() if cfg.root else FASHION_MNIST_DEFAULT_ROOT
    return {part: _fashion_file(folder, stem) for part, stem in _FASHION_FILES.items()}


@DATASET_FILES.register("fashion_mnist")
def _fashion_files(cfg: DataConfig) -> None:
    _fashion_paths(cfg)


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(cfg: DataConfig, rng: np.random.Generator) -> Dataset:
    paths = _fashion_paths(cfg)
    arrays = {part: read_idx(path) for part, path in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ConfigError(
                f"{paths[f'x_{split}']}: Fashion-MNIST {split} images {x.shape} and labels "
                f"{y.shape} do not match; expected (N, 28, 28) and (N,)"
            )
        if y.size and (y.min() < 0 or y.max() >= len(FASHION_MNIST_CLASSES)):
            raise ConfigError(f"{paths[f'y_{split}']}: Fashion-MNIST labels must lie in 0..9")
    return finish_dataset(
        "fashion_mnist",
        arrays["x_train"][:, None], arrays["y_train"].astype(np.int64),  # add channel axis
        arrays["x_test"][:, None], arrays["y_test"].astype(np.int64),
        FASHION_MNIST_CLASSES, cfg, rng,
    )


def _cifar10_folder(cfg: DataConfig) -> Path:
    folder = Path(cfg.root).expanduser() if cfg.root else CIFAR10_DEFAULT_ROOT
    # Accept the folder the archive unpacks into as well as its parent.
    nested = folder / "cifar-10-batches-py"
    if not (folder / "data_batch_1").is_file() and nested.is_dir():
        folder = nested
    return folder


@DATASET_FILES.register("cifar10")
def _cifar10_files(cfg: DataConfig) -> None:
    key = "data.root" if cfg.root else "data.root (unset: the default)"
    check_cifar10_folder(_cifar10_folder(cfg), key)


@DATASETS.register("cifar10")
def load_cifar10(cfg: DataConfig, rng: np.random.Generator) -> Dataset:
    _cifar10_files(cfg)
    x_train, y_train, x_test, y_test, names = read_cifar10(_cifar10_folder(cfg), "data.root")
    return finish_dataset("cifar10", x_train, y_train, x_test, y_test, names, cfg, rng)
