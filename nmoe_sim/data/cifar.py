"""A reader for the python version of CIFAR-10 (Krizhevsky, 2009): ``cifar-10-batches-py``.

Each batch is a pickled dict with ``b'data'`` (N x 3072 uint8: the 1024 red, then green,
then blue values of a 32x32 image, row-major) and ``b'labels'`` (N ints); ``batches.meta``
holds ``b'label_names'``. The files were written by Python 2, hence ``encoding='bytes'``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from nmoe_sim.errors import ConfigError

TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
DEFAULT_CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
_HOW_TO_GET = (
    "download the 'CIFAR-10 python version' from https://www.cs.toronto.edu/~kriz/cifar.html, "
    "unpack it and set data.root to its cifar-10-batches-py folder"
)
CifarArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]

# Unpickling runs code named by the file; a dataset folder is not trusted code, so only
# the globals a pickled numpy array needs are allowed (numpy 1.x and 2.x module names).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _load_pickle(path: Path, key: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{key}: CIFAR-10 file not found: {path}; {_HOW_TO_GET}")
    try:
        with path.open("rb") as fh:
            return _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: corrupt CIFAR-10 pickle ({exc})") from None


def _read_batch(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_pickle(path, key)
    bad = ConfigError(
        f"{path}: not a CIFAR-10 python batch; expected a pickled dict with b'data' "
        "(N x 3072 uint8) and b'labels' (N ints)"
    )
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise bad
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise bad
    # Rows are channel-major (R plane, G plane, B plane), so a plain reshape gives NCHW.
    images = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)
    return images, labels


def _read_class_names(folder: Path, key: str) -> tuple[str, ...]:
    path = folder / META_FILE
    if not path.is_file():  # optional: the names are standard
        return DEFAULT_CLASS_NAMES
    meta = _load_pickle(path, key)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not names:
        return DEFAULT_CLASS_NAMES
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def read_cifar10(folder: Path, key: str = "data.root") -> CifarArrays:
    """Read ``cifar-10-batches-py``: (x_train, y_train, x_test, y_test, class_names).

    Images are uint8 (N, 3, 32, 32), labels int64. ``key`` names the config key the folder
    came from, for error messages.
    """
    folder = Path(folder)
    train = [_read_batch(folder / name, key) for name in TRAIN_BATCHES]
    x_test, y_test = _read_batch(folder / TEST_BATCH, key)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    class_names = _read_class_names(folder, key)
    labels = np.concatenate([y_train, y_test])
    lo, hi = int(labels.min(initial=0)), int(labels.max(initial=0))
    if lo < 0 or hi >= len(class_names):
        raise ConfigError(
            f"{folder}: CIFAR-10 labels must lie in 0..{len(class_names) - 1}, found {lo}..{hi}"
        )
    return x_train, y_train, x_test, y_test, class_names
