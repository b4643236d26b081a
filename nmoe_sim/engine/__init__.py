"""What every system runs on: local computations as described tasks, and the executors
that run them while simulated time is charged from FLOPs (docs/architecture.md)."""

