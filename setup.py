"""nmoe-sim: network-emulation testbed for federated Networked Mixture-of-Experts."""

from pathlib import Path

from setuptools import find_packages, setup

# package -> (folder in the repository, the files it ships). The scenario folders are
# listed one by one: a package per folder is how setuptools maps a folder anywhere.
ASSETS = {
    "nmoe_sim._assets.channel": ("channel", ("*.yaml",)),
    "nmoe_sim._assets.topologies": ("topologies", ("*.yaml", "*.graphml")),
    "nmoe_sim._assets.scenarios": ("scenarios", ("*.yaml",)),
    "nmoe_sim._assets.scenarios.paper": ("scenarios/paper", ("*.yaml",)),
    "nmoe_sim._assets.scenarios.labs": ("scenarios/labs", ("*.yaml",)),
}

setup(
    name="nmoe-sim",
    version="0.1.0",
    description="Federated Networked Mixture-of-Experts over an emulated wireless network",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8")
    if Path(__file__).with_name("README.md").exists()
    else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nmoe_sim", "nmoe_sim.*"]) + list(ASSETS),
    # The presets and scenarios live at the top of the repository (the layout the design
    # names, and what a checkout reads); an installed package carries them as package data
    # under nmoe_sim/_assets/, where nmoe_sim.config.asset_dir finds them from any folder.
    package_dir={name: folder for name, (folder, _) in ASSETS.items()},
    package_data={name: list(globs) for name, (_, globs) in ASSETS.items()},
    # Ranges, not pins: the README's install command pins torch to a CPU build so that pip
    # never reaches for a multi-GB CUDA wheel on a CPU-only machine.
    install_requires=[
        "torch>=2.2,<3",
        "numpy>=1.25",
        "scipy>=1.10",
        "simpy>=4.0,<5",
        "networkx>=3.0",
        "pydantic>=2.5,<3",
        "PyYAML>=6.0",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "rich>=13",
        "kornia>=0.7",
        "pandas>=1.5",
    ],
    extras_require={
        "vision": ["torchvision"],  # optional: nothing in nmoe-sim imports it
        "test": ["pytest>=7", "hypothesis>=6", "nbformat>=5.7", "nbclient>=0.7", "ipykernel>=6"],
        # optional: runtime.executor: ray and `nmoe-sim sweep --executor ray` (docs/cluster.md);
        # only nmoe_sim/engine/ray_executor.py and nmoe_sim/ray_sweep.py import it.
        "ray": ["ray>=2.9"],
    },
    entry_points={"console_scripts": ["nmoe-sim=nmoe_sim.cli:main"]},
)
