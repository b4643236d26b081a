"""What the course labs (docs/labs/) share: their size switch and their figures.

Each lab notebook starts with ``SIZE = lab_size()``: ``full`` (the default, the lab as
the handout describes it, under 2 minutes on a 2-core laptop) or ``tiny`` (the same cells
on a few rounds, seconds; the test suite runs every notebook so). ``NMOE_LAB_SIZE`` sets
it from outside, ``NMOE_LAB_OUT`` where the runs go. The figures live in one module per lab,
built on the API's RunResult, so that a test can check each one has a title and units.
"""

from __future__ import annotations

import os
from pathlib import Path

from nmoe_sim.config import REPO_ROOT
from nmoe_sim.errors import ConfigError

SIZES = ("full", "tiny")


def lab_size() -> str:
    """``NMOE_LAB_SIZE`` (full or tiny), full when unset."""
    size = os.environ.get("NMOE_LAB_SIZE", "full")
    if size not in SIZES:
        raise ConfigError(f"NMOE_LAB_SIZE: unknown size {size!r}; known: {', '.join(SIZES)}")
    return size


def lab_out() -> Path:
    """Where a lab's runs go: ``NMOE_LAB_OUT``; else the checkout's ``results/labs`` (git
    ignores it; a notebook's working directory is docs/labs/), else ``results/labs`` under the
    working directory (an installed package)."""
    if "NMOE_LAB_OUT" in os.environ:
        return Path(os.environ["NMOE_LAB_OUT"])
    checkout_results = REPO_ROOT / "results"
    return (checkout_results if checkout_results.is_dir() else Path("results")) / "labs"
