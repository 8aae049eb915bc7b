"""Scoring models and what they record: the K-fold x R held-out design, seen models, and multi-step step models.

A *scoring model* is trained with the scores recipe and records, after each epoch of the score window, the logits
and penultimate-embedding norms of the samples it scores. Unseen models are the K fold models of R stratified
partitions (each scores the fold it held out); seen models are R models trained on the whole train split that score
their own training samples; a multi-step step model trains on the coreset so far and scores the rest. Records are
saved as `model_outputs` tables, so a rerun after a crash trains only the models that are missing.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from unseen.config import ScoresParams
from unseen.data import ImageDataset
from unseen.models import Classifier
from unseen.scores.functions import resolve_score
from unseen.tables import MODEL_OUTPUTS, list_column, read_table, table_meta, write_table
from unseen.training import EpochCallback, pick_device, predict, train_model


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) that holds out each sample; every class is spread evenly over the folds."""
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    if folds > smallest:
        raise ValueError(f"scores.folds={folds} exceeds the smallest class ({smallest} samples); use at most {smallest} folds")
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
        names = {"unseen": f"unseen_r{self.repeat}_f{self.fold}", "seen": f"seen_r{self.repeat}", "step": f"step-{self.repeat + 1}"}
        return names[self.kind]

    def seed(self, seed: int) -> int:
        """Model init and data-order seed: the same for the seen and unseen models of a repeat and position."""
        return seed * 1000 + self.repeat * 100 + max(self.fold, 0) + 1


def scoring_models(params: ScoresParams) -> list[ScoringModel]:
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
    dataset: ImageDataset, model: ScoringModel, params: ScoresParams, *, seed: int, device: torch.device | None = None,
    on_epoch: EpochCallback | None = None, kept: np.ndarray | None = None,
) -> ModelRecord:
    """Train one scoring model and record what it scores: a fold model of the K-fold x R design (trained without its
    fold, scoring it), a seen model (all samples, scoring them), or a step model (trained on `kept`, scoring the rest)."""
    labels = dataset.train.labels.numpy()
    if model.kind == "unseen":
        fold_of = partition(labels, params.folds, seed, model.repeat)
        scored, trained_on = fold_of == model.fold, fold_of != model.fold
    elif model.kind == "step":
        if kept is None:
            raise ValueError(f"{model.name}: a step model trains on the kept samples; pass kept")
        scored, trained_on = ~kept, kept
    else:
        scored = trained_on = np.ones(len(labels), dtype=bool)
    return _train_and_record(dataset, model, trained_on, scored, params, seed, device, on_epoch)


def _train_and_record(
    dataset: ImageDataset, model: ScoringModel, trained_on: np.ndarray, scored: np.ndarray, params: ScoresParams, seed: int,
    device: torch.device | None, on_epoch: EpochCallback | None,
) -> ModelRecord:
    """Train on the `trained_on` mask of the train split; after each window epoch record outputs on the `scored` mask."""
    labels = dataset.train.labels.numpy()
    scored_positions = np.flatnonzero(scored)
    scored_images = dataset.train.images[torch.as_tensor(scored_positions)]
    first, last = params.score_epochs
    logits, norms, timing = [], [], {"record": 0.0, "train": 0.0}

    def record(epoch: int, trained: Classifier, stats: dict[str, float]) -> None:
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
            on_epoch(epoch, trained, shown)

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


def step_scores(record: ModelRecord, kept: np.ndarray, score_name: str) -> np.ndarray:
    """A step model's difficulty (higher = harder) of the samples not kept, in train-split order; refuses a record
    that trained on any sample it scores, or that scored other samples than those not kept."""
    if record.trained_on[~kept].any() or len(record.sample_ids) != int((~kept).sum()):
        raise ValueError(f"{record.model.name}: not held out: it trained on samples it scores, or scored other samples than the rest")
    return score_record(record, score_name)


def score_step(
    dataset: ImageDataset, step: int, kept: np.ndarray, params: ScoresParams, score_name: str, *, seed: int = 0,
    device: torch.device | None = None, on_epoch: EpochCallback | None = None,
) -> tuple[np.ndarray, ModelRecord]:
    """Multi-step UNSEEN: train step `step`'s model on the kept samples only and score every other sample (held out
    by construction); returns their difficulty (higher = harder) in train-split order, and the record."""
    record = train_scoring_model(dataset, ScoringModel("step", step - 1), params, seed=seed, device=device, on_epoch=on_epoch, kept=kept)
    return step_scores(record, kept, score_name), record


def score_record(record: ModelRecord, score_name: str) -> np.ndarray:
    """One score of every sample a record covers, oriented so that higher = harder."""
    spec = resolve_score(score_name)
    values = spec(record.probs, record.logits, record.labels, record.embedding_norms)
    return values if spec.higher_is_harder else -values


def save_record(record: ModelRecord, path: str | Path, *, params_hash: str, data_fingerprint: str, batch_size: int) -> Path:
    """A scoring model's record as a `model_outputs` table: logits epoch-major per sample, the training mask bit-packed."""
    epochs, n, classes = record.logits.shape
    return write_table(
        MODEL_OUTPUTS,
        {
            "sample_id": record.sample_ids,
            "label": record.labels,
            "logits": record.logits.transpose(1, 0, 2).reshape(n, epochs * classes),
            "embedding_norms": record.embedding_norms.T,
        },
        path,
        params_hash=params_hash,
        data_fingerprint=data_fingerprint,
        kind=record.model.kind,
        repeat=str(record.model.repeat),
        fold=str(record.model.fold),
        epochs=",".join(map(str, record.epochs)),
        classes=str(classes),
        trained_on=base64.b64encode(np.packbits(record.trained_on)).decode(),
        train_seconds=f"{record.train_seconds:.3f}",
        record_seconds=f"{record.record_seconds:.3f}",
        batch_size=str(batch_size),  # smaller than scores.recipe.batch_size after an out-of-memory retry
    )


def load_record(path: str | Path, *, params_hash: str, data_fingerprint: str, train_size: int) -> ModelRecord:
    """A record back from its table, checked against the params and data it must come from."""
    table = read_table(MODEL_OUTPUTS, path, data_fingerprint=data_fingerprint, params_hash=params_hash)
    meta = table_meta(table)
    epochs = tuple(int(e) for e in meta["epochs"].split(","))
    n, classes = len(table), int(meta["classes"])
    trained_on = np.unpackbits(np.frombuffer(base64.b64decode(meta["trained_on"]), dtype=np.uint8))[:train_size].astype(bool)
    return ModelRecord(
        model=ScoringModel(meta["kind"], int(meta["repeat"]), int(meta["fold"])),
        sample_ids=table.column("sample_id").to_numpy(),
        labels=table.column("label").to_numpy().astype(np.int64),
        epochs=epochs,
        logits=list_column(table, "logits").reshape(n, len(epochs), classes).transpose(1, 0, 2),
        embedding_norms=list_column(table, "embedding_norms").T,
        trained_on=trained_on,
        train_seconds=float(meta["train_seconds"]),
        record_seconds=float(meta["record_seconds"]),
    )
