"""``status.json``: where a run stands (running, interrupted, failed, finished), for a user,
a script or ``--resume`` to read; and the hidden temporaries a killed write leaves.

The format is in docs/results-format.md. Every write is atomic (``results.atomic_write_bytes``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from nmoe_sim.results import atomic_write_bytes

STATUS_FILE = "status.json"


def read_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_status(run_dir: Path, state: str, **fields: Any) -> dict[str, Any]:
    """Update ``status.json``: ``state`` is running, interrupted, failed or finished."""
    status = read_status(run_dir) or {}
    status.update(fields, state=state, updated=_now())
    atomic_write_bytes(run_dir / STATUS_FILE, (json.dumps(status, indent=2) + "\n").encode("utf-8"))
    return status


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def still_running(status: dict[str, Any] | None) -> int | None:
    """The pid of the process that says it is running this run, if it is alive (and not us)."""
    if not status or status.get("state") != "running" or not isinstance(status.get("pid"), int):
        return None
    pid = status["pid"]
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, someone else's
    try:  # a killed process its parent has not yet reaped is a zombie: not running
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return None
    except (OSError, IndexError):
        pass
    return pid


def resume_command(run_dir: Path) -> str:
    return f"nmoe-sim run --resume {run_dir}"


def clean_temp_files(run_dir: Path) -> list[Path]:
    """Remove the hidden temporaries a killed write left behind (``.<name>.<random>.tmp``)."""
    stale = sorted(p for p in run_dir.glob(".*.tmp") if p.is_file())
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
