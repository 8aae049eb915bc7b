"""UNSEEN held-out scoring: each sample is scored only by models that never trained on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from unseen.config import ScoringParams
from unseen.data import ImageDataset
from unseen.training import pick_device, predict_logits, train_model

EpochLog = Callable[[int, dict[str, float]], None]


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


def fold_seed(seed: int, fold: int) -> int:
    return seed * 1000 + fold + 1


@dataclass(frozen=True)
class FoldOutputs:
    """Softmax outputs of one fold's model on the samples it held out, after every epoch."""

    fold: int
    sample_ids: np.ndarray  # (n,) held-out samples
    labels: np.ndarray  # (n,)
    probs: np.ndarray  # (epochs, n, classes) float32
    train_sample_ids: np.ndarray  # what the fold's model trained on: never overlaps sample_ids


def score_fold(
    dataset: ImageDataset,
    fold_of: np.ndarray,
    fold: int,
    params: ScoringParams,
    *,
    seed: int,
    device: torch.device | None = None,
    on_epoch: EpochLog | None = None,
) -> FoldOutputs:
    """Train on every fold but `fold`, recording the held-out fold's softmax after each epoch."""
    held_out = np.flatnonzero(fold_of == fold)
    trained_on = np.flatnonzero(fold_of != fold)
    held_images = dataset.train.images[torch.as_tensor(held_out)]
    per_epoch: list[np.ndarray] = []

    def record(epoch: int, model, stats: dict[str, float]) -> None:
        logits = predict_logits(model, dataset, held_images, batch_size=params.batch_size)
        per_epoch.append(torch.softmax(logits, dim=1).numpy())
        if on_epoch is not None:
            held_labels = dataset.train.labels[torch.as_tensor(held_out)]
            on_epoch(epoch, {**stats, "heldout_accuracy": float((logits.argmax(1) == held_labels).float().mean())})

    train_model(dataset, dataset.train.take(trained_on), params.recipe, seed=fold_seed(seed, fold), device=device or pick_device(), on_epoch=record)
    return FoldOutputs(
        fold=fold,
        sample_ids=dataset.train.sample_ids[held_out],
        labels=dataset.train.labels.numpy()[held_out],
        probs=np.stack(per_epoch).astype(np.float32),
        train_sample_ids=dataset.train.sample_ids[trained_on],
    )


def el2n(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Error L2-norm (Paul et al. 2021): ||softmax - onehot(label)||_2, per sample (last axis = classes)."""
    onehot = np.eye(probs.shape[-1], dtype=probs.dtype)[labels]
    return np.linalg.norm(probs - onehot, axis=-1)


def unseen_scores(folds: list[FoldOutputs], score_epochs: tuple[int, int]) -> dict[str, np.ndarray]:
    """Held-out EL2N averaged over the 1-based, inclusive epoch window, for every sample of every fold.

    Returns `sample_id`, `label`, `fold` and `el2n_unseen`, sorted by sample_id.
    """
    first, last = score_epochs
    ids, labels, fold, values = [], [], [], []
    for outputs in folds:
        window = outputs.probs[first - 1 : last]
        ids.append(outputs.sample_ids)
        labels.append(outputs.labels)
        fold.append(np.full(len(outputs.sample_ids), outputs.fold, dtype=np.int16))
        values.append(el2n(window, outputs.labels[None, :]).mean(axis=0))
    order = np.argsort(np.concatenate(ids), kind="stable")
    return {
        "sample_id": np.concatenate(ids)[order],
        "label": np.concatenate(labels)[order],
        "fold": np.concatenate(fold)[order],
        "el2n_unseen": np.concatenate(values)[order].astype(np.float32),
    }
