"""The expert-output exchange before stage 3: every client needs every expert's output on
its own training samples, which is communication, and is charged (``stage3.expert_outputs``).

* ``features`` (the default): each client sends its training features to every other
  expert's client and gets class probabilities back: n(n-1) exchanges of n_c x D values
  out and n_c x K back, the expert computed on the expert's device. Only features travel.
  Its transfer count grows as n^2.
* ``expert_weights``: each client uploads its expert's weights to the base station once,
  and downloads the bundle of the other experts that arrived; it then runs every expert
  on its own features, on its own device. 2n transfers (the download is (n-1) experts'
  weights), so its simulation cost grows as n, while its bytes on the air grow as n^2
  expert sizes and its compute moves to the client. The experts' weights leave their
  owners, which ``features`` never asks.
Both give the same probabilities for every pair whose transfers arrived, so what the gate
learns differs only by what the network dropped. With candidate experts
(``stage3.candidates``, :mod:`nmoe_sim.fl.candidates`) only the pairs (client, one of its
candidates) are exchanged: n k instead of n(n-1), and a client's bundle holds k experts.

Under injected crashes (docs/faults.md) an expert that stage 2 did not train (its client was
down, :func:`~nmoe_sim.fl.stage2.is_trained`) is unavailable to every client, its own
included: it is neither asked, uploaded nor run, so the gate learns with it masked. An
expert computation refused or cut short by a crash (the executor's value None) delivers
nothing either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generator, Optional, Sequence

import numpy as np
import simpy
import torch

from nmoe_sim.fl.rounds import BS
from nmoe_sim.fl.routing import StackedExperts
from nmoe_sim.fl.stage2 import is_trained
from nmoe_sim.models import Expert, forward_flops_per_sample
from nmoe_sim.registry import Registry

if TYPE_CHECKING:
    from nmoe_sim.fl.stage3 import NMoEParts
    from nmoe_sim.world import Sim, World


@dataclass
class GateData:
    """A client's gate-training set: features, labels, every expert's probability of the
    true class (all the gate targets need; K times smaller than the full (n, E, K)
    probabilities, which at 1,000 clients held 2.4 GB), availability."""

    feats: torch.Tensor  # (n, D)
    y: torch.Tensor  # (n,)
    true_p: torch.Tensor  # (n, E): expert j's probability of sample i's true class
    available: torch.Tensor  # (E,) bool: experts whose outputs reached this client
    # (E,) bool: experts this client's gate chooses among: trained ones in its candidate set
    # (all without stage3.candidates). One open but not available is a lost transfer: the
    # gate ranks it below the best it heard from (engine/losses.py). None: every expert.
    open: Optional[torch.Tensor] = None


@torch.no_grad()
def expert_probs(expert: Expert, feats: torch.Tensor) -> torch.Tensor:
    """(n, D) -> (n, K) class probabilities. no_grad here, never around a ``yield``: grad mode
    is thread-global and SimPy would run other processes' training inside it."""
    return torch.softmax(expert(feats), -1)


# (world, sim, parts, stage, candidates: per client its allowed experts, or None for all).
Candidates = Optional[Sequence[np.ndarray]]
Exchange = Callable[["World", "Sim", "NMoEParts", str, Candidates], Generator[simpy.Event, Any, list[GateData]]]
EXCHANGES: Registry[Exchange] = Registry("expert-output exchange")


class _Collected:
    """Per client: each expert's true-class probabilities gathered so far (n_c, E) and which
    experts arrived."""

    def __init__(self, world: "World") -> None:
        n = world.n_clients
        self.true_p = [torch.zeros(c.num_samples, n) for c in world.clients]
        self.rows = [torch.arange(c.num_samples) for c in world.clients]
        self.y = [c.y_train for c in world.clients]
        self.available = [torch.zeros(n, dtype=torch.bool) for _ in world.clients]

    def put(self, c: int, j: int, out: torch.Tensor) -> None:
        """``out`` (n_c, K): expert j's class probabilities on client c's samples."""
        self.true_p[c][:, j] = out[self.rows[c], self.y[c]]
        self.available[c][j] = True

    def gate_data(self, world: "World", parts: "NMoEParts", candidates: "Candidates") -> list[GateData]:
        n = world.n_clients
        trained = torch.tensor([is_trained(e) for e in parts.experts], dtype=torch.bool)
        out = []
        for c in range(n):
            open_ = trained.clone()
            if candidates is not None:
                chosen = torch.zeros(n, dtype=torch.bool)
                chosen[torch.as_tensor(candidates[c], dtype=torch.long)] = True
                chosen[c] = True
                open_ &= chosen
            out.append(GateData(parts.train_feats[c], world.clients[c].y_train, self.true_p[c], self.available[c],
                                open_))
        return out


@EXCHANGES.register("features")
def exchange_features(world: "World", sim: "Sim", parts: "NMoEParts", stage: str,
                      candidates: Candidates = None) -> Generator[simpy.Event, Any, list[GateData]]:
    """Every client sends its training features to every other expert and gets probabilities back."""
    n, k_cls = world.n_clients, world.dataset.num_classes
    d = world.cfg.model.feature_dim
    fwd = forward_flops_per_sample(parts.experts[0], (d,))
    got = _Collected(world)

    def ask(c: int, j: int) -> Generator[simpy.Event, Any, None]:
        feats, n_c = parts.train_feats[c], world.clients[c].num_samples
        if j != c:
            rec = yield sim.net.transfer(c, j, world.tensor_bytes(n_c * d), stage=stage, tag=f"features/{c}->{j}")
            if not rec.delivered:
                return
        out = yield sim.executor.compute(j, n_c * fwd, stage=stage, tag=f"expert{j}/for{c}",
                                         fn=lambda: expert_probs(parts.experts[j], feats))
        if out is None:  # only under faults: its device was down, or crashed computing it
            return
        if j != c:
            rec = yield sim.net.transfer(j, c, world.tensor_bytes(n_c * k_cls), stage=stage, tag=f"probs/{j}->{c}")
            if not rec.delivered:
                return
        got.put(c, j, out)

    pairs = [(c, j) for c in range(n) for j in (range(n) if candidates is None else candidates[c].tolist())
             if is_trained(parts.experts[j])]
    yield sim.env.all_of([sim.env.process(ask(c, j)) for c, j in pairs])
    return got.gate_data(world, parts, candidates)


@EXCHANGES.register("expert_weights")
def exchange_expert_weights(world: "World", sim: "Sim", parts: "NMoEParts", stage: str,
                            candidates: Candidates = None) -> Generator[simpy.Event, Any, list[GateData]]:
    """Experts' weights up to the base station once, the others' bundle down; run locally."""
    n = world.n_clients
    d = world.cfg.model.feature_dim
    fwd = forward_flops_per_sample(parts.experts[0], (d,))
    expert_bytes = world.param_bytes(parts.experts[0])
    got = _Collected(world)
    stacked = StackedExperts(parts.experts)  # once, not once per client

    def upload(j: int) -> Generator[simpy.Event, Any, bool]:
        rec = yield sim.net.transfer(j, BS, expert_bytes, stage=stage, tag=f"expert{j}/up")
        return bool(rec.delivered)

    # An expert no other client may use stays on its device.
    wanted = [j for j in (range(n) if candidates is None else sorted(
        {int(j) for c, s in enumerate(candidates) for j in s if j != c})) if is_trained(parts.experts[j])]
    ups = {j: sim.env.process(upload(j)) for j in wanted}
    yield sim.env.all_of(list(ups.values()))
    at_server = [j for j, p in ups.items() if p.value]

    def fetch_and_run(c: int) -> Generator[simpy.Event, Any, None]:
        allowed = None if candidates is None else set(candidates[c].tolist())
        others = [j for j in at_server if j != c and (allowed is None or j in allowed)]
        held = [c] if is_trained(parts.experts[c]) else []
        if others:
            rec = yield sim.net.transfer(BS, c, len(others) * expert_bytes, stage=stage, tag="experts/down")
            if rec.delivered:
                held = sorted(held + others)
        if not held:  # only under faults: nothing arrived and its own expert is untrained
            return
        feats, n_c = parts.train_feats[c], world.clients[c].num_samples
        outs = yield sim.executor.compute(c, len(held) * n_c * fwd, stage=stage, tag=f"experts/for{c}",
                                          fn=lambda: stacked.probs(feats, held))
        if outs is None:  # only under faults: the client was down, or crashed computing them
            return
        for j, out in zip(held, outs):  # outs (len(held), n_c, K)
            got.put(c, j, out)

    yield sim.env.all_of([sim.env.process(fetch_and_run(c)) for c in range(n)])
    return got.gate_data(world, parts, candidates)
