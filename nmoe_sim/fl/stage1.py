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
from nmoe_sim.fl.fedsc_loss import alpha_schedule
from nmoe_sim.fl.rounds import Failure, LocalResult, RoundAlgorithm
from nmoe_sim.engine.tasks import TaskResult, TrainTask, clone_state, draw_plan
from nmoe_sim.fl.train import predict_batched
from nmoe_sim.models import Classifier, ContrastiveModel, FeatureExtractor, train_flops_per_sample
from nmoe_sim.models.build import make_fe, seeded
from nmoe_sim.registry import Registry
from nmoe_sim.world import World, client_rngs

FE_ALGORITHMS: Registry[type["FederatedFE"]] = Registry("stage1 algorithm")



class FederatedFE(RoundAlgorithm):
    """Shared plumbing: a global model, a scratch copy for local work, FedAvg of states."""

    model: torch.nn.Module

    def __init__(self, world: World, cfg: TrainConfig, stage: str, model: torch.nn.Module) -> None:
        self.world, self.cfg, self.stage = world, cfg, stage
        self.model = model
        self.global_state = clone_state(model.state_dict())
        self.scratch = copy.deepcopy(model)
        self.model_bytes = world.param_bytes(model)
        self.gens = client_rngs(world.streams, stage, world.n_clients)

    @property
    def fe(self) -> FeatureExtractor:
        self.model.load_state_dict(self.global_state)
        return self.model.fe  # type: ignore[return-value]

    def aggregate(self, rnd: int, results: list[LocalResult], failures: list[Failure]) -> None:
        if results:  # a round where every client failed leaves the global model unchanged
            self.global_state = fedavg([r.update["state"] for r in results], [r.num_samples for r in results])


@FE_ALGORITHMS.register("fedce")
class FedCE(FederatedFE):
    def __init__(self, world: World, cfg: TrainConfig, stage: str = "stage1_fedce", evaluate: bool = False) -> None:
        ds = world.dataset
        fe = make_fe(world.cfg, ds.input_shape, world.streams, stage)
        model = seeded(world.streams, f"{stage}/head", lambda: Classifier(fe, ds.num_classes))
        super().__init__(world, cfg, stage, model)
        self.train_flops = train_flops_per_sample(model, ds.input_shape)
        self._evaluate = evaluate

    def download_bytes(self, rnd: int, client: int) -> int:
        return self.model_bytes

    def task(self, rnd: int, client: int) -> TrainTask:
        """Cross-entropy SGD from the global model on the client's data (FedAvg's local step)."""
        data, cfg = self.world.clients[client], self.cfg
        return TrainTask(
            client=client, node=client, template=self.model, start=self.global_state,
            x=data.x_train, y=data.y_train,
            plan=draw_plan(data.num_samples, cfg.local_epochs, cfg.batch_size, self.gens[client])[0],
            loss="cross_entropy", lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            flops=cfg.local_epochs * data.num_samples * self.train_flops, upload_bytes=self.model_bytes,
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
    def __init__(self, world: World, cfg: Stage1Config, stage: str = "stage1_fedsc") -> None:
        ds = world.dataset
        fe = make_fe(world.cfg, ds.input_shape, world.streams, stage)
        model = seeded(world.streams, f"{stage}/proj", lambda: ContrastiveModel(fe, world.cfg.model.proj_dim))
        super().__init__(world, cfg, stage, model)
        self.sc = cfg.fedsc
        p = world.cfg.model.proj_dim
        self.corr_bytes = world.tensor_bytes(p * p) if self.sc.share_correlation else 0
        # Two augmented views per sample, each a full training pass of FE + projection.
        self.train_flops = 2 * train_flops_per_sample(model, ds.input_shape)
        self.views = make_views(self.sc.augment, ds.input_shape)
        self.uploaded: dict[int, torch.Tensor] = {}  # client -> its last shared correlation (P,P)
        self.r_ext: dict[int, torch.Tensor] = {}
        self.noise_rngs = [world.streams.numpy(f"{stage}/noise{i}") for i in range(world.n_clients)]

    def configure(self, rnd: int, participants: Any) -> None:
        # R_ext for client c: the mean of the OTHER clients' correlations from earlier rounds.
        self.r_ext = {}
        if not self.sc.share_correlation:
            return
        for c in participants:
            others = [r for j, r in self.uploaded.items() if j != c]
            if others:
                self.r_ext[c] = torch.stack(others).mean(0)

    def download_bytes(self, rnd: int, client: int) -> int:
        return self.model_bytes + (self.corr_bytes if client in self.r_ext else 0)

    def task(self, rnd: int, client: int) -> TrainTask:
        """The two-view spectral loss from the global model, regularised by this round's R_ext.

        Each batch's two view seeds are drawn with the plan, in the order a loop drawing
        them in place would (the epoch's permutation, then per batch view 1, view 0).
        """
        data, gen, cfg = self.world.clients[client], self.gens[client], self.cfg
        views = self.views
        plan, draws = draw_plan(data.num_samples, cfg.local_epochs, cfg.batch_size, gen,
                                per_batch=lambda b, g: (views.draw_seed(g), views.draw_seed(g)))
        alpha = alpha_schedule(rnd, cfg.rounds, self.sc.alpha_start, self.sc.alpha_end)
        return TrainTask(
            client=client, node=client, template=self.model, start=self.global_state,
            x=data.x_train, y=data.y_train, plan=plan, draws=draws, loss="fedsc_spectral",
            args={"views": views, "mu": self.sc.mu, "alpha": alpha, "r_ext": self.r_ext.get(client)},
            lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            flops=cfg.local_epochs * data.num_samples * self.train_flops,
            upload_bytes=self.model_bytes + self.corr_bytes,
        )

    def collect(self, rnd: int, client: int, result: TaskResult) -> LocalResult:
        # R_loc: the views' correlation, sample-weighted over the last local epoch.
        r_loc = result.stat
        assert r_loc is not None
        if self.sc.noise_std > 0:  # Gaussian mechanism on the shared statistic (symmetric noise)
            noise = self.noise_rngs[client].normal(0.0, self.sc.noise_std, size=r_loc.shape)
            r_loc = r_loc + torch.as_tensor((noise + noise.T) / np.sqrt(2.0), dtype=r_loc.dtype)
        return LocalResult(client, {"state": result.state, "corr": r_loc}, result.num_samples, result.upload_bytes)

    def aggregate(self, rnd: int, results: list[LocalResult], failures: list[Failure]) -> None:
        super().aggregate(rnd, results, failures)
        if self.sc.share_correlation:
            for r in results:
                self.uploaded[r.client] = r.update["corr"]


def make_stage1(world: World) -> FederatedFE:
    cfg = world.cfg.stage1
    return FE_ALGORITHMS.get(cfg.algorithm, "stage1.algorithm")(world, cfg)
