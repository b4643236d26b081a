"""Figures and tables that set several runs of one lab side by side (labs 2-5).

``runs`` is always a mapping from the label a student reads ("deadline 35 ms") to the
RunResult the API returned, in the order the figure should list them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nmoe_sim.api import RunResult

Runs = Mapping[str, RunResult]


def round_curves_figure(runs: Runs, system: str, y: str, ylabel: str, title: str,
                        x: str = "end_s", xlabel: str = "simulated time (s)") -> Figure:
    """One line per run: ``y`` of rounds.csv against ``x`` for ``system``'s rounds."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, (label, result) in enumerate(runs.items()):
        rows = result.rounds[result.rounds["system"] == system]
        ax.plot(rows[x], rows[y], marker="o", ms=3, color=f"C{i}", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return fig


def missed_rounds(runs: Runs, system: str) -> pd.DataFrame:
    """Rounds each client's update did not reach the average, per run (failures.csv):
    rows clients, columns run labels; plus each client's device."""
    first = next(iter(runs.values()))
    clients = first.nodes[first.nodes["kind"] == "client"]
    devices = {int(i): device for i, device in clients["device"].items()}
    table = pd.DataFrame(index=pd.Index(sorted(devices), name="client"))
    table["device"] = [devices[c] for c in table.index]
    for label, result in runs.items():
        fails = result.failures[result.failures["system"] == system]
        table[label] = fails.groupby("client").size().reindex(table.index, fill_value=0)
    return table


def missed_rounds_figure(table: pd.DataFrame, rounds: int, title: str) -> Figure:
    labels = [c for c in table.columns if c != "device"]
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(table))
    for i, label in enumerate(labels):
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, table[label], width, color=f"C{i}", label=label)
    ax.set_xticks(x, [f"{c}\n{d}" for c, d in zip(table.index, table["device"])])
    ax.set_ylim(0, rounds)
    ax.set_xlabel("client (index and device)")
    ax.set_ylabel(f"rounds missed (of {rounds})")
    ax.set_title(title)
    ax.legend()
    return fig


def summary(runs: Runs, system: str, columns: Sequence[str]) -> pd.DataFrame:
    """``system``'s row of each run's systems table, the runs as rows."""
    return pd.DataFrame({label: r.systems.loc[system, list(columns)] for label, r in runs.items()}).T


def bars_figure(table: pd.DataFrame, panels: Sequence[tuple[str, str]], title: str, xlabel: str = "setting") -> Figure:
    """One panel per (column, y label with units), one bar per row of ``table``."""
    fig = Figure(figsize=(3.2 * len(panels), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    labels = [str(i) for i in table.index]
    for ax, (column, ylabel) in zip(axes, panels):
        ax.bar(range(len(table)), table[column].astype(float), color=[f"C{i}" for i in range(len(table))])
        ax.set_xticks(range(len(table)), labels, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_xlabel(xlabel)
        ax.set_title(column)
    fig.suptitle(title)
    return fig
