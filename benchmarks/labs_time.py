#!/usr/bin/env python
"""Wall time of each course lab at its full size: its notebook run top to bottom in a fresh
Jupyter kernel (kernel start, imports, every run and figure), as a student would.

Target: each lab under 120 s on a 2-core machine (issue 13). Prints one line per lab and
exits 1 if any is over. ``--save DIR`` keeps the executed notebooks (their outputs are the
numbers the answer keys quote); ``--lab lab2_fedavg`` runs one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
LABS = ROOT / "docs" / "labs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-s", type=float, default=120.0)
    parser.add_argument("--lab", action="append", help="one lab's name (repeatable; default all)")
    parser.add_argument("--save", type=Path, help="folder for the executed notebooks")
    args = parser.parse_args()
    paths = sorted(LABS.glob("lab*.ipynb"))
    if args.lab:
        paths = [p for p in paths if p.stem in args.lab]
    over = []
    with tempfile.TemporaryDirectory() as out:
        os.environ.update(NMOE_LAB_SIZE="full", NMOE_LAB_OUT=out)  # the kernel inherits them
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            t0 = time.perf_counter()
            # IPC sockets: no TCP port to lose to another process between picking and binding it.
            km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(out) / f"kernel-{path.stem}"))
            NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": out}}).execute()
            wall = time.perf_counter() - t0
            print(f"{path.stem}: {wall:.1f} s wall", flush=True)
            if wall >= args.target_s:
                over.append(path.stem)
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, args.save / path.name)
    verdict = f"OVER the {args.target_s:.0f} s target: {', '.join(over)}" if over else \
        f"every lab within the {args.target_s:.0f} s target"
    print(verdict)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
