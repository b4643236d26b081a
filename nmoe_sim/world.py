"""The world a scenario runs in: data on clients, the topology, device profiles, seeds.

A :class:`World` is built once per run. Each system (the NMoE pipeline and each baseline)
gets a fresh :class:`Sim` (SimPy environment, Network, executor) over the same world, with
the same channel seed: every system meets the same links, the same shadowing and the same
initial fading state, and its queries arrive at the same times (common random numbers).
Block fading is sampled lazily, so later fading draws coincide only where two systems
sample a link in the same pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable

import networkx as nx
import simpy
import torch

from nmoe_sim.config import DeviceProfile, Scenario
from nmoe_sim.data.datasets import Dataset, load_dataset
from nmoe_sim.data.partition import partition, query_split
from nmoe_sim.engine.checkpoint import Checkpoints
from nmoe_sim.engine.executors import EXECUTORS
from nmoe_sim.engine.faults import FaultState
from nmoe_sim.fl.rounds import BS, CostScope, make_round_record
from nmoe_sim.net.mobility import Mobility
from nmoe_sim.net.network import Network
from nmoe_sim.net.topology import build_topology
from nmoe_sim.record import Recorder
from nmoe_sim.seeds import SeedStreams


@dataclass
class ClientData:
    idx: int
    x_train: torch.Tensor  # (n, C, H, W)
    y_train: torch.Tensor  # (n,)
    x_query: torch.Tensor  # (q, C, H, W)
    y_query: torch.Tensor  # (q,)
    device: str
    profile: DeviceProfile

    @property
    def num_samples(self) -> int:
        return int(self.y_train.shape[0])


@dataclass
class World:
    cfg: Scenario
    streams: SeedStreams
    dataset: Dataset
    clients: list[ClientData]
    graph: nx.Graph
    profiles: dict[Hashable, DeviceProfile]
    recorder: Recorder = field(default_factory=Recorder)
    # Where this run saves at round and stage boundaries (none by default: library callers, sweeps).
    checkpoints: Checkpoints = field(default_factory=Checkpoints)

    @property
    def n_clients(self) -> int:
        return len(self.clients)

    def param_bytes(self, module: torch.nn.Module, names: Any = None) -> int:
        """Bytes to send ``module``'s parameters (or only those named) at the scenario's precision."""
        params = dict(module.named_parameters())
        keep = params if names is None else {n: params[n] for n in names}
        return sum(p.numel() for p in keep.values()) * self.cfg.network.bytes_per_param

    def tensor_bytes(self, numel: int) -> int:
        return int(numel) * self.cfg.network.bytes_per_param

    def new_sim(self, system: str) -> "Sim":
        return Sim(self, system)


class Sim:
    """One SimPy world for one system: environment, network and executor.

    The network and the executor stamp ``system`` on every record they make, so costs are
    attributed to the world that paid them, never recovered from stage names.
    """

    def __init__(self, world: World, system: str) -> None:
        self.world = world
        self.system = system
        self.env = simpy.Environment()
        self.recorder = world.recorder
        net_cfg = world.cfg.network
        self.net = Network(
            self.env, world.graph, net_cfg.channel,
            tx_power_dbm={n: p.tx_power_dbm for n, p in world.profiles.items()},
            rx_power_w={n: p.rx_power_w for n, p in world.profiles.items()},
            recorder=world.recorder, rng=world.streams.numpy("network/channel"),
            system=system, routing=net_cfg.routing,
        )
        # Moving clients only where the scenario has some (net/mobility.py): else no timer, no draw.
        self.mobility: Mobility | None = None
        if net_cfg.mobility is not None:
            self.mobility = Mobility(self.env, self.net, world.graph, net_cfg.mobility, world.streams)
        executor_cls = EXECUTORS.get(world.cfg.runtime.executor, "runtime.executor")
        self.executor = executor_cls(self.env, world.profiles, world.recorder, system=system,
                                     infrastructure=self.net.infrastructure, runtime=world.cfg.runtime)
        # Faults only where the scenario has some: without them no hook runs and no
        # number is drawn, so such runs are bit for bit what they were before faults.
        self.faults: FaultState | None = None
        if world.cfg.faults.active:
            self.faults = FaultState(world.cfg.faults, self.env, world.graph, world.streams, world.recorder,
                                     system=system)
            self.net.attach_faults(self.faults)
            self.executor.faults = self.faults

    def record_round(self, scope: CostScope, stage: str, rnd: int, rounds_total: int, start_s: float,
                     participants: int, failures: int, scores: tuple[float, float] | None,
                     measured: dict[str, float] | None = None) -> None:
        rec = self.recorder
        self.recorder.add(make_round_record(
            scope, stage, rnd, rounds_total, start_s, self.env.now, participants, failures,
            int(rec.sum_of(self.system, scope.stages, "bytes")),
            int(rec.sum_of(self.system, scope.stages, "bytes_delivered")),
            rec.sum_of(self.system, scope.stages, "energy_j"), scores, measured,
        ))


def build_world(cfg: Scenario, streams: SeedStreams) -> World:
    dataset = load_dataset(cfg.data, streams.numpy("data/load"))
    n = cfg.data.clients
    y_train = dataset.y_train.numpy()
    parts = partition(y_train, cfg.data.partition, n, streams.numpy("data/partition"))
    queries = query_split(
        dataset.y_test.numpy(), [y_train[p] for p in parts], cfg.data.queries, n,
        dataset.num_classes, streams.numpy("data/queries"), cfg.data.queries_global_share,
    )
    limit = cfg.inference.max_queries_per_client
    devices = cfg.network.devices
    clients = []
    for i, (p, q) in enumerate(zip(parts, queries)):
        q = q[:limit] if limit is not None else q
        name = devices.assign[i % len(devices.assign)]
        clients.append(ClientData(
            i, dataset.x_train[p], dataset.y_train[p], dataset.x_test[q], dataset.y_test[q],
            name, devices.profile(name),
        ))
    graph = build_topology(cfg.network.topology, n, streams.numpy("network/topology"))
    for c in clients:
        graph.nodes[c.idx]["device"] = c.device
    profiles: dict[Hashable, DeviceProfile] = {c.idx: c.profile for c in clients}
    profiles[BS] = devices.profile(devices.server)
    return World(cfg, streams, dataset, clients, graph, profiles)


def client_rngs(streams: SeedStreams, stage: str, n: int) -> list[torch.Generator]:
    return [streams.torch(f"{stage}/client{i}") for i in range(n)]
