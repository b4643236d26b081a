"""How good a frozen feature extractor's features are: measurement, not training.

Stage 1's loss says little about whether its features are useful (a collapsed FedSC sits
at a low loss). These are the standard checks of self-supervised learning, run on the
clients' pooled training features and scored on the test set; they cost no simulated time
or bytes (the clients never run them):

* a linear probe: multinomial logistic regression on standardised features (scikit-learn,
  lbfgs, deterministic);
* a k-nearest-neighbour accuracy (cosine similarity, majority vote of k, as in Wu et al.,
  CVPR 2018 and the SSL literature);
* the effective rank of the features (Roy & Vetterli, 2007; RankMe, Garrido et al., ICML
  2023): exp of the entropy of the normalised singular values of the centred feature
  matrix; 1 for features on a line, D for isotropic ones. (With squared singular values,
  i.e. covariance eigenvalues, the same features give a smaller number.)

For FedSC, also the mean agreement of two views' clipped projections z1 . z0 and the
spectral loss over all the data, beside its value at total collapse: every projection the
same vector v gives -2 |v|^2 + |v|^4, lowest at |v|^2 = 1 when the clipping radius allows
it (mu >= 1: -1), else at the radius (-2 mu + mu^2); and the share of the projections'
correlation held by its top eigenvalue (1 when every projection lies on one line, which
is also how a collapse pinned at the clipping radius shows).

A measurement choice, for cost: the checks fit on at most ``MAX_PROBE_TRAIN`` (10,000)
pooled training samples, a fixed seeded subsample (``numpy.random.default_rng(0)``, kept
in their pooled order) when the clients hold more. The probe's logistic regression, the
kNN's similarity matrix and the SVD then cost the same from some hundred clients on,
instead of growing with the clients (at 1,000 clients of 60 samples they took 39 % of
stage 1). FedSC's view agreement and spectral loss over the data (``stage1.py``) take the
same subsample: that loss forms ``z1 z0^T``, an (n, n) matrix, 14 GB at 60,000 samples.
Pools at or under the cap are used whole, so small runs are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

KNN_K = 20
MAX_PROBE_TRAIN = 10_000


def probe_subset(n: int, cap: int | None = None) -> np.ndarray | None:
    """Indices of the pooled samples the checks fit on: None (all of them) when ``n <= cap``,
    else ``cap`` indices drawn without replacement by ``default_rng(0)``, in ascending order.
    ``cap`` defaults to ``MAX_PROBE_TRAIN`` (read at call time)."""
    cap = MAX_PROBE_TRAIN if cap is None else cap
    if n <= cap:
        return None
    return np.sort(np.random.default_rng(0).choice(n, size=cap, replace=False))


def effective_rank(feats: torch.Tensor) -> float:
    """exp(H(p)) for p the normalised singular values of the centred (n, D) features."""
    x = feats.double() - feats.double().mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    if float(s.sum()) <= 0:
        return 0.0  # every sample has the same features: no direction at all
    p = s / s.sum()
    p = p[p > 0]
    return float(math.exp(float(-(p * p.log()).sum())))


def linear_probe(train: torch.Tensor, y_train: torch.Tensor, test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Test accuracy of a logistic regression fitted on the training features."""
    from sklearn.linear_model import LogisticRegression

    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    a = ((train - mean) / std).double().numpy()
    b = ((test - mean) / std).double().numpy()
    if len(np.unique(y_train.numpy())) < 2:  # one class: the probe can only say that class
        return float((y_test == y_train[0]).double().mean())
    clf = LogisticRegression(max_iter=500)
    clf.fit(a, y_train.numpy())
    return float((clf.predict(b) == y_test.numpy()).mean())


def knn_accuracy(train: torch.Tensor, y_train: torch.Tensor, test: torch.Tensor, y_test: torch.Tensor,
                 num_classes: int, k: int = KNN_K) -> float:
    """Test accuracy of a majority vote of the k most cosine-similar training samples."""
    a = torch.nn.functional.normalize(train.float(), dim=1)
    k = min(k, len(a))
    hits = 0
    for i in range(0, len(test), 1024):
        b = torch.nn.functional.normalize(test[i : i + 1024].float(), dim=1)
        idx = (b @ a.T).topk(k, dim=1).indices  # (q, k)
        votes = torch.nn.functional.one_hot(y_train[idx], num_classes).sum(1)  # (q, K)
        hits += int((votes.argmax(1) == y_test[i : i + 1024]).sum())
    return hits / max(len(test), 1)


@dataclass(frozen=True)
class Representation:
    linear_probe: float
    knn: float
    effective_rank: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}


@torch.no_grad()
def measure(fe: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
            y_test: torch.Tensor, num_classes: int, max_train: int | None = None) -> Representation:
    """The three checks of ``fe``'s features (fe put in eval mode; its mode is restored),
    fitted on at most ``max_train`` of the training samples (see :func:`probe_subset`)."""
    from nmoe_sim.fl.train import predict_batched

    keep = probe_subset(len(x_train), max_train)
    if keep is not None:
        idx = torch.from_numpy(keep)
        x_train, y_train = x_train[idx], y_train[idx]

    was = fe.training
    fe.eval()
    try:
        train, test = predict_batched(fe, x_train), predict_batched(fe, x_test)
    finally:
        fe.train(was)
    if not (bool(torch.isfinite(train).all()) and bool(torch.isfinite(test).all())):
        # Finite but huge weights (a learning rate far too large) can overflow the forward
        # pass; the probes' fits would fail with a scikit-learn traceback.
        from nmoe_sim.errors import TrainingDiverged

        raise TrainingDiverged("the trained feature extractor gives NaN or inf features (training diverged); "
                               "lower stage1.lr or set stage1.grad_clip_norm")
    return Representation(linear_probe(train, y_train, test, y_test),
                          knn_accuracy(train, y_train, test, y_test, num_classes), effective_rank(train))


# Projections whose correlation has one eigenvalue holding this share of its trace are
# (nearly) one vector: collapsed, whatever their norm.
COLLAPSED_TOP_SHARE = 0.99


def top_eigen_share(r: torch.Tensor) -> float:
    """The largest eigenvalue's share of the trace of a correlation matrix (P, P): 1 when
    every projection lies on one line, 1/P when they spread evenly."""
    eig = torch.linalg.eigvalsh(r.double())
    total = float(eig.sum())
    return float(eig[-1]) / total if total > 0 else 1.0


def collapsed_spectral_loss(mu: float) -> float:
    """The lowest spectral loss of a total collapse (every projection the same vector v,
    |v|^2 <= mu): -2 |v|^2 + |v|^4 at |v|^2 = min(1, mu)."""
    r2 = min(1.0, mu)
    return -2.0 * r2 + r2 * r2
