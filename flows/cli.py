"""Command line: `unseen run`, `unseen stage NAME`, `unseen schedule`, `unseen bench`, `unseen bench-report`; flows are imported only when needed."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text
from rich.table import Table

from unseen.config import STAGES, InputError, ParamsError, load_params

STARTED = time.perf_counter()
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="UNSEEN dataset pruning: scores from models that never saw the sample.")
console = Console(markup=False, highlight=False)  # paths and class names may hold brackets: print them as they are
errors = Console(stderr=True, markup=False, highlight=False)

ParamsOption = Annotated[str, typer.Option("--params", "-p", help="params file")]
SetOption = Annotated[list[str] | None, typer.Option("--set", "-s", help="override, e.g. --set select.prune_ratio=0.7 (repeatable)")]


def _tracking_error() -> type[Exception]:
    """Imported only when an error reaches the command: a typo in params is reported before torch or MLflow load."""
    from tasks.tracking import TrackingError

    return TrackingError


ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "the disk is full: free space and rerun; finished scoring models are cached and not trained again",
    errno.EROFS: "the file system is read-only: point outputs (and tracking.uri) at a writable folder",
    errno.EACCES: "permission denied: point outputs (and tracking.uri) at a folder you can write",
}
"""OS errors a user fixes in the environment, not in the code: reported in one line, like bad input."""


def _environment_error(exc: OSError) -> None:
    """One line for an OS error of ENVIRONMENT_ERRORS; anything else is a bug and keeps its traceback."""
    if exc.errno not in ENVIRONMENT_ERRORS:
        raise exc
    _fail(OSError(f"{exc.filename or exc.strerror}: {ENVIRONMENT_ERRORS[exc.errno]}"))


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Bad input, an unusable tracking store and the OS errors of ENVIRONMENT_ERRORS end the command in one line."""
    try:
        yield
    except InputError as exc:
        _fail(exc)
    except _tracking_error() as exc:
        _fail(exc)
    except OSError as exc:
        _environment_error(exc)


def _fail(exc: Exception) -> None:
    errors.print(Text("error: ", style="bold red") + Text(str(exc)), soft_wrap=True)  # unwrapped: paths stay whole
    raise typer.Exit(2)


def _flow_with_runner(flow, params):
    """The flow with the task runner params choose: local threads, or a Dask cluster (orchestration.task_runner)."""
    from tasks.runners import task_runner

    return flow.with_options(task_runner=task_runner(params.orchestration))


def _print_summary(result: dict, wall: float) -> None:
    from flows.summary import change_lines, result_lines, run_link, time_outside_compute, write_run_report

    write_run_report(result, wall)
    params = result["params"]
    table = Table(title="stages", show_edge=False)
    for column in ("stage", "wall s", "compute s", "outputs"):
        table.add_column(column)
    for report in result["stages"]:
        table.add_row(report.name, f"{report.wall_seconds:.1f}", f"{report.compute_seconds:.1f}", ", ".join(report.outputs))
    console.print(table)
    metrics = {k: v for report in result["stages"] for k, v in report.metrics.items()}
    for line in result_lines(params, metrics) + change_lines(result["stages"]):
        console.print(line)
    compute = sum(report.compute_seconds for report in result["stages"])
    outside = time_outside_compute(result, wall)
    console.print(
        f"wall time {wall:.1f} s, stages' own compute {compute:.1f} s, the rest {wall - compute:.1f} s "
        f"({100 * (wall - compute) / max(wall, 1e-9):.1f}%): start-up and shut-down (imports, Prefect server) {outside['startup_and_shutdown']:.1f} s, "
        f"tracking set-up and flow {outside['tracking_setup_and_flow']:.1f} s, "
        f"tasks' tracking and I/O {outside['tasks_tracking_and_io']:.1f} s, DVC lineage {outside['dvc_lineage']:.1f} s"
    )
    if "lineage" in result:
        console.print(f"DVC lineage: {result['lineage']}")
    console.print(f"MLflow run: {run_link(params.tracking.uri, result['experiment_id'], result['run_id'])}", soft_wrap=True)  # the URL stays whole


def _is_stop(exc: BaseException) -> bool:
    """Ctrl-C, or the TerminationSignal that Prefect's own SIGTERM handler raises inside a flow run (Prefect is not
    imported for this: importing it before the temporary server starts would make Prefect start a server of its own)."""
    exceptions = sys.modules.get("prefect.exceptions")
    return isinstance(exc, KeyboardInterrupt) or (exceptions is not None and isinstance(exc, exceptions.TerminationSignal))


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """Ctrl-C (SIGINT, to the process or its group) or SIGTERM: every training and inference loop stops at its next
    batch, the flow ends, the MLflow runs are marked KILLED, the outputs lock and the temporary Prefect server are
    released, nothing partial is left (every table is written atomically), and the command exits 130 or 143. A rerun
    resumes from the cached scoring models."""
    received: list[int] = []

    def stop(signum, frame) -> None:
        from unseen.training import request_stop

        received.append(signum)
        request_stop()
        if len(received) == 1:  # a repeated signal (Prefect passes SIGTERM on after its own handler) must not cut the clean-up short
            raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except BaseException as exc:
        if not _is_stop(exc):
            raise
        signum = received[0] if received else signal.SIGTERM
        errors.print(Text(f"stopped by {signal.Signals(signum).name}: ", style="bold red") +
                     Text("nothing partial was written; rerun the same command to resume (finished scoring models are cached)"))
        raise typer.Exit(128 + signum) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_flow(flow_name: str, params_file: str, overrides: list[str], stages: tuple[str, ...], **flow_kwargs) -> None:
    """Preflight, then the `prune` or `stage` flow of flows/prune.py on the temporary Prefect server, then the summary;
    bad input, environment errors and stop signals end in one line."""
    with _one_line_errors():
        params = load_params(params_file, overrides)
        from flows.server import temporary_api_server

        with _stoppable(), temporary_api_server() as server:  # the server starts now, ready while the imports below run
            import flows.prune

            flows.prune.preflight(params, stages)  # refuse bad input before the flow starts: a short message, nothing written
            server.wait_ready()
            flow = getattr(flows.prune, flow_name)
            result = _flow_with_runner(flow, params)(params_file=params_file, overrides=overrides, **flow_kwargs)
    _print_summary(result, time.perf_counter() - STARTED)


UntilOption = Annotated[str, typer.Option(help="the last stage to run: select gives a new coreset without retraining (no new model version)")]


def _until_stages(until: str) -> tuple[str, ...]:
    if until not in STAGES:
        _fail(ParamsError(f"--until {until!r}: use one of: {', '.join(STAGES)}"))
    return STAGES[: STAGES.index(until) + 1]


@app.command()
def run(params_file: ParamsOption = "params.yaml", overrides: SetOption = None, until: UntilOption = "retrain") -> None:
    """Run the whole pipeline (features, scores, select, retrain) as one Prefect flow."""
    overrides = overrides or []
    _run_flow("prune", params_file, overrides, _until_stages(until), until=until)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help=f"one of: {', '.join(STAGES)}")],
    params_file: ParamsOption = "params.yaml",
    overrides: SetOption = None,
) -> None:
    """Run one stage as its own Prefect flow (what `dvc repro` calls)."""
    overrides = overrides or []
    if name not in STAGES:
        _fail(ParamsError(f"unknown stage {name!r}; use one of: {', '.join(STAGES)}"))
    _run_flow("stage", params_file, overrides, (name,), name=name)


@app.command()
def schedule(
    cron: Annotated[str, typer.Option(help='cron expression, e.g. "0 3 * * *"')] = "0 3 * * *",
    name: Annotated[str, typer.Option(help="deployment name")] = "nightly",
    params_file: ParamsOption = "params.yaml",
    overrides: SetOption = None,
    until: UntilOption = "retrain",
) -> None:
    """Serve the prune flow on a cron schedule against the Prefect server at PREFECT_API_URL (runs until stopped)."""
    overrides = overrides or []
    _until_stages(until)
    try:
        load_params(params_file, overrides)
    except ParamsError as exc:
        _fail(exc)
    from flows.schedule import serve_prune

    serve_prune(name=name, cron=cron, params_file=params_file, overrides=overrides, until=until)


ConfigOption = Annotated[str, typer.Option("--config", "-c", help="sweep file, e.g. benchmarks/cpu.yaml")]


@app.command()
def bench(config: ConfigOption = "benchmarks/cpu.yaml") -> None:
    """Run (or resume) a benchmark sweep: methods x prune ratios x seeds, results in benchmarks/results/<name>.parquet."""
    with _one_line_errors():
        from benchmarks.sweep import load_sweep, seed_params

        sweep = load_sweep(config)
        params = seed_params(sweep, sweep.seeds[0])
        from flows.server import temporary_api_server

        with _stoppable(), temporary_api_server() as server:  # starts now, ready while the imports below run
            from flows.bench import benchmark
            from flows.prune import preflight

            preflight(params, ("features", "scores"))  # data and tracking store checked before the sweep starts
            server.wait_ready()
            result = _flow_with_runner(benchmark, params)(config_file=config)
    console.print(
        f"{len(result['rows'])} cells: {result['trained']} trained now, {result['cached']} from earlier runs; "
        f"{result['wall_seconds']:.1f} s -> {sweep.results_table}\nreport: .venv/bin/unseen bench-report --config {config}"
    )


@app.command("bench-report")
def bench_report(config: ConfigOption = "benchmarks/cpu.yaml") -> None:
    """Generate the benchmark report (docs/benchmarks.md and its figures) from the sweep's results table."""
    with _one_line_errors():
        from benchmarks.report import write_report
        from benchmarks.sweep import load_sweep

        path = write_report(load_sweep(config), config)
    console.print(f"wrote {path}")


MALLOC_ARENAS = 2
"""glibc gives each thread that allocates its own heap (up to 8 per core) and keeps freed blocks in each, so a stage
streaming images on a task thread grows with every batch; two arenas bound it (MALLOC_ARENA_MAX=2 from the
environment is the same setting). benchmarks/image_stream.py measures the stage's peak."""


def _limit_malloc_arenas() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to bound
        return
    libc.mallopt(-8, MALLOC_ARENAS)  # M_ARENA_MAX, before any task thread allocates


def main() -> None:
    """Run the command, then exit without tearing the interpreter down: freeing torch, MLflow and Prefect module by
    module takes seconds and does nothing a user needs. Exit handlers (log and event flushes) still run; a crash
    keeps Python's own exit and traceback."""
    _limit_malloc_arenas()
    try:
        app()
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    main()
