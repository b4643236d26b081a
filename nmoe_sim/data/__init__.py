"""Datasets (digits, Fashion-MNIST, CIFAR-10 from their standard files), federated
partitions and query splits, and contrastive augmentations.

``augment`` (which imports kornia) is not imported here, so that loading data stays light;
use ``from nmoe_sim.data.augment import make_views``.
"""

from nmoe_sim.data.datasets import DATASETS, Dataset, load_dataset
from nmoe_sim.data.partition import PARTITIONS, QUERY_SPLITS, partition, query_split

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "PARTITIONS",
    "QUERY_SPLITS",
    "partition",
    "query_split",
]
