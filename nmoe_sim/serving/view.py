"""What a querying client knows of the experts: each one's expected delay and energy now.

The client's knowledge is stated, not implied (docs/algorithms.md):

* links, ``csi: mean``: each hop's expected airtime per bit at its mean SNR (path loss and
  shadowing, known from the topology and the channel model: never stale, never current);
  the same weight routing minimises (:mod:`nmoe_sim.net.routing`).
* links, ``csi: current``: each hop's rate at the SNR of the coherence block the client
  decides in (zero-delay feedback of every hop on the route, an optimistic bound: the
  answer can be as stale as one coherence time by the time it travels back). A hop in
  outage in that block costs one retransmission timeout on top of its mean airtime.
  Observing a link samples its current block, the value a transfer in that block would see
  anyway; it changes how later blocks are drawn (one AR(1) jump fewer), not their law.
* load: the legs of this inference stage in flight to each expert when the query decides
  (experts advertise their open requests, fresh); a processor-sharing estimate: each leg in
  flight makes the new one wait its airtime and compute time once more (``queue_s``); a
  hop's fixed protocol latency is no shared resource and is not multiplied.
* the experts' speeds: each device's FLOP/s, from the device profiles (static).

Routes are the network's (least expected airtime); a relay's store-and-forward is the sum
of its hops. Under faults the view does not know which nodes are down: the query's timeout
and fallback (docs/faults.md) handle that, as for topk.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Hashable

import numpy as np

from nmoe_sim.net.network import dbm_to_w
from nmoe_sim.net.routing import airtime_weight_s_per_bit
from nmoe_sim.serving.policies import Costs

if TYPE_CHECKING:
    from nmoe_sim.world import Sim


class ExpertView:
    """Expected cost of sending one query's features to each expert and getting its answer."""

    def __init__(self, sim: "Sim", n_experts: int, out_bytes: int, back_bytes: int, expert_flops: float,
                 inflight: Counter[Hashable]) -> None:
        self.sim, self.n = sim, n_experts
        self.out_bits, self.back_bits = 8.0 * out_bytes, 8.0 * back_bytes
        self.flops = expert_flops
        self.inflight = inflight  # node -> legs in flight to it (kept by run_inference)
        self.profiles = sim.world.profiles

    def _hop(self, u: Hashable, v: Hashable, csi: str) -> tuple[float, float]:
        """(airtime per bit, extra seconds) of hop u -> v as the client knows it."""
        net = self.sim.net
        link, tx_dbm = net.link(u, v), net.tx_power_dbm(u)
        if link.ideal:
            return 0.0, link.cfg.latency_s
        mean = airtime_weight_s_per_bit(link, tx_dbm)
        if csi == "mean":
            return mean, link.cfg.latency_s
        se = link.spectral_efficiency_bps_hz(link.snr_db(self.sim.env.now, tx_dbm))
        if se > 0:
            return 1.0 / (link.cfg.bandwidth_hz * se), link.cfg.latency_s
        # In outage now: one failed attempt's timeout, then (roughly) a fresh draw of the fading.
        return mean, link.cfg.latency_s + link.cfg.retx_timeout_s

    def _way(self, path: list[Hashable], bits: float, csi: str) -> tuple[float, float, float]:
        """(seconds, of which airtime, device joules) to carry ``bits`` along ``path``."""
        net, time_s, total_air_s, energy_j = self.sim.net, 0.0, 0.0, 0.0
        for u, v in zip(path, path[1:]):
            spb, extra_s = self._hop(u, v, csi)
            air_s = bits * spb
            time_s += air_s + extra_s
            total_air_s += air_s
            if u not in net.infrastructure:
                energy_j += dbm_to_w(net.tx_power_dbm(u)) * air_s
            if v not in net.infrastructure:
                energy_j += self.profiles[v].rx_power_w * air_s
        return time_s, total_air_s, energy_j

    def costs(self, client: int, csi: str, load: bool) -> Costs:
        link, service, queue, energy = (np.zeros(self.n) for _ in range(4))
        for j in range(self.n):
            prof = self.profiles[j]
            service[j] = self.flops / prof.flops_per_s
            energy[j] = prof.compute_power_w * service[j]
            if j == client:  # computed here: no link, no queue of others' legs
                continue
            out_s, out_air_s, out_j = self._way(self.sim.net.route(client, j), self.out_bits, csi)
            back_s, back_air_s, back_j = self._way(self.sim.net.route(j, client), self.back_bits, csi)
            link[j] = out_s + back_s
            energy[j] += out_j + back_j
            if load:  # processor sharing of what is shared: airtime and the CPU, not a hop's fixed latency
                queue[j] = self.inflight[j] * (out_air_s + back_air_s + service[j])
        return Costs(link, service, queue, energy)
