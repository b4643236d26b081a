"""Stage 1: the shared feature extractor, by FedCE or FedSC (Gao et al., arXiv 2511.01743).

FedCE: FE + linear head trained with cross-entropy under FedAvg (McMahan et al., 2017).
FedSC: FE + projection head trained with the spectral contrastive objective, each client
regularised by the other clients' correlation matrices shared through the server
(Jing et al., ICML 2024). Both are :class:`RoundAlgorithm` s run by the round driver.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from nmoe_sim.config import Stage1Config, TrainConfig
from nmoe_sim.data.augment import make_views
from nmoe_sim.fl.aggregate import fedavg
from nmoe_sim.fl.fedsc_loss import alpha_schedule, alpha_value, clip_norm, correlation, spectral_loss
from nmoe_sim.fl.probes import COLLAPSED_TOP_SHARE, Representation, collapsed_spectral_loss, measure, probe_subset, top_eigen_share
from nmoe_sim.fl.schedule import sgd_args
from nmoe_sim.fl.rounds import Failure, LocalResult, RoundAlgorithm
from nmoe_sim.engine.losses import VIEW_CHUNK
from nmoe_sim.engine.tasks import State, TaskResult, TrainTask, clone_state, draw_plan, plan_samples
from nmoe_sim.fl.train import predict_batched
from nmoe_sim.models import Classifier, ContrastiveModel, FeatureExtractor, forward_flops_per_sample, train_flops_per_sample
from nmoe_sim.models.build import make_fe, seeded
from nmoe_sim.registry import Registry
from nmoe_sim.world import World, client_rngs

FE_ALGORITHMS: Registry[type["FederatedFE"]] = Registry("stage1 algorithm")



class FederatedFE(RoundAlgorithm):
    """Shared plumbing: a global model, a scratch copy for evaluation, FedAvg of states, and
    (``probe=True``: the NMoE's stage 1) checks of the FE's features (:mod:`nmoe_sim.fl.probes`)."""

    model: torch.nn.Module

    def __init__(self, world: World, cfg: TrainConfig, stage: str, model: torch.nn.Module,
                 probe: bool = False) -> None:
        self.world, self.cfg, self.stage = world, cfg, stage
        self.model = model
        self.global_state = clone_state(model.state_dict())
        self.scratch = copy.deepcopy(model)
        self.model_bytes = world.param_bytes(model)
        self.gens = client_rngs(world.streams, stage, world.n_clients)
        self.probe = probe
        self.rounds_updated = 0  # rounds in which at least one client's update arrived
        self.final: Representation | None = None
        # The clients' pooled training data the checks fit on, gathered once.
        clients = world.clients
        self.pooled = (torch.cat([c.x_train for c in clients]), torch.cat([c.y_train for c in clients])) if probe else None
        # The reference: the same FE before any training (measured once, up front).
        self.untrained = self._measure() if probe else None

    def _measure(self) -> Representation:
        assert self.pooled is not None
        ds = self.world.dataset
        return measure(self.fe, *self.pooled, ds.x_test, ds.y_test, ds.num_classes)

    def measure(self, rnd: int) -> dict[str, float] | None:
        every = getattr(self.cfg, "probe_every", 0)
        last = rnd == self.cfg.rounds - 1
        if not self.probe or not (last or (every and (rnd + 1) % every == 0)):
            return None
        rep = self._measure()
        if last:
            self.final = rep
        # Rounded like metrics.json's: the last digits of an SVD differ between library builds.
        checks = rep.as_dict()
        return {"probe_linear": checks["linear_probe"], "probe_knn": checks["knn"],
                "effective_rank": checks["effective_rank"]}

    def representation(self) -> dict[str, Any]:
        """metrics.json's ``stages.<stage>.representation``: the final checks beside the
        untrained FE's, and the flags a reader must not miss."""
        assert self.final is not None and self.untrained is not None, "measured after the last round"
        collapsed = self.final.effective_rank < 2 or self.final.linear_probe <= self.untrained.linear_probe
        return {**self.final.as_dict(), "untrained": self.untrained.as_dict(),
                "rounds_with_update": self.rounds_updated, "collapsed": bool(collapsed),
                "no_update": self.rounds_updated == 0}

    @property
    def fe(self) -> FeatureExtractor:
        self.model.load_state_dict(self.global_state)
        return self.model.fe  # type: ignore[return-value]

    def aggregate(self, rnd: int, results: list[LocalResult], failures: list[Failure]) -> None:
        mean = fedavg([r.update["state"] for r in results], [r.num_samples for r in results]) if results else None
        self.aggregate_mean(rnd, mean, results, failures)

    def averages_states(self, rnd: int) -> bool:
        return True  # FedAvg: the new global model is the arrived states' mean, nothing else

    def aggregate_mean(self, rnd: int, mean: State | None, results: list[LocalResult],
                       failures: list[Failure]) -> None:
        if mean is not None:  # a round where every client failed leaves the global model unchanged
            self.rounds_updated += 1
            self.global_state = mean


@FE_ALGORITHMS.register("fedce")
class FedCE(FederatedFE):
    def __init__(self, world: World, cfg: TrainConfig, stage: str = "stage1_fedce", evaluate: bool = False,
                 probe: bool = False) -> None:
        ds = world.dataset
        fe = make_fe(world.cfg, ds.input_shape, world.streams, stage)
        model = seeded(world.streams, f"{stage}/head", lambda: Classifier(fe, ds.num_classes))
        super().__init__(world, cfg, stage, model, probe)
        self.train_flops = train_flops_per_sample(model, ds.input_shape)
        self._evaluate = evaluate

    def download_bytes(self, rnd: int, client: int) -> int:
        return self.model_bytes

    def task(self, rnd: int, client: int) -> TrainTask:
        """Cross-entropy SGD from the global model on the client's data (FedAvg's local step)."""
        data, cfg = self.world.clients[client], self.cfg
        plan = draw_plan(data.num_samples, cfg.local_epochs, cfg.batch_size, self.gens[client],
                         max_steps=cfg.local_steps)[0]
        return TrainTask(
            client=client, node=client, template=self.model, start=self.global_state,
            x=data.x_train, y=data.y_train, plan=plan,
            loss="cross_entropy", **sgd_args(cfg, rnd),
            flops=plan_samples(plan) * self.train_flops, upload_bytes=self.model_bytes,
        )

    def evaluate(self, rnd: int) -> tuple[float, float] | None:
        if not self._evaluate:
            return None
        self.scratch.load_state_dict(self.global_state)
        self.scratch.eval()
        y = torch.cat([c.y_query for c in self.world.clients]).numpy()
        pred = torch.cat([predict_batched(self.scratch, c.x_query).argmax(1) for c in self.world.clients]).numpy()
        labels = list(range(self.world.dataset.num_classes))
        return (float(f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
                float(accuracy_score(y, pred)))


@FE_ALGORITHMS.register("fedsc")
class FedSC(FederatedFE):
    def __init__(self, world: World, cfg: Stage1Config, stage: str = "stage1_fedsc", probe: bool = False) -> None:
        ds = world.dataset
        fe = make_fe(world.cfg, ds.input_shape, world.streams, stage)
        model = seeded(world.streams, f"{stage}/proj", lambda: ContrastiveModel(fe, world.cfg.model.proj_dim,
                                                                                  world.cfg.model.proj_batchnorm))
        self.sc = cfg.fedsc
        super().__init__(world, cfg, stage, model, probe)
        p = world.cfg.model.proj_dim
        self.corr_bytes = world.tensor_bytes(p * p) if self.sc.share_correlation else 0
        self.fresh = self.sc.share_correlation and self.sc.r_ext == "fresh"
        # Two augmented views per sample, each a full training pass of FE + projection.
        self.train_flops = 2 * train_flops_per_sample(model, ds.input_shape)
        self.forward_flops = forward_flops_per_sample(model, ds.input_shape)
        self.views = make_views(self.sc.augment, ds.input_shape)
        self.uploaded: dict[int, torch.Tensor] = {}  # client -> its latest shared correlation (P,P)
        self.r_ext: dict[int, torch.Tensor] = {}
        self.participants: list[int] = []  # this round's, set by configure
        self.noise_rngs = [world.streams.numpy(f"{stage}/noise{i}") for i in range(world.n_clients)]

    def alpha(self, rnd: int) -> float:
        return alpha_schedule(rnd, self.cfg.rounds, alpha_value(self.sc.alpha_start, self.world.n_clients),
                              alpha_value(self.sc.alpha_end, self.world.n_clients))

    def configure(self, rnd: int, participants: Any) -> None:
        # Stale: R_ext for client c is the mean of the OTHER clients' correlations from
        # earlier rounds, sent with the model. Fresh: made in this round's prelude.
        self.r_ext = {}
        self.participants = list(participants)
        if self.fresh or not self.sc.share_correlation:
            return
        self._set_r_ext(participants)

    def _set_r_ext(self, clients: Any) -> None:
        # One stacking buffer for every client: a fresh (n-1, P, P) stack per client, freed
        # between small allocations, fragmented the heap into n^2 P^2 bytes of RSS (18 GB at
        # 1,000 clients). The same stack into the same shape gives the same mean, bit for bit.
        ordered = sorted(self.uploaded.items())
        buf: torch.Tensor | None = None
        for c in clients:
            others = [r for j, r in ordered if j != c]
            if others:
                if buf is None or buf.shape[0] < len(others) or buf.dtype != others[0].dtype:
                    buf = torch.empty((len(ordered),) + tuple(others[0].shape), dtype=others[0].dtype)
                self.r_ext[c] = torch.stack(others, out=buf[: len(others)]).mean(0)

    def download_bytes(self, rnd: int, client: int) -> int:
        return self.model_bytes + (self.corr_bytes if client in self.r_ext and not self.fresh else 0)

    # ------------------------------------------------------------------ fresh R_ext
    def has_prelude(self, rnd: int) -> bool:
        # At alpha = 1 the R_ext term has weight 0 (round 0 by default): nothing to exchange.
        return self.fresh and self.alpha(rnd) < 1.0

    def prelude(self, rnd: int, client: int) -> TrainTask:
        """The client's correlation over ``r_passes`` augmented passes of its data (two views
        of each sample per pass), through the model it just downloaded (the authors'
        ``compCOV``); uploaded to the server."""
        data, gen = self.world.clients[client], self.gens[client]
        x, y = data.x_train, data.y_train
        # r_samples: a fresh subset each round, drawn from the client's stream before the view seeds.
        if self.sc.r_samples is not None and self.sc.r_samples < data.num_samples:
            keep = torch.randperm(data.num_samples, generator=gen)[: self.sc.r_samples]
            x, y = x[keep], y[keep]
        chunks = range(0, len(y), VIEW_CHUNK)
        seeds = tuple(tuple(self.views.draw_seed(gen) for _ in chunks) for _ in range(2 * self.sc.r_passes))
        return TrainTask(
            client=client, node=client, template=self.model, start=self.global_state,
            # No SGD step (an empty plan): the statistic is the task's report.
            x=x, y=y, plan=(), loss="fedsc_spectral", report="fedsc_correlation",
            args={"views": self.views, "mu": self.sc.mu, "seeds": seeds}, lr=0.0, momentum=0.0, weight_decay=0.0,
            flops=2 * self.sc.r_passes * len(y) * self.forward_flops, upload_bytes=self.corr_bytes,
        )

    def combine(self, rnd: int, reports: dict[int, Any]) -> None:
        """R_ext for every participant: the mean of the other clients' fresh correlations, as
        the authors do it (a client that has not sent one this round counts with its latest)."""
        for c, r in sorted(reports.items()):
            self.uploaded[c] = self._noisy(c, r)
        self._set_r_ext(self.participants)

    def reply_bytes(self, rnd: int, client: int) -> int:
        return self.corr_bytes if client in self.r_ext else 0

    def _noisy(self, client: int, r: torch.Tensor) -> torch.Tensor:
        if self.sc.noise_std <= 0:
            return r
        # Gaussian mechanism on the shared statistic, drawn on the client (symmetric noise).
        noise = self.noise_rngs[client].normal(0.0, self.sc.noise_std, size=tuple(r.shape))
        return r + torch.as_tensor((noise + noise.T) / np.sqrt(2.0), dtype=r.dtype)

    def task(self, rnd: int, client: int) -> TrainTask:
        """The two-view spectral loss from the global model, regularised by this round's R_ext.

        Each batch's two view seeds are drawn with the plan, in the order a loop drawing
        them in place would (the epoch's permutation, then per batch view 1, view 0).
        """
        data, gen, cfg = self.world.clients[client], self.gens[client], self.cfg
        views = self.views
        plan, draws = draw_plan(data.num_samples, cfg.local_epochs, cfg.batch_size, gen,
                                per_batch=lambda b, g: (views.draw_seed(g), views.draw_seed(g)),
                                max_steps=cfg.local_steps)
        alpha = self.alpha(rnd)
        return TrainTask(
            client=client, node=client, template=self.model, start=self.global_state,
            x=data.x_train, y=data.y_train, plan=plan, draws=draws, loss="fedsc_spectral",
            args={"views": views, "mu": self.sc.mu, "alpha": alpha, "r_ext": self.r_ext.get(client)},
            **sgd_args(cfg, rnd),
            flops=plan_samples(plan) * self.train_flops,
            upload_bytes=self.model_bytes + (0 if self.fresh else self.corr_bytes),
        )

    def collect(self, rnd: int, client: int, result: TaskResult) -> LocalResult:
        if self.fresh:
            return super().collect(rnd, client, result)
        # Stale: R_loc, the views' correlation sample-weighted over the last local epoch,
        # rides on the model upload.
        assert result.stat is not None
        return LocalResult(client, {"state": result.state, "corr": self._noisy(client, result.stat)},
                           result.num_samples, result.upload_bytes)

    def representation(self) -> dict[str, Any]:
        """Also how far the projections are from total collapse: two views of every training
        sample (from a stream of their own, so training draws nothing less), through the
        final global model."""
        out = super().representation()
        assert self.pooled is not None
        x = self.pooled[0]
        keep = probe_subset(len(x))  # the probes' bounded subsample: the loss's z1 z0^T is (n, n)
        if keep is not None:
            x = x[torch.from_numpy(keep)]
        gen = self.world.streams.torch(f"{self.stage}/probe_views")
        self.scratch.load_state_dict(self.global_state)
        self.scratch.eval()
        with torch.no_grad():
            z1 = clip_norm(predict_batched(self.scratch, self.views(x, gen)), self.sc.mu)
            z0 = clip_norm(predict_batched(self.scratch, self.views(x, gen)), self.sc.mu)
            out["view_agreement"] = round(float((z1 * z0).sum(1).mean()), 6)  # mean z1 . z0
            out["spectral_loss"] = round(float(spectral_loss(z1, z0, 1.0, None)), 6)
            share = top_eigen_share(correlation(z1, z0))
        out["collapsed_spectral_loss"] = collapsed_spectral_loss(self.sc.mu)
        out["projection_top_share"] = round(share, 6)
        # Every projection (nearly) the same vector, whatever its norm: at the loss's
        # collapsed optimum (norm 1) or pinned at the clipping radius.
        out["projection_collapsed"] = bool(share >= COLLAPSED_TOP_SHARE)
        return out

    def aggregate_mean(self, rnd: int, mean: State | None, results: list[LocalResult],
                       failures: list[Failure]) -> None:
        super().aggregate_mean(rnd, mean, results, failures)
        if self.sc.share_correlation and not self.fresh:
            for r in results:
                self.uploaded[r.client] = r.update["corr"]


def make_stage1(world: World) -> FederatedFE:
    """The NMoE's stage 1, its features checked after the last round (and every probe_every)."""
    cfg = world.cfg.stage1
    return FE_ALGORITHMS.get(cfg.algorithm, "stage1.algorithm")(world, cfg, probe=True)
