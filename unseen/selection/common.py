"""What every selection method shares: input checks, per-class grouping, difficulty ranks and the hard cutoff."""

from __future__ import annotations

import operator

import numpy as np

from unseen.budgets import class_budgets


def prepare(scores, features, labels, budget) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """Validate the shared inputs; return float64 scores, features, int labels, the budget and the per-class budgets."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    features = np.asarray(features)
    n = len(labels)
    if labels.ndim != 1 or n == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError("labels must be non-negative integers")
    if scores.shape != (n,) or features.ndim != 2 or features.shape[0] != n:
        raise ValueError(f"scores {scores.shape}, features {features.shape} and labels ({n},) must describe the same samples")
    if not np.isfinite(scores).all() or not np.isfinite(features).all():
        raise ValueError("scores and features must be finite")
    try:
        budget = operator.index(budget)
    except TypeError:
        raise ValueError(f"budget must be an integer number of samples to keep, got {budget!r}") from None
    budgets = class_budgets(labels, budget, int(labels.max()) + 1)  # raises for budget < 1, > N, < classes present
    return scores, features, labels.astype(np.int64), budget, budgets


def check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def rank_within_class(labels: np.ndarray, key: np.ndarray) -> np.ndarray:
    """(N,) int: each sample's position in its class when the class is sorted by `key` ascending, ties by index."""
    n = len(labels)
    order = np.lexsort((np.arange(n), key, labels))
    starts = np.concatenate([[0], np.cumsum(np.bincount(labels))[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[labels[order]]
    return rank


def difficulty_rank(values: np.ndarray) -> np.ndarray:
    """Rank in [0, 1] within the group (1 = hardest); ties share the order of their index."""
    if len(values) <= 1:
        return np.ones(len(values))
    return rank_within_class(np.zeros(len(values), dtype=np.int64), values) / (len(values) - 1)


def hardest_cut(scores: np.ndarray, fraction: float, keep: int, flagged: np.ndarray | None = None) -> np.ndarray:
    """(n,) bool, the samples never kept: the hardest `fraction` (ties: lower index counts as harder), then the
    `flagged` ones (likely label errors), hardest first; never leaving fewer than `keep`."""
    n = len(scores)
    order = np.lexsort((np.arange(n), -scores))
    n_cut = min(int(fraction * n + 1e-9), n - keep)
    cut = np.zeros(n, dtype=bool)
    cut[order[:n_cut]] = True
    if flagged is not None:
        cut[order[flagged[order] & ~cut[order]][: n - keep - n_cut]] = True
    return cut


def per_class(labels: np.ndarray, budgets: np.ndarray):
    """Yield (member indices ascending, how many to keep) for every class with a non-zero budget, in class order; O(N log N)."""
    groups = np.split(np.argsort(labels, kind="stable"), np.cumsum(np.bincount(labels, minlength=len(budgets)))[:-1])
    for c in np.flatnonzero(budgets):
        yield groups[c], int(budgets[c])
