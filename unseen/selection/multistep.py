"""Multi-step UNSEEN: grow the coreset step by step, each step scored by a model trained on the coreset so far.

Step 1 is single-step UNSEEN on the K-fold held-out scores, sized to the first chunk. Every later step t takes
the difficulty of the samples not yet kept from the step-t scoring model (trained on the kept samples only, so
held out by construction; `unseen.scores.score_step`) and adds the next chunk by the same objective, the kept
samples staying in place. The functions here never train: whoever drives the steps (a flow alternating a scoring
task with a selection task, or `select_multistep` with a scorer in one process) trains the step models.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from unseen.budgets import budget_for
from unseen.config import SelectParams
from unseen.selection.coreset import Coreset
from unseen.selection.objective import UnseenObjective, cut_flags, cut_if_oversampled

StepScorer = Callable[[int, np.ndarray], np.ndarray]
"""(step, kept) -> difficulty (higher = harder) of the samples not kept, in train-split order."""


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


def step_difficulty(held_out: np.ndarray, joined: np.ndarray, step_scores: list[np.ndarray]) -> np.ndarray:
    """The difficulty a step selects by: the held-out scores, where the scores of step t (t = 2, 3, ...: the
    entries of `step_scores`) replace those of every sample not kept before step t (`joined`: the step each
    sample joined at, -1 = not kept)."""
    difficulty = held_out.astype(np.float64).copy()
    for step, scores in enumerate(step_scores, start=2):
        rest = ~((joined >= 1) & (joined < step))
        if len(scores) != rest.sum():
            raise ValueError(f"step {step}: {len(scores)} scores for {int(rest.sum())} samples not kept before it")
        difficulty[rest] = scores
    return difficulty


def select_step(
    params: SelectParams,
    step: int,
    difficulty: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    joined: np.ndarray | None,
    *,
    num_classes: int,
    pool_features: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    seed: int = 0,
    misclassified: np.ndarray | None = None,
) -> tuple[Coreset, np.ndarray]:
    """Step `step` of `params.steps`: (the coreset after it, the step each sample joined at, -1 = not kept).

    joined: the previous step's result (None at step 1); the samples it kept stay kept. flagged: label issues, cut
    with `hard_cutoff` auto or misclassified (see `unseen.selection.cut_flags`). misclassified: with `hard_cutoff`
    oversampled, cut too at each step whose coreset would over-sample them (`unseen.selection.cut_if_oversampled`).
    """
    sizes = step_budgets(budget_for(len(labels), params.prune_ratio), params.steps, params.step_schedule)
    kept = None if joined is None else joined >= 1
    coreset = cut_if_oversampled(
        difficulty, features, labels, sizes[step - 1], objective=UnseenObjective.from_params(params),
        pool_features=pool_features, already_selected=kept, flagged=cut_flags(params, flagged),
        num_classes=num_classes, seed=seed, misclassified=misclassified,
    )
    grown = np.full(len(labels), -1, dtype=np.int64) if joined is None else joined.copy()
    grown[coreset.selected & (grown < 1)] = step
    return coreset, grown


def select_multistep(
    params: SelectParams,
    held_out: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    scorer: StepScorer,
    *,
    num_classes: int,
    pool_features: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    seed: int = 0,
    misclassified: np.ndarray | None = None,
) -> tuple[Coreset, np.ndarray]:
    """All `params.steps` steps in this process, `scorer` training each later step's model (notebooks, benchmark cells)."""
    kwargs = dict(num_classes=num_classes, pool_features=pool_features, flagged=flagged, seed=seed, misclassified=misclassified)
    coreset, joined = select_step(params, 1, held_out, features, labels, None, **kwargs)
    step_scores: list[np.ndarray] = []
    for step in range(2, params.steps + 1):
        step_scores.append(scorer(step, joined >= 1))
        difficulty = step_difficulty(held_out, joined, step_scores)
        coreset, joined = select_step(params, step, difficulty, features, labels, joined, **kwargs)
    return coreset, joined
