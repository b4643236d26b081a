"""What every system runs on: local computations as described tasks, and the executors
that run them while simulated time is charged from FLOPs (docs/architecture.md)."""

# engine/fault_config.py derives from config.Strict and config.py imports it back: loading
# config first, whichever of the two a caller imports, keeps that cycle well ordered.
import nmoe_sim.config  # noqa: E402,F401
