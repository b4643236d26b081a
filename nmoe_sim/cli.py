"""Command-line entry: ``nmoe-sim run|sweep|validate|plot``; ``run_scenario.py`` is a thin shim.

User errors (bad scenario keys or values, missing or malformed files, a training loss that
turned non-finite) print one ``error:`` line on stderr and exit with status 2, never a
traceback, and leave no run directory behind. A sweep whose points ran but some failed
lists them and exits with status 1. A run prints progress and a summary
table on stderr/stdout and the run directory's path as the last line of stdout.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nmoe_sim.config import Scenario, build_scenario, dump_yaml, load_raw, load_scenario, scenario_from_raw
from nmoe_sim.errors import ConfigError
from nmoe_sim.record import RoundRecord

EXIT_USAGE = 2
EXIT_POINTS_FAILED = 1  # a sweep ran, but some of its points failed (each listed on stderr)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C (SIGTERM too)


def _progress_listener(progress: Progress) -> Callable[[Any], None]:
    """Advance one bar per (system, stage) as round records arrive; each says its total."""
    tasks: dict[tuple[str, str], int] = {}

    def listen(rec: Any) -> None:
        if not isinstance(rec, RoundRecord):
            return
        key = (rec.system, rec.stage)
        if key not in tasks:
            tasks[key] = progress.add_task(f"{rec.system}: {rec.stage}", total=rec.rounds_total)
        f1 = "" if rec.f1_macro != rec.f1_macro else f" F1={rec.f1_macro:.3f}"
        progress.update(tasks[key], advance=1, description=f"{rec.system}: {rec.stage}{f1}")

    return listen


def summary_table(metrics: dict[str, Any]) -> Any:
    """The finished run's table, drawn by the system that ran it (metrics.json's ``system``)."""
    from nmoe_sim.systems import SYSTEMS

    return SYSTEMS.get(metrics.get("system", "nmoe"), "system").summary_table(metrics)


def _progress(quiet: bool) -> Progress:
    err = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=err, transient=True, disable=quiet or not err.is_terminal)


def run_one(cfg: Scenario, run_dir: Path, *, quiet: bool = False, reuse: Any = None,
            checkpoint: bool = False, resume: Any = None) -> dict[str, Any]:
    """The API's ``execute`` (run into an existing directory, then plot) with progress bars."""
    from nmoe_sim.api.running import execute

    with _progress(quiet) as progress:
        return execute(cfg, run_dir, on_record=_progress_listener(progress), reuse=reuse,
                       checkpoint=checkpoint, resume=resume)


def _check_data_files(cfg: Scenario) -> None:
    from nmoe_sim.api.running import check_data_files

    check_data_files(cfg)


def cmd_run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        return resume_run(args)
    if args.scenario is None:
        raise ConfigError("run: give a scenario file, or --resume RUN_DIR")
    from nmoe_sim.api.running import RunInterrupted, scenario, start

    cfg = scenario(args.scenario, args.set)
    try:
        with _progress(args.quiet) as progress:
            run_dir, metrics = start(cfg, args.out, on_record=_progress_listener(progress))
    except RunInterrupted as stop:
        return _interrupted(stop.run_dir)
    return _finished(metrics, run_dir, args.quiet)


def _interrupted(run_dir: Path) -> int:
    """Ctrl-C: one line, the run's status says interrupted (runner.run wrote it), exit 130."""
    from nmoe_sim.engine.status import resume_command

    print(f"interrupted: {run_dir} (resume with: {resume_command(run_dir)})", file=sys.stderr)
    return EXIT_INTERRUPTED


def resume_run(args: argparse.Namespace) -> int:
    """``run --resume RUN_DIR``: go on from the run's last checkpoint (from the start, in the
    same directory, if it was stopped before its first), or say that it had finished."""
    from nmoe_sim.engine import checkpoint, status

    if args.scenario is not None or args.set or args.out:
        raise ConfigError("--resume: the run's own config.yaml says what to run; give no scenario, --set or --out")
    run_dir = Path(args.resume)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume: {run_dir} is not a run directory (it has no config.yaml)")
    pid = status.still_running(status.read_status(run_dir))
    if pid is not None:
        raise ConfigError(f"--resume: {run_dir} is still being run by process {pid}; stop it first")
    if (run_dir / "metrics.json").is_file():
        status.clean_temp_files(run_dir)
        print(f"already finished: {run_dir} (nothing to resume)", file=sys.stderr)
        print(run_dir)
        return 0
    status.clean_temp_files(run_dir)  # a killed write's hidden temporaries
    saved = checkpoint.load(run_dir)
    cfg = saved.cfg if saved is not None else load_scenario(str(run_dir / "config.yaml"), [])
    _check_data_files(cfg)
    if saved is not None and not args.quiet:
        print(f"resuming {run_dir} after {saved.where}", file=sys.stderr)
    try:
        metrics = run_one(cfg, run_dir, quiet=args.quiet, checkpoint=True, resume=saved)
    except KeyboardInterrupt:
        return _interrupted(run_dir)
    return _finished(metrics, run_dir, args.quiet)


def _finished(metrics: dict[str, Any], run_dir: Path, quiet: bool) -> int:
    if not quiet:
        # Piped output has no terminal width; 120 columns keep the stage names whole.
        Console(width=None if sys.stdout.isatty() else 120).print(summary_table(metrics))
    print(run_dir)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from nmoe_sim.sweep import SWEEP_EXECUTORS, run_sweep

    if args.executor != "ray" and (args.address is not None or args.cpus_per_point is not None):
        raise ConfigError("--address and --cpus-per-point go with --executor ray")
    make_runner = SWEEP_EXECUTORS.get(args.executor, "--executor")
    # The user's tree, presets not expanded: a point's override may name a preset.
    raw = load_raw(args.scenario, args.set, expanded=False)
    # Validate the base scenario, and find its dataset's files, before any point runs.
    base = scenario_from_raw(raw, source=args.scenario)
    _check_data_files(base)
    root = Path(args.out) if args.out else Path(base.output.root)

    from nmoe_sim.reuse import StageCache

    # Points sharing stages 1-2 or a baseline compute them once (--no-reuse: every point alone).
    reuse = None if args.no_reuse else StageCache()

    def run_point(point_raw: dict[str, Any], run_dir: Path) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            run_one(build_scenario(point_raw), run_dir, quiet=True, reuse=reuse)
        except ConfigError:
            # As in cmd_run: a point whose input proved bad (a malformed dataset file)
            # leaves no folder holding only config.yaml; it never finished, so nothing is lost.
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return run_dir

    run_points = make_runner(run_point, reuse=not args.no_reuse, address=args.address,
                             cpus_per_point=args.cpus_per_point or 1)
    result = run_sweep(raw, root, run_point, rerun_changed=args.rerun_changed, run_points=run_points)
    print(result.sweep_dir)
    if result.failed:
        for point, reason in result.failed:
            print(f"failed: {point.point_id} seed {point.seed}: {reason}", file=sys.stderr)
        print(f"error: {len(result.failed)} of {result.points} sweep points failed (listed above and in "
              f"{result.sweep_dir / 'points.json'}); the others' results are in the tables", file=sys.stderr)
        return EXIT_POINTS_FAILED
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_scenario(args.scenario, args.set)
    if args.print:
        sys.stdout.write(dump_yaml(cfg))
    print(f"ok: {args.scenario}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from nmoe_sim.plots import plot_path

    formats = args.format or ["png"]
    for path in plot_path(Path(args.path), formats):
        print(path)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"expected a count from 1 to 1024, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nmoe-sim", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("run", cmd_run, "run one scenario"), ("sweep", cmd_sweep, "run a scenario's sweep"),
                            ("validate", cmd_validate, "check a scenario without running it")):
        p = sub.add_parser(name, help=help_)
        if name == "run":  # or --resume RUN_DIR instead
            p.add_argument("scenario", nargs="?", help="scenario YAML file")
            p.add_argument("--resume", metavar="RUN_DIR",
                           help="go on with an interrupted run from its last checkpoint (a finished run: says so)")
        else:
            p.add_argument("scenario", help="scenario YAML file")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a scenario key, e.g. --set stage1.rounds=5 (repeatable)")
        if name != "validate":
            p.add_argument("--out", help="results root folder (default: the scenario's output.root)")
        if name == "run":
            p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary table")
        if name == "sweep":
            p.add_argument("--no-reuse", action="store_true",
                           help="recompute stages 1-2 and the baselines for every point, even where shared")
            p.add_argument("--executor", default="local", metavar="{local,ray}",
                           help="where points run: local (one after another, here) or ray (each as a Ray "
                                "task on a cluster; docs/cluster.md)")
            p.add_argument("--address", help="with --executor ray: the Ray cluster to join (e.g. head:6379, or "
                                             "auto); default: a Ray instance on this machine")
            p.add_argument("--cpus-per-point", type=_positive_int, metavar="N",
                           help="with --executor ray: CPUs each point's task asks for (default 1)")
            p.add_argument("--rerun-changed", action="store_true",
                           help="run again (deleting their old results) finished points whose resolved "
                                "config differs from the one they ran with; without it such a sweep is refused")
        if name == "validate":
            p.add_argument("--print", action="store_true", help="print the resolved scenario")
        p.set_defaults(fn=fn)
    p = sub.add_parser("plot", help="redraw the plots of a run or sweep directory")
    p.add_argument("path")
    p.add_argument("--format", action="append", choices=["png", "svg", "pdf"],
                   help="figure format (repeatable; default png)")
    p.set_defaults(fn=cmd_plot)
    return parser


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (``kill``, a batch scheduler's time limit, a container stopping) stops a run
    as Ctrl-C does: status.json says interrupted, the last checkpoint stays for ``--resume``,
    a sweep records the point under way, exit status 130. Python's default would end the
    process at once, leaving status.json saying running."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with sigterm_as_ctrl_c():
            return args.fn(args)
    except ConfigError as exc:
        # One line whatever the message holds (a key or a file name may carry a newline).
        print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before a run directory exists (a run's own says where it is)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
