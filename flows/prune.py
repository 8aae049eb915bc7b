"""The UNSEEN pruning pipeline: features -> held-out scores -> alignment-constrained selection -> retraining.

Each stage reads and writes the Parquet tables under `outputs/`; DVC sees the same stages in dvc.yaml.
The task runner comes from params (`orchestration.task_runner`, see tasks/runners.py); `unseen run` and `unseen stage`
set it with `flow.with_options(task_runner=...)`, the decorators' runner is only the default for direct calls.
"""

from __future__ import annotations

import time

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.lineage import record_lineage
from tasks.runners import set_torch_threads, workers_reach_this_api
from tasks.stages import run_stage
from tasks.tracking import pipeline_run
from unseen.config import STAGES, OrchestrationParams, load_params

DEFAULT_RUNNER = ThreadPoolTaskRunner(max_workers=OrchestrationParams().max_workers)


@flow(name="prune", task_runner=DEFAULT_RUNNER)
def prune(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """The whole pipeline in one flow run, tracked as one MLflow parent run with a child per fold and model."""
    started = time.perf_counter()
    params = load_params(params_file, overrides or [])
    set_torch_threads(params.orchestration)
    with workers_reach_this_api(), pipeline_run(params, "prune") as tracker:
        reports = [run_stage(name, params, tracker) for name in STAGES]
    lineage_started = time.perf_counter()
    lineage = record_lineage(params_file, overrides or [])
    return {
        "run_id": tracker.run_id,
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
    set_torch_threads(params.orchestration)
    with workers_reach_this_api(), pipeline_run(params, name) as tracker:
        report = run_stage(name, params, tracker)
    return {"run_id": tracker.run_id, "stages": [report], "flow_seconds": time.perf_counter() - started, "params": params}
