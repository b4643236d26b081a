"""A scripted network under per-block rate adaptation: its wall time and a hash of its records.

``n`` clients on a star around one base station each send ``--up-bytes`` up and
``--down-bytes`` down at once, over a channel preset with block fading and per-block rates,
so ``n`` flows share each of the base station's two radios and every flow spans many
coherence blocks (the network phase of a large round, without the learning). Optional:
round-deadline interrupts (some on a block boundary instant), link-down faults mid-transfer.

The hash covers every transfer and hop record (times, bytes, airtime, energy, attempts) and
every hop's per-block SNR list, in the order they were recorded: two trees that print the
same hash computed the same bits. Run it against another tree with that tree on PYTHONPATH::

    PYTHONPATH=/work/main python benchmarks/network_blocks.py --clients 150
    python benchmarks/network_blocks.py --clients 150

Prints figures; not a test (tests/test_block_arrays.py checks small cases exactly).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import simpy
import yaml

from nmoe_sim.config import ChannelConfig, LinkChannels, TopologyConfig
from nmoe_sim.net.network import Network
from nmoe_sim.net.topology import BS, build_topology
from nmoe_sim.record import Recorder

CHANNEL_DIR = Path(__file__).resolve().parent.parent / "channel"


def channel_cfg(preset: str) -> ChannelConfig:
    raw = yaml.safe_load((CHANNEL_DIR / f"{preset}.yaml").read_text())
    return ChannelConfig(**raw)


def build(n: int, preset: str, seed: int) -> tuple[simpy.Environment, Network, Recorder, list[bytes]]:
    """The network, its recorder, and the per-hop SNR lists as they are closed."""
    g = build_topology(TopologyConfig(kind="star", radius_m=30.0), n, np.random.default_rng(seed))
    c = channel_cfg(preset)
    tx = {i: 23.0 for i in range(n)} | {BS: 43.0}
    rx = {i: 0.1 for i in range(n)} | {BS: 1.0}
    env, rec = simpy.Environment(), Recorder()
    net = Network(env, g, LinkChannels(bs=c, d2d=c), tx, rx, rec, np.random.default_rng(seed),
                  system="bench")
    snrs: list[bytes] = []
    close = net._close_hop

    def closing(hop: Any, *args: Any) -> None:  # the per-block SNRs go into the hash too
        snrs.append(hop.snrs_db.tobytes())
        close(hop, *args)
    net._close_hop = closing  # type: ignore[method-assign]
    return env, net, rec, snrs


def run(args: argparse.Namespace) -> tuple[float, str, dict[str, Any]]:
    env, net, rec, snrs = build(args.clients, args.channel, args.seed)
    procs = []
    for c in range(args.clients):
        procs.append(net.transfer(c, BS, args.up_bytes, stage="s", tag=f"up{c}"))
        procs.append(net.transfer(BS, c, args.down_bytes, stage="s", tag=f"down{c}"))
    if args.deadline_s > 0:
        tc_s = net.link(0, BS).cfg.coherence_time_s
        # Every 7th transfer is cut at the deadline; every 11th at a block boundary instant
        # (k * T_c exactly, as the block clock fires), where the interrupt must win.
        cut = [(p, args.deadline_s) for p in procs[::7]]
        cut += [(p, round(args.deadline_s / tc_s / 2) * tc_s) for p in procs[3::11]]

        def cutter(p: simpy.Process, at_s: float) -> Any:
            yield env.timeout(at_s)
            if p.is_alive:
                p.interrupt("deadline")
        for p, at_s in cut:
            env.process(cutter(p, at_s))
    if args.faults:
        from nmoe_sim.engine.fault_config import FaultsConfig
        from nmoe_sim.engine.faults import FaultState
        from nmoe_sim.seeds import SeedStreams
        events = [{"kind": "link_down", "link": [BS, c], "start_s": 0.5 + 0.37 * c,
                   "end_s": 0.5 + 0.37 * c + 0.06} for c in range(0, args.clients, 5)]
        events.append({"kind": "storm", "links": [[BS, c] for c in range(1, args.clients, 3)], "start_s": 1.3, "end_s": 2.9, "extra_loss_db": 6.0})
        state = FaultState(FaultsConfig(events=events), env, net.graph, SeedStreams(args.seed),
                           rec, system="bench")
        net.attach_faults(state)
    t0, c0 = time.perf_counter(), time.process_time()
    env.run()
    wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    h = hashlib.sha256()
    for r in rec.transfers + rec.hops:
        h.update(repr(r).encode())
    for s in snrs:
        h.update(s)
    blocks = sum(len(s) // 8 for s in snrs)
    stats = {"transfers": len(rec.transfers), "delivered": sum(r.delivered for r in rec.transfers),
             "cpu_s": round(cpu_s, 3), "hop_blocks": blocks, "end_s": env.now,
             "visits": getattr(net, "block_visits", math.nan)}
    return wall_s, h.hexdigest(), stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=150)
    ap.add_argument("--up-bytes", type=int, default=1_000_000)
    ap.add_argument("--down-bytes", type=int, default=750_000)
    ap.add_argument("--channel", default="urban_micro", help="a preset of channel/ with fading")
    ap.add_argument("--deadline-s", type=float, default=0.0, help="interrupt some transfers then")
    ap.add_argument("--faults", action="store_true", help="link-down faults and a storm")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    wall_s, digest, stats = run(args)
    print(f"wall {wall_s:.3f} s  hash {digest[:16]}  " + "  ".join(f"{k} {v}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
