"""Lab 5, client-expert alignment: capacity, load and fitness from an alignment run.

Reads what the alignment system wrote (docs/alignment.md): metrics.json's ``capacity``
(each client's profiled and used expert budget k_c) and per-assignment series, and
assignments.csv (one row per client, expert and round the server assigned).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nmoe_sim.api import RunResult


def load_table(result: RunResult) -> pd.DataFrame:
    """Per client: device, capacity k_c, and the experts it trained per round on average
    under each assignment (rows of assignments.csv over rounds)."""
    cap = pd.DataFrame(result.metrics["capacity"]["clients"]).set_index("client")
    table = cap[["device", "k"]].rename(columns={"k": "capacity_k"})
    assigned = result.table("assignments")
    rounds = assigned.groupby("system")["round"].nunique()
    for system, rows in assigned.groupby("system", sort=False):
        per_client = rows.groupby("client").size() / rounds[system]
        table[f"experts_per_round_{system}"] = per_client.reindex(table.index, fill_value=0.0)
    return table


def capacity_load_figure(result: RunResult) -> Figure:
    table = load_table(result)
    systems = [c.removeprefix("experts_per_round_") for c in table.columns if c.startswith("experts_per_round_")]
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(table))
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        ax.bar(x + (i - (len(systems) - 1) / 2) * width, table[f"experts_per_round_{system}"], width,
               color=f"C{i}", label=system)
    ax.plot(x, table["capacity_k"], "k_", ms=28, mew=2, label="capacity k_c")
    top = max(table[[f"experts_per_round_{s}" for s in systems]].to_numpy().max(), table["capacity_k"].max())
    ax.set_ylim(0, top * 1.3)  # headroom: the legend sits above the tallest bar
    ax.set_xticks(x, [f"{c}\n{d}" for c, d in zip(table.index, table["device"])])
    ax.set_xlabel("client (index and device)")
    ax.set_ylabel("experts trained per round (count)")
    ax.set_title("Who trains how many experts, against each client's capacity")
    ax.legend(ncols=2, fontsize="small")
    return fig


def expert_load_figure(result: RunResult) -> Figure:
    """Clients training each expert, averaged over the rounds, per assignment."""
    systems = result.metrics["systems"]
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(systems)
    for i, (system, entry) in enumerate(systems.items()):
        load = np.asarray(entry["expert_load_per_round"], dtype=float).mean(axis=0)
        x = np.arange(len(load))
        ax.bar(x + (i - (len(systems) - 1) / 2) * width, load, width, color=f"C{i}",
               label=f"{system} (load CV {entry['load_cv_mean']:.2f})")
    ax.set_xticks(x, [f"expert {e}" for e in x])
    ax.set_ylabel("clients training the expert per round (count)")
    ax.set_xlabel("expert")
    ax.set_title("Expert load: how evenly the clients' work spreads over the experts")
    ax.legend(fontsize="small")
    return fig
