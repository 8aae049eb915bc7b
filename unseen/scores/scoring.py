"""Scores of what a scoring model recorded: each score over its own window of the recorded epochs, on chunks of
samples (bounded memory at any size); and multi-step UNSEEN's step scores."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from unseen.config import ScoresParams
from unseen.data import ImageDataset
from unseen.scores.functions import ScoreSpec, resolve_score
from unseen.scores.records import ModelRecord, ScoringModel, train_scoring_model
from unseen.training import EpochCallback

WindowOf = Callable[[str], tuple[int, int]]
"""A score's name -> the epochs (first, last, 1-based, inclusive) it averages; e.g. `lambda name: params.window(kind, name)`."""

CHUNK_LOGITS = 1 << 23
"""Logits per chunk when scoring a record (32 MB of float32): the memory scoring takes, whatever the record's size."""


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _epoch_slice(record: ModelRecord, window: tuple[int, int]) -> tuple[int, int]:
    """The positions [start, stop) of `window`'s epochs among the record's recorded epochs."""
    inside = [i for i, epoch in enumerate(record.epochs) if window[0] <= epoch <= window[1]]
    if not inside:
        raise ValueError(f"{record.model.name} recorded epochs {record.epochs[0]}-{record.epochs[-1]}, none of the window {list(window)}")
    return inside[0], inside[-1] + 1


def sample_scores(
    record: ModelRecord, specs: list[ScoreSpec], window_of: WindowOf | None = None
) -> tuple[dict[str, np.ndarray], list[tuple[ScoreSpec, np.ndarray, np.ndarray]]]:
    """The per-sample scores of `specs` on a record, each over its window (`window_of`; None: every recorded epoch),
    computed on chunks of samples; and for each whole-set score, (spec, its window's mean probabilities (n, C), mean
    embedding norms (n,)) to score once the record is dropped (`whole_set_scores`)."""
    epochs, n, classes = record.logits.shape
    groups: dict[tuple[int, int], list[ScoreSpec]] = {}
    for spec in specs:
        groups.setdefault(_epoch_slice(record, window_of(spec.name)) if window_of else (0, epochs), []).append(spec)
    chunk = max(1, CHUNK_LOGITS // max(1, epochs * classes))
    values = {spec.name: np.empty(n) for spec in specs if spec.per_sample}
    mean_probs = {key: np.empty((n, classes), dtype=np.float32) for key, group in groups.items() if any(not s.per_sample for s in group)}
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        for (first, stop), group in groups.items():
            logits = record.logits[first:stop, part]
            probs = _softmax(logits)
            for spec in group:
                if spec.per_sample:
                    values[spec.name][part] = spec(probs, logits, record.labels[part], record.embedding_norms[first:stop, part])
            if (first, stop) in mean_probs:
                mean_probs[(first, stop)][part] = probs.mean(axis=0)
    whole = [
        (spec, mean_probs[key], record.embedding_norms[key[0] : key[1]].mean(0))
        for key, group in groups.items() for spec in group if not spec.per_sample
    ]
    return values, whole


def whole_set_scores(whole: list[tuple[ScoreSpec, np.ndarray, np.ndarray]], labels: np.ndarray) -> dict[str, np.ndarray]:
    """The scores that need all of a record's samples at once (see `register_score`), on their window's mean probabilities."""
    return {spec.name: spec(probs[None], None, labels, norms[None]) for spec, probs, norms in whole}


def record_scores(record: ModelRecord, specs: list[ScoreSpec], window_of: WindowOf | None = None) -> dict[str, np.ndarray]:
    """Every score in `specs` of every sample a record covers, in the score's own direction."""
    values, whole = sample_scores(record, specs, window_of)
    return {**values, **whole_set_scores(whole, record.labels)}


def score_record(record: ModelRecord, score_name: str) -> np.ndarray:
    """One score of every sample a record covers, over all its recorded epochs, oriented so that higher = harder."""
    spec = resolve_score(score_name)
    values = record_scores(record, [spec])[spec.name]
    return values if spec.higher_is_harder else -values


def step_scores(record: ModelRecord, kept: np.ndarray, score_name: str) -> np.ndarray:
    """A step model's difficulty (higher = harder) of the samples not kept, in train-split order; refuses a record
    that trained on any sample it scores, or that scored other samples than those not kept."""
    if record.trained_on[~kept].any() or len(record.sample_ids) != int((~kept).sum()):
        raise ValueError(f"{record.model.name}: not held out: it trained on samples it scores, or scored other samples than the rest")
    return score_record(record, score_name)


def score_step(
    dataset: ImageDataset, step: int, kept: np.ndarray, params: ScoresParams, score_name: str, *, seed: int = 0,
    device: torch.device | None = None, on_epoch: EpochCallback | None = None, embeddings: np.ndarray | None = None,
) -> tuple[np.ndarray, ModelRecord]:
    """Multi-step UNSEEN: train step `step`'s model on the kept samples only and score every other sample (held out
    by construction); returns their difficulty (higher = harder) in train-split order, and the record."""
    record = train_scoring_model(
        dataset, ScoringModel("step", step - 1), params, seed=seed, device=device, on_epoch=on_epoch, kept=kept, embeddings=embeddings
    )
    return step_scores(record, kept, score_name), record


def step_scorer(
    dataset: ImageDataset, params: ScoresParams, score_name: str, *, seed: int = 0, device: torch.device | None = None,
    embeddings: np.ndarray | None = None,
) -> Callable[[int, np.ndarray], np.ndarray]:
    """`score_step` as the scorer `unseen.selection.select_multistep` takes: (step, kept) -> the rest's difficulty."""
    return lambda step, kept: score_step(dataset, step, kept, params, score_name, seed=seed, device=device, embeddings=embeddings)[0]
