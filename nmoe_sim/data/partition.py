"""Splitting a labelled training set over federated clients, and test queries over them.

Partitions (``data.partition.kind``): ``iid``; ``dirichlet``, the label-skew scheme of
Hsu, Qi & Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated
Visual Classification" (2019): per class, client shares ~ Dir(alpha); and
``classes_per_client``, the pathological split of McMahan et al. (2017) where each client
holds k classes. Every function is pure given its ``numpy.random.Generator``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from nmoe_sim.config import PartitionConfig
from nmoe_sim.errors import ConfigError
from nmoe_sim.registry import Registry

PartitionFn = Callable[[np.ndarray, PartitionConfig, int, np.random.Generator], list[np.ndarray]]
PARTITIONS: Registry[PartitionFn] = Registry("partition")

QueryFn = Callable[[np.ndarray, list[np.ndarray], int, int, np.random.Generator], list[np.ndarray]]
QUERY_SPLITS: Registry[QueryFn] = Registry("query split")

DIRICHLET_MAX_TRIES = 100


def _finish(parts: list[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def partition(
    labels: np.ndarray, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per client, a sorted int64 array of indices into ``labels``; disjoint, none empty."""
    labels = np.asarray(labels)
    if n_clients < 1:
        raise ConfigError(f"data.clients: must be >= 1 (got {n_clients})")
    if n_clients > len(labels):
        raise ConfigError(
            f"data.clients: {n_clients} clients but only {len(labels)} training samples; "
            "use fewer clients or more samples"
        )
    parts = PARTITIONS.get(cfg.kind, "data.partition.kind")(labels, cfg, n_clients, rng)
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise ConfigError(
            f"data.partition: client(s) {empty} got no samples with kind={cfg.kind!r}; "
            "use fewer data.clients, more samples or another partition"
        )
    return parts


@PARTITIONS.register("iid")
def iid_partition(
    labels: np.ndarray, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    return _finish(np.array_split(rng.permutation(len(labels)), n_clients))


def _dirichlet_draw(
    labels: np.ndarray, alpha: float, n_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    shares: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        props = rng.dirichlet(np.full(n_clients, alpha))
        # Cut points of the class's shuffled samples at the cumulative proportions.
        cuts = np.floor(np.cumsum(props)[:-1] * len(idx)).astype(np.int64)
        for client, chunk in enumerate(np.split(idx, cuts)):
            shares[client].append(chunk)
    return _finish([np.concatenate(s) for s in shares])


@PARTITIONS.register("dirichlet")
def dirichlet_partition(
    labels: np.ndarray, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    need = cfg.min_samples_per_client
    if need * n_clients > len(labels):
        raise ConfigError(
            f"data.partition.min_samples_per_client: {need} x {n_clients} clients exceeds the "
            f"{len(labels)} training samples; lower it or use fewer data.clients"
        )
    # Small alpha often leaves a client (nearly) empty; redraw, as common practice does,
    # but a bounded number of times so an impossible setting fails instead of hanging.
    for _ in range(DIRICHLET_MAX_TRIES):
        parts = _dirichlet_draw(labels, cfg.alpha, n_clients, rng)
        if min(len(p) for p in parts) >= need:
            return parts
    raise ConfigError(
        f"data.partition.min_samples_per_client: no Dirichlet(alpha={cfg.alpha}) draw in "
        f"{DIRICHLET_MAX_TRIES} tries gave all {n_clients} clients >= {need} samples; raise "
        "data.partition.alpha, lower min_samples_per_client or use fewer data.clients"
    )


@PARTITIONS.register("classes_per_client")
def classes_per_client_partition(
    labels: np.ndarray, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    classes = np.unique(labels)
    k = cfg.classes_per_client
    if k > len(classes):
        raise ConfigError(
            f"data.partition.classes_per_client: {k} exceeds the {len(classes)} classes in "
            f"the training labels; valid: 1..{len(classes)}"
        )
    # Consecutive windows over a shuffled class ring: client i holds classes
    # order[(i*k + j) mod C], so k distinct classes each and every class held by
    # floor or ceil of n*k/C clients (classes beyond n*k stay unused when n*k < C).
    order = rng.permutation(classes)
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for client in range(n_clients):
        for j in range(k):
            holders[int(order[(client * k + j) % len(classes)])].append(client)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in classes:  # sorted class order keeps the rng stream independent of dict order
        owners = holders[int(c)]
        if not owners:
            continue
        idx = rng.permutation(np.flatnonzero(labels == c))
        for owner, chunk in zip(owners, np.array_split(idx, len(owners))):
            parts[owner].append(chunk)
    return _finish([np.concatenate(p) if p else np.empty(0, np.int64) for p in parts])


# --------------------------------------------------------------------------- queries
def query_split(
    test_labels: np.ndarray,
    train_parts_labels: list[np.ndarray],
    mode: str,
    n_clients: int,
    num_classes: int,
    rng: np.random.Generator,
    global_share: float = 0.5,
) -> list[np.ndarray]:
    """Per client, a sorted int64 array of test indices it will query (``data.queries``;
    ``global_share`` is ``data.queries_global_share``, read by ``mixed`` only)."""
    fn = QUERY_SPLITS.get(mode, "data.queries")
    return fn(np.asarray(test_labels), train_parts_labels, n_clients, num_classes, rng, global_share)


@QUERY_SPLITS.register("global")
def global_queries(
    test_labels: np.ndarray,
    train_parts_labels: list[np.ndarray],
    n_clients: int,
    num_classes: int,
    rng: np.random.Generator,
    global_share: float = 1.0,
) -> list[np.ndarray]:
    """Disjoint near-equal shares of the whole test set: clients meet unseen classes too."""
    return _finish(np.array_split(rng.permutation(len(test_labels)), n_clients))


@QUERY_SPLITS.register("local")
def local_queries(
    test_labels: np.ndarray,
    train_parts_labels: list[np.ndarray],
    n_clients: int,
    num_classes: int,
    rng: np.random.Generator,
    global_share: float = 0.0,
) -> list[np.ndarray]:
    """len(test)//n queries per client, class c drawn with the client's train share of c."""
    if len(train_parts_labels) != n_clients:
        raise ValueError(f"{len(train_parts_labels)} train label arrays for {n_clients} clients")
    by_class = [np.flatnonzero(test_labels == c) for c in range(num_classes)]
    available = np.array([len(ix) > 0 for ix in by_class])
    n_queries = len(test_labels) // n_clients
    out: list[np.ndarray] = []
    for client, train_labels in enumerate(train_parts_labels):
        counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=num_classes)
        # A class absent from the test set cannot be queried; renormalize over the rest.
        weights = counts[:num_classes] * available
        if weights.sum() == 0:
            raise ConfigError(
                f"data.queries: client {client} trained only on classes absent from the test "
                "set, so 'local' queries are impossible; use data.queries: global"
            )
        per_class = rng.multinomial(n_queries, weights / weights.sum())
        picks = [
            rng.choice(by_class[c], size=m, replace=m > len(by_class[c]))
            for c, m in enumerate(per_class)
            if m > 0
        ]
        out.append(np.concatenate(picks) if picks else np.empty(0, np.int64))
    return _finish(out)


@QUERY_SPLITS.register("mixed")
def mixed_queries(
    test_labels: np.ndarray,
    train_parts_labels: list[np.ndarray],
    n_clients: int,
    num_classes: int,
    rng: np.random.Generator,
    global_share: float = 0.5,
) -> list[np.ndarray]:
    """len(test)//n queries per client: round(share x that) from its ``global`` share, the
    rest drawn as ``local`` draws them (a query load knob: how often a client asks about
    what it has never seen). Both splits come from the one stream, global first."""
    glob = global_queries(test_labels, train_parts_labels, n_clients, num_classes, rng)
    loc = local_queries(test_labels, train_parts_labels, n_clients, num_classes, rng)
    out = []
    for g, lo in zip(glob, loc):
        n_global = min(round(global_share * len(lo)), len(g))
        out.append(np.concatenate([rng.permutation(g)[:n_global], rng.permutation(lo)[: len(lo) - n_global]]))
    return _finish(out)
