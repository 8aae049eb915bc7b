"""The scores stage as Prefect tasks: one task per scoring model (cached, so a rerun trains only what is missing),
the same task for multi-step selection's step models, and one that combines the records into scores.parquet and
the scores report."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.common import dataset_for, epoch_logger, shrinking_on_oom
from tasks.runners import set_torch_threads
from tasks.tracking import Tracker
from unseen.config import Params
from unseen.data import ImageDataset
from unseen.features import read_features
from unseen.io import write_csv, write_json
from unseen.scores import (
    ModelRecord,
    ScoringModel,
    combine_records,
    histogram_rows,
    load_record,
    save_record,
    scores_report,
    seen_unseen_histograms,
    train_scoring_model,
)
from unseen.tables import SCORES, TableError, write_table
from unseen.training import pick_device


def model_cache_path(params: Params, dataset: ImageDataset, model: ScoringModel) -> Path:
    """A finished scoring model's records, keyed by the params and data that made them, so reruns skip it.

    Step models of multi-step selection also depend on the select params (they train on the coreset so far)."""
    stage = "select" if model.kind == "step" else "scores"
    return params.output("cache", stage, f"{params.stage_hash(stage)}-{dataset.fingerprint}", f"{model.name}.parquet")


def read_record(params: Params, dataset: ImageDataset, path: str | Path, stage: str = "scores") -> ModelRecord:
    """A cached record, checked against this run's params and data."""
    return load_record(path, params_hash=params.stage_hash(stage), data_fingerprint=dataset.fingerprint, train_size=len(dataset.train))


def _scorer_batch_size(params: Params) -> int:
    """The training batch of the run's scorer: what an out-of-memory retry halves."""
    return params.scores.probe.batch_size if params.scores.scorer == "probe" else params.scores.recipe.batch_size


@task(name="scoring-model", cache_policy=NO_CACHE, tags=["gpu"])
def scoring_model_task(params: Params, tracker: Tracker, model: ScoringModel, kept: np.ndarray | None = None) -> tuple[str, float]:
    """Train one scoring model unless its record is cached: a fold or seen model of the scores stage, or a step model
    of multi-step selection (trained on `kept`). Returns (record path, compute seconds)."""
    set_torch_threads(params.orchestration)
    started = time.perf_counter()
    dataset = dataset_for(params)
    path = model_cache_path(params, dataset, model)
    stage = "select" if model.kind == "step" else "scores"
    if path.is_file():
        try:
            read_record(params, dataset, path, stage)
            get_run_logger().info(f"[{stage}] {model.name} already recorded: {path}")
            return str(path), 0.0
        except TableError as exc:  # a truncated or foreign cache entry is not an error: train the model again
            get_run_logger().warning(f"[{stage}] {model.name}: cached record unusable ({exc}); training it again")
            path.unlink()
    with tracker.child_run(f"{stage}/{model.name}", stage=stage, kind=model.kind, repeat=str(model.repeat), fold=str(model.fold)) as run_id:
        probe = params.scores.scorer == "probe"
        epochs = params.scores.probe.epochs if probe else params.scores.recipe.epochs
        on_epoch = epoch_logger(tracker, run_id, f"[{stage}] {model.name}", epochs)
        embeddings = read_features(params, dataset)[1] if probe else None
        record, used = shrinking_on_oom(
            params, tracker, run_id, f"{stage} {model.name}", _scorer_batch_size,
            lambda p: train_scoring_model(
                dataset, model, p.scores, seed=params.seed, device=pick_device(), on_epoch=on_epoch, kept=kept, embeddings=embeddings
            ),
        )
        compute = time.perf_counter() - started
        save_record(record, path, params_hash=params.stage_hash(stage), data_fingerprint=dataset.fingerprint, batch_size=_scorer_batch_size(used))
        tracker.log_metrics(run_id, {
            "compute_seconds": compute, "train_seconds": record.train_seconds, "record_seconds": record.record_seconds,
            "trained_on": int(record.trained_on.sum()), "scored": len(record.sample_ids),
        })
    return str(path), compute


@task(name="combine-scores", cache_policy=NO_CACHE)
def combine_scores_task(params: Params, tracker: Tracker, record_paths: list[str]) -> tuple[float, dict[str, float]]:
    """All scores, seen and unseen, into scores.parquet; their distributions into scores_report.json and MLflow."""
    dataset = dataset_for(params)
    started = time.perf_counter()
    records = [read_record(params, dataset, path) for path in record_paths]
    names = list(params.scores.score_names)
    table = combine_records(
        records, list(params.scores.scores), dataset.train.sample_ids, dataset.train.labels.numpy(), windows=params.scores.window
    )
    report = scores_report(table, records, names, noisy=dataset.noisy_train)
    compute = time.perf_counter() - started
    path = write_table(
        SCORES, {"sample_id": table.sample_ids, "label": table.labels, "folds": table.folds, **table.columns}, params.output("scores.parquet"),
        params_hash=params.stage_hash("scores"), data_fingerprint=dataset.fingerprint,
    )
    write_json(params.output("scores_report.json"), report)
    oriented = table.oriented()
    plot = seen_unseen_histograms(oriented, names, params.output("plots", "scores_distributions.png"))
    write_csv(params.output("plots", "scores_histogram.csv"), histogram_rows(oriented, params.select.score_name))
    tracker.log_artifact(tracker.run_id, path, "tables")
    tracker.log_artifact(tracker.run_id, plot, "plots")
    tracker.log_metrics(tracker.run_id, report)
    return compute, report
