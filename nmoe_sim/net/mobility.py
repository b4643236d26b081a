"""Clients that move: positions as a pure function of time and seed, links that follow them.

Off by default (``network.mobility: null``): nothing here runs and nothing is drawn.

* Tracks (:class:`Track`): ``random_waypoint`` (Johnson & Maltz 1996): straight legs at
  ``speed_m_per_s`` to points drawn uniformly in the clients' bounding box, with an optional
  pause at each; ``trajectory``: the given waypoints, then standing still. A track draws its
  legs from its own stream (``mobility/track<c>``) in order, whatever time is asked first,
  so a position is a pure function of (seed, t): a resumed run (engine/checkpoint.py)
  finds every client where the uninterrupted run had it.
* Shadowing stays spatially consistent: each end of a link carries a Gaussian field with
  correlation exp(-d / d_c) (Gudmundson 1991, d_c = ``shadowing_decorrelation_m``), drawn
  as a sum of random cosines (the spectral method: wave vectors from the field's spectrum,
  a bivariate Cauchy law of scale 1/d_c); the link's shadowing is the two ends' fields
  summed over sqrt(2), with the preset's standard deviation. A client that comes back to
  where it was sees the same shadowing.
* Doppler follows speed: f_D = f_c / c * sqrt(v_u^2 + v_v^2) (one Jakes term matched to the
  mobile-to-mobile correlation to second order, as docs/channel.md's D2D preset does), set
  once when the links are built (speeds are constant).
* Every ``update_s`` (default: each link's coherence time) a moving link's distance and
  shadowing are recomputed (:meth:`LinkChannel.relocate`); the block-fading rate follows at
  the next coherence block. Routes keep the weights of the starting positions (routing by
  where clients are now is left for later).
"""

from __future__ import annotations

import math
from typing import Any, Hashable

import networkx as nx
import numpy as np
import simpy

from nmoe_sim.config import MobilityConfig
from nmoe_sim.net import channel
from nmoe_sim.net.sharing import Call
from nmoe_sim.seeds import SeedStreams

Point = tuple[float, float]
_COSINES = 64  # terms of each shadowing field: its marginal is Gaussian to within a few % (CLT)


class Track:
    """Where one client is at time t: piecewise-linear legs between waypoints."""

    def __init__(self, start: Point, speed_m_per_s: float, pause_s: float, rng: np.random.Generator | None,
                 box: tuple[Point, Point] | None, waypoints: tuple[Point, ...] = ()) -> None:
        self.speed, self.pause_s, self.rng, self.box = speed_m_per_s, pause_s, rng, box
        self.todo = list(waypoints)  # trajectory: the points still to reach
        self.legs: list[tuple[float, float, Point, Point]] = []  # (depart_s, arrive_s, from, to)
        self.at, self.free_s = (float(start[0]), float(start[1])), 0.0  # last point reached, and when

    def _next_leg(self) -> bool:
        if self.rng is not None and self.box is not None:
            (x0, y0), (x1, y1) = self.box
            to = (float(self.rng.uniform(x0, x1)), float(self.rng.uniform(y0, y1)))
        elif self.todo:
            to = self.todo.pop(0)
        else:
            return False  # a trajectory's end: it stays
        depart = self.free_s
        arrive = depart + math.dist(self.at, to) / self.speed
        self.legs.append((depart, arrive, self.at, to))
        self.at, self.free_s = to, arrive + self.pause_s
        return True

    def position(self, t_s: float) -> Point:
        while self.free_s <= t_s and self._next_leg():
            pass
        for depart, arrive, a, b in reversed(self.legs):
            if t_s >= depart:
                f = 1.0 if t_s >= arrive or arrive == depart else (t_s - depart) / (arrive - depart)
                return (a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]))
        return self.legs[0][2] if self.legs else self.at


class ShadowField:
    """A zero-mean Gaussian field of standard deviation ``std_db`` with correlation exp(-d / d_c)."""

    def __init__(self, std_db: float, decorrelation_m: float, rng: np.random.Generator) -> None:
        # exp(-|r| / d) in 2-D has the spectrum (1 + d^2 |k|^2)^(-3/2): a bivariate Cauchy (a
        # t law with one degree of freedom) of scale 1 / d, drawn as normal / |normal| / d.
        z, w = rng.standard_normal((_COSINES, 2)), rng.standard_normal(_COSINES)
        self.k = z / (np.abs(w)[:, None] * decorrelation_m)  # (M,2) wave vectors, rad/m
        self.phase = rng.uniform(0.0, 2.0 * math.pi, _COSINES)
        self.amp = std_db * math.sqrt(2.0 / _COSINES)

    def __call__(self, p: Point) -> float:
        return float(self.amp * np.cos(self.k @ np.asarray(p) + self.phase).sum())


class Mobility:
    """Moves the clients of one Sim's network and keeps its moving links' geometry current."""

    def __init__(self, env: simpy.Environment, net: Any, graph: nx.Graph, cfg: MobilityConfig,
                 streams: SeedStreams) -> None:
        self.env, self.net, self.cfg = env, net, cfg
        clients = [n for n in graph.nodes if graph.nodes[n]["kind"] == "client"]
        # Validated with the scenario (config.py): known clients, one trajectory per moving one.
        moving = list(cfg.clients) if cfg.clients is not None else clients
        pos = {n: tuple(map(float, graph.nodes[n]["pos"])) for n in graph.nodes}
        xs, ys = [pos[c][0] for c in clients], [pos[c][1] for c in clients]
        box = ((min(xs), min(ys)), (max(xs), max(ys)))
        self.pos = pos
        self.tracks: dict[Hashable, Track] = {}
        for i, c in enumerate(sorted(moving)):
            if cfg.kind == "trajectory":
                self.tracks[c] = Track(pos[c], cfg.speed_m_per_s, 0.0, None, None, tuple((cfg.waypoints_m or ())[i]))
            else:
                self.tracks[c] = Track(pos[c], cfg.speed_m_per_s, cfg.pause_s,
                                       streams.numpy(f"mobility/track{c}"), box)
        self.links: list[tuple[Hashable, Hashable, Any, ShadowField, ShadowField]] = []
        for u, v in graph.edges:
            if u not in self.tracks and v not in self.tracks:
                continue
            link = net.link(u, v)
            if link.ideal:
                continue
            speed = math.hypot(*(cfg.speed_m_per_s if n in self.tracks else 0.0 for n in (u, v)))
            doppler = speed * link.cfg.carrier_ghz * 1e9 / channel.SPEED_OF_LIGHT_M_S
            link.cfg = link.cfg.model_copy(update={"doppler_hz": doppler})
            link.process.rho = channel.jakes_correlation(doppler, link.cfg.coherence_time_s)
            rng = streams.numpy(f"mobility/shadowing/{u}|{v}")
            std = link.cfg.shadowing_std_db / math.sqrt(2.0)
            self.links.append((u, v, link, ShadowField(std, cfg.shadowing_decorrelation_m, rng),
                               ShadowField(std, cfg.shadowing_decorrelation_m, rng)))
        self._tick(0)

    def position(self, node: Hashable, t_s: float) -> Point:
        track = self.tracks.get(node)
        return self.pos[node] if track is None else track.position(t_s)

    def step_s(self) -> float:
        if self.cfg.update_s is not None:
            return self.cfg.update_s
        return min((link.cfg.coherence_time_s for _, _, link, _, _ in self.links), default=1.0)

    def _tick(self, k: int) -> None:
        """Relocate every moving link to the positions at t = k * step, then wait a step.

        Armed with a picklable Call, not a generator, so a checkpoint can hold it."""
        t_s = k * self.step_s()
        for u, v, link, fu, fv in self.links:
            pu, pv = self.position(u, t_s), self.position(v, t_s)
            link.relocate(math.dist(pu, pv), fu(pu) + fv(pv))
        if self.links:
            self.env.timeout(max(t_s + self.step_s() - self.env.now, 0.0)).callbacks.append(Call(self._tick, k + 1))
