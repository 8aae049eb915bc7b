"""Generalization scoring: every common pruning score, from models that never saw the sample (unseen) or did (seen).

A *scoring model* is trained with the scoring recipe and records, after each epoch of the score window,
the logits and penultimate-embedding norms of the samples it scores. Unseen models are the K fold models
of R stratified partitions (each scores the fold it held out); seen models are R models trained on the
whole train split that score their own training samples. Score functions turn those records into one
number per sample; built-in and user-registered scores go through the same registry.
"""

from __future__ import annotations

import importlib
import inspect
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from unseen.config import ScoringParams
from unseen.data import ImageDataset
from unseen.training import pick_device, predict, train_model

EpochLog = Callable[[int, dict[str, float]], None]
ScoreFn = Callable[..., np.ndarray]


# ---- the score registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreSpec:
    """A named score: `fn(probs_per_epoch, logits_per_epoch, labels[, embedding_norms]) -> (N,)`."""

    name: str
    fn: ScoreFn
    higher_is_harder: bool = True
    reference: str = ""

    @property
    def wants_embedding_norms(self) -> bool:
        return "embedding_norms" in inspect.signature(self.fn).parameters

    def __call__(self, probs: np.ndarray, logits: np.ndarray, labels: np.ndarray, embedding_norms: np.ndarray) -> np.ndarray:
        extra = {"embedding_norms": embedding_norms} if self.wants_embedding_norms else {}
        values = np.asarray(self.fn(probs, logits, labels, **extra), dtype=np.float64)
        if values.shape != labels.shape:
            raise ValueError(f"score {self.name!r} returned shape {values.shape}, expected one value per sample {labels.shape}")
        return values


SCORES: dict[str, ScoreSpec] = {}


def register_score(name: str, fn: ScoreFn, *, higher_is_harder: bool = True, reference: str = "") -> ScoreSpec:
    """Make `fn` available by `name` in `scoring.scores`; its seen and unseen columns then appear in scores.parquet."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"score name {name!r} must be lower-case letters, digits and underscores")
    spec = ScoreSpec(name, fn, higher_is_harder, reference)
    SCORES[name] = spec
    return spec


def resolve_score(entry: str) -> ScoreSpec:
    """A registered name, or `package.module:function` (imported; registered under the function's name).

    An imported function may set `higher_is_harder = False` as an attribute to say that high means easy.
    """
    if entry in SCORES:
        return SCORES[entry]
    if ":" in entry:
        module_name, _, attribute = entry.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"scoring.scores: cannot import {entry!r} ({exc})") from None
        return register_score(attribute.lower(), fn, higher_is_harder=getattr(fn, "higher_is_harder", True), reference=entry)
    raise ValueError(f"scoring.scores: unknown score {entry!r}; use one of {', '.join(SCORES)} or 'package.module:function'")


def _onehot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float64)[labels]


def _true_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """values[..., n, labels[n]] for (E, N, C) arrays."""
    return np.take_along_axis(values, labels[None, :, None], axis=-1)[..., 0]


def _margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(E, N): true-class logit minus the largest other logit."""
    others = logits.astype(np.float64).copy()
    np.put_along_axis(others, labels[None, :, None], -np.inf, axis=-1)
    return _true_class(logits.astype(np.float64), labels) - others.max(axis=-1)


def el2n(probs, logits, labels):
    """EL2N (Paul et al. 2021): L2 distance of the softmax from the one-hot label, averaged over epochs."""
    return np.linalg.norm(probs - _onehot(labels, probs.shape[-1])[None], axis=-1).mean(axis=0)


def grand(probs, logits, labels, embedding_norms):
    """GraNd (Paul et al. 2021) w.r.t. the last layer's weights and bias: ||p - y|| * sqrt(||h||^2 + 1), averaged."""
    error = np.linalg.norm(probs - _onehot(labels, probs.shape[-1])[None], axis=-1)
    return (error * np.sqrt(embedding_norms.astype(np.float64) ** 2 + 1.0)).mean(axis=0)


def loss(probs, logits, labels):
    """Cross-entropy of the true class, averaged over epochs (from logits, numerically stable)."""
    logits = logits.astype(np.float64)
    peak = logits.max(axis=-1, keepdims=True)
    log_normalizer = peak[..., 0] + np.log(np.exp(logits - peak).sum(axis=-1))
    return (log_normalizer - _true_class(logits, labels)).mean(axis=0)


def entropy(probs, logits, labels):
    """Entropy of the softmax, averaged over epochs: high = the model is unsure."""
    p = probs.astype(np.float64)
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=-1).mean(axis=0)


def margin(probs, logits, labels):
    """True-class logit minus the largest other logit at the last epoch of the window: high = easy."""
    return _margins(logits[-1:], labels)[0]


def aum(probs, logits, labels):
    """AUM (Pleiss et al. 2020): the margin averaged over the epochs of the window; negative for likely mislabels."""
    return _margins(logits, labels).mean(axis=0)


def forgetting(probs, logits, labels):
    """Forgetting events (Toneva et al. 2019): correct-to-incorrect transitions between consecutive epochs.

    A sample never classified correctly in the window counts as most forgettable: the window's length,
    which no learned sample can reach.
    """
    correct = logits.argmax(axis=-1) == labels[None, :]
    events = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.float64)
    return np.where(correct.any(axis=0), events, float(len(correct)))


for _fn, _harder, _ref in (
    (el2n, True, "Paul et al. 2021"),
    (grand, True, "Paul et al. 2021"),
    (loss, True, ""),
    (entropy, True, ""),
    (margin, False, ""),
    (forgetting, True, "Toneva et al. 2019"),
    (aum, False, "Pleiss et al. 2020"),
):
    register_score(_fn.__name__, _fn, higher_is_harder=_harder, reference=_ref)


# ---- scoring models -----------------------------------------------------------------------------


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) that holds out each sample; every class is spread evenly over the folds."""
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    if folds > smallest:
        raise ValueError(f"scoring.folds={folds} exceeds the smallest class ({smallest} samples); use at most {smallest} folds")
    fold_of = np.empty(len(labels), dtype=np.int16)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold_of[held_out] = fold
    return fold_of


@dataclass(frozen=True)
class ScoringModel:
    """One scoring model: `unseen` (repeat r's partition, trained without fold k), `seen` (repeat r, all samples),
    or `step` (multi-step UNSEEN: trained on the coreset of step `repeat`, scoring the rest)."""

    kind: str
    repeat: int
    fold: int = -1

    @property
    def name(self) -> str:
        names = {"unseen": f"unseen_r{self.repeat}_f{self.fold}", "seen": f"seen_r{self.repeat}", "step": f"step_{self.repeat}"}
        return names[self.kind]

    def seed(self, seed: int) -> int:
        """Model init and data-order seed: the same for the seen and unseen models of a repeat and position."""
        return seed * 1000 + self.repeat * 100 + max(self.fold, 0) + 1


def scoring_models(params: ScoringParams) -> list[ScoringModel]:
    models = [ScoringModel("unseen", r, k) for r in range(params.repeats) for k in range(params.folds)]
    if params.seen:
        models += [ScoringModel("seen", r) for r in range(params.repeats)]
    return models


def partition(labels: np.ndarray, folds: int, seed: int, repeat: int) -> np.ndarray:
    """Repeat r's fold assignment: an independent stratified K-fold partition."""
    return stratified_folds(labels, folds, seed * 1000 + repeat)


@dataclass(frozen=True)
class ModelRecord:
    """What one scoring model recorded on the samples it scores, at each epoch of the score window."""

    model: ScoringModel
    sample_ids: np.ndarray  # (n,) the scored samples
    labels: np.ndarray  # (n,)
    epochs: tuple[int, ...]  # the recorded epochs (1-based)
    logits: np.ndarray  # (E, n, C) float32
    embedding_norms: np.ndarray  # (E, n) float32: ||penultimate embedding||
    trained_on: np.ndarray  # (N_train,) bool over the train split: what the model trained on
    train_seconds: float = 0.0
    record_seconds: float = 0.0

    @property
    def probs(self) -> np.ndarray:
        shifted = self.logits - self.logits.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)


def train_scoring_model(
    dataset: ImageDataset,
    model: ScoringModel,
    params: ScoringParams,
    *,
    seed: int,
    device: torch.device | None = None,
    on_epoch: EpochLog | None = None,
) -> ModelRecord:
    """Train one scoring model of the K-fold x R design (or a seen model) and record what it scores."""
    labels = dataset.train.labels.numpy()
    if model.kind == "unseen":
        fold_of = partition(labels, params.folds, seed, model.repeat)
        scored, trained_on = fold_of == model.fold, fold_of != model.fold
    else:
        scored = trained_on = np.ones(len(labels), dtype=bool)
    return train_and_record(dataset, model, trained_on, scored, params, seed=seed, device=device, on_epoch=on_epoch)


def train_and_record(
    dataset: ImageDataset,
    model: ScoringModel,
    trained_on: np.ndarray,
    scored: np.ndarray,
    params: ScoringParams,
    *,
    seed: int,
    device: torch.device | None = None,
    on_epoch: EpochLog | None = None,
) -> ModelRecord:
    """Train on the `trained_on` mask of the train split; after each window epoch record outputs on the `scored` mask."""
    labels = dataset.train.labels.numpy()
    scored_positions = np.flatnonzero(scored)
    scored_images = dataset.train.images[torch.as_tensor(scored_positions)]
    first, last = params.score_epochs
    logits, norms, timing = [], [], {"record": 0.0, "train": 0.0}

    def record(epoch: int, trained, stats: dict[str, float]) -> None:
        timing["train"] += stats["epoch_seconds"]
        shown = dict(stats)
        if first <= epoch <= last:
            started = time.perf_counter()
            epoch_logits, embeddings = predict(trained, dataset, scored_images, batch_size=params.batch_size)
            logits.append(epoch_logits.numpy())
            norms.append(embeddings.norm(dim=1).numpy())
            timing["record"] += time.perf_counter() - started
            shown["scored_accuracy"] = float((epoch_logits.argmax(1).numpy() == labels[scored_positions]).mean())
        if on_epoch is not None:
            on_epoch(epoch, shown)

    train_model(
        dataset, dataset.train.take(np.flatnonzero(trained_on)), params.recipe, seed=model.seed(seed), device=device or pick_device(), on_epoch=record
    )
    return ModelRecord(
        model=model,
        sample_ids=dataset.train.sample_ids[scored_positions],
        labels=labels[scored_positions],
        epochs=tuple(range(first, last + 1)),
        logits=np.stack(logits).astype(np.float32),
        embedding_norms=np.stack(norms).astype(np.float32),
        trained_on=np.asarray(trained_on, dtype=bool),
        train_seconds=timing["train"],
        record_seconds=timing["record"],
    )


def score_record(record: ModelRecord, score_name: str) -> np.ndarray:
    """One score of every sample a record covers, oriented so that higher = harder."""
    spec = resolve_score(score_name)
    values = spec(record.probs, record.logits, record.labels, record.embedding_norms)
    return values if spec.higher_is_harder else -values


# ---- from records to the scores table ------------------------------------------------------------


@dataclass
class ScoreTable:
    """Columns of scores.parquet: sample_id, label, folds (one per repeat) and `<score>_<variant>[_std]`."""

    sample_ids: np.ndarray
    labels: np.ndarray
    folds: np.ndarray  # (N, R) int16
    columns: dict[str, np.ndarray] = field(default_factory=dict)


def combine_records(records: list[ModelRecord], score_names: list[str], train_sample_ids: np.ndarray, train_labels: np.ndarray) -> ScoreTable:
    """Mean and std over repeats of every score, per variant; checks that unseen records never scored a sample they trained on."""
    position = {int(s): i for i, s in enumerate(train_sample_ids)}
    repeats = 1 + max(r.model.repeat for r in records)
    folds = np.full((len(train_sample_ids), repeats), -1, dtype=np.int16)
    specs = [resolve_score(name) for name in score_names]
    per_repeat = {(spec.name, kind): np.full((repeats, len(train_sample_ids)), np.nan) for spec in specs for kind in ("unseen", "seen")}
    for record in records:
        where = np.fromiter((position[int(s)] for s in record.sample_ids), dtype=np.int64, count=len(record.sample_ids))
        if record.model.kind == "unseen":
            if record.trained_on[where].any():
                raise ValueError(f"{record.model.name} trained on samples it scores: not a held-out record")
            folds[where, record.model.repeat] = record.model.fold
        probs = record.probs
        for spec in specs:
            per_repeat[(spec.name, record.model.kind)][record.model.repeat, where] = spec(probs, record.logits, record.labels, record.embedding_norms)
    table = ScoreTable(train_sample_ids, train_labels, folds)
    for (name, kind), values in per_repeat.items():
        if np.isnan(values).all():
            continue
        if np.isnan(values).any():
            missing = int(train_sample_ids[np.flatnonzero(np.isnan(values).any(axis=0))[0]])
            raise ValueError(f"{name}_{kind}: sample_id {missing} was not scored by every repeat")
        table.columns[f"{name}_{kind}"] = values.mean(axis=0).astype(np.float32)
        table.columns[f"{name}_{kind}_std"] = values.std(axis=0).astype(np.float32)
    return table


def difficulty(table_column: np.ndarray, column_name: str) -> np.ndarray:
    """A score column oriented so that higher = harder, whatever the score's own direction."""
    spec = resolve_score(re.sub(r"_(unseen|seen)$", "", column_name))
    return table_column if spec.higher_is_harder else -table_column
