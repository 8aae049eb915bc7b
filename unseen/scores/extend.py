"""Scoring models that outlive their run: a fold model keeps its weights at every recorded epoch, so samples added to
the collection later, which it never saw, are scored by it as held out, exactly as it scored its own fold.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from unseen.config import ScoresParams
from unseen.data import ImageDataset
from unseen.io import atomic_path
from unseen.models import build_model
from unseen.scores.probe import Probe, probe_outputs
from unseen.scores.records import ModelRecord
from unseen.training import EpochCallback, predict


class WeightKeeper:
    """An epoch callback that keeps a copy of the model's weights after each epoch of `window` (the recorded epochs)."""

    def __init__(self, window: tuple[int, int], then: EpochCallback | None = None):
        self.window, self.then = window, then
        self.state_dicts: dict[int, dict[str, torch.Tensor]] = {}

    def __call__(self, epoch: int, model: torch.nn.Module, stats: dict[str, float]) -> None:
        if self.window[0] <= epoch <= self.window[1]:
            self.state_dicts[epoch] = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
        if self.then is not None:
            self.then(epoch, model, stats)

    def save(self, path: str | Path, params: ScoresParams, dataset: ImageDataset, in_dim: int) -> Path:
        """The kept weights, with what rebuilding the model needs (for a CNN, the normalisation it trained with)."""
        payload = {
            "scorer": params.scorer,
            "epochs": sorted(self.state_dicts),
            "state_dicts": [self.state_dicts[epoch] for epoch in sorted(self.state_dicts)],
            "in_dim": in_dim,
            "num_classes": dataset.num_classes,
            "image_shape": list(dataset.image_shape),
            "mean": list(dataset.mean),
            "std": list(dataset.std),
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return Path(path)


def score_new_samples(
    weights_path: str | Path, params: ScoresParams, dataset: ImageDataset, positions: np.ndarray, embeddings: np.ndarray | None, *,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(logits (E, n, C), embedding norms (E, n), epochs) of the train samples at `positions`, from a fold model's kept
    weights: a probe reads their rows of `embeddings`, a CNN their images (normalised as it was trained)."""
    payload = torch.load(weights_path, map_location="cpu", weights_only=True)
    epochs = tuple(payload["epochs"])
    logits = np.empty((len(epochs), len(positions), payload["num_classes"]), dtype=np.float32)
    norms = np.empty((len(epochs), len(positions)), dtype=np.float32)
    if payload["scorer"] == "probe":
        x, rows = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)), torch.from_numpy(positions)
        for e, state in enumerate(payload["state_dicts"]):
            probe = Probe(params.probe, payload["in_dim"], payload["num_classes"])
            probe.load_state_dict(state)
            probe_outputs(probe.to(device).eval(), x, rows, logits[e], norms[e])
        return logits, norms, epochs
    trained_with = dataclasses.replace(dataset, mean=tuple(payload["mean"]), std=tuple(payload["std"]))
    images = dataset.train.take(positions).images
    for e, state in enumerate(payload["state_dicts"]):
        model = build_model(params.recipe.model, payload["num_classes"], tuple(payload["image_shape"]), seed=0)
        model.load_state_dict(state)
        epoch_logits, epoch_embeddings = predict(model.to(device), trained_with, images, batch_size=params.batch_size)
        logits[e], norms[e] = epoch_logits.numpy(), epoch_embeddings.norm(dim=1).numpy()
    return logits, norms, epochs


def extend_record(
    base: ModelRecord, base_train_ids: np.ndarray, train_ids: np.ndarray, positions: np.ndarray, labels: np.ndarray,
    logits: np.ndarray, norms: np.ndarray,
) -> ModelRecord:
    """`base` (a fold model's record from the run that trained it) with the samples at `positions` of the grown train
    split added to what it scored; its training mask moved onto the grown split by sample_id."""
    if base.logits.shape[0] != logits.shape[0]:
        raise ValueError(f"{base.model.name}: the kept weights cover {logits.shape[0]} epochs, its record {base.logits.shape[0]}")
    trained_on = np.isin(train_ids, base_train_ids[base.trained_on])
    if trained_on[positions].any():
        raise ValueError(f"{base.model.name} trained on samples it is asked to score as new")
    return dataclasses.replace(
        base,
        sample_ids=np.concatenate([base.sample_ids, train_ids[positions]]),
        labels=np.concatenate([base.labels, labels[positions]]),
        logits=np.concatenate([base.logits, logits], axis=1),
        embedding_norms=np.concatenate([base.embedding_norms, norms], axis=1),
        trained_on=trained_on,
    )
