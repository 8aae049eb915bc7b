"""From records to the scores table: every score, seen and held out, as mean and spread over repeats."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from unseen.config import ScoresParams, SelectParams
from unseen.data import ImageDataset
from unseen.scores.functions import ScoreError, cut_flags_of, difficulty, oversampled_candidates_of, resolve_score
from unseen.scores.records import ModelRecord, ScoringModel, probe_record, scoring_models, train_scoring_model
from unseen.scores.scoring import sample_scores, whole_set_scores
from unseen.training import EpochCallback


@dataclass
class ScoreTable:
    """Columns of scores.parquet: sample_id, label, folds (one per repeat) and `<score>_<variant>[_std]`."""

    sample_ids: np.ndarray
    labels: np.ndarray
    folds: np.ndarray  # (N, R) int16: the fold that held the sample out in repeat r; -1: held out by every fold model
    scored_by: np.ndarray | None = None  # (N,) str: the models that scored the sample, comma-separated
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def difficulty(self, column: str) -> np.ndarray:
        """One score column oriented so that higher = harder, whatever the score's own direction."""
        return difficulty(self.columns[column], column)

    def cut_flags(self, select: SelectParams) -> np.ndarray | None:
        """The samples `select.hard_cutoff` auto, misclassified or oversampled never keeps (`unseen.scores.cut_flags_of`)."""
        return cut_flags_of(self.columns, select)

    def oversampled_candidates(self, select: SelectParams) -> np.ndarray | None:
        """The samples `select.hard_cutoff` oversampled may cut too (`unseen.scores.oversampled_candidates_of`)."""
        return oversampled_candidates_of(self.columns, select)

    def oriented(self) -> dict[str, np.ndarray]:
        """Every mean column (not the `_std` ones), oriented so that higher = harder."""
        return {name: self.difficulty(name) for name in self.columns if not name.endswith("_std")}


def combine_records(
    records: Iterable[ModelRecord], scores: list[str], train_sample_ids: np.ndarray, train_labels: np.ndarray, *, repeats: int | None = None,
    windows: Callable[[str, str], tuple[int, int]] | None = None,
) -> ScoreTable:
    """Mean and std over repeats of every score (registered names or 'module:function' entries, as in
    `scores.scores`), per variant; checks that unseen records never scored a sample they trained on. `records` may
    be a generator (with `repeats` given): each record is scored and dropped before the next, so memory stays bounded.
    `windows(kind, score)` gives each score's epochs per model kind (`ScoresParams.window`); None: every recorded epoch.
    A sample scored by several models of one repeat and kind (added after the fold models trained, so held out by
    all of them) gets their mean."""
    records = records if repeats is not None else list(records)
    repeats = repeats if repeats is not None else 1 + max(r.model.repeat for r in records)
    position = {int(s): i for i, s in enumerate(train_sample_ids)}
    specs = [resolve_score(entry) for entry in scores]
    sums = _ScoreSums(len(train_sample_ids), repeats, [spec.name for spec in specs])
    for record in records:
        model, sample_ids, labels = record.model, record.sample_ids, record.labels
        where = np.fromiter((position[int(s)] for s in sample_ids), dtype=np.int64, count=len(sample_ids))
        if model.kind == "unseen" and record.trained_on[where].any():
            raise ValueError(f"{model.name} trained on samples it scores: not a held-out record")
        scored, whole = sample_scores(record, specs, (lambda name, kind=model.kind: windows(kind, name)) if windows else None)
        del record  # its outputs go before the whole-set scores copy the probabilities, and before the next record is made
        scored.update(whole_set_scores(whole, labels))
        del whole
        for name, values in scored.items():
            if not np.isfinite(values).all():
                first = int(sample_ids[np.flatnonzero(~np.isfinite(values))[0]])
                raise ScoreError(
                    f"score {name!r} returned {int((~np.isfinite(values)).sum())} NaN or inf values on {model.name}, first at "
                    f"sample_id {first}; fix the score function or remove it from scores.scores"
                )
        sums.add(model, where, scored)
    return sums.table(train_sample_ids, train_labels)


class _ScoreSums:
    """Per score, variant and repeat, the sum and count of what the models gave each sample; which models scored it."""

    def __init__(self, n: int, repeats: int, names: list[str]):
        self.folds = np.full((n, repeats), -1, dtype=np.int16)
        self.held_out_by = np.zeros((n, repeats), dtype=np.int16)
        self.sums = {(name, kind): np.zeros((repeats, n)) for name in names for kind in ("unseen", "seen")}
        self.counts = {kind: np.zeros((repeats, n), dtype=np.int16) for kind in ("unseen", "seen")}
        self.scored_by: dict[str, np.ndarray] = {}

    def add(self, model: ScoringModel, where: np.ndarray, scored: dict[str, np.ndarray]) -> None:
        if model.kind == "unseen":
            self.folds[where, model.repeat] = model.fold
            self.held_out_by[where, model.repeat] += 1
        self.scored_by[model.name] = np.zeros(self.folds.shape[0], dtype=bool)
        self.scored_by[model.name][where] = True
        for name, values in scored.items():
            self.sums[(name, model.kind)][model.repeat, where] += values
        self.counts[model.kind][model.repeat, where] += 1

    def table(self, sample_ids: np.ndarray, labels: np.ndarray) -> ScoreTable:
        folds = np.where(self.held_out_by > 1, -1, self.folds)  # added after the fold models trained: held out by all of them
        table = ScoreTable(sample_ids, labels, folds.astype(np.int16), scored_by=scored_by_names(self.scored_by, len(sample_ids)))
        for (name, kind), total in self.sums.items():
            count = self.counts[kind]
            if not count.any():
                continue
            if (count == 0).any():
                missing = int(sample_ids[np.flatnonzero((count == 0).any(axis=0))[0]])
                raise ValueError(f"{name}_{kind}: sample_id {missing} was not scored by every repeat")
            values = total / count
            table.columns[f"{name}_{kind}"] = values.mean(axis=0).astype(np.float32)
            table.columns[f"{name}_{kind}_std"] = values.std(axis=0).astype(np.float32)
        return table


def scored_by_names(scored_by: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Per sample, the names of the models that scored it, comma-separated (one string per distinct combination)."""
    if not scored_by:
        return np.full(n, "", dtype=object)
    names = list(scored_by)
    patterns, inverse = np.unique(np.stack([scored_by[name] for name in names], axis=1), axis=0, return_inverse=True)
    joined = np.array([",".join(name for name, used in zip(names, row) if used) for row in patterns], dtype=object)
    return joined[inverse.ravel()]


def unseen_scores(
    dataset: ImageDataset, params: ScoresParams, *, seed: int, device: torch.device | None = None, on_epoch: EpochCallback | None = None,
    embeddings: np.ndarray | None = None,
) -> ScoreTable:
    """Train every scoring model of `params` here, one after the other, and combine their records: the scores stage
    in one call, for notebooks (the pipeline trains the same models as separate, cached, retrying tasks). The probe
    scorer needs `embeddings`, one row per train sample in split order."""
    records = [
        train_scoring_model(dataset, model, params, seed=seed, device=device, on_epoch=on_epoch, embeddings=embeddings)
        for model in scoring_models(params)
    ]
    return combine_records(records, list(params.scores), dataset.train.sample_ids, dataset.train.labels.numpy(), windows=params.window)


def embedding_scores(
    embeddings: np.ndarray, labels: np.ndarray, params: ScoresParams, *, seed: int, sample_ids: np.ndarray | None = None,
    num_classes: int | None = None, device: torch.device | None = None,
) -> ScoreTable:
    """Every score from probes on embeddings alone (`scores.probe`, K folds x R repeats, and seen probes if asked):
    for embeddings computed elsewhere, at any size. Each probe's record is scored and dropped before the next."""
    labels = np.asarray(labels, dtype=np.int64)
    sample_ids = np.arange(len(labels), dtype=np.int64) if sample_ids is None else np.asarray(sample_ids)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    records = (
        probe_record(embeddings, labels, sample_ids, model, params, num_classes=num_classes, seed=seed, device=device)
        for model in scoring_models(params)
    )
    return combine_records(records, list(params.scores), sample_ids, labels, repeats=params.repeats, windows=params.window)
