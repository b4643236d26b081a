"""The network emulation's fast paths change its cost, never its numbers.

Each shortcut taken for scale (a scalar rate function, buffered fading draws, block
boundaries handled by timer callbacks) is checked here against the plain computation it
replaces, bit for bit, and for what it saves in SimPy events.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np
import pytest
import simpy

from nmoe_sim.config import ChannelConfig
from nmoe_sim.net import channel
from nmoe_sim.net.fading import FADING
from nmoe_sim.net.sharing import SharedRadios
from nmoe_sim.net.topology import BS

from test_network import B_HZ, EFF, TWO, cfg, make, start_at


@pytest.mark.parametrize("model", [
    {"rate_model": "shannon", "efficiency": 0.75},
    {"rate_model": "mcs", "mcs_table": [[-5.0, 0.2], [5.0, 1.5], [15.0, 4.0]]},
])
def test_scalar_spectral_efficiency_equals_the_array_version_bit_for_bit(model: dict[str, Any]) -> None:
    c = ChannelConfig(outage_snr_db=-5.0, **model)
    snrs = np.concatenate([np.random.default_rng(0).uniform(-40.0, 60.0, 20_000),
                           [-5.0, np.nextafter(-5.0, -np.inf), 15.0, -np.inf]])
    want = channel.spectral_efficiency_bps_hz(c, snrs)
    got = np.array([channel.spectral_efficiency_scalar_bps_hz(c, float(s)) for s in snrs])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("fading", ["rayleigh", "rician", "nakagami"])
def test_buffered_fading_draws_give_the_unbuffered_sequence(fading: str) -> None:
    """Blocks asked with gaps (AR(1) jumps) and repeats, over several buffer refills."""
    c = ChannelConfig(fading=fading, rician_k_db=3.0, nakagami_m=2.0)
    proc = FADING.get(fading, "fading")(c, np.random.default_rng(7))

    ref_rng = np.random.default_rng(7)
    ref = FADING.get(fading, "fading")(c, ref_rng)  # same construction draws (Rician phase)

    def draw_one() -> complex:  # what each block drew before buffering
        if ref.complex_state:
            re, im = ref_rng.standard_normal(2)
            return complex(re, im) * math.sqrt(0.5)
        return float(ref_rng.standard_normal())
    ref._draw = draw_one  # type: ignore[method-assign]

    blocks = sorted(np.random.default_rng(1).integers(0, 5_000, 2_000).tolist())  # repeats included
    assert [proc.gain(b) for b in blocks] == [ref.gain(b) for b in blocks]


def scripted(net: Any, u: Any, v: Any, gains: list[float], asked: list[int]) -> None:
    """Link (u, v) sees ``gains[k]`` in block k; every block it is asked for is logged."""
    def gain(block: int) -> float:
        asked.append(block)
        return gains[block]
    net.link(u, v).process.gain = gain


def faded_cfg(**kw: Any) -> ChannelConfig:
    return cfg(fading="rayleigh", coherence_time_s=0.01, doppler_hz=10.0, **kw)


def test_a_deadline_on_a_block_boundary_acts_before_that_block_is_drawn() -> None:
    """The interrupt due at the boundary instant wins: block 2 is never sampled, so the
    link's fading sequence is the one the hop's process used to see when it woke per block."""
    env, net, _ = make(TWO, bs_cfg=faded_cfg())
    asked: list[int] = []
    scripted(net, 0, BS, [1.0] * 50, asked)
    p = net.transfer(0, BS, 10 * 100_000, stage="s", tag="x")  # ~12 blocks at 20 dB

    def deadline() -> Any:
        yield env.timeout(0.02)  # exactly the start of block 2 (0.01 + (0.02 - 0.01))
        p.interrupt("deadline")
    env.process(deadline())
    env.run()
    assert p.value.reason == "deadline" and p.value.end_s == 0.02
    assert asked == [0, 1]


def test_outage_in_a_later_block_waits_the_ack_timeout_from_that_boundary() -> None:
    env, net, _ = make(TWO, bs_cfg=faded_cfg(retx_timeout_s=0.05, max_attempts=2))
    asked: list[int] = []
    # Blocks 0-1 good, block 2 in outage (-inf dB), good again from block 7 (retry at 0.07).
    scripted(net, 0, BS, [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0] + [1.0] * 60, asked)
    p = net.transfer(0, BS, 100_000, stage="s", tag="x")  # 800 kbit at ~5 Mbit/s: 0.16 s alone
    env.run()
    rec = p.value
    assert rec.delivered and rec.attempts == 2
    assert asked[:3] == [0, 1, 2] and asked[3] == 7  # the retry starts at 0.02 + 0.05
    rate = 1e6 * 0.75 * math.log2(1 + 10 ** 2.0)
    assert rec.end_s == pytest.approx(0.07 + 800_000 / rate, rel=1e-12)
    # Airtime: two good blocks, the ACK wait, then the whole payload again.
    assert rec.airtime_s == pytest.approx(0.02 + 0.05 + 800_000 / rate, rel=1e-12)


def test_a_block_costs_two_events_not_a_condition_and_a_process_wake() -> None:
    env, net, _ = make(TWO, bs_cfg=faded_cfg())
    scripted(net, 0, BS, [1.0] * 500, [])
    count = [0]
    schedule = env.schedule

    def counting(event: simpy.Event, priority: int = 1, delay: float = 0) -> None:
        count[0] += 1
        schedule(event, priority, delay)
    env.schedule = counting  # type: ignore[method-assign]
    p = net.transfer(0, BS, 2_000_000, stage="s", tag="x")  # 16 Mbit at ~5 Mbit/s: ~320 blocks
    env.run()
    blocks = math.ceil(p.value.end_s / 0.01)
    assert blocks > 300
    # Two per block (its timer and the re-rate step), plus the processor-sharing wake that
    # is re-armed when rounding moves the finish time a hair earlier; it was four before
    # (timer, AnyOf condition, its trigger, and that wake).
    assert count[0] < 2.5 * blocks


def crowded_radio_finish_times(n: int) -> tuple[list[float], int]:
    """``n`` flows of different sizes and rates joining one radio at staggered times."""
    env = simpy.Environment()
    radios = SharedRadios(env)
    rng = np.random.default_rng(3)
    done: list[float] = [0.0] * n
    peak = [0]

    def go(i: int, at_s: float, bits: float, rate: float) -> Any:
        yield env.timeout(at_s)
        flow = radios.start(bits, rate, ("bs", f"c{i}"))
        peak[0] = max(peak[0], len(radios._heap))
        yield flow.done
        done[i] = env.now
    for i in range(n):
        env.process(go(i, 0.001 * i, float(rng.uniform(1e5, 1e6)), float(rng.uniform(1e6, 1e7))))
    env.run()
    return done, peak[0]


def test_stale_heap_entries_are_dropped_without_moving_any_finish_time(monkeypatch: pytest.MonkeyPatch) -> None:
    got, peak = crowded_radio_finish_times(400)
    # Each join re-rates every flow on the radio: without compaction the heap would hold
    # about n^2 / 2 = 80,000 entries at its peak.
    assert peak < 4 * 400 + 1024 + 400
    monkeypatch.setattr(heapq, "heapify", lambda h: h.sort())  # a different, valid layout
    assert crowded_radio_finish_times(400)[0] == got


FOUR = ((100.0, 0.0), (-100.0, 0.0), (0.0, 100.0), (0.0, -100.0))


def reference_end_times(starts_s: list[float], bits: list[float], rate_of: Any, tc_s: float) -> list[float]:
    """Fluid processor sharing by brute force: one uplink radio, each flow's rate alone
    ``rate_of(i, block)`` constant within a coherence block, time stepped from event to
    event (a start, a block boundary or a finish)."""
    left = list(bits)
    end = [math.nan] * len(bits)
    t = 0.0
    while any(math.isnan(e) for e in end):
        active = [i for i in range(len(bits)) if starts_s[i] <= t and math.isnan(end[i])]
        block = math.floor(t / tc_s + 1e-9)
        horizon = min([(block + 1) * tc_s] + [s for s in starts_s if s > t])
        rates = {i: rate_of(i, block) / len(active) for i in active}
        first = min((t + left[i] / rates[i] for i in active), default=math.inf)
        step_to = min(horizon, first)
        for i in active:
            left[i] -= rates[i] * (step_to - t)
            if left[i] <= 1e-6 * bits[i]:
                end[i] = step_to
        t = step_to
    return end


def test_flows_sharing_a_radio_under_per_block_fading_end_when_the_fluid_model_says() -> None:
    """Four uploads with scripted, different block gains share the BS uplink; the block
    clock re-rates them all at each boundary instant. End times and airtime equal the
    brute-force fluid model's (to rounding: its arithmetic runs in another order)."""
    env, net, _ = make(FOUR, bs_cfg=faded_cfg())
    rng = np.random.default_rng(7)
    gains = {c: list(rng.uniform(0.3, 3.0, 400)) for c in range(4)}
    for c in range(4):
        scripted(net, c, BS, gains[c], [])
    starts = [0.0, 0.013, 0.02, 0.0555]
    sizes = [60_000, 100_000, 30_000, 80_000]
    procs = [start_at(env, net, s, c, BS, n, stage="s", tag="x") for c, (s, n) in enumerate(zip(starts, sizes))]
    env.run()
    mean_snr = net.mean_snr_db(0, BS)

    def rate_of(i: int, block: int) -> float:
        snr = mean_snr + 10 * math.log10(gains[i][block])
        return B_HZ * EFF * math.log2(1 + 10 ** (snr / 10))
    want = reference_end_times(starts, [8.0 * n for n in sizes], rate_of, 0.01)
    for p, w, s in zip(procs, want, starts):
        assert p.value.delivered
        assert p.value.end_s == pytest.approx(w, rel=1e-9, abs=1e-12)
        # Airtime is the channel's time alone: sum over blocks of bits sent / rate alone.
        assert p.value.airtime_s < p.value.end_s - s


def test_a_boundary_instant_costs_two_events_however_many_flows_it_re_rates() -> None:
    env, net, _ = make(FOUR, bs_cfg=faded_cfg())
    for c in range(4):
        scripted(net, c, BS, [1.0] * 2000, [])
    count = [0]
    schedule = env.schedule

    def counting(event: simpy.Event, priority: int = 1, delay: float = 0) -> None:
        count[0] += 1
        schedule(event, priority, delay)
    env.schedule = counting  # type: ignore[method-assign]
    procs = [net.transfer(c, BS, 1_000_000, stage="s", tag="x") for c in range(4)]
    env.run()
    blocks = math.ceil(max(p.value.end_s for p in procs) / 0.01)
    assert blocks > 4 * 150  # four flows of ~160 blocks alone, sharing one radio
    # Per flow and block this was two events each (8 per instant); now two per instant,
    # plus the transfers' own start, finish and process events.
    assert count[0] < 2 * blocks + 100


@pytest.mark.parametrize("fading", ["rayleigh", "rician", "nakagami"])
def test_the_consecutive_block_fast_path_is_ar1_advance_bit_for_bit(fading: str) -> None:
    """Consecutive blocks (the block clock's case) take an inlined one-step AR(1); gaps and
    repeats the general path. Both against ar1_advance itself, and block_snr_db against
    snr_db at the block's start time."""
    from nmoe_sim.net.fading import LinkChannel, ar1_advance

    c = ChannelConfig(fading=fading, rician_k_db=3.0, nakagami_m=2.0, doppler_hz=30.0)
    link = LinkChannel(c, 120.0, "bs", np.random.default_rng(11))
    ref = LinkChannel(c, 120.0, "bs", np.random.default_rng(11))
    proc = ref.process
    blocks = list(range(0, 700)) + [700, 700, 705] + list(range(706, 1500))
    last = None
    for b in blocks:
        if last is None:
            proc.state = proc._draw()
        elif b != last:
            proc.state = ar1_advance(proc.state, proc.rho, b - last, proc._draw())
        last = b
        want_gain = proc._power(proc.state)
        want = 23.0 + ref._budget_db + (10.0 * math.log10(want_gain) if want_gain > 0 else -math.inf)
        t_s = b * c.coherence_time_s
        assert link.block_index(t_s) == b
        got = link.block_snr_db(b, 23.0) if b % 2 else link.snr_db(t_s, 23.0)
        assert got == want


def test_a_flow_within_tolerance_of_its_end_finishes_at_an_earlier_blocks_stale_wake() -> None:
    """Why the block clock must know each flow's finish estimate as of every block, so why
    deferring a flow's blocks is not exact (docs/results.md section 7, fourth pass): block 6's
    rate is a hair below block 5's, so the flow's estimate moves 1e-11 s later, but the wake
    armed at block 5's estimate still fires (it was the earliest) and finishes the flow there,
    within SharedRadios.REL_TOL of its end. A clock that armed wakes only at exact finish
    times would record the later time."""
    ends = []
    for eps in (0.0, 1e-11, 1e-6):
        env, net, _ = make(TWO, bs_cfg=faded_cfg())
        gains = [1.0] * 6 + [1.0 - eps] + [1.0] * 50
        net.link(0, BS).process.gain = lambda block, g=gains: g[block]  # type: ignore[method-assign]
        rate_bps = B_HZ * EFF * np.log2(1 + 10 ** (net.mean_snr_db(0, BS) / 10))
        p = net.transfer(0, BS, int(6.5 * 0.01 * rate_bps / 8), stage="s", tag="x")  # 6.5 blocks
        env.run()
        ends.append(p.value.end_s)
    assert ends[1] == ends[0]  # block 5's estimate, not block 6's (0.0649992370755808)
    assert ends[2] > ends[0]  # a larger drop leaves more than the tolerance: block 6's estimate
