"""The Network's side of injected faults (docs/faults.md), kept out of network.py.

:class:`FaultHooks` is a mixin of :class:`~nmoe_sim.net.network.Network`: it holds the
attempts a down hop fails (as outages, under the link's retry rules) and what happens to
flows in flight when a fault begins or ends (broken as by a block in outage, or re-rated
by a storm). The Network calls these only when a fault state is attached, so a scenario
without faults never runs a line of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator

import simpy

if TYPE_CHECKING:
    from nmoe_sim.engine.faults import FaultState


class FaultHooks:
    """Mixed into Network; uses its env, radios, tx powers and hop accounting."""

    faults: "FaultState"
    env: simpy.Environment
    _fault_flows: dict[int, list[Any]]
    _fault_loss_db: dict[int, float]

    def attach_faults(self, faults: "FaultState") -> None:
        """Consult ``faults`` (an engine.faults.FaultState) from now on, and hear of its changes."""
        self.faults = faults
        faults.on_change.append(self._fault_changed)

    def route_now(self, src: Any, dst: Any, stage: str | None = None) -> list[Any]:
        """The route a transfer starting now takes: the router's, unless a hop of it is down
        now; then the router's best route over the hops that are up, if there is one (else
        the router's, whose down hop the transfer waits out under the retry rules). Chosen
        once, at the start: a hop that goes down later is not routed around."""
        if stage is not None:
            self.faults.stage = stage  # what this system is running now, for fault records
        path = self.route(src, dst)  # type: ignore[attr-defined]
        if self.faults.path_down(path) is None:
            return path
        around = self._router.route_avoiding(  # type: ignore[attr-defined]
            src, dst, lambda u, v: self.faults.hop_down(u, v) is not None)
        return around if around is not None else path

    def _wait_out_faults(self, hop: Any, link: Any) -> Generator[simpy.Event, Any, bool]:
        """Before an attempt: while the hop is down each attempt fails as in an outage (the
        sender transmits until the ACK timeout, unless it is itself down, and tries again).
        False when ``max_attempts`` ran out so; the hop then fails with the fault as reason."""
        faults, max_attempts = self.faults, link.cfg.max_attempts
        waited = False
        while (why := faults.hop_down(hop.u, hop.v)) is not None:
            if hop.attempts >= max_attempts:
                return False
            hop.fault, waited = why, True
            hop.attempts += 1
            silent = faults.node_down(hop.u) is not None
            yield self._retx_wait(hop, link)
            hop.wait_start_s = None
            if not silent:
                hop.charge(link.cfg.retx_timeout_s, rx=False)
        if waited and hop.attempts >= max_attempts:
            return False
        hop.fault = ""
        return True

    def _fault_changed(self) -> None:
        """A fault began or ended: break the flows whose hop is now down (as a block in
        outage would), and re-rate those whose link's extra loss changed (a storm)."""
        faults = self.faults
        for seq, (hop, link, flow, ended) in list(self._fault_flows.items()):
            if hop.flow is not flow or not flow.active or ended.triggered:
                del self._fault_flows[seq]
                continue
            why = faults.hop_down(hop.u, hop.v)
            rate_bps = 0.0
            if why is None:
                # The SNR the flow runs at (its block's, or its attempt's first block's under
                # per_attempt), with the old storm loss swapped for the new one.
                old_db, new_db = self._fault_loss_db.get(seq, 0.0), faults.loss_db(hop.u, hop.v)
                if new_db == old_db:
                    continue
                snr_db = hop.snrs_db[-1] + old_db - new_db
                self._fault_loss_db[seq] = new_db
                rate_bps = link.cfg.bandwidth_hz * link.spectral_efficiency_bps_hz(snr_db)
                hop.snrs_db.append(snr_db)
            if rate_bps <= 0:
                del self._fault_flows[seq]
                self._fault_loss_db.pop(seq, None)
                self._radios_busy.cancel(flow)
                hop.close_segment()
                hop.flow = None
                hop.fault = why or ""
                ended.succeed(self._retx_wait(hop, link))
                continue
            self._radios_busy.set_rate(flow, rate_bps)
            hop.close_segment()
            hop.seg_rate_bps = rate_bps
