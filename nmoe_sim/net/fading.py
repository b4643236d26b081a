"""Per-link channel state: shadowing drawn once, block fading correlated in time.

A link's small-scale power gain |h|^2 is constant within a coherence block of
``cfg.coherence_time_s`` and evolves from block to block as a first-order Gauss-Markov
(AR(1)) process whose one-block correlation is the Jakes/Clarke value
rho = J0(2 pi f_D T_c). The process is sampled lazily, only at the blocks a simulation
asks about, and jumping n blocks at once is exact for the AR(1) model. See
``docs/channel.md`` for the equations and sources.

Time only moves forward: a query for the block last sampled returns the cached value; a
query for an earlier block raises ``ValueError`` (SimPy time never goes backwards, so this
only fires on a caller bug, which it should not hide).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from nmoe_sim.config import ChannelConfig
from nmoe_sim.net import channel
from nmoe_sim.registry import Registry

# Block index tolerance: t = 0.03 s with T_c = 0.01 s gives 2.9999999999999996 blocks in
# floating point; a caller meaning "block 3" must get block 3.
_BLOCK_EPS = 1e-9
_UPPER_TAIL_U = 5.0  # Nakagami: beyond this u, invert the Gamma survival function


def ar1_advance(state: complex, rho: float, n_blocks: int, innovation: complex) -> complex:
    """Exact n-step AR(1) update x_{k+n} = rho^n x_k + sqrt(1 - rho^{2n}) w.

    ``innovation`` w has the stationary law of x (unit variance), so the marginal stays
    stationary. A negative rho (J0 < 0 when f_D T_c > 0.38) is used as is: the process
    then alternates sign, which is the correct AR(1) for that lag correlation.
    """
    rho_n = rho**n_blocks
    return rho_n * state + math.sqrt(max(1.0 - rho_n * rho_n, 0.0)) * innovation


class FadingProcess:
    """Block fading power gain with E[|h|^2] = 1.

    The base owns the block bookkeeping (lazy sampling, caching, forward-only time); a
    subclass decides the Gaussian state (``complex_state``) and maps it to a power gain.
    """

    complex_state = True

    def __init__(self, cfg: ChannelConfig, rng: np.random.Generator) -> None:
        self.rng = rng
        self.rho = channel.jakes_correlation(cfg.doppler_hz, cfg.coherence_time_s)
        self.last_block: int | None = None
        self._buf: list[float] = []
        self._pos = 0
        self.state: complex = 0.0
        self._gain = 1.0
        # The GainTable holding this process's state while a block clock steps it (see
        # there); the attributes above are stale until it hands the state back.
        self._bound: GainTable | None = None
        self._table_row = -1  # its row in the one GainTable that may hold it (its link's clock)

    # Normals drawn from the link's stream per refill. Generator.standard_normal(n) yields
    # the same sequence as n scalar draws (tested), and nothing else draws from this stream
    # after construction, so buffering changes no value: it only saves a NumPy call (about
    # 1.5 us) per coherence block per link.
    _BUFFER = 512

    def _draw(self) -> complex:
        """One stationary unit-variance variate: CN(0, 1) or N(0, 1)."""
        if self._pos >= len(self._buf):
            self._buf = self.rng.standard_normal(self._BUFFER).tolist()
            self._pos = 0
        if self.complex_state:
            # Two consecutive normals per variate; the buffer length is even, so a pair
            # never straddles a refill.
            re, im = self._buf[self._pos], self._buf[self._pos + 1]
            self._pos += 2
            return complex(re, im) * math.sqrt(0.5)
        self._pos += 1
        return self._buf[self._pos - 1]

    def gain(self, block: int) -> float:
        """|h|^2 in coherence block ``block`` (blocks are asked in non-decreasing order)."""
        if self._bound is not None:
            self._bound.release(self)
        if self.last_block is None:
            self.state = self._draw()  # start in the stationary law
        elif block == self.last_block + 1:
            # The hot case (a flow re-rated at every boundary): ar1_advance with n = 1
            # inlined, the same arithmetic (rho**1 is rho exactly), so the same bits.
            rho = self.rho
            self.state = rho * self.state + math.sqrt(max(1.0 - rho * rho, 0.0)) * self._draw()
        elif block == self.last_block:
            return self._gain
        elif block < self.last_block:
            raise ValueError(
                f"fading: block {block} asked after block {self.last_block}; "
                "the block-fading process only moves forward in time"
            )
        else:
            self.state = ar1_advance(self.state, self.rho, block - self.last_block, self._draw())
        self.last_block = block
        self._gain = self._power(self.state)
        return self._gain

    def _power(self, state: complex) -> float:
        raise NotImplementedError

    @staticmethod
    def power_quantile(cfg: ChannelConfig, u: np.ndarray) -> np.ndarray:
        """The inverse CDF of the stationary |h|^2 at probabilities ``u`` (for expectations)."""
        raise NotImplementedError


# Midpoints of equal-probability bins of the fading law: E[f(|h|^2)] as a deterministic
# average over 512 quantiles (no RNG, exact to ~1e-4 relative for the rates used here).
_QUANTILE_GRID = (np.arange(512) + 0.5) / 512


FADING: Registry[type[FadingProcess]] = Registry("fading model")


@FADING.register("none")
class NoFading(FadingProcess):
    """|h|^2 = 1 always; stateless, so any block may be asked in any order."""

    def gain(self, block: int) -> float:
        return 1.0

    @staticmethod
    def power_quantile(cfg: ChannelConfig, u: np.ndarray) -> np.ndarray:
        return np.ones_like(u)


@FADING.register("rayleigh")
class RayleighFading(FadingProcess):
    """|h|^2 = |g|^2 with g ~ CN(0, 1): exponential power (Goldsmith ch. 3)."""

    def _power(self, state: complex) -> float:
        return abs(state) ** 2

    @staticmethod
    def power_quantile(cfg: ChannelConfig, u: np.ndarray) -> np.ndarray:
        return -np.log1p(-u)  # Exp(1)


@FADING.register("rician")
class RicianFading(FadingProcess):
    """|h|^2 = |sqrt(K/(K+1)) e^{j phi} + sqrt(1/(K+1)) g|^2, phi drawn once per link.

    The fixed LOS component does not fade; only the scattered part g is the AR(1).
    """

    def __init__(self, cfg: ChannelConfig, rng: np.random.Generator) -> None:
        super().__init__(cfg, rng)
        k_lin = 10.0 ** (cfg.rician_k_db / 10.0)
        phase_rad = float(rng.uniform(0.0, 2.0 * math.pi))
        los_phasor = complex(math.cos(phase_rad), math.sin(phase_rad))
        self.los = math.sqrt(k_lin / (k_lin + 1.0)) * los_phasor
        self.scatter = math.sqrt(1.0 / (k_lin + 1.0))

    def _power(self, state: complex) -> float:
        return abs(self.los + self.scatter * state) ** 2

    @staticmethod
    def power_quantile(cfg: ChannelConfig, u: np.ndarray) -> np.ndarray:
        # |h|^2 = X / (2 (K+1)) with X noncentral chi-square, 2 degrees of freedom, nc = 2K.
        k_lin = 10.0 ** (cfg.rician_k_db / 10.0)
        return special.chndtrix(u, 2.0, 2.0 * k_lin) / (2.0 * (k_lin + 1.0))


@FADING.register("nakagami")
class NakagamiFading(FadingProcess):
    """|h|^2 ~ Gamma(m, 1/m) exactly, time-correlated through a Gaussian copula.

    A real AR(1) u_k ~ N(0, 1) with correlation |rho| is mapped by F_Gamma^-1(Phi(u)).
    The power correlation is therefore close to, not exactly, rho^2; the marginal is exact.
    """

    complex_state = False

    def __init__(self, cfg: ChannelConfig, rng: np.random.Generator) -> None:
        super().__init__(cfg, rng)
        # u stands for the power itself, and a power gain is never anti-correlated from one
        # block to the next (Rayleigh's is rho^2 >= 0): a negative J0 would make the
        # mapped power alternate between fades and peaks, so the copula uses |rho|.
        self.rho = abs(self.rho)
        self.m = cfg.nakagami_m

    def _power(self, state: complex) -> float:
        u = float(state.real)
        # Far in the upper tail Phi(u) rounds to 1: invert the survival function there
        # instead (exact but ~10x slower, so only where needed: u > 5 has P = 3e-7).
        if u <= _UPPER_TAIL_U:
            return float(special.gammaincinv(self.m, special.ndtr(u))) / self.m
        return float(special.gammainccinv(self.m, special.ndtr(-u))) / self.m

    @staticmethod
    def power_quantile(cfg: ChannelConfig, u: np.ndarray) -> np.ndarray:
        return special.gammaincinv(cfg.nakagami_m, u) / cfg.nakagami_m  # Gamma(m, 1/m)


_SQRT_HALF = math.sqrt(0.5)


class GainTable:
    """The fading states of many links stepped together, one array call per coherence block.

    A block clock re-rates every flow it carries at every boundary; stepping each link's
    AR(1) in Python was a third of that loop's time at scale. Here each bound process's
    state, its buffered normals and its last block live in rows of arrays, and
    :meth:`gains` steps all due rows at once with exactly :meth:`FadingProcess.gain`'s
    arithmetic: the complex products written out as CPython computes them (a float times a
    complex is a complex times ``complex(x, 0.0)``, zero terms included), ``abs`` as libm's
    ``hypot`` (``np.hypot`` calls it; ``np.abs`` on complex does not), and the square by
    ``float.__pow__`` per row, since NumPy's SIMD ``power`` and ``x * x`` can round
    differently from libm's ``pow``. So the gains are the scalar path's bit for bit (tested).

    Only Rayleigh and Rician processes (complex AR(1), closed-form power) are tabled; the
    caller keeps others on :meth:`FadingProcess.gain`. A process is bound when first
    stepped here and released (its attributes brought up to date) by its own
    :meth:`~FadingProcess.gain`, so a scalar query in between sees the same sequence.
    """

    def __init__(self) -> None:
        self.procs: list[FadingProcess] = []
        self._grow(0)

    _COLUMNS = {"re": float, "im": float, "last_block": np.int64, "gain": float, "pos": np.int64,
                "bound": bool, "rician": bool, "los_re": float, "los_im": float, "scatter": float}

    def _grow(self, capacity: int) -> None:
        """Room for ``capacity`` rows (doubled as links arrive: n rows cost O(n) copies)."""
        n = len(self.procs)
        for name, dtype in self._COLUMNS.items():
            col = np.zeros(capacity, dtype=dtype)
            if n:
                col[:n] = getattr(self, name)[:n]
            setattr(self, name, col)
        buf = np.zeros((capacity, FadingProcess._BUFFER))
        if n:
            buf[:n] = self.buf[:n]
        self.buf = buf

    @staticmethod
    def tabled(proc: FadingProcess) -> bool:
        """Whether ``proc`` can be stepped here (a plain Rayleigh or Rician process)."""
        return type(proc) in (RayleighFading, RicianFading) and "gain" not in proc.__dict__

    def row(self, proc: FadingProcess) -> int:
        """The row of ``proc`` (added, unbound, on first sight)."""
        # The row is kept on the process, not in a dict by id(): a checkpoint's unpickled
        # processes have new ids.
        r = proc._table_row
        if r >= 0:
            return r
        r = len(self.procs)
        if r == len(self.re):
            self._grow(max(16, 2 * r))
        proc._table_row = r
        self.procs.append(proc)
        self.last_block[r] = -1
        if isinstance(proc, RicianFading):
            self.rician[r] = True
            self.los_re[r], self.los_im[r] = proc.los.real, proc.los.imag
            self.scatter[r] = proc.scatter
        return r

    def _bind(self, r: int) -> bool:
        proc = self.procs[r]
        if proc.last_block is None or len(proc._buf) != FadingProcess._BUFFER:
            return False  # never drawn: its first draw stays on the scalar path
        state = complex(proc.state)
        self.re[r], self.im[r] = state.real, state.imag
        self.last_block[r], self.gain[r], self.pos[r] = proc.last_block, proc._gain, proc._pos
        self.buf[r] = proc._buf
        self.bound[r] = True
        proc._bound = self
        return True

    def release(self, proc: FadingProcess) -> None:
        """Hand ``proc``'s state back to it (its own gain() calls this first)."""
        r = proc._table_row
        proc.state = complex(float(self.re[r]), float(self.im[r]))
        proc.last_block, proc._gain = int(self.last_block[r]), float(self.gain[r])
        proc._buf, proc._pos = self.buf[r].tolist(), int(self.pos[r])
        self.bound[r] = False
        proc._bound = None

    def gains(self, rows: np.ndarray, block: int) -> np.ndarray:
        """|h|^2 in ``block`` of the processes in ``rows`` (distinct), as their gain(block)."""
        for r in rows[~self.bound[rows]].tolist():
            self._bind(r)
        bound = self.bound[rows]
        last = self.last_block[rows]
        step = rows[bound & (last == block - 1)]
        if step.size:
            self._step(step, block)
        odd = ~bound | ((last != block - 1) & (last != block))
        out = self.gain[rows]
        if odd.any():
            # A first draw or a gap (never seen on a clock's consecutive boundaries):
            # the scalar path, which releases the row first.
            for i in np.flatnonzero(odd).tolist():
                out[i] = self.procs[int(rows[i])].gain(block)
        return out

    def _step(self, rows: np.ndarray, block: int) -> None:
        """One consecutive block for ``rows``: FadingProcess.gain's inlined AR(1) step."""
        n = FadingProcess._BUFFER
        pos = self.pos[rows]
        full = pos >= n
        if full.any():
            for r in rows[full].tolist():
                self.buf[r] = self.procs[r].rng.standard_normal(n)
            pos[full] = 0
        procs = self.procs
        rho = np.array([procs[r].rho for r in rows.tolist()])  # mobility may change it
        x = 1.0 - rho * rho
        c = np.sqrt(np.where(0.0 > x, 0.0, x))
        w_re, w_im = self.buf[rows, pos], self.buf[rows, pos + 1]
        self.pos[rows] = pos + 2
        # complex(re, im) * sqrt(0.5), then c * that, rho * state, and their sum.
        d_re, d_im = w_re * _SQRT_HALF - w_im * 0.0, w_re * 0.0 + w_im * _SQRT_HALF
        s_re, s_im = self.re[rows], self.im[rows]
        re = (rho * s_re - 0.0 * s_im) + (c * d_re - 0.0 * d_im)
        im = (rho * s_im + 0.0 * s_re) + (c * d_im + 0.0 * d_re)
        self.re[rows], self.im[rows] = re, im
        rician = self.rician[rows]
        if rician.any():  # abs(los + scatter * state)
            sc = self.scatter[rows]
            re, im = (np.where(rician, self.los_re[rows] + (sc * re - 0.0 * im), re),
                      np.where(rician, self.los_im[rows] + (sc * im + 0.0 * re), im))
        mag = np.hypot(re, im).tolist()
        self.gain[rows] = [m ** 2 for m in mag]
        self.last_block[rows] = block


class LinkChannel:
    """The channel of one undirected link: fixed geometry + shadowing, time-varying block fading."""

    def __init__(
        self, cfg: ChannelConfig, distance_m: float, link_class: str, rng: np.random.Generator
    ) -> None:
        if not math.isfinite(distance_m) or distance_m < 0.0:
            raise ValueError(f"LinkChannel: distance_m must be finite and >= 0 (got {distance_m})")
        channel.antenna_heights_m(cfg, link_class)  # reject an unknown link class now
        self.cfg = cfg
        self.distance_m = float(distance_m)
        self.link_class = link_class
        # An ideal link has no radio, hence no shadowing and no fading, and draws nothing.
        self.shadowing_db = 0.0 if self.ideal else float(rng.normal(0.0, cfg.shadowing_std_db))
        self.process: FadingProcess = FADING.get("none" if self.ideal else cfg.fading, "fading")(
            cfg, rng
        )
        # Everything but the transmit power is fixed per link: compute the budget once.
        self._budget_db = channel.mean_snr_db(
            cfg, 0.0, self.distance_m, link_class, self.shadowing_db
        )

    @property
    def ideal(self) -> bool:
        return self.cfg.model == "ideal"

    def relocate(self, distance_m: float, shadowing_db: float) -> None:
        """New geometry (its ends moved, :mod:`nmoe_sim.net.mobility`): the link budget follows;
        the fading process goes on from where it is."""
        self.distance_m, self.shadowing_db = float(distance_m), float(shadowing_db)
        self._budget_db = channel.mean_snr_db(self.cfg, 0.0, self.distance_m, self.link_class, self.shadowing_db)

    def block_index(self, t_s: float) -> int:
        """Coherence block k = floor(t_s / T_c) holding simulated time ``t_s``."""
        if not math.isfinite(t_s) or t_s < 0.0:
            raise ValueError(f"LinkChannel: time must be finite and >= 0 (got {t_s})")
        return math.floor(t_s / self.cfg.coherence_time_s + _BLOCK_EPS)

    def mean_snr_db(self, tx_power_dbm: float) -> float:
        """Path loss + shadowing, no fading; inf for an ideal link."""
        return math.inf if self.ideal else tx_power_dbm + self._budget_db

    def fading_gain(self, t_s: float) -> float:
        """|h|^2 of the coherence block holding ``t_s`` (E[|h|^2] = 1)."""
        return self.process.gain(self.block_index(t_s))

    def block_snr_db(self, block: int, tx_power_dbm: float) -> float:
        """:meth:`snr_db` in coherence block ``block`` of a link that is not ideal (the block
        clock's hot path: the block index is computed once per boundary, not per link)."""
        gain = self.process.gain(block)
        fading_db = 10.0 * math.log10(gain) if gain > 0.0 else -math.inf
        return tx_power_dbm + self._budget_db + fading_db

    def snr_db(self, t_s: float, tx_power_dbm: float) -> float:
        """Instantaneous SNR: mean SNR + 10 log10(|h|^2); inf for an ideal link."""
        if self.ideal:
            return math.inf
        gain = self.fading_gain(t_s)
        fading_db = 10.0 * math.log10(gain) if gain > 0.0 else -math.inf
        return self.mean_snr_db(tx_power_dbm) + fading_db

    @property
    def varies_in_time(self) -> bool:
        """Whether the SNR changes from one coherence block to the next."""
        return not self.ideal and not isinstance(self.process, NoFading)

    def next_block_start_s(self, t_s: float) -> float:
        """Start of the coherence block after the one holding ``t_s`` (always > t_s)."""
        return (self.block_index(t_s) + 1) * self.cfg.coherence_time_s

    def spectral_efficiency_bps_hz(self, snr_db: float) -> float:
        """Bit/s/Hz at ``snr_db`` (0 in outage); inf for an ideal link (no airtime)."""
        if self.ideal:
            return math.inf
        return channel.spectral_efficiency_scalar_bps_hz(self.cfg, snr_db)

    def mean_spectral_efficiency_bps_hz(self, tx_power_dbm: float) -> float:
        """E[bit/s/Hz] over the stationary fading law, outage blocks counting 0.

        A long transfer that spans many independent blocks averages its rate to this, so
        1 / (B * this) is its expected airtime per bit (what routing minimises).
        """
        if self.ideal:
            return math.inf
        gains = type(self.process).power_quantile(self.cfg, _QUANTILE_GRID)
        with np.errstate(divide="ignore"):
            snr_db = self.mean_snr_db(tx_power_dbm) + 10.0 * np.log10(gains)
        return float(np.mean(channel.spectral_efficiency_bps_hz(self.cfg, snr_db)))
