"""Multi-step UNSEEN: grow the coreset step by step, each step scored by a model trained on the coreset so far.

The first step is single-step UNSEEN on the K-fold held-out scores. Every later step trains a scoring model
on the current coreset, scores the samples not yet kept (held out by construction), and adds the next chunk
by the same objective, the kept samples staying in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from unseen.config import ScoringParams
from unseen.data import ImageDataset
from unseen.scores import EpochLog, ModelRecord, ScoringModel, score_record, train_and_record
from unseen.selection import Coreset, UnseenObjective, select_coreset


def step_budgets(total: int, steps: int, schedule: str = "equal") -> list[int]:
    """Cumulative coreset size after each step: equal chunks, or geometric chunks (each twice the last)."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if schedule == "equal":
        fractions = np.arange(1, steps + 1) / steps
    elif schedule == "geometric":
        fractions = (2.0 ** np.arange(1, steps + 1) - 1) / (2.0**steps - 1)
    else:
        raise ValueError(f"unknown schedule {schedule!r}; use equal or geometric")
    return [int(round(total * f)) for f in fractions]


@dataclass(frozen=True)
class StepReport:
    step: int
    size: int
    trained_on: np.ndarray | None  # what the step's scoring model trained on, in train-split order (None for the first step)


StepScorer = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(step, kept) -> (scores of the samples not kept, in train-split order; what the scoring model trained on).

Where the step's scoring model trains is the caller's choice: `local_step_scorer` here, a task on a worker in the flows.
"""


def score_step(
    dataset: ImageDataset,
    step: int,
    kept: np.ndarray,
    scoring: ScoringParams,
    score_name: str,
    *,
    seed: int = 0,
    device: torch.device | None = None,
    on_epoch: EpochLog | None = None,
) -> tuple[np.ndarray, ModelRecord]:
    """Train step `step`'s scoring model on the kept samples only and score every other sample (held out by construction)."""
    record = train_and_record(dataset, ScoringModel("step", step - 1), kept, ~kept, scoring, seed=seed, device=device, on_epoch=on_epoch)
    return score_record(record, score_name), record


def local_step_scorer(
    dataset: ImageDataset,
    scoring: ScoringParams,
    score_name: str,
    *,
    seed: int = 0,
    device: torch.device | None = None,
    on_epoch: Callable[[int], EpochLog] | None = None,
) -> StepScorer:
    """Each step's scoring model trained in this process; `on_epoch(step)` gives that model's epoch callback."""

    def scorer(step: int, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, record = score_step(dataset, step, kept, scoring, score_name, seed=seed, device=device, on_epoch=on_epoch(step) if on_epoch else None)
        return scores, record.trained_on

    return scorer


def incremental_coreset(
    features: np.ndarray,
    labels: np.ndarray,
    first_scores: np.ndarray,
    budget: int,
    scorer: StepScorer,
    *,
    steps: int,
    schedule: str,
    num_classes: int,
    objective: UnseenObjective = UnseenObjective(),
    pool_features: np.ndarray | None = None,
    seed: int = 0,
    on_step: Callable[[StepReport], None] | None = None,
) -> tuple[Coreset, np.ndarray]:
    """(final coreset, step at which each sample joined: 1..steps, -1 = not kept), in train-split order.

    first_scores: held-out difficulty (higher = harder) for step 1; `scorer(step, kept)` scores the rest at each
    later step with a model trained on the kept samples only.
    """
    sizes = step_budgets(budget, steps, schedule)
    scores = first_scores.astype(np.float64).copy()
    kwargs = dict(objective=objective, pool_features=pool_features, num_classes=num_classes, seed=seed)
    coreset = select_coreset(scores, features, labels, sizes[0], **kwargs)
    joined = np.where(coreset.selected, 1, -1)
    if on_step is not None:
        on_step(StepReport(1, sizes[0], None))
    for step, size in enumerate(sizes[1:], start=2):
        kept = coreset.selected.copy()
        scores[~kept], trained_on = scorer(step, kept)
        if trained_on[~kept].any():
            raise ValueError(f"step {step}: the scoring model trained on samples it scores")
        coreset = select_coreset(scores, features, labels, size, already_selected=kept, **kwargs)
        joined[coreset.selected & ~kept] = step
        if on_step is not None:
            on_step(StepReport(step, size, trained_on))
    return coreset, joined
