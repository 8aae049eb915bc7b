"""The retrain stage's logic: train the target model from scratch on a subset of the train split and test it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from unseen.config import RetrainParams
from unseen.data import ImageDataset
from unseen.models import Classifier
from unseen.tables import positions_of
from unseen.training import EpochCallback, accuracy, pick_device, predict_logits, train_model


@dataclass(frozen=True)
class Retrained:
    model: Classifier
    test_accuracy: float
    train_seconds: float  # training only, testing excluded


def train_and_test(
    dataset: ImageDataset,
    sample_ids: np.ndarray,
    params: RetrainParams,
    *,
    seed: int,
    device: torch.device | None = None,
    on_epoch: EpochCallback | None = None,
) -> Retrained:
    """The model trained with `params.recipe` on the train samples `sample_ids` (in that order), and its test accuracy."""
    split = dataset.train.take(positions_of(dataset.train.sample_ids, sample_ids, "the train split"))
    started = time.perf_counter()
    model = train_model(dataset, split, params.recipe, seed=seed, device=device or pick_device(), on_epoch=on_epoch)
    train_seconds = time.perf_counter() - started
    logits = predict_logits(model, dataset, dataset.test.images, batch_size=params.batch_size_eval)
    return Retrained(model, accuracy(logits, dataset.test.labels), train_seconds)
