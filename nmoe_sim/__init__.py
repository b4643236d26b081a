"""nmoe-sim: a network-emulation testbed for federated Networked Mixture-of-Experts.

Two clocks are kept apart on purpose: PyTorch learns for real on the host, while a SimPy
environment owns simulated time and charges every transfer and computation to it.

The Python API (``nmoe_sim.run``, ``nmoe_sim.load``, ``nmoe_sim.scenario``; docs/api.md)
is imported on first use, so that ``import nmoe_sim`` (and with it ``nmoe-sim validate``)
stays free of pandas and torch.
"""

from typing import Any

__version__ = "0.1.0"

_API = ("run", "load", "scenario", "RunResult", "RunInterrupted")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from nmoe_sim import api

        return getattr(api, name)
    raise AttributeError(f"module 'nmoe_sim' has no attribute {name!r}")
