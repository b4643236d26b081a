"""A sweep's record of its points: points.json (each point's status, config hash and any
failure as one line) and the hash of a point's resolved config that says what its results
came from. Apart from :mod:`nmoe_sim.sweep`, which decides what runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import yaml

from nmoe_sim.config import Scenario
from nmoe_sim.errors import ConfigError
from nmoe_sim.results import atomic_write_text

if TYPE_CHECKING:
    from nmoe_sim.sweep import SweepPoint

CONFIG_HASH_FILE = "config.sha256"


def _canonical_hash(data: Any) -> str:
    # ``output`` (plots, formats, results root) never changes what a point computes.
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "output"}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_hash(cfg: Scenario) -> str:
    """sha256 of the resolved config, less its ``output`` section, as canonical JSON: what
    a point's results came from."""
    return _canonical_hash(cfg.to_dict())


def stored_hash(run_dir: Path) -> str | None:
    """The hash of the config a finished point ran with: its ``config.sha256``, or for a
    point run before hashes were stored, that of the ``config.yaml`` the runner wrote."""
    path = Path(run_dir) / CONFIG_HASH_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    legacy = Path(run_dir) / "config.yaml"
    try:
        return _canonical_hash(yaml.safe_load(legacy.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


class PointFailure(Exception):
    """A point's failure already put in one line where it ran (a Ray worker): kept as it is."""


def one_line(exc: BaseException) -> str:
    """A failure as one line: a ConfigError's own message, else the type and first line."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(exc, (ConfigError, PointFailure)) else f"{type(exc).__name__}: {first}".rstrip(": ")


def write_points(sweep_dir: Path, points: Sequence["SweepPoint"], status: dict["SweepPoint", str],
                 hashes: dict["SweepPoint", str] | None = None,
                 reasons: dict["SweepPoint", str] | None = None) -> Path:
    entries = []
    for p in points:
        entry: dict[str, Any] = {
            "id": p.point_id,
            "overrides": list(p.overrides),
            "seed": p.seed,
            "run_dir": p.run_dir(Path(".")).as_posix(),
            "status": status.get(p, "pending"),
        }
        if hashes is not None:
            entry["config_sha256"] = hashes[p]
        if reasons and p in reasons:
            entry["reason"] = reasons[p]
        entries.append(entry)
    text = json.dumps({"points": entries}, indent=2) + "\n"
    return atomic_write_text(Path(sweep_dir) / "points.json", text)


def load_points(sweep_dir: Path) -> list["SweepPoint"]:
    """The points a sweep directory's points.json lists."""
    path = Path(sweep_dir) / "points.json"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: not a sweep directory (no points.json)")
    entries = json.loads(path.read_text(encoding="utf-8"))["points"]
    from nmoe_sim.sweep import SweepPoint

    return [SweepPoint(tuple(e["overrides"]), int(e["seed"])) for e in entries]
