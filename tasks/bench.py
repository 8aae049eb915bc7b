"""The benchmark sweep's cell as a Prefect task: select one (method, prune ratio, seed) coreset with the select
stage's own tasks, run in place, on the seed's shared tables, then retrain and test the target model.

A cell task receives its params, its cell and two paths, never tensors, so it runs on a local thread or a Dask
worker alike; it writes its result file last, so a cell that was interrupted is simply trained again.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from benchmarks.sweep import FULL, FULL_LONG, Cell, cached_cell_result
from tasks.common import GPU_TAG, dataset_for
from tasks.runners import set_torch_threads
from tasks.select import select_steps
from tasks.tracking import Tracker
from unseen.checks import coreset_input
from unseen.config import Params
from unseen.io import atomic_path, write_json
from unseen.retrain import train_and_test

SHARED_TABLES = ("features.parquet", "scores.parquet")


def _link_shared_tables(seed_outputs: Path, params: Params) -> None:
    """Hard-link the seed's features and scores tables into the cell's folder, where the select stage reads them."""
    for name in SHARED_TABLES:
        with atomic_path(params.output(name)) as tmp:
            tmp.unlink()
            os.link(seed_outputs / name, tmp)


@task(name="bench-cell", cache_policy=NO_CACHE, tags=[GPU_TAG])
def cell_task(params: Params, cell: Cell, group: str, result_path: str, seed_outputs: str, tracker: Tracker, code_commit: str) -> dict:
    """Select one cell's coreset (the select stage's tasks, run in place: a cell holds a worker slot, so it never
    waits on another task), retrain, evaluate. The full-data cell trains on the whole pool. `code_commit`: the commit
    the sweep's code was loaded from, recorded with the cell."""
    set_torch_threads(params.orchestration)
    params_hash = params.run_hash()
    cached = cached_cell_result(result_path, params_hash)
    if cached is not None:
        return cached
    dataset = dataset_for(params)
    tags = {"stage": "bench-cell", "method": cell.method, "prune_ratio": str(cell.prune_ratio), "seed": str(cell.seed)}
    with tracker.child_run(cell.name, **tags) as run_id:
        selection_seconds, kept = 0.0, dataset.train.sample_ids
        if cell.method not in (FULL, FULL_LONG):
            _link_shared_tables(Path(seed_outputs), params)
            cell_tracker = dataclasses.replace(tracker, run_id=run_id)
            selection_seconds, *_ = select_steps(params, cell_tracker, run=lambda step_task, *args: step_task.fn(*args))
            coreset = coreset_input(params, dataset)
            kept = coreset.column("sample_id").to_numpy()[coreset.column("selected").to_numpy(zero_copy_only=False)]
        retrained = train_and_test(dataset, kept, params.retrain, seed=params.seed)
        test_accuracy, train_seconds = retrained.test_accuracy, retrained.train_seconds
        epochs = params.retrain.recipe.epochs
        row = {
            "method": cell.method, "group": group, "prune_ratio": cell.prune_ratio, "seed": cell.seed,
            "test_accuracy": test_accuracy, "coreset_size": len(kept), "pool_size": len(dataset.train), "epochs": epochs,
            "train_seconds": train_seconds, "selection_seconds": selection_seconds, "params_hash": params_hash, "mlflow_run_id": run_id,
            "code_commit": code_commit,
        }
        tracker.log_params(run_id, {"params_hash": params_hash, "epochs": epochs, "coreset_size": len(kept), **params.select.model_dump()})
        tracker.log_metrics(run_id, {k: row[k] for k in ("test_accuracy", "train_seconds", "selection_seconds", "coreset_size")})
    write_json(result_path, row)
    get_run_logger().info(
        f"[bench] {cell.name}: test accuracy {test_accuracy:.4f} ({len(kept)} samples, {epochs} epochs, "
        f"train {train_seconds:.1f} s, select {selection_seconds:.1f} s)"
    )
    return row
