"""The UNSEEN pruning pipeline: features -> held-out scores -> alignment-constrained selection -> retraining.

Each stage (flows/stages.py composes its tasks) reads and writes the Parquet tables under `outputs/`; DVC sees the
same stages in dvc.yaml. The task runner comes from params (`orchestration.task_runner`, see tasks/runners.py);
`unseen run` and `unseen stage` set it with `flow.with_options(task_runner=...)`, the decorators' runner is only the
default for direct calls.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from filelock import FileLock, Timeout
from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.stages import run_stage
from flows.summary import publish_run
from tasks.common import dataset_for
from tasks.increment import stale_output
from tasks.lineage import record_lineage
from tasks.runners import set_torch_threads, workers_reach_this_api
from tasks.tracking import check_tracking, pipeline_run
from unseen.checks import check_params, check_run
from unseen.config import STAGES, OrchestrationParams, Params, load_params

DEFAULT_RUNNER = ThreadPoolTaskRunner(max_workers=OrchestrationParams().max_workers)


def preflight(params: Params, stages: tuple[str, ...]) -> None:
    """Refuse, before any work or any write, a run that cannot succeed: names nothing is registered under, an
    unreachable tracking store, data that cannot be loaded, params that do not fit the data, or input tables from
    other data or params.

    `unseen run` and `unseen stage` call it before the flow run starts; the flows call it again for scheduled runs
    (the data set is loaded once per process, so the second call costs little). It sets torch's threads first: one on
    the main thread, whose torch work runs in a thread of its own with the tasks' count (`tasks.runners.torch_work`),
    as the data set's normalisation statistics, reductions that differ in the last bit with the thread count, need.
    """
    check_params(params)
    set_torch_threads(params.orchestration)
    check_tracking(params.tracking.uri)
    check_run(params, dataset_for(params), stages)


@contextlib.contextmanager
def outputs_lock(params: Params) -> Iterator[None]:
    """Hold `<outputs>/.lock` for a whole run, so two runs on one outputs folder (a schedule firing during a manual
    run) take turns: the second waits, and no table is written by both. The OS drops the lock if a run is killed."""
    lock = FileLock(params.output(".lock"))
    params.output().mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        get_run_logger().warning(f"another run is using {params.output()} (lock {lock.lock_file}); waiting for it to finish")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@flow(name="prune", task_runner=DEFAULT_RUNNER)
def prune(params_file: str = "params.yaml", overrides: list[str] | None = None, only_if_changed: bool = False, until: str = "retrain") -> dict:
    """The whole pipeline in one flow run, tracked as one MLflow parent run with a child per fold and model; `until`
    stops after a stage (`select`: a new coreset, no retraining, no new model version). With `only_if_changed`
    (scheduled runs) it does nothing when every output is already made from these params and data; on a grown
    collection the scores stage scores only the new samples (tasks/increment.py)."""
    started = time.perf_counter()
    params = load_params(params_file, overrides or [])
    names = STAGES[: STAGES.index(until) + 1]
    preflight(params, names)
    with outputs_lock(params):
        if only_if_changed and (stale := stale_output(params, dataset_for(params), names)) is None:
            get_run_logger().info(f"nothing changed: every output in {params.output()} is made from these params and this data")
            return {"skipped": True, "flow_seconds": time.perf_counter() - started, "params": params}
        if only_if_changed:
            get_run_logger().info(f"{stale} is out of date: running the pipeline")
        with workers_reach_this_api(), pipeline_run(params, "prune") as tracker:
            reports = [
                run_stage("features", params, tracker),  # outputs/features.parquet: embeddings of every sample
                run_stage("scores", params, tracker),  # outputs/scores.parquet: held-out (and seen) scores
                run_stage("select", params, tracker),  # outputs/coreset.parquet: the coreset and the random baseline
            ]
            if "retrain" in names:
                reports.append(run_stage("retrain", params, tracker))  # outputs/model.pt, metrics.json: both trained and tested
            publish_run(params, tracker, reports)  # the summary on the MLflow run and the flow run page
        lineage_started = time.perf_counter()
        lineage = record_lineage(params_file, overrides or [], names)
    return {
        "run_id": tracker.run_id,
        "experiment_id": tracker.experiment_id,
        "stages": reports,
        "lineage": lineage,
        "lineage_seconds": time.perf_counter() - lineage_started,
        "flow_seconds": time.perf_counter() - started,
        "params": params,
    }


@flow(name="stage", task_runner=DEFAULT_RUNNER)
def stage(name: str, params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """One stage on its own: what each `dvc.yaml` stage runs."""
    started = time.perf_counter()
    params = load_params(params_file, overrides or [])
    preflight(params, (name,))
    with outputs_lock(params), workers_reach_this_api(), pipeline_run(params, name) as tracker:
        report = run_stage(name, params, tracker)
    return {"run_id": tracker.run_id, "experiment_id": tracker.experiment_id, "stages": [report], "flow_seconds": time.perf_counter() - started, "params": params}
