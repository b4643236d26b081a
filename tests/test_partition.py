"""Federated partitions and query splits: coverage, disjointness, skew, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from nmoe_sim.config import PartitionConfig
from nmoe_sim.data.partition import PARTITIONS, partition, query_split
from nmoe_sim.errors import ConfigError

LABELS = np.repeat(np.arange(10), 100)  # 1000 samples, 10 balanced classes
np.random.default_rng(0).shuffle(LABELS)

KINDS = [
    PartitionConfig(kind="iid"),
    PartitionConfig(kind="dirichlet", alpha=0.5),
    PartitionConfig(kind="classes_per_client", classes_per_client=2),
]


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("cfg", KINDS, ids=lambda c: c.kind)
def test_parts_are_sorted_disjoint_nonempty(cfg: PartitionConfig) -> None:
    parts = partition(LABELS, cfg, 10, rng(0))
    assert len(parts) == 10
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)  # disjoint
    assert all(p.dtype == np.int64 and len(p) > 0 and np.all(np.diff(p) > 0) for p in parts)
    assert joined.min() >= 0 and joined.max() < len(LABELS)


@pytest.mark.parametrize("cfg", KINDS, ids=lambda c: c.kind)
def test_determinism(cfg: PartitionConfig) -> None:
    a = partition(LABELS, cfg, 10, rng(7))
    b = partition(LABELS, cfg, 10, rng(7))
    c = partition(LABELS, cfg, 10, rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_even_and_complete() -> None:
    parts = partition(LABELS, PartitionConfig(kind="iid"), 7, rng(0))
    assert sum(len(p) for p in parts) == len(LABELS)
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_dirichlet_uses_every_sample_and_small_alpha_skews() -> None:
    cfg = PartitionConfig(kind="dirichlet", alpha=0.1, min_samples_per_client=5)
    shares = []
    for seed in range(5):
        parts = partition(LABELS, cfg, 10, rng(seed))
        assert sum(len(p) for p in parts) == len(LABELS)
        assert min(len(p) for p in parts) >= 5
        shares += [np.bincount(LABELS[p]).max() / len(p) for p in parts]
    assert np.mean(shares) > 0.5
    iid_like = partition(LABELS, PartitionConfig(kind="dirichlet", alpha=1000.0), 10, rng(0))
    assert np.mean([np.bincount(LABELS[p]).max() / len(p) for p in iid_like]) < 0.2


def test_dirichlet_impossible_minimum_is_a_config_error() -> None:
    cfg = PartitionConfig(kind="dirichlet", alpha=0.5, min_samples_per_client=200)
    with pytest.raises(ConfigError, match="^data.partition.min_samples_per_client: "):
        partition(LABELS, cfg, 10, rng(0))
    # Feasible in total but practically never reached with a tiny alpha: bounded retries.
    cfg = PartitionConfig(kind="dirichlet", alpha=0.01, min_samples_per_client=95)
    with pytest.raises(ConfigError, match="tries"):
        partition(LABELS, cfg, 10, rng(0))


def test_one_class_per_client() -> None:
    cfg = PartitionConfig(kind="classes_per_client", classes_per_client=1)
    parts = partition(LABELS, cfg, 10, rng(0))
    held = [set(np.unique(LABELS[p]).tolist()) for p in parts]
    assert all(len(h) == 1 for h in held)
    assert set().union(*held) == set(range(10))
    assert all(len(p) == 100 for p in parts)  # each client gets its whole class


def test_two_classes_per_client_even_coverage() -> None:
    cfg = PartitionConfig(kind="classes_per_client", classes_per_client=2)
    parts = partition(LABELS, cfg, 10, rng(1))
    held = [np.unique(LABELS[p]) for p in parts]
    assert all(len(h) == 2 for h in held)
    holders = np.bincount(np.concatenate(held), minlength=10)
    assert holders.tolist() == [2] * 10  # every class shared by exactly two clients
    assert all(len(p) == 100 for p in parts)
    # Uneven case: 3 clients x 3 classes cover 9 distinct classes, none twice.
    cfg3 = PartitionConfig(kind="classes_per_client", classes_per_client=3)
    held3 = [np.unique(LABELS[p]) for p in partition(LABELS, cfg3, 3, rng(2))]
    assert len(np.unique(np.concatenate(held3))) == 9


def test_classes_per_client_too_many_classes() -> None:
    cfg = PartitionConfig(kind="classes_per_client", classes_per_client=11)
    with pytest.raises(ConfigError, match="^data.partition.classes_per_client: 11"):
        partition(LABELS, cfg, 10, rng(0))


def test_too_many_clients_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="^data.clients"):
        partition(np.arange(5) % 2, PartitionConfig(kind="iid"), 6, rng(0))
    # A class split among more holders than it has samples would leave a client empty.
    labels = np.array([0, 0, 0, 1])  # 4 clients, 2 classes: class 1's one sample, 2 holders
    with pytest.raises(ConfigError, match="no samples"):
        partition(labels, PartitionConfig(kind="classes_per_client"), 4, rng(0))


def test_registry_names() -> None:
    assert PARTITIONS.names() == ["classes_per_client", "dirichlet", "iid"]


# --------------------------------------------------------------------------- queries
TEST_LABELS = np.repeat(np.arange(10), 30)  # 300 test samples


def test_global_queries_cover_test_set_once() -> None:
    parts = query_split(TEST_LABELS, [LABELS[:10]] * 7, "global", 7, 10, rng(0))
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(TEST_LABELS)))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    again = query_split(TEST_LABELS, [LABELS[:10]] * 7, "global", 7, 10, rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_local_queries_follow_train_distribution() -> None:
    cfg = PartitionConfig(kind="classes_per_client", classes_per_client=1)
    train_parts = partition(LABELS, cfg, 10, rng(0))
    train_labels = [LABELS[p] for p in train_parts]
    queries = query_split(TEST_LABELS, train_labels, "local", 10, 10, rng(1))
    for q, tl in zip(queries, train_labels):
        assert len(q) == 30
        assert set(TEST_LABELS[q].tolist()) == {int(tl[0])}
        assert len(np.unique(q)) == 30  # 30 test samples of the class: no replacement needed


def test_local_queries_mixture_and_replacement() -> None:
    # Client 0 trains 90% class 0, 10% class 1; client 1 only class 2, with few test samples.
    train_labels = [np.array([0] * 90 + [1] * 10), np.array([2] * 5)]
    test_labels = np.array([0] * 500 + [1] * 500 + [2] * 3)
    queries = query_split(test_labels, train_labels, "local", 2, 3, rng(0))
    counts = np.bincount(test_labels[queries[0]], minlength=3)
    assert len(queries[0]) == 501 and counts[2] == 0
    assert counts[0] / 501 == pytest.approx(0.9, abs=0.05)
    assert set(test_labels[queries[1]].tolist()) == {2} and len(queries[1]) == 501
    assert set(queries[1].tolist()) == {1000, 1001, 1002}  # drawn with replacement


def test_unknown_query_mode() -> None:
    with pytest.raises(ConfigError, match="^data.queries: unknown query split 'nowhere'"):
        query_split(TEST_LABELS, [LABELS], "nowhere", 1, 10, rng(0))


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_mixed_queries_take_the_stated_share_from_the_global_split(share: float) -> None:
    # Client c trains on class c only, so its local queries are all class c; the global ones
    # are whatever its share of the whole test set holds.
    test_labels = np.repeat(np.arange(10), 100)
    train_labels = [np.full(10, c) for c in range(10)]
    glob = query_split(test_labels, train_labels, "global", 10, 10, rng(3))
    mixed = query_split(test_labels, train_labels, "mixed", 10, 10, rng(3), share)
    for c, (g, m) in enumerate(zip(glob, mixed)):
        assert len(m) == 100
        n_global = round(share * 100)
        # A query outside class c can only have come from the global share (its local ones
        # are all class c), and there are at most round(share x 100) of those.
        assert set(m[test_labels[m] != c].tolist()) <= set(g.tolist())
        assert (test_labels[m] != c).sum() <= n_global
        if share == 0.0:
            assert (test_labels[m] == c).all()
        if share == 1.0:
            assert sorted(m.tolist()) == sorted(g.tolist())
