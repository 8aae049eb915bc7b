"""The benchmark sweep's Prefect pieces: each seed's features and scores (the pipeline's own stages), and one mapped
task per (method, ratio, seed) cell that selects with the select stage's code and retrains the target model.

A cell task receives its params, its cell and two paths, never tensors, so it runs on a local thread or a Dask
worker alike; it writes its result file last, so a cell that was interrupted is simply trained again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from unseen.benchmark import FULL, Cell, cached_cell_result, cell_hash, write_cell_result
from unseen.config import Params
from unseen.io import atomic_path
from unseen.scores import scoring_models
from unseen.tables import CORESET, positions_of, read_table
from unseen.training import accuracy, pick_device, predict_logits, train_model
from tasks.runners import set_torch_threads
from tasks.stages import dataset_for, features_stage, model_cache_path, read_record, scores_stage, select_task, stage_hash
from tasks.tracking import Tracker

SHARED_TABLES = ("features.parquet", "scores.parquet")


def prepare_seed(params: Params, tracker: Tracker) -> dict[str, float]:
    """Features and scores of one seed, computed once and shared by all its cells; skipped when already done.

    Returns the seconds they cost (scoring: every scoring model's training and recording, read back from the
    per-model cache, so a resumed seed reports its full cost, not only what this run trained).
    """
    costs_path = params.output("seed_costs.json")
    hashes = {stage: stage_hash(params, stage) for stage in ("features", "scores")}
    if costs_path.is_file() and all(params.output(name).is_file() for name in SHARED_TABLES):
        saved = json.loads(costs_path.read_text())
        if saved["hashes"] == hashes:
            return saved["seconds"]
    seed_run = tracker.child(f"seed-{params.seed}", stage="bench-seed", seed=str(params.seed))
    seed_tracker = dataclasses.replace(tracker, run_id=seed_run)
    features = features_stage(params, seed_tracker)
    scores_stage(params, seed_tracker)
    dataset = dataset_for(params)
    records = [read_record(params, dataset, model_cache_path(params, dataset, m)) for m in scoring_models(params.scoring)]
    seconds = {"features_seconds": features.compute_seconds, "scoring_seconds": sum(r.train_seconds + r.record_seconds for r in records)}
    tracker.log_metrics(seed_run, seconds)
    tracker.finish(seed_run)
    with atomic_path(costs_path) as tmp:
        tmp.write_text(json.dumps({"hashes": hashes, "seconds": seconds}, indent=2) + "\n")
    return seconds


def _link_shared_tables(seed_outputs: Path, params: Params) -> None:
    """Hard-link the seed's features and scores tables into the cell's folder, where the select stage reads them."""
    for name in SHARED_TABLES:
        with atomic_path(params.output(name)) as tmp:
            tmp.unlink()
            os.link(seed_outputs / name, tmp)


@task(name="bench-cell", cache_policy=NO_CACHE, tags=["gpu"])
def cell_task(params: Params, cell: Cell, group: str, result_path: str, seed_outputs: str, tracker: Tracker) -> dict:
    """Select one cell's coreset (the select stage's own code, on the seed's shared tables), retrain, evaluate.

    The full-data cell trains on the whole pool. The cell's MLflow run gets the selection report (from the select
    stage) and the accuracy and timings; its result file is written last, so the sweep resumes after it.
    """
    set_torch_threads(params.orchestration)
    params_hash = cell_hash(params)
    cached = cached_cell_result(result_path, params_hash)
    if cached is not None:
        return cached
    dataset = dataset_for(params)
    tags = {"stage": "bench-cell", "method": cell.method, "prune_ratio": str(cell.prune_ratio), "seed": str(cell.seed)}
    run_id = tracker.child(cell.name, **tags)
    cell_tracker = dataclasses.replace(tracker, run_id=run_id)
    try:
        selection_seconds, split = 0.0, dataset.train
        if cell.method != FULL:
            _link_shared_tables(Path(seed_outputs), params)
            selection_seconds, _ = select_task.fn(params, cell_tracker, inline_steps=True)  # a cell holds a worker slot
            coreset = read_table(
                CORESET, params.output("coreset.parquet"), data_fingerprint=dataset.fingerprint, params_hash=stage_hash(params, "select")
            )
            kept = coreset.column("sample_id").to_numpy()[coreset.column("selected").to_numpy(zero_copy_only=False)]
            split = dataset.train.take(positions_of(dataset.train.sample_ids, kept, "the train split"))
        recipe = params.retrain.recipe
        started = time.perf_counter()
        model = train_model(dataset, split, recipe, seed=params.seed, device=pick_device())
        train_seconds = time.perf_counter() - started
        logits = predict_logits(model, dataset, dataset.test.images, batch_size=params.retrain.batch_size_eval)
        test_accuracy = accuracy(logits, dataset.test.labels)
        row = {
            "method": cell.method, "group": group, "prune_ratio": cell.prune_ratio, "seed": cell.seed,
            "test_accuracy": test_accuracy, "coreset_size": len(split), "pool_size": len(dataset.train), "epochs": recipe.epochs,
            "train_seconds": train_seconds, "selection_seconds": selection_seconds, "params_hash": params_hash, "mlflow_run_id": run_id,
        }
        logged = {"params_hash": params_hash, "epochs": recipe.epochs, "coreset_size": len(split), **params.select.model_dump()}
        tracker.log_params(run_id, logged)
        tracker.log_metrics(run_id, {k: row[k] for k in ("test_accuracy", "train_seconds", "selection_seconds", "coreset_size")})
    except BaseException:
        tracker.finish(run_id, failed=True)
        raise
    tracker.finish(run_id)
    write_cell_result(result_path, row)
    get_run_logger().info(
        f"[bench] {cell.name}: test accuracy {test_accuracy:.4f} ({len(split)} samples, {recipe.epochs} epochs, "
        f"train {train_seconds:.1f} s, select {selection_seconds:.1f} s)"
    )
    return row
