"""The scores stage as Prefect tasks: one task per scoring model (cached, so a rerun trains only what is missing),
the same task for multi-step selection's step models, and one that combines the records into scores.parquet and
the scores report."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.common import GPU_TAG, dataset_for, epoch_logger, shrinking_on_oom
from tasks.increment import cache_folder, increment_plan, keep_copy, publish_state, scores_folder, snapshot_ids
from tasks.runners import set_torch_threads, torch_work
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
    scoring_models,
    seen_unseen_histograms,
    train_scoring_model,
)
from unseen.increment import IncrementPlan, ScoringState
from unseen.scores.extend import WeightKeeper, extend_record, score_new_samples
from unseen.tables import SCORES, TableError, positions_of, write_table
from unseen.training import pick_device


def model_cache_path(params: Params, dataset: ImageDataset, model: ScoringModel) -> Path:
    """A finished scoring model's records, keyed by the params and data that made them, so reruns skip it.

    Step models of multi-step selection also depend on the select params (they train on the coreset so far)."""
    return cache_folder(params, dataset, "select" if model.kind == "step" else "scores") / f"{model.name}.parquet"


def read_record(params: Params, dataset: ImageDataset, path: str | Path, stage: str = "scores") -> ModelRecord:
    """A cached record, checked against this run's params and data."""
    return load_record(path, params_hash=params.stage_hash(stage), data_fingerprint=dataset.fingerprint, train_size=len(dataset.train))


def _scorer_batch_size(params: Params) -> int:
    """The training batch of the run's scorer: what an out-of-memory retry halves."""
    return params.scores.probe.batch_size if params.scores.scorer == "probe" else params.scores.recipe.batch_size


def _cached(params: Params, dataset: ImageDataset, path: Path, stage: str, plan: IncrementPlan | None) -> bool:
    """Whether the model's record is cached for this run: made with these params and data (and, for a run from
    scratch, not extended from an earlier run's models)."""
    if not path.is_file():
        return False
    state = ScoringState.read(path.parent) if plan is not None and not plan.incremental else None
    unusable = f"{path}: extended from an earlier run's models, and this run scores from scratch" if state and state.incremental else None
    if unusable is None:
        try:
            read_record(params, dataset, path, stage)
        except TableError as exc:  # a truncated or foreign cache entry is not an error: train the model again
            unusable = str(exc)
    if unusable is not None:
        get_run_logger().warning(f"[{stage}] cached record unusable ({unusable}); training the model again")
        path.unlink()
        return False
    get_run_logger().info(f"[{stage}] already recorded: {path}")
    return True


def _extended_record(params: Params, dataset: ImageDataset, model: ScoringModel, plan: IncrementPlan, embeddings: np.ndarray | None) -> ModelRecord:
    """The record of `model` from the run that trained it, with the samples added since scored by its kept weights."""
    state = plan.state
    base = load_record(state.folder / f"{model.name}.parquet", params_hash=None, data_fingerprint=None, train_size=state.train_size)
    positions = positions_of(dataset.train.sample_ids, plan.new_ids, "the grown train split")
    logits, norms, _ = score_new_samples(state.folder / f"{model.name}.weights.pt", params.scores, dataset, positions, embeddings, device=pick_device())
    weights = model_cache_path(params, dataset, model).with_suffix(".weights.pt")
    if state.folder != weights.parent:  # the next increment builds on this run's folder
        keep_copy(state.folder / weights.name, weights)
    return extend_record(base, snapshot_ids(state.features_folder)[0], dataset.train.sample_ids, positions, dataset.train.labels.numpy(), logits, norms)


@task(name="scoring-model", cache_policy=NO_CACHE, tags=[GPU_TAG])
def scoring_model_task(params: Params, tracker: Tracker, model: ScoringModel, kept: np.ndarray | None = None) -> tuple[str, float]:
    """Train one scoring model unless its record is cached: a fold or seen model of the scores stage, or a step model
    of multi-step selection (trained on `kept`). On a grown collection a fold model of an earlier run scores the new
    samples instead (`tasks.increment`). Returns (record path, compute seconds)."""
    set_torch_threads(params.orchestration)
    dataset = dataset_for(params)
    path = model_cache_path(params, dataset, model)
    stage = "select" if model.kind == "step" else "scores"
    plan = increment_plan(params, dataset) if stage == "scores" else None
    if _cached(params, dataset, path, stage, plan):
        return str(path), 0.0
    with tracker.child_run(f"{stage}/{model.name}", stage=stage, kind=model.kind, repeat=str(model.repeat), fold=str(model.fold)) as run_id:
        started = time.perf_counter()  # compute: reading the inputs and training, as in the retrain task; not the tracking
        probe = params.scores.scorer == "probe"
        embeddings = read_features(params, dataset)[1] if probe else None
        used = params
        if plan is not None and plan.incremental and model.kind == "unseen":
            record = _extended_record(params, dataset, model, plan, embeddings)
            tracker.log_metrics(run_id, {"scored_new": len(plan.new_ids)})
        else:
            epochs = params.scores.probe.epochs if probe else params.scores.recipe.epochs
            on_epoch = epoch_logger(tracker, run_id, f"[{stage}] {model.name}", epochs)
            keeper = WeightKeeper(params.scores.recorded_window("unseen"), on_epoch) if model.kind == "unseen" and params.increment.enabled else None
            record, used = torch_work(params.orchestration, lambda: shrinking_on_oom(  # a step probe trains on the flow's thread
                params, tracker, run_id, f"{stage} {model.name}", _scorer_batch_size,
                lambda p: train_scoring_model(
                    dataset, model, p.scores, seed=params.seed, device=pick_device(), on_epoch=keeper or on_epoch, kept=kept, embeddings=embeddings
                ),
            ))
            if keeper is not None:
                keeper.save(path.with_suffix(".weights.pt"), params.scores, dataset, in_dim=0 if embeddings is None else embeddings.shape[1])
        compute = time.perf_counter() - started
        save_record(record, path, params_hash=params.stage_hash(stage), data_fingerprint=dataset.fingerprint, batch_size=_scorer_batch_size(used))
        tracker.log_metrics(run_id, {
            "compute_seconds": compute, "train_seconds": record.train_seconds, "record_seconds": record.record_seconds,
            "trained_on": int(record.trained_on.sum()), "scored": len(record.sample_ids),
        })
    return str(path), compute


def scoring_model_task_for(params: Params) -> Task:
    """The scoring-model task as `params` trains it: probes (a linear layer on the embeddings, under a second) take no
    `gpu` slot, so under `prefect concurrency-limit create gpu 1` they never queue behind a retrain, and a select
    stage runs its step probes in place; CNN scoring models keep the tag, so the limit caps them."""
    return scoring_model_task.with_options(tags=set()) if params.scores.scorer == "probe" else scoring_model_task


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
    plan = increment_plan(params, dataset)
    path = write_table(
        SCORES, {"sample_id": table.sample_ids, "label": table.labels, "folds": table.folds, "scored_by": table.scored_by, **table.columns}, params.output("scores.parquet"),
        params_hash=params.stage_hash("scores"), data_fingerprint=dataset.fingerprint,
        scoring=plan.describe(), scoring_models_from=plan.state.folder.name if plan.incremental else scores_folder(params, dataset).name,
    )
    write_json(params.output("scores_report.json"), report)
    publish_state(params, dataset, plan, [m.name for m in scoring_models(params.scores) if m.kind == "unseen"])
    oriented = table.oriented()
    plot = seen_unseen_histograms(oriented, names, params.output("plots", "scores_distributions.png"))
    write_csv(params.output("plots", "scores_histogram.csv"), histogram_rows(oriented, params.select.score_name))
    tracker.log_artifact(tracker.run_id, path, "tables")
    tracker.log_artifact(tracker.run_id, plot, "plots")
    tracker.log_metrics(tracker.run_id, report)
    return compute, report
