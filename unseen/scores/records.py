"""Scoring models and what they record: the K-fold x R held-out design, seen models, and multi-step step models.

A *scoring model* (a CNN trained with the scores recipe, or a probe on the embeddings) records, after each epoch
of its score window, the logits and penultimate-embedding norms of the samples it scores. Unseen models are the K fold models of R stratified
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
from unseen.scores.probe import train_probe
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



def scoring_masks(model: ScoringModel, labels: np.ndarray, params: ScoresParams, seed: int, kept: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(trained_on, scored) boolean masks over the train split: a fold model trains without its fold and scores it, a
    seen model trains on and scores every sample, a step model trains on `kept` and scores the rest."""
    if model.kind == "unseen":
        fold_of = partition(labels, params.folds, seed, model.repeat)
        return fold_of != model.fold, fold_of == model.fold
    if model.kind == "step":
        if kept is None:
            raise ValueError(f"{model.name}: a step model trains on the kept samples; pass kept")
        return kept, ~kept
    everything = np.ones(len(labels), dtype=bool)
    return everything, everything


def probe_record(
    embeddings: np.ndarray, labels: np.ndarray, sample_ids: np.ndarray, model: ScoringModel, params: ScoresParams, *, num_classes: int,
    seed: int, device: torch.device | None = None, on_epoch: EpochCallback | None = None, kept: np.ndarray | None = None,
) -> ModelRecord:
    """One probe scoring model (`scores.probe`) on embeddings alone, one row per train sample: what the probe scorer
    trains in the pipeline, and all a user with embeddings of their own needs."""
    if len(embeddings) != len(labels):
        raise ValueError(f"{model.name}: the probe scorer needs one embedding row per train sample ({len(embeddings)} rows, {len(labels)} labels)")
    trained_on, scored = scoring_masks(model, labels, params, seed, kept)
    first, last = params.recorded_window(model.kind)
    logits, norms, train_seconds, record_seconds = train_probe(
        embeddings, labels, trained_on, scored, params.probe, num_classes=num_classes, seed=model.seed(seed), device=device or pick_device(),
        on_epoch=on_epoch, window=(first, last),
    )
    return ModelRecord(
        model, sample_ids[scored], labels[scored], tuple(range(first, last + 1)), logits, norms, trained_on, train_seconds, record_seconds
    )


def train_scoring_model(
    dataset: ImageDataset, model: ScoringModel, params: ScoresParams, *, seed: int, device: torch.device | None = None,
    on_epoch: EpochCallback | None = None, kept: np.ndarray | None = None, embeddings: np.ndarray | None = None,
) -> ModelRecord:
    """Train one scoring model (see `scoring_masks`) and record what it scores: a CNN on the images with
    `scores.recipe`, or with `scores.scorer: probe` a probe on `embeddings` (features.parquet's train rows, in order)."""
    labels = dataset.train.labels.numpy()
    if params.scorer == "probe":
        if embeddings is None:
            raise ValueError(f"{model.name}: scores.scorer=probe trains on the train embeddings of features.parquet; pass embeddings")
        return probe_record(
            embeddings, labels, dataset.train.sample_ids, model, params, num_classes=dataset.num_classes, seed=seed, device=device,
            on_epoch=on_epoch, kept=kept,
        )
    trained_on, scored = scoring_masks(model, labels, params, seed, kept)
    first, last = params.recorded_window(model.kind)
    logits, norms, train_seconds, record_seconds = _train_cnn(
        dataset, trained_on, scored, params, (first, last), model.seed(seed), device or pick_device(), on_epoch
    )
    return ModelRecord(
        model, dataset.train.sample_ids[scored], labels[scored], tuple(range(first, last + 1)), logits, norms, trained_on, train_seconds, record_seconds
    )


def _train_cnn(
    dataset: ImageDataset, trained_on: np.ndarray, scored: np.ndarray, params: ScoresParams, window: tuple[int, int], seed: int,
    device: torch.device, on_epoch: EpochCallback | None,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Train `scores.recipe` on the `trained_on` images; after each epoch of `window` record logits (E, n, C) and
    embedding norms (E, n) of the `scored` images. Returns them with the train and record seconds."""
    labels = dataset.train.labels.numpy()
    scored_positions = np.flatnonzero(scored)
    scored_images = dataset.train.take(scored_positions).images
    first, last = window
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

    train_model(dataset, dataset.train.take(np.flatnonzero(trained_on)), params.recipe, seed=seed, device=device, on_epoch=record)
    return np.stack(logits).astype(np.float32), np.stack(norms).astype(np.float32), timing["train"], timing["record"]


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


def load_record(path: str | Path, *, params_hash: str | None, data_fingerprint: str | None, train_size: int) -> ModelRecord:
    """A record back from its table, checked against the params and data it must come from (None: an earlier run's)."""
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
