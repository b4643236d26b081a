#!/usr/bin/env python
"""How the whole pipeline scales with the number of clients (a figure, not a test).

Runs the Fashion-MNIST scenario (scenarios/fashion_mnist.yaml) at each client count in
its own fresh process: all three stages, inference and the baselines, with rounds shrunk
(``--rounds``, default 2 per federated stage) and a fixed amount of data per client
(``--samples-per-client``, default 60, so the learning work grows linearly with clients),
and the two options that keep the work itself linear: each gate chooses among its own and
``--candidates`` (default 10) other experts, so the expert-output exchange is n k pairs, and
the centralized baseline trains on each sample's top ``--mixture-experts`` (default 8)
experts instead of all n (0 for either: the paper's all-expert settings, n^2 work).
Prints, per size: wall time, peak RSS of the process, SimPy events scheduled, transfers,
hops and computations recorded, and the wall time per client; then the per-client cost
ratio between consecutive sizes (the issue's target: within 1.5x from 100 to 1,000
clients; 1,000 clients in under 10 minutes and 8 GiB on a 2-core machine).

``--rss-rounds N`` instead measures memory over a long run: stage 1 for N rounds at the
first client count, sampling the RSS after every round (target: flat within 5 %).

    python benchmarks/scale.py                       # 10, 100 and 1000 clients
    python benchmarks/scale.py --clients 10 100 --exchange features
    python benchmarks/scale.py --clients 100 300 --candidates 0 --mixture-experts 0   # all experts
    python benchmarks/scale.py --clients 100 --rss-rounds 50
    python benchmarks/scale.py --rate-adaptation per_attempt   # without per-block fading
    python benchmarks/scale.py --clients 1000 --plots          # also time the run's plots
    python benchmarks/scale.py --clients 1000 --progress       # each stage's start, wall time and RSS

Needs Debian's dataset-fashion-mnist. A size that exceeds ``--timeout-s`` is reported as
such and the larger sizes are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, sys, tempfile, time
from pathlib import Path
import simpy

counter = [0]
_schedule = simpy.Environment.schedule
def schedule(self, event, priority=1, delay=0):
    counter[0] += 1
    return _schedule(self, event, priority, delay)
simpy.Environment.schedule = schedule

rss = []
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")

from nmoe_sim.config import load_scenario
from nmoe_sim.record import RoundRecord
from nmoe_sim.runner import run

cfg = load_scenario(sys.argv[1], json.loads(sys.argv[2]))
listen = None
if sys.argv[3] == "rss":
    listen = lambda rec: rss.append(rss_mib()) if isinstance(rec, RoundRecord) else None
elif sys.argv[3] == "progress":  # where the wall time goes: each stage's first record, each round
    seen, t_start = set(), time.perf_counter()
    def listen(rec):
        if not hasattr(rec, "stage"):
            return  # a query: its leg transfers already name the inference stage
        key = (rec.system, rec.stage)
        if key not in seen or isinstance(rec, RoundRecord):
            seen.add(key)
            what = f"round {rec.round}" if isinstance(rec, RoundRecord) else "first record"
            print(f"[{time.perf_counter() - t_start:8.1f} s] {key[0]} {key[1]} {what}, "
                  f"RSS {rss_mib():.0f} MiB", file=sys.stderr, flush=True)
with tempfile.TemporaryDirectory() as out:
    run_dir = Path(out) / "run"
    run_dir.mkdir()
    t0 = time.perf_counter()
    metrics = run(cfg, run_dir, on_record=listen)
    wall_s = time.perf_counter() - t0
    sizes = {p.name: p.stat().st_size for p in run_dir.iterdir() if p.is_file()}
    plots_s = None
    if sys.argv[4] == "plots":  # drawn apart from the run, as `nmoe-sim run` would, and timed apart
        from nmoe_sim.plots import plot_run
        t0 = time.perf_counter()
        plot_run(run_dir)
        plots_s = time.perf_counter() - t0
stages = metrics["stages"]
print(json.dumps({
    "wall_s": wall_s, "plots_s": plots_s, "events": counter[0], "rss_per_round_mib": rss,
    "transfers": sum(s["transfers"] for s in stages.values()),
    "nmoe_f1": metrics["systems"]["nmoe"]["f1_macro"],
    "files_mib": sum(sizes.values()) / 2**20,
}))
'''


def channel_override(scenario: Path, adaptation: str) -> list[str]:
    """``network.channel`` of the scenario with every link class's rate adaptation set."""
    import yaml

    chan = (yaml.safe_load(scenario.read_text()) or {}).get("network", {}).get("channel", {})
    if isinstance(chan, str):
        chan = {"bs": chan, "d2d": chan}
    parts = []
    for cls in ("bs", "d2d"):
        spec = chan.get(cls, {})
        spec = {"preset": spec} if isinstance(spec, str) else dict(spec)
        spec["rate_adaptation"] = adaptation
        parts.append(f"{cls}: {{{', '.join(f'{k}: {v}' for k, v in spec.items())}}}")
    return [f"network.channel={{{', '.join(parts)}}}"]


def overrides(n: int, args: argparse.Namespace) -> list[str]:
    r = args.rounds
    extra = channel_override(args.scenario, args.rate_adaptation) if args.rate_adaptation else []
    return extra + [
        f"data.clients={n}", f"data.max_train_samples={n * args.samples_per_client}",
        f"data.max_test_samples={max(1000, 5 * n)}", "inference.max_queries_per_client=5",
        f"stage1.rounds={r}", "stage2.epochs=1", f"stage3.rounds={r}", f"stage3.expert_outputs={args.exchange}",
        "baselines.centralized.epochs=1", f"baselines.fedavg.rounds={r}", "output.plots=false",
    ] + ([f"stage3.candidates={args.candidates}"] if args.candidates else []) + (
        [f"baselines.centralized.mixture_experts={args.mixture_experts}"] if args.mixture_experts else [])


def run_child(scenario: Path, sets: list[str], mode: str, timeout_s: float, plots: bool = False) -> dict | None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(scenario), json.dumps(sets), mode,
                             "plots" if plots else "none"],
                            cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=None if mode == "progress" else subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    t0 = time.perf_counter()
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    # Peak RSS of the finished child (Linux reports KiB).
    import resource
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {err.strip().splitlines()[-1] if err else ''}")
    result = json.loads(out.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0
    result["peak_rss_mib"] = peak_mib  # max over the children so far: sizes run in increasing order
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples-per-client", type=int, default=60)
    parser.add_argument("--exchange", default="expert_weights", choices=["features", "expert_weights"])
    parser.add_argument("--candidates", type=int, default=10,
                        help="stage3.candidates: experts each gate may choose besides its own (0: all, "
                        "the exchange then grows as n^2)")
    parser.add_argument("--mixture-experts", type=int, default=8,
                        help="baselines.centralized.mixture_experts (0: the dense mixture, n^2 work)")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--rate-adaptation", choices=["per_block", "per_attempt"],
                        help="override every link class's rate adaptation (default: the scenario's)")
    parser.add_argument("--rss-rounds", type=int, default=0)
    parser.add_argument("--progress", action="store_true",
                        help="the child prints each stage's start and each round (wall time, RSS) on stderr")
    parser.add_argument("--plots", action="store_true",
                        help="also draw the run's plots (PNG) and print their time, apart from the wall time")
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "fashion_mnist.yaml")
    args = parser.parse_args()

    if args.rss_rounds:
        n = args.clients[0]
        sets = overrides(n, args) + [f"stage1.rounds={args.rss_rounds}", "baselines.systems=[]",
                                     "stage1.algorithm=fedce"]
        res = run_child(args.scenario, sets, "rss", args.timeout_s)
        if res is None:
            print(f"{n} clients x {args.rss_rounds} rounds: over the {args.timeout_s:.0f} s timeout")
            return 1
        rss = res["rss_per_round_mib"][: args.rss_rounds]
        early = rss[min(4, len(rss) - 1)]
        print(f"{n} clients, stage 1 FedCE x {args.rss_rounds} rounds: RSS after round 5 {early:.0f} MiB, "
              f"after round {len(rss)} {rss[-1]:.0f} MiB ({100 * (rss[-1] / early - 1):+.1f} %)")
        return 0

    print(f"Fashion-MNIST scenario, {args.samples_per_client} samples per client, {args.rounds} rounds per "
          f"federated stage, stage3.expert_outputs={args.exchange}, stage3.candidates="
          f"{args.candidates or 'all'}, baselines.centralized.mixture_experts={args.mixture_experts or 'all'}, "
          f"rate adaptation {args.rate_adaptation or 'as in the scenario'}, one torch thread")
    print(f"{'clients':>8} {'wall s':>9} {'peak RSS MiB':>13} {'SimPy events':>13} {'transfers':>10} "
          f"{'files MiB':>10} {'s/client':>9} {'NMoE F1':>8}")
    prev = None
    for n in args.clients:
        res = run_child(args.scenario, overrides(n, args), "progress" if args.progress else "plain",
                        args.timeout_s, args.plots)
        if res is None:
            print(f"{n:>8} over the {args.timeout_s:.0f} s timeout; larger sizes skipped")
            break
        per = res["wall_s"] / n
        plots = f" plots {res['plots_s']:.1f} s" if res["plots_s"] is not None else ""
        print(f"{n:>8} {res['wall_s']:>9.1f} {res['peak_rss_mib']:>13.0f} {res['events']:>13,} "
              f"{res['transfers']:>10,} {res['files_mib']:>10.1f} {per:>9.3f} {res['nmoe_f1']:>8.3f}{plots}")
        if prev is not None:
            print(f"{'':>8} per-client cost x{per / prev[1]:.2f} from {prev[0]} to {n} clients")
        prev = (n, per)
    return 0


if __name__ == "__main__":
    sys.exit(main())
