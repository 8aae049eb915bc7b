"""What a run needs before it starts: params whose names exist, params that fit the data, and input tables made
from this data and these params.

The stages read their input tables through these functions, and a run calls `check_params` and `check_run` before
any work or write, so a bad input is refused up front with the same message the stage would give.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from unseen.budgets import budget_for, class_budgets
from unseen.config import ParamsError, Params
from unseen.data import ImageDataset
from unseen.features import FeatureError, load_pretrained, read_features
from unseen.scores import cut_flag_columns, cut_flags_of, oversampled_candidates_of, resolve_score
from unseen.selection import METHODS
from unseen.tables import CORESET, SCORES, TableError, finite_or_raise, read_table, same_ids_or_raise


def check_params(params: Params) -> None:
    """Refuse names that nothing is registered under (a score, a selection method, a pretrained model) and an outputs
    folder that cannot be written."""
    outputs = Path(params.outputs).expanduser().absolute()
    if outputs.exists() and not outputs.is_dir():
        raise ParamsError(f"outputs={params.outputs}: {outputs} is a file, not a folder; point outputs at a folder")
    existing = next(folder for folder in (outputs, *outputs.parents) if folder.exists())
    if not os.access(existing, os.W_OK):
        raise ParamsError(f"outputs={params.outputs}: {existing} is not writable (read-only or not yours); point outputs at a writable folder")
    for entry in params.scores.scores:
        try:
            resolve_score(entry)
        except ValueError as exc:
            raise ParamsError(f"scores.scores: {exc}") from None
    if params.select.method not in METHODS:
        raise ParamsError(f"select.method: unknown method {params.select.method!r}; use one of: {', '.join(METHODS)}")
    if params.features.extractor.startswith("pretrained:"):
        try:  # the weights themselves, from torch's cache or a download: refused now, not inside the features task
            load_pretrained(params.features.extractor.removeprefix("pretrained:"))
        except FeatureError as exc:
            raise ParamsError(str(exc)) from None


def scores_input(params: Params, dataset: ImageDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample_ids, labels, `select.score` values) from scores.parquet: every train sample once, all finite."""
    path = params.output("scores.parquet")
    table = read_table(SCORES, path, data_fingerprint=dataset.fingerprint, params_hash=params.stage_hash("scores"))
    if params.select.score not in table.column_names:
        raise TableError(f"{path}: no column {params.select.score!r}; add its score to scores.scores and {SCORES.rerun}")
    ids = table.column("sample_id").to_numpy()
    same_ids_or_raise(path, ids, dataset.train.sample_ids, "train", SCORES)
    values = table.column(params.select.score).to_numpy()
    finite_or_raise(path, params.select.score, values, ids, SCORES)
    return ids, table.column("label").to_numpy().astype(np.int64), values


def cut_flags_input(params: Params, dataset: ImageDataset) -> tuple[np.ndarray | None, np.ndarray | None]:
    """With `select.hard_cutoff` auto, misclassified or oversampled: (the samples it never keeps, the samples oversampled
    may cut too: `unseen.scores.cut_flags_of`, `oversampled_candidates_of`), in train-split order; Nones for a fraction."""
    columns = cut_flag_columns(params.select)
    if not columns:
        return None, None
    path = params.output("scores.parquet")
    table = read_table(SCORES, path, data_fingerprint=dataset.fingerprint, params_hash=params.stage_hash("scores"))
    for column in columns:
        if column not in table.column_names:
            raise TableError(f"{path}: no column {column!r}; add {column.rpartition('_')[0]} to scores.scores and {SCORES.rerun}")
    values = {column: table.column(column).to_numpy() for column in columns}
    return cut_flags_of(values, params.select), oversampled_candidates_of(values, params.select)


def coreset_input(params: Params, dataset: ImageDataset) -> pa.Table:
    """coreset.parquet, holding every train sample once."""
    path = params.output("coreset.parquet")
    table = read_table(CORESET, path, data_fingerprint=dataset.fingerprint, params_hash=params.stage_hash("select"))
    same_ids_or_raise(path, table.column("sample_id").to_numpy(), dataset.train.sample_ids, "train", CORESET)
    return table


def _probe_features(params: Params, dataset: ImageDataset) -> None:
    if params.scores.scorer == "probe":
        read_features(params, dataset)


STAGE_INPUTS = {"features": (), "scores": (_probe_features,), "select": (read_features, scores_input), "retrain": (coreset_input,)}


def check_fits_data(params: Params, dataset: ImageDataset) -> None:
    """Refuse params that cannot work on this data: a coreset smaller than the class count, or more folds than the
    smallest class has samples."""
    labels = dataset.train.labels.numpy()
    present = np.flatnonzero(np.bincount(labels, minlength=dataset.num_classes))
    if len(present) < 2:
        names = ", ".join(repr(dataset.classes[c]) for c in present)
        raise ParamsError(f"{params.data.name}: the train split holds one class ({names}); pruning by difficulty needs at least two classes")
    budget = budget_for(len(labels), params.select.prune_ratio)
    try:
        class_budgets(labels, budget, dataset.num_classes)
    except ValueError:
        raise ParamsError(
            f"select.prune_ratio={params.select.prune_ratio}: the coreset would keep {budget} of {len(labels)} train samples, "
            f"fewer than the {dataset.num_classes} classes; lower select.prune_ratio or use more data (data.train_subset)"
        ) from None
    counts = np.bincount(labels, minlength=dataset.num_classes)
    smallest = int(counts.argmin())
    if params.scores.folds > counts[smallest]:
        fix = f"use at most {counts[smallest]} folds" if counts[smallest] >= 2 else "give every class at least 2 train samples"
        raise ParamsError(
            f"scores.folds={params.scores.folds}: class {dataset.classes[smallest]!r} has only {counts[smallest]} train samples, "
            f"so some fold would hold none of it; {fix}"
        )


def check_run(params: Params, dataset: ImageDataset, stages: tuple[str, ...]) -> None:
    """Everything about a run of `stages` (in order) that can be refused once the data is loaded: params against the
    data, and the input tables of the first stage (later stages read what this run writes)."""
    check_fits_data(params, dataset)
    for read in STAGE_INPUTS[stages[0]]:
        read(params, dataset)
