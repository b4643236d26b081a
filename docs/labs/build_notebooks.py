"""Write the lab notebooks (docs/labs/lab*.ipynb) from the cells below, outputs empty.

The notebooks are generated so that their code can be reviewed as code and kept in step
with the handouts; edit here and run ``python docs/labs/build_notebooks.py``. Every
notebook starts with the same set-up cell: ``NMOE_LAB_SIZE=tiny`` shrinks each run to a
few rounds (the test suite runs every notebook so, tests/test_labs.py).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

SETUP = '''%matplotlib inline
import pandas as pd
import nmoe_sim
from nmoe_sim.labs import lab_out, lab_size

SIZE = lab_size()  # "full": the lab; "tiny": seconds, for a smoke test (NMOE_LAB_SIZE=tiny)
OUT = lab_out()    # where the runs go: results/labs, or NMOE_LAB_OUT
pd.set_option("display.precision", 3)
pd.set_option("display.width", 160)
# A tiny run: one or two rounds of everything, few samples, no worker processes. Never quote its numbers.
TINY = {"stage1.rounds": 2, "stage2.epochs": 1, "stage3.rounds": 1, "baselines.fedavg.rounds": 2,
        "data.max_train_samples": 200, "data.max_test_samples": 60, "stage1.probe_every": 0,
        "inference.max_queries_per_client": 3, "runtime.executor": "local"}
SMALL = TINY if SIZE == "tiny" else {}
print("size:", SIZE, "| runs go to:", OUT)'''

LABS: dict[str, list[tuple[str, str]]] = {
    "lab1_channel": [
        ("md", "# Lab 1: the wireless channel\n\nHandout: `docs/labs/lab1_channel.md`. Answer its *Predict* "
               "questions before running a cell."),
        ("code", SETUP),
        ("md", "## 1. Path loss and shadowing\n\nThe base-station links use the `urban_micro` preset. "
               "The curve is the link budget alone; the dots are the run's links, whose shadowing was drawn "
               "once per link."),
        ("code", '''from nmoe_sim.labs import channel_lab as lab
result = nmoe_sim.run("scenarios/labs/lab1_channel.yaml", SMALL, out=OUT)
bs = result.config.network.channel.bs          # the urban_micro preset, validated
phone_dbm = 23.0                                # a phone's transmit power (network.devices)
links = lab.attempts_by_link(result, bs)
lab.snr_vs_distance_figure(bs, phone_dbm, links)'''),
        ("code", '''links[links.direction == "up"][["client", "distance_m", "mean_snr_db", "outage_closed_form"]]'''),
        ("md", "## 2. Fading: outage and capacity against their closed forms\n\nSamples of the model's own "
               "Rayleigh process, read far enough apart to be independent."),
        ("code", '''import numpy as np
n = 2_000 if SIZE == "tiny" else 50_000
table = lab.fading_table(bs, np.arange(-10.0, 31.0, 2.5), n=n, seed=0)
table'''),
        ("code", "lab.outage_figure(table)"),
        ("code", "lab.capacity_figure(table)"),
        ("md", "## 3. Time correlation: how alike are two blocks?"),
        ("code", '''lab.block_correlation(bs, n=1_000 if SIZE == "tiny" else 20_000)'''),
        ("md", "## 4. Retransmissions in the run"),
        ("code", '''links[["client", "direction", "mean_snr_db", "hops", "attempts_per_hop", "failed_share", "attempts_if_independent"]]'''),
        ("code", "lab.attempts_figure(links)"),
    ],
    "lab2_fedavg": [
        ("md", "# Lab 2: FedAvg over fading links\n\nHandout: `docs/labs/lab2_fedavg.md`."),
        ("code", SETUP),
        ("md", "## 1. Three deadlines\n\nThe same scenario and seed, three round deadlines for FedAvg."),
        ("code", '''from nmoe_sim.labs import compare
deadlines = {"no deadline": None, "deadline 35 ms": 0.035, "deadline 25 ms": 0.025}
runs = {label: nmoe_sim.run("scenarios/labs/lab2_fedavg.yaml", {**SMALL, "baselines.fedavg.deadline_s": d}, out=OUT)
        for label, d in deadlines.items()}
compare.summary(runs, "fedavg", ["f1_macro", "accuracy"]).assign(
    stage_sim_time_s=[r.stages.loc["baseline_fedavg", "sim_time_s"] for r in runs.values()])'''),
        ("code", '''compare.round_curves_figure(runs, "fedavg", "f1_macro", "macro-F1 on the test queries (0-1)",
                            "FedAvg: accuracy against simulated time, three deadlines")'''),
        ("md", "## 2. Who was left out, and why"),
        ("code", '''missed = compare.missed_rounds(runs, "fedavg")
missed'''),
        ("code", '''rounds = int(runs["no deadline"].stages.loc["baseline_fedavg", "rounds"])
compare.missed_rounds_figure(missed, rounds, "FedAvg: rounds each client missed, per deadline")'''),
        ("code", '''# The network's side: each client's uplink mean SNR (shadowing included) and its compute time per round.
r = runs["deadline 35 ms"]
ev = r.events[(r.events.system == "fedavg")]
compute = ev[ev.kind == "compute"].assign(s=lambda e: e.end_s - e.start_s).groupby("node").s.median()
up = r.links[r.links.kind == "bs"].set_index("u").mean_snr_db
clients = missed.index.astype(str)  # node ids are text in every table ("3", "bs")
pd.DataFrame({"device": missed.device, "uplink_mean_snr_db": up.reindex(clients).values,
              "median_compute_s": compute.reindex(clients).values}, index=missed.index)'''),
        ("code", '''r.failures[r.failures.system == "fedavg"].groupby(["reason", "phase"]).size()'''),
    ],
    "lab3_stages": [
        ("md", "# Lab 3: the three NMoE stages\n\nHandout: `docs/labs/lab3_stages.md`."),
        ("code", SETUP),
        ("md", "## 1. Stage 1 by FedSC and by FedCE"),
        ("code", '''runs = {alg: nmoe_sim.run("scenarios/labs/lab3_stages.yaml", {**SMALL, "stage1.algorithm": alg}, out=OUT)
        for alg in ("fedsc", "fedce")}
pd.concat({alg: r.representation for alg, r in runs.items()})'''),
        ("code", '''pd.DataFrame({alg: {k: v for k, v in r.representation_flags().items()
                    if k in ("collapsed", "projection_top_share", "projection_collapsed", "view_agreement")}
              for alg, r in runs.items()}).T'''),
        ("code", '''runs["fedsc"].plot("representation")'''),
        ("code", '''runs["fedce"].plot("representation")'''),
        ("md", "## 2. What each stage costs"),
        ("code", '''pd.concat({alg: r.stages[["bytes", "rounds", "sim_time_s", "device_energy_j"]] for alg, r in runs.items()})'''),
        ("code", '''runs["fedsc"].plot("stage_costs")'''),
        ("md", "## 3. The end result: the NMoE against its parts"),
        ("code", '''pd.concat({alg: r.systems[["f1_macro", "accuracy", "local_ratio", "latency_s_p95"]] for alg, r in runs.items()})'''),
    ],
    "lab4_gating": [
        ("md", "# Lab 4: gating and the local ratio\n\nHandout: `docs/labs/lab4_gating.md`."),
        ("code", SETUP),
        ("code", '''from nmoe_sim.labs import compare
settings = {"top-1, global queries": {}, "top-2, global queries": {"model.top_k": 2},
            "top-1, local queries": {"data.queries": "local"}}
runs = {label: nmoe_sim.run("scenarios/labs/lab4_gating.yaml", {**SMALL, **extra}, out=OUT)
        for label, extra in settings.items()}
table = compare.summary(runs, "nmoe", ["f1_macro", "local_ratio", "latency_s_p95", "inference_bytes"])
table'''),
        ("code", '''runs["top-1, global queries"].plot("gating")'''),
        ("code", '''runs["top-1, local queries"].plot("gating")'''),
        ("code", '''runs["top-1, global queries"].gating("centralized").round(2)'''),
        ("code", '''compare.bars_figure(table, [("f1_macro", "macro-F1 (0-1)"), ("local_ratio", "local ratio (0-1)"),
                             ("inference_bytes", "inference bytes offered (B)")],
                    "NMoE inference: top-k and where the queries come from")'''),
        ("code", '''runs["top-1, global queries"].plot("latency_cdf")'''),
    ],
    "lab5_alignment": [
        ("md", "# Lab 5: client-expert alignment\n\nHandout: `docs/labs/lab5_alignment.md`."),
        ("code", SETUP),
        ("code", '''from nmoe_sim.labs import alignment_lab as lab
TINY_ALIGN = {"alignment.rounds": 2, "data.max_train_samples": 200, "data.max_test_samples": 60,
              "runtime.executor": "local"}
result = nmoe_sim.run("scenarios/labs/lab5_alignment.yaml", TINY_ALIGN if SIZE == "tiny" else {}, out=OUT)
result.systems[["f1_macro", "accuracy", "rounds_to_target", "bytes_to_target", "load_cv_mean",
                "utilization_cv_overall", "bytes"]]'''),
        ("code", '''result.plot("accuracy_vs_rounds")'''),
        ("md", "## Capacity and load"),
        ("code", '''loads = lab.load_table(result)
loads'''),
        ("code", '''lab.capacity_load_figure(result)'''),
        ("code", '''lab.expert_load_figure(result)'''),
    ],
}


def build() -> list[Path]:
    written = []
    for name, cells in LABS.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                    for kind, src in cells]
        for i, cell in enumerate(nb.cells):  # fixed ids: a rebuild changes only what changed
            cell.id = f"{name}-{i}"
        path = HERE / f"{name}.ipynb"
        nbformat.write(nb, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in build():
        print(path)
