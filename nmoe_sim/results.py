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
from nmoe_sim.record import FailureRecord, HopRecord, Recorder, RoundRecord, record_row


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a SIGKILL) sees the old file or the new
    one, never part of one: a temporary in the same folder, fsync-ed, renamed into place.

    A kill between the temporary's creation and the rename leaves a hidden
    ``.<name>.<random>.tmp``; a resumed run removes those (``checkpoint.clean_temp_files``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text; returns ``path``."""
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


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


EVENT_COLUMNS = ["system", "kind", "stage", "tag", "src", "dst", "route", "node", "size_bytes", "link_bytes",
                 "flops", "start_s", "end_s", "attempts", "delivered", "reason", "hops", "airtime_s", "energy_j",
                 "device_energy_j", "infrastructure_energy_j", "snr_db"]
CLIENT_COLUMNS = ["system", "stage", "client", "bytes_sent", "bytes_received", "tx_airtime_s", "rx_airtime_s",
                  "compute_time_s", "compute_energy_j", "radio_energy_j", "device_energy_j"]


def system_order(rec: Recorder) -> dict[str, int]:
    """Systems in the order they first recorded anything (the order they ran)."""
    return {name: i for i, name in enumerate(rec.systems)}


def client_rows(rec: Recorder, clients: Iterable[Any]) -> list[dict[str, Any]]:
    """clients.csv: per (system, stage, client), what its radio carried and its battery paid.

    Bytes sent are the payload the client put on the air as a hop's sender (a relay sends
    what it received), received what reached it over a hop; airtime is split by direction.
    """
    keep = {str(c) for c in clients}
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}

    def row(system: str, stage: str, node: str) -> dict[str, Any]:
        key = (system, stage, node)
        if key not in rows:
            rows[key] = {"system": system, "stage": stage, "client": node, "bytes_sent": 0, "bytes_received": 0,
                         "tx_airtime_s": 0.0, "rx_airtime_s": 0.0, "compute_time_s": 0.0,
                         "compute_energy_j": 0.0, "radio_energy_j": 0.0}
        return rows[key]

    for h in rec.hops:
        if h.u in keep:
            r = row(h.system, h.stage, h.u)
            r["bytes_sent"] += h.size_bytes if h.delivered else 0
            r["tx_airtime_s"] += h.airtime_s
            r["radio_energy_j"] += h.tx_energy_j
        if h.v in keep:
            r = row(h.system, h.stage, h.v)
            r["bytes_received"] += h.size_bytes if h.delivered else 0
            r["rx_airtime_s"] += h.airtime_s
            r["radio_energy_j"] += h.rx_energy_j
    for c in rec.computes:
        if c.node in keep:
            r = row(c.system, c.stage, c.node)
            r["compute_time_s"] += c.end_s - c.start_s
            r["compute_energy_j"] += c.energy_j
    # Stages in the order they first recorded (the recorder's totals keep insertion order).
    stage_rank = {key: i for i, key in enumerate(rec.totals)}
    out = sorted(rows.values(), key=lambda r: (stage_rank[(r["system"], r["stage"])], int(r["client"])))
    for r in out:
        r["device_energy_j"] = r["compute_energy_j"] + r["radio_energy_j"]
    return out


def write_records(run_dir: Path, rec: Recorder, clients: Iterable[Any]) -> None:
    events = [{"kind": "transfer", **record_row(t)} for t in rec.transfers]
    events += [{"kind": "compute", **record_row(c)} for c in rec.computes]
    # Injected faults (docs/faults.md) in the columns they share with the others; a run
    # without faults has none, so its events.csv is unchanged.
    events += [{"kind": "fault", **record_row(f)} for f in rec.faults]
    # Each system ran in its own simulated clock: group by system, then by time within it.
    order = system_order(rec)
    events.sort(key=lambda e: (order[e["system"]], e["start_s"], e["end_s"]))
    write_csv(run_dir / "events.csv", EVENT_COLUMNS, events)
    write_csv(run_dir / "hops.csv", fieldnames(HopRecord), (record_row(h) for h in rec.hops))
    write_csv(run_dir / "rounds.csv", fieldnames(RoundRecord), (record_row(r) for r in rec.rounds))
    write_csv(run_dir / "failures.csv", fieldnames(FailureRecord), (record_row(f) for f in rec.failures))
    qcols = ["system", "client", "query", "start_s", "end_s", "latency_s", "experts", "delivered"]
    write_csv(run_dir / "queries.csv", qcols, ({**record_row(q), "latency_s": q.latency_s} for q in rec.queries))
    write_csv(run_dir / "clients.csv", CLIENT_COLUMNS, client_rows(rec, clients))
