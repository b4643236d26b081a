"""Where presets and scenarios live: the installed package's copies, else the checkout's."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where the presets and scenarios ship inside an installed package (setup.py maps the
# repository's top-level channel/, topologies/ and scenarios/ there). A checkout run from
# the source tree (editable install, PYTHONPATH) has no such folder and reads the top-level
# ones: one copy of each file either way.
PACKAGE_ASSETS_DIR = Path(__file__).resolve().parents[1] / "_assets"
ASSET_FOLDERS = ("channel", "topologies", "scenarios")


def asset_dir(name: str) -> Path:
    """The folder ``name`` (one of ASSET_FOLDERS) of an installed package, else of the checkout."""
    if name not in ASSET_FOLDERS:
        raise ValueError(f"unknown asset folder {name!r}; known: {', '.join(ASSET_FOLDERS)}")
    shipped = PACKAGE_ASSETS_DIR / name
    return shipped if shipped.is_dir() else REPO_ROOT / name


CHANNEL_PRESETS_DIR = asset_dir("channel")
TOPOLOGY_PRESETS_DIR = asset_dir("topologies")
SCENARIOS_DIR = asset_dir("scenarios")

