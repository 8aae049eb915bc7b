"""Each stage as a composition of its tasks, and the report of what it did; the prune flow calls them in order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefect import get_run_logger, unmapped

from tasks.common import GPU_TAG, dataset_for, with_retries
from tasks.increment import increment_plan
from tasks.features import features_task
from tasks.retrain import metrics_task, register_task, retrain_task
from tasks.runners import map_on_workers, submit_on_workers
from tasks.scores import combine_scores_task, scoring_model_task_for
from tasks.select import select_steps
from tasks.tracking import Tracker
from unseen.config import Params
from unseen.scores import scoring_models


@dataclass
class StageReport:
    """What one stage did: its outputs, wall time, and the seconds spent in library compute."""

    name: str
    outputs: list[str]
    wall_seconds: float = 0.0
    compute_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what a user should read about how it ran (e.g. scored incrementally)


def features_stage(params: Params, tracker: Tracker) -> StageReport:
    """The proxy trains in a task thread (or on a worker), as every model does, not in the flow's own thread."""
    compute = submit_on_workers(with_retries(params, features_task), params, tracker).result()
    return StageReport("features", [str(params.output("features.parquet")), str(params.output("skipped_images.parquet"))], compute_seconds=compute)


def scores_stage(params: Params, tracker: Tracker) -> StageReport:
    """Every scoring model as a mapped task (on Dask workers when chosen), then their records combined."""
    plan = increment_plan(params, dataset_for(params))
    get_run_logger().info(f"[scores] {plan.describe()}")
    tracker.client.set_tag(tracker.run_id, "scoring", plan.describe())
    models = scoring_models(params.scores)
    results = map_on_workers(with_retries(params, scoring_model_task_for(params)), unmapped(params), unmapped(tracker), models).result()
    compute, _ = with_retries(params, combine_scores_task)(params, tracker, [path for path, _ in results])
    outputs = [str(params.output("scores.parquet")), str(params.output("scores_report.json"))]
    metrics = {"scored_incrementally": float(plan.incremental), "new_samples_scored": float(len(plan.new_ids))}
    return StageReport("scores", outputs, compute_seconds=compute + sum(c for _, c in results), metrics=metrics, notes=[plan.describe()])


def select_stage(params: Params, tracker: Tracker) -> StageReport:
    """Selection steps in this flow; with `select.steps > 1`, each step's scoring model on a (GPU) worker between them."""

    def run(task, *args):
        if GPU_TAG in task.tags:
            return submit_on_workers(with_retries(params, task), *args).result()
        return with_retries(params, task)(*args)

    compute, metrics, plan = select_steps(params, tracker, run)
    outputs = [str(params.output(name)) for name in ("coreset.parquet", "coreset_diff.parquet", "select_report.json")]
    return StageReport("select", outputs, compute_seconds=compute, metrics=metrics, notes=[plan.describe()])


def retrain_stage(params: Params, tracker: Tracker) -> StageReport:
    """The coreset and random-subset models as two mapped tasks, then the coreset model registered. Not while the
    random model trains: exporting the model beside it made that model's accuracy differ from run to run."""
    coreset_run, random_run = map_on_workers(with_retries(params, retrain_task), unmapped(params), unmapped(tracker), ["coreset", "random"])
    coreset, random = coreset_run.result(), random_run.result()
    version = with_retries(params, register_task)(params, tracker, coreset["run_id"])
    metrics = with_retries(params, metrics_task)(params, tracker, coreset, random)
    outputs = [str(params.output("model.pt")), str(params.output("metrics.json"))]
    compute = coreset["compute_seconds"] + random["compute_seconds"]
    return StageReport("retrain", outputs, compute_seconds=compute, metrics={**metrics, "model_version": version})


STAGE_FLOWS = {"features": features_stage, "scores": scores_stage, "select": select_stage, "retrain": retrain_stage}


def stage_tables(name: str, params: Params) -> dict[str, str]:
    """The tables a stage reads and writes (path -> `read` or `written`): logged as the run's MLflow datasets."""
    reads = {
        "features": [], "scores": ["features.parquet"] if params.scores.scorer == "probe" else [],
        "select": ["features.parquet", "scores.parquet"], "retrain": ["coreset.parquet"],
    }[name]
    writes = {"features": ["features.parquet", "skipped_images.parquet"], "scores": ["scores.parquet"], "select": ["coreset.parquet", "coreset_diff.parquet"], "retrain": []}[name]
    return {**{str(params.output(t)): "read" for t in reads}, **{str(params.output(t)): "written" for t in writes}}


def run_stage(name: str, params: Params, tracker: Tracker) -> StageReport:
    """Run one stage's tasks to completion, time it, and log the tables it read and wrote on the run."""
    get_run_logger().info(f"[{name}] starting")
    started = time.perf_counter()
    report = STAGE_FLOWS[name](params, tracker)
    tracker.log_tables(tracker.run_id, stage_tables(name, params))
    report.wall_seconds = time.perf_counter() - started
    get_run_logger().info(f"[{name}] done in {report.wall_seconds:.1f} s -> {', '.join(report.outputs)}")
    return report
