"""A generic reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al., 1998).

An IDX file is: two zero bytes, a dtype code byte, a dimension-count byte, one big-endian
uint32 per dimension, then the array in C order, big-endian. Files are often gzipped.
Anything that does not add up raises a one-line :class:`ConfigError` naming the file, so a
half-downloaded dataset is reported as such instead of failing deep inside ``reshape``.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from nmoe_sim.errors import ConfigError

# dtype code -> big-endian numpy dtype, as listed in the format's description.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: IDX file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read IDX file ({exc.strerror or exc})") from None
    # Detect gzip by content as well as by name: files get renamed or decompressed in place.
    if path.suffix == ".gz" or raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ConfigError(f"{path}: corrupt or truncated gzip stream ({exc})") from None
    return raw


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into a native-endian array."""
    if len(raw) < 4:
        raise ConfigError(f"{source}: not an IDX file (only {len(raw)} bytes, header needs 4)")
    if raw[0] != 0 or raw[1] != 0:
        raise ConfigError(f"{source}: not an IDX file (magic number must start with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ConfigError(f"{source}: unknown IDX dtype code 0x{code:02X}; valid: {known}")
    if ndim == 0:
        raise ConfigError(f"{source}: IDX header declares 0 dimensions")
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise ConfigError(f"{source}: truncated IDX header ({ndim} dims need {header_bytes} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected_bytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found_bytes = len(raw) - header_bytes
    if found_bytes != expected_bytes:
        what = "truncated" if found_bytes < expected_bytes else "corrupt"
        raise ConfigError(
            f"{source}: {what} IDX file: header {dims} promises {expected_bytes} data bytes, "
            f"found {found_bytes}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_bytes).reshape(dims)
    # astype copies into a writable, native-endian array (frombuffer views are read-only).
    return data.astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzipped or not; shape and dtype come from its header."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))
