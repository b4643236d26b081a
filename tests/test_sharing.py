"""Processor sharing against a brute-force reference: random flows on random radios, with
rate changes midway, finish when a global recompute-everything fluid model says they do."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import simpy

from nmoe_sim.net.sharing import SharedRadios


def reference_finish_times(flows: list[dict[str, Any]]) -> list[float]:
    """Event-by-event fluid model: every event recomputes every active flow's share."""
    t, done = 0.0, [None] * len(flows)
    left = [f["bits"] for f in flows]
    rate_full = [f["rate"] for f in flows]
    changes = sorted((f["change_at"], i) for i, f in enumerate(flows) if f.get("change_at") is not None)
    while any(d is None for d in done):
        active = [i for i, f in enumerate(flows) if f["start"] <= t + 1e-15 and done[i] is None]
        load: dict[Any, int] = {}
        for i in active:
            for r in flows[i]["radios"]:
                load[r] = load.get(r, 0) + 1
        rate = {i: rate_full[i] / max(load[r] for r in flows[i]["radios"]) for i in active}
        nexts = [f["start"] for f in flows if f["start"] > t + 1e-15]
        nexts += [c for c, i in changes if c > t + 1e-15 and done[i] is None]
        nexts += [t + left[i] / rate[i] for i in active]
        t_next = min(nexts)
        for i in active:
            left[i] -= rate[i] * (t_next - t)
        t = t_next
        for i in active:
            if left[i] <= 1e-9 * flows[i]["bits"]:
                done[i] = t
        for c, i in changes:
            if abs(c - t) < 1e-15 and done[i] is None:
                rate_full[i] = flows[i]["new_rate"]
    return done  # type: ignore[return-value]


def simulated_finish_times(flows: list[dict[str, Any]]) -> list[float]:
    env = simpy.Environment()
    radios = SharedRadios(env)
    finish = [0.0] * len(flows)

    def one(i: int, f: dict[str, Any]) -> Any:
        yield env.timeout(f["start"])
        flow = radios.start(f["bits"], f["rate"], f["radios"])
        if f.get("change_at") is not None:
            wait = env.timeout(f["change_at"] - f["start"])
            yield flow.done | wait
            if not flow.done.triggered:
                radios.set_rate(flow, f["new_rate"])
        yield flow.done
        finish[i] = env.now

    for i, f in enumerate(flows):
        env.process(one(i, f))
    env.run()
    assert radios.active == 0
    return finish


@pytest.mark.parametrize("seed", range(8))
def test_random_flows_match_the_brute_force_fluid_model(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ["a", "b", "c", "d", "bs-up"]
    flows = []
    for _ in range(int(rng.integers(3, 12))):
        radios = tuple(sorted(set(rng.choice(names, size=int(rng.integers(1, 3)), replace=False))))
        f = {"start": float(rng.uniform(0, 2)), "bits": float(rng.uniform(1e5, 1e6)),
             "rate": float(rng.uniform(1e5, 1e6)), "radios": radios}
        if rng.random() < 0.5:
            f["change_at"] = f["start"] + float(rng.uniform(0.01, 1.0))
            f["new_rate"] = float(rng.uniform(1e5, 2e6))
        flows.append(f)
    assert simulated_finish_times(flows) == pytest.approx(reference_finish_times(flows), rel=1e-9)


def test_a_rate_change_moves_only_that_flow() -> None:
    env = simpy.Environment()
    radios = SharedRadios(env)
    a = radios.start(1e6, 1e6, ("x",))
    b = radios.start(1e6, 1e6, ("x",))
    ends: dict[str, float] = {}
    a.done.callbacks.append(lambda _e: ends.setdefault("a", env.now))
    b.done.callbacks.append(lambda _e: ends.setdefault("b", env.now))
    env.run(until=0.5)
    radios.set_rate(a, 4e6)  # a's own link got better; both still hold half of radio x
    assert (a.rate_bps, b.rate_bps) == (2e6, 5e5)
    env.run()
    # a: 0.25 Mbit by 0.5 s, the other 0.75 at 2 Mbit/s -> 0.875 s. b: 0.4375 Mbit by then,
    # the other 0.5625 alone at 1 Mbit/s -> 1.4375 s.
    assert ends["a"] == pytest.approx(0.875, rel=1e-12) and ends["b"] == pytest.approx(1.4375, rel=1e-12)
    assert radios.active == 0 and b.sent_bits == 1e6
