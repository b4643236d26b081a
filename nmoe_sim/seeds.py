"""Injected randomness: one independent, named stream per component, derived from the seed.

A component asks for ``streams.numpy("partition")`` or ``streams.torch("stage1/client3")``;
the stream depends only on the scenario seed and the name, never on the order in which
other components drew numbers, so adding a component does not shift anyone else's draws.

Injected faults (engine/faults.py) draw only from their own streams, and only when the
scenario has faults: ``faults/crash`` (the clients a crash ``fraction`` picks),
``faults/crash_rate/<client>`` (that client's Poisson crash times) and
``faults/dropout/<stage>/r<round>`` (one uniform per participant of that round).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


class SeedStreams:
    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def _sequence(self, name: str) -> np.random.SeedSequence:
        # crc32 is stable across processes (unlike hash()), so names map to fixed streams.
        return np.random.SeedSequence([self.seed, zlib.crc32(name.encode("utf-8"))])

    def numpy(self, name: str) -> np.random.Generator:
        return np.random.default_rng(self._sequence(name))

    def torch(self, name: str) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(int(self._sequence(name).generate_state(1, dtype=np.uint64)[0] >> 1))
        return gen

    def int_seed(self, name: str) -> int:
        return int(self._sequence(name).generate_state(1, dtype=np.uint32)[0])
