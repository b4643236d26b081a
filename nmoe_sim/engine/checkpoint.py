"""Checkpoints and resume: a run saves what it needs to go on, and ``--resume`` goes on.

Where a run can stop and go on (docs/results-format.md, "Checkpoints"):

* **Round boundaries**: :class:`~nmoe_sim.fl.rounds.RoundDriver` saves after each round's
  record (stage 1, FedGate, the FedAvg baseline, the alignment rounds), and RollGate's
  lap loop (``fl/stage3.run_rollgate``, its own frame) after each lap's;
* **stage boundaries**: the systems save after each stage or member system.

SimPy processes are generators, which cannot be saved, so a checkpoint does not hold the
running process. It holds **frames**: each level of the code that runs a stage
(the system's loop over its phases, a stage's body, the round driver) keeps what it needs
to go on in a :class:`Frame` it opens with :meth:`Checkpoints.frame`; a checkpoint saves the
open frames, outermost first, as one pickle, together with every object they reach: the
simulations (SimPy environment with its clock and its queued timers, the network with each
link's fading and shadowing state and the block clocks, the executor), models, optimiser
states and every numpy / torch generator. On resume each level reopens its saved frame and
skips what it had done; the round driver starts at the next round, in a restored
environment whose clock, event counter and queue are those of the save.

Why the order of events is unchanged: a save happens only where no process but the one
saving is alive (a queued event that would wake a process cannot be saved, and the save
is skipped: the next boundary saves). On resume the continuation is a new process whose
start event is urgent at the saved instant, so it acts before anything else queued at that
instant, exactly where the saving process was; every later event is created in the same
order, so their ids keep the same relative order and every tie breaks alike.

The world (data, topology graph, device profiles, seed streams, the scenario) is rebuilt
from the scenario and referred to by name, not saved; the recorder's records so far are
saved beside the frames. A run's ``status.json`` says where it stands.
"""

from __future__ import annotations

import io
import itertools
import logging
import pickle
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import simpy
from simpy.core import BoundClass
from simpy.resources.base import BaseResource

from nmoe_sim.errors import ConfigError
from nmoe_sim.record import Recorder
from nmoe_sim.results import atomic_write_bytes

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pkl"
FORMAT_VERSION = 1
ROUND, STAGE = "round", "stage"


class Frame(types.SimpleNamespace):
    """What one level of the running code needs to go on: named values, saved by pickle."""


class NotSaveable(Exception):
    """The state reaches something that cannot be saved now (a live process)."""


# --- pickling the state ----------------------------------------------------------------


def _next_eid(env: simpy.Environment) -> int:
    # itertools.count has no public peek; its repr is "count(N)" with N the next value.
    return int(repr(env._eid)[6:-1])


def _new_env() -> simpy.Environment:
    return simpy.Environment()


def _set_env_state(env: simpy.Environment, state: dict[str, Any]) -> None:
    env._now = state["now"]
    env._eid = itertools.count(state["eid"])
    env._queue = state["queue"]  # a heap already, in the saved order


def _bare(cls: type) -> Any:
    return cls.__new__(cls)


def _set_resource_state(res: Any, state: dict[str, Any]) -> None:
    res.__dict__.update(state)
    BoundClass.bind_early(res)  # request/release, as the resource's __init__ binds them


def _is_bound_class(value: Any) -> bool:
    return isinstance(value, types.MethodType) and isinstance(value.__func__, type)


# While a checkpoint is read: the rebuilt world's objects by name (see ``_shared``).
_LOADING: dict[str, Any] = {}


def _shared(key: str) -> Any:
    return _LOADING[key]


class _Pickler(pickle.Pickler):
    """Saves environments as (clock, event counter, queue), refuses live processes, and
    names the world's shared objects instead of copying them.

    Everything is decided in ``reducer_override``, which the C pickler calls only for
    objects that are not plain ints, floats, strings, lists, dicts or tuples: a
    ``persistent_id`` would be called for every object (tens of thousands per save, about a
    fifth of a save's time)."""

    def __init__(self, file: io.BytesIO, shared: dict[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared = shared

    def reducer_override(self, obj: Any) -> Any:
        key = self.shared.get(id(obj))
        if key is not None:
            return _shared, (key,)
        if isinstance(obj, simpy.Environment):
            state = {"now": obj.now, "eid": _next_eid(obj), "queue": list(obj._queue)}
            return _new_env, (), state, None, None, _set_env_state
        if isinstance(obj, BaseResource):  # its request/release are classes bound to it: rebound on load
            state = {k: v for k, v in vars(obj).items() if not _is_bound_class(v)}
            return _bare, (type(obj),), state, None, None, _set_resource_state
        if isinstance(obj, (simpy.Process, types.GeneratorType)):
            raise NotSaveable(f"a live process ({obj!r})")
        return NotImplemented


def _unpickle(data: bytes, shared: dict[str, Any]) -> Any:
    _LOADING.update(shared)
    try:
        return pickle.loads(data)
    finally:
        _LOADING.clear()


def shared_objects(world: Any) -> dict[str, Any]:
    """The world's objects rebuilt from the scenario on resume, by name: never saved.
    (A plain dict or list cannot be named: the device profiles are saved by value.)"""
    out: dict[str, Any] = {"world": world, "cfg": world.cfg, "streams": world.streams, "graph": world.graph,
                           "recorder": world.recorder, "dataset": world.dataset, "checkpoints": world.checkpoints}
    for name in ("x_train", "y_train", "x_test", "y_test"):
        out[f"dataset/{name}"] = getattr(world.dataset, name)
    for c in world.clients:
        out[f"client{c.idx}"] = c
        for name in ("x_train", "y_train", "x_query", "y_query"):
            out[f"client{c.idx}/{name}"] = getattr(c, name)
    return out


# Every table of the recorder and its running totals, derived from the dataclass so a new
# table is never left out of a checkpoint (fault and failure records once were); the
# listeners are the session's observers (a progress bar), not records.
_RECORDER_FIELDS = tuple(f.name for f in fields(Recorder) if f.name != "listeners")


# --- the run's checkpoints -------------------------------------------------------------


@dataclass
class Saved:
    """A loaded checkpoint: where it was taken and its pickled state (read once the world exists)."""

    where: str
    kind: str
    cfg: Any
    wall_s: float
    payload: bytes  # the frames
    records: bytes  # the recorder's records and running totals so far


def load(run_dir: Path) -> Saved | None:
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh)
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"format {data.get('version')!r}, this program reads {FORMAT_VERSION}")
        return Saved(data["where"], data["kind"], data["cfg"], data["wall_s"], data["payload"], data["records"])
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user-facing line
        raise ConfigError(f"--resume: {path} is not a checkpoint this program can read ({exc})") from None


@dataclass
class Checkpoints:
    """The checkpoints of one run: where they go, which boundaries save, the open frames.

    ``mode`` is ``runtime.checkpoint``; with no ``run_dir`` nothing is saved (a sweep's
    points, library callers). ``on_save`` is told ``(where, kind)`` after each save (the
    status file; tests stop a run there).
    """

    run_dir: Path | None = None
    mode: str = "off"
    world: Any = None
    on_save: Callable[[str, str], None] | None = None
    wall0: float = field(default_factory=time.perf_counter)
    every_s: float = 0.0  # runtime.checkpoint_every_s: least wall time between round saves
    clock: Callable[[], float] = time.perf_counter  # host wall time (injected by tests)
    last_save_s: float | None = None  # on ``clock``; None before the first save
    wall_before_s: float = 0.0  # wall time of the sessions before a resume
    stack: list[Frame] = field(default_factory=list)
    _resumed: list[Frame] = field(default_factory=list)
    saves: int = 0
    skipped: int = 0
    warned: bool = False

    @property
    def resuming(self) -> bool:
        return bool(self._resumed)

    @contextmanager
    def frame(self, name: str, make: Callable[[], dict[str, Any]]) -> Iterator[Frame]:
        """Open this level's frame: the saved one when resuming into it, else ``make()``'s."""
        if self._resumed:
            fr = self._resumed.pop(0)
            if fr.name != name:
                raise RuntimeError(f"checkpoint holds frame {fr.name!r} where the code opens {name!r}")
        else:
            fr = Frame(name=name, **make())
        self.stack.append(fr)
        try:
            yield fr
        finally:
            self.stack.pop()

    def wants(self, kind: str) -> bool:
        if self.run_dir is None or self.mode == "off":
            return False
        if kind == STAGE:
            return True
        if self.mode != "rounds":
            return False
        since = self.clock() - (self.wall0 if self.last_save_s is None else self.last_save_s)
        return since >= self.every_s

    def save(self, where: str, kind: str) -> bool:
        """Save the open frames and the records so far, if ``kind``'s boundaries save.

        Returns whether it saved: where a process other than the saving one is alive (an
        aborted transfer still winding down) nothing is saved; the next boundary will.
        """
        if not self.wants(kind):
            return False
        assert self.run_dir is not None
        rec = self.world.recorder
        buf = io.BytesIO()
        try:
            _Pickler(buf, {id(o): k for k, o in shared_objects(self.world).items()}).dump(self.stack)
        except (NotSaveable, pickle.PicklingError, TypeError, AttributeError) as exc:
            self.skipped += 1
            # A round may end with an aborted transfer still winding down; a stage should
            # not: something keeps a process alive across stages (pending faults are queued
            # timers, engine/faults.py, so they do not). Said once per run.
            if kind == STAGE and not self.warned:
                self.warned = True
                log.warning("no checkpoint at %s (%s); a resume goes on from the last one saved, or "
                            "starts again", where, exc)
            else:
                log.debug("no checkpoint at %s: %s", where, exc)
            return False
        # The records (scalars only, by far the most objects) go through the C pickler
        # alone: the frames' pickler calls back into Python for every object it meets.
        records = pickle.dumps({f: getattr(rec, f) for f in _RECORDER_FIELDS}, protocol=pickle.HIGHEST_PROTOCOL)
        wall_s = self.wall_before_s + time.perf_counter() - self.wall0
        data = {"version": FORMAT_VERSION, "where": where, "kind": kind, "cfg": self.world.cfg,
                "wall_s": wall_s, "payload": buf.getvalue(), "records": records}
        atomic_write_bytes(self.run_dir / CHECKPOINT_FILE, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
        self.saves += 1
        self.last_save_s = self.clock()
        if self.on_save is not None:
            self.on_save(where, kind)
        return True

    def restore(self, saved: Saved) -> None:
        """Take up ``saved``: the records so far go back into the recorder, and the frames
        wait to be reopened by the code that opened them."""
        stack = _unpickle(saved.payload, shared_objects(self.world))
        rec = self.world.recorder
        for name, value in pickle.loads(saved.records).items():
            setattr(rec, name, value)
        self._resumed = list(stack)
        self.wall_before_s = saved.wall_s


NO_CHECKPOINTS = Checkpoints()


def checkpoints_of(sim: Any) -> Checkpoints:
    """The run's checkpoints, through the sim's world (tests' bare sims have none)."""
    return getattr(getattr(sim, "world", None), "checkpoints", None) or NO_CHECKPOINTS
