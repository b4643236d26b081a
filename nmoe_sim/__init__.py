"""nmoe-sim: a network-emulation testbed for federated Networked Mixture-of-Experts.

Two clocks are kept apart on purpose: PyTorch learns for real on the host, while a SimPy
environment owns simulated time and charges every transfer and computation to it.
"""

__version__ = "0.1.0"
