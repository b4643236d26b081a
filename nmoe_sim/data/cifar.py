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


_EXPECTED_FILES = "data_batch_1..data_batch_5 and test_batch (batches.meta, with the class names, optional)"
_BATCH_FORMAT = "a pickled dict with b'data' (N x 3072 uint8) and b'labels' (N ints)"


def check_cifar10_folder(folder: Path, key: str = "data.root") -> None:
    """Raise one clear error when ``folder`` or a batch file is missing, reading nothing.

    Cheap enough to run before a run directory is made (cli), so a wrong ``data.root``
    leaves nothing behind.
    """
    folder = Path(folder)
    if not folder.is_dir():
        # A relative root is read from the working folder: say which one was meant.
        where = folder if folder.is_absolute() else f"{folder} (that is, {folder.absolute()})"
        raise ConfigError(
            f"{key}: CIFAR-10 folder not found: {where}; it must be the extracted "
            f"cifar-10-batches-py folder holding {_EXPECTED_FILES}; {_HOW_TO_GET}"
        )
    missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH) if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"{key}: CIFAR-10 file not found: {', '.join(str(folder / m) for m in missing)}; "
            f"the folder must hold {_EXPECTED_FILES}; {_HOW_TO_GET}"
        )


def _load_pickle(path: Path, key: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{key}: CIFAR-10 file not found: {path}; {_HOW_TO_GET}")
    try:
        with path.open("rb") as fh:
            return _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, OverflowError, MemoryError, RecursionError) as exc:
        # Any of these is what a truncated or foreign file raises part-way through.
        raise ConfigError(f"{path}: corrupt CIFAR-10 pickle ({type(exc).__name__}: {exc})") from None


def _kind(array: np.ndarray) -> str:
    """What an array holds, in words, for error messages."""
    return {"U": "strings", "S": "bytes", "O": "Python objects", "b": "booleans", "f": "floats",
            "c": "complex numbers"}.get(array.dtype.kind, f"{array.dtype} values")


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, (str, bytes, dict)):
        return None
    try:
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError):  # ragged lists, ints beyond int64
        return None


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_pickle(path, "data.root")

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{path}: not a CIFAR-10 python batch: {what}; expected {_BATCH_FORMAT}")

    if not isinstance(batch, dict):
        raise bad(f"holds a {type(batch).__name__}, not a dict")
    absent = [repr(k) for k in (b"data", b"labels") if k not in batch]
    if absent:
        keys = ", ".join(sorted(repr(k) for k in batch)[:6]) or "none"
        raise bad(f"no {' or '.join(absent)} (keys: {keys})")
    data, labels = _as_array(batch[b"data"]), _as_array(batch[b"labels"])
    if data is None or data.dtype.kind not in "ui":
        raise bad(f"b'data' holds {_kind(data) if data is not None else 'a ' + type(batch[b'data']).__name__}")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] == 0:
        raise bad(f"b'data' has shape {data.shape}")
    if data.dtype != np.uint8 and (data.min() < 0 or data.max() > 255):
        raise bad(f"b'data' values {data.min()}..{data.max()} lie outside 0..255")
    if labels is None or labels.dtype.kind not in "ui":
        raise bad(f"b'labels' holds {_kind(labels) if labels is not None else 'a ' + type(batch[b'labels']).__name__}")
    if labels.shape != (data.shape[0],):
        raise bad(f"b'labels' has shape {labels.shape} for {data.shape[0]} images")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ConfigError(f"{path}: CIFAR-10 labels must lie in 0..{num_classes - 1}, found {lo}..{hi}")
    # Rows are channel-major (R plane, G plane, B plane), so a plain reshape gives NCHW.
    images = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)
    return images, labels.astype(np.int64, copy=False)


def _read_class_names(folder: Path) -> tuple[str, ...]:
    path = folder / META_FILE
    if not path.is_file():  # optional: the names are standard
        return DEFAULT_CLASS_NAMES
    meta = _load_pickle(path, "data.root")
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if (not isinstance(names, (list, tuple)) or not names
            or not all(isinstance(n, (bytes, str)) for n in names)):
        raise ConfigError(f"{path}: not a CIFAR-10 batches.meta; expected a pickled dict with "
                          "b'label_names' (a list of class names as bytes)")
    try:
        return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: b'label_names' are not UTF-8 text") from None


def read_cifar10(folder: Path, key: str = "data.root") -> CifarArrays:
    """Read ``cifar-10-batches-py``: (x_train, y_train, x_test, y_test, class_names).

    Images are uint8 (N, 3, 32, 32), labels int64. ``key`` names the config key the folder
    came from, for error messages. Every malformed file raises a one-line ConfigError
    naming it: never a numpy error, and never silently wrapped values.
    """
    folder = Path(folder)
    check_cifar10_folder(folder, key)
    class_names = _read_class_names(folder)
    train = [_read_batch(folder / name, len(class_names)) for name in TRAIN_BATCHES]
    x_test, y_test = _read_batch(folder / TEST_BATCH, len(class_names))
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test, class_names
