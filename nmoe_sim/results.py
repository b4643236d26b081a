"""The run directory: a fresh folder per run, every file written atomically.

A file is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX), so an interrupted run never leaves a half-written file
and an earlier run is never overwritten. The layout is documented in docs/results-format.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from nmoe_sim.errors import ConfigError
from nmoe_sim.record import HopRecord, Recorder, RoundRecord, record_row


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(data), indent=2) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(header), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def new_run_dir(root: Path, scenario: str, seed: int) -> Path:
    """results/<scenario>/<YYYYmmdd-HHMMSS>-seed<seed>[-n]/, created exclusively (never reused)."""
    base = root / scenario
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out: cannot create {base}: {exc.strerror}") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = base / (f"{stamp}-seed{seed}" + ("" if n == 1 else f"-{n}"))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"--out: too many runs named {stamp} in {base}")


def fieldnames(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


EVENT_COLUMNS = ["kind", "stage", "tag", "src", "dst", "node", "size_bytes", "flops", "start_s", "end_s",
                 "attempts", "delivered", "reason", "hops", "airtime_s", "energy_j", "snr_db"]


def write_records(run_dir: Path, rec: Recorder) -> None:
    events = [{"kind": "transfer", **record_row(t)} for t in rec.transfers]
    events += [{"kind": "compute", **record_row(c)} for c in rec.computes]
    events.sort(key=lambda e: (e["start_s"], e["end_s"]))
    write_csv(run_dir / "events.csv", EVENT_COLUMNS, events)
    write_csv(run_dir / "hops.csv", fieldnames(HopRecord), (record_row(h) for h in rec.hops))
    write_csv(run_dir / "rounds.csv", fieldnames(RoundRecord), (record_row(r) for r in rec.rounds))
    qcols = ["system", "client", "query", "start_s", "end_s", "latency_s", "experts", "delivered"]
    write_csv(run_dir / "queries.csv", qcols, ({**record_row(q), "latency_s": q.latency_s} for q in rec.queries))
