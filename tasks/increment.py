"""Where a run leaves what a later run on a grown collection builds on, and the plan every stage of a run follows.

`outputs/cache/features/<hash>-<data>/` holds the embeddings of a features stage and the extractor that made them;
`outputs/cache/scores/<hash>-<data>/` the scoring models' records and kept weights, with its `state.json` once the
scores stage finished; `outputs/cache/scores/current.json` names the last finished one. Plans are read from disk, so
every task of a run, in any process, follows the same one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from unseen.budgets import budget_for
from unseen.config import Params
from unseen.data import ImageDataset
from unseen.increment import IncrementPlan, ScoringState, SelectionPlan, plan_increment, plan_selection
from unseen.io import atomic_path, write_json
from unseen.tables import CORESET, read_table, stamped_with, table_meta


def cache_folder(params: Params, dataset: ImageDataset, stage: str) -> Path:
    """A stage's cache for these params and data: for features a copy of features.parquet and the extractor; for
    scores the records, kept weights and, when finished, its state; for select the step models' records."""
    return params.output("cache", stage, f"{params.stage_hash(stage)}-{dataset.fingerprint}")


def scores_folder(params: Params, dataset: ImageDataset) -> Path:
    return cache_folder(params, dataset, "scores")


def features_folder(params: Params, dataset: ImageDataset) -> Path:
    return cache_folder(params, dataset, "features")


def _pointer(params: Params) -> Path:
    return params.output("cache", "scores", "current.json")


def current_state(params: Params) -> ScoringState | None:
    """The state of the last scores stage that finished in this outputs folder, if its files are still there."""
    pointer = _pointer(params)
    if not pointer.is_file():
        return None
    state = ScoringState.read(pointer.parent / json.loads(pointer.read_text())["folder"])
    return state if state is not None and (state.features_folder / "features.parquet").is_file() else None


def snapshot_ids(folder: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(sample_ids, labels) of one split of the embeddings kept in a features cache folder."""
    table = pq.read_table(folder / "features.parquet", columns=["sample_id", "split", "label"])
    rows = table.column("split").to_numpy(zero_copy_only=False) == split
    return table.column("sample_id").to_numpy()[rows], table.column("label").to_numpy()[rows].astype(np.int64)


def increment_plan(params: Params, dataset: ImageDataset) -> IncrementPlan:
    """How this run scores its collection: incrementally from the last finished scoring, or from scratch (and why)."""
    state = current_state(params)
    state_ids, state_labels = snapshot_ids(state.features_folder) if state is not None else (None, None)
    return plan_increment(
        state, recipe=params.recipe_hash(), policy=params.increment, extractor=params.features.extractor,
        sample_ids=dataset.train.sample_ids, labels=dataset.train.labels.numpy(), state_ids=state_ids, state_labels=state_labels,
    )


def last_coreset(params: Params) -> Path:
    """The coreset selected last in this outputs folder, kept for the next run's diff and incremental selection."""
    return params.output("cache", "select", "last_coreset.parquet")


def selection_plan(params: Params, sample_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> SelectionPlan:
    """Whether this run keeps the last coreset and selects only the samples added since (`sample_ids`, `labels` and
    their `select.score` values: scores.parquet's train rows)."""
    path = last_coreset(params)
    before = read_table(CORESET, path) if path.is_file() else None
    earlier = {} if before is None else {
        "before_recipe": table_meta(before).get("recipe"), "before_ids": before.column("sample_id").to_numpy(),
        "before_selected": before.column("selected").to_numpy(zero_copy_only=False), "before_scores": before.column("score").to_numpy(),
    }
    return plan_selection(params.increment, recipe=params.recipe_hash("select"), sample_ids=sample_ids, labels=labels, scores=scores,
                          budget=budget_for(len(sample_ids), params.select.prune_ratio), **earlier)


def keep_copy(source: Path, target: Path) -> Path:
    """`target` becomes the file `source` is now (a hard link where the file system allows, else a copy), atomically:
    a later atomic rewrite of `source` leaves it as it was."""
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
    return target


def publish_state(params: Params, dataset: ImageDataset, plan: IncrementPlan, fold_models: list[str]) -> ScoringState:
    """Record the finished scores stage as what the next run builds on (`fold_models`: the names of its fold models)."""
    folder = scores_folder(params, dataset)
    base = plan.state if plan.incremental else None
    weights = params.increment.enabled and all((folder / f"{name}.weights.pt").is_file() for name in fold_models)
    state = ScoringState(
        folder, params.recipe_hash(), features_folder(params, dataset), base.trained_on if base else len(dataset.train), len(dataset.train),
        weights, incremental=base is not None and (len(plan.new_ids) > 0 or base.incremental),
    )
    state.write()
    write_json(_pointer(params), {"folder": folder.name})
    return state


def stale_output(params: Params, dataset: ImageDataset, stages: tuple[str, ...]) -> str | None:
    """The first output of `stages` not made from these params and this data, or None when every one is: what a
    scheduled run checks first, so that it changes nothing when nothing changed."""
    for name, stage in (("features.parquet", "features"), ("scores.parquet", "scores"), ("coreset.parquet", "select")):
        path = params.output(name)
        if not stamped_with(path, params_hash=params.stage_hash(stage), data_fingerprint=dataset.fingerprint):
            return str(path)
    if "retrain" not in stages:
        return None
    model, metrics = params.output("model.pt"), params.output("metrics.json")
    if not (model.is_file() and metrics.is_file()):
        return str(model)
    provenance = torch.load(model, map_location="cpu", weights_only=True)["provenance"]
    if provenance.get("params_hash") != params.stage_hash("retrain") or provenance.get("data_fingerprint") != dataset.fingerprint:
        return str(model)
    return None
