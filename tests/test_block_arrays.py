"""The block clock's array path computes the flow-by-flow path's numbers, bit for bit.

Without faults a block clock keeps its flows' state in arrays (``FlowArrays`` in
SharedRadios, the hops' running accounts beside them) and its links' fading states in a
``GainTable``, and steps them a boundary at a time (docs/results.md section 7, fifth pass).
Each check runs the same scripted network both ways (the flow-by-flow path is what a clock
does when ``SharedRadios.new_group`` gives it no group, as with faults attached) and compares
every record, every hop's per-block SNRs and every SimPy event time exactly.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
import simpy

from nmoe_sim.config import ChannelConfig
from nmoe_sim.net.fading import FADING, GainTable
from nmoe_sim.net.sharing import SharedRadios
from nmoe_sim.net.topology import BS

from test_network import cfg, make


@pytest.mark.parametrize("fading", ["rayleigh", "rician"])
def test_the_gain_table_steps_a_links_fading_as_its_own_gain_calls_do(fading: str) -> None:
    """Consecutive blocks stepped as arrays; gaps, first draws and scalar queries in between
    (a flow starting on a link the table holds) go through the process itself; a changed
    rho (mobility) is read at each step."""
    c = cfg(fading=fading, coherence_time_s=0.01, doppler_hz=30.0, rician_k_db=3.0)
    cls = FADING.get(fading, "fading")
    ref = [cls(c, np.random.default_rng(i)) for i in range(12)]
    mine = [cls(c, np.random.default_rng(i)) for i in range(12)]
    table = GainTable()
    rows = np.array([table.row(p) for p in mine])
    for p in ref[:8] + mine[:8]:  # links 8-11: their first draw happens inside the table
        p.gain(0)
    rng = np.random.default_rng(7)
    for block in range(1, 1500):
        asked = rng.random(12) < 0.9  # the others skip this block: a gap next time
        if block == 700:
            for p in ref + mine:
                p.rho = 0.5
        if block % 61 == 0:  # a scalar query of a held link before the boundary
            for i in (0, 5):
                assert mine[i].gain(block) == ref[i].gain(block)
        want = [ref[i].gain(block) for i in np.flatnonzero(asked)]
        assert table.gains(rows[asked], block).tolist() == want
    assert [p.state for p in ref] == [complex(p.state) if p._bound is None else complex(
        float(table.re[table.row(p)]), float(table.im[table.row(p)])) for p in mine]


def run_network(arrays: bool, monkeypatch: pytest.MonkeyPatch, bs_cfg: ChannelConfig,
                d2d_cfg: ChannelConfig, deadline_s: float) -> tuple[str, list[float]]:
    """A star of 9 clients with D2D links: uploads, downloads and D2D sends with staggered
    starts, some cut at ``deadline_s`` and some at a block boundary instant. Returns a hash
    of every record and per-block SNR, and the time of every SimPy event processed."""
    with monkeypatch.context() as m:
        if not arrays:
            m.setattr(SharedRadios, "new_group", lambda *a, **k: None)
        pos = tuple((100.0 * np.cos(a), 100.0 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 10)[:-1])
        d2d = tuple((i, (i + 1) % 9) for i in range(9))
        env, net, rec = make(pos, d2d=d2d, bs_cfg=bs_cfg, d2d_cfg=d2d_cfg, snr_db=12.0, bs_snr_db=18.0)
        snrs: list[bytes] = []
        close = net._close_hop

        def closing(hop: Any, *args: Any) -> None:
            snrs.append(hop.snrs_db.tobytes())
            close(hop, *args)
        net._close_hop = closing  # type: ignore[method-assign]
        procs: dict[int, simpy.Process] = {}

        def launch(i: int, at_s: float, *args: Any) -> Any:
            yield env.timeout(at_s)
            procs[i] = net.transfer(*args, stage="s", tag=f"t{i}")
        for c in range(9):
            env.process(launch(3 * c, 0.0, c, BS, 60_000))
            env.process(launch(3 * c + 1, 0.013 * c, BS, c, 45_000))
            env.process(launch(3 * c + 2, 0.02 * (c % 3), c, (c + 1) % 9, 30_000))
        tc_s = bs_cfg.coherence_time_s

        def cutter(i: int, at_s: float) -> Any:
            yield env.timeout(at_s)
            if i in procs and procs[i].is_alive:
                procs[i].interrupt("deadline")
        for i in range(0, 27, 4):
            env.process(cutter(i, deadline_s if i % 8 else round(deadline_s / tc_s / 2) * tc_s))
        times: list[float] = []
        while env.peek() != float("inf"):
            times.append(env.peek())
            env.step()
        h = hashlib.sha256()
        for r in rec.transfers + rec.hops:
            h.update(repr(r).encode())
        for s in snrs:
            h.update(s)
        assert sum(len(s) for s in snrs) > 8 * 200  # many blocks were re-rated
        return h.hexdigest(), times


@pytest.mark.parametrize("bs_fading, d2d_fading, outage_db", [
    ("rayleigh", "rayleigh", -10.0),
    ("rician", "nakagami", -10.0),  # one clock: a tabled and an untabled process, two configs
    ("rayleigh", "rician", 6.0),  # frequent outages: flows dropped mid-boundary, retried
])
def test_array_clock_gives_the_flow_by_flow_clocks_records_and_event_times(
        monkeypatch: pytest.MonkeyPatch, bs_fading: str, d2d_fading: str, outage_db: float) -> None:
    kw = dict(coherence_time_s=0.01, doppler_hz=10.0, rate_adaptation="per_block",
              outage_snr_db=outage_db, max_attempts=3, retx_timeout_s=0.004)
    bs_cfg = cfg(fading=bs_fading, rician_k_db=3.0, **kw)
    d2d_cfg = cfg(fading=d2d_fading, rician_k_db=3.0, nakagami_m=0.8, bandwidth_hz=5e5, **kw)
    for deadline_s in (0.05, 0.2):
        want = run_network(False, monkeypatch, bs_cfg, d2d_cfg, deadline_s)
        got = run_network(True, monkeypatch, bs_cfg, d2d_cfg, deadline_s)
        assert got[0] == want[0]
        assert got[1] == want[1]


def test_the_array_path_is_the_one_taken_without_faults() -> None:
    env, net, _ = make(((100.0, 0.0), (-100.0, 0.0)), bs_cfg=cfg(
        fading="rayleigh", coherence_time_s=0.01, doppler_hz=10.0))
    net.transfer(0, BS, 200_000, stage="s", tag="x")
    env.run(until=0.005)
    (clock,) = net._clocks.values()
    assert clock.group is not None and len(clock.group) == 1 and not clock.entries
    env.run()
    assert len(clock.group) == 0
