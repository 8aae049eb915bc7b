"""Coreset-selection baselines that pruning results are compared against, behind one interface.

Every baseline is a pure function

    method(scores, features, labels, budget, *, <method options>, seed=0) -> selected

scores:   (N,) per-sample difficulty, **higher = harder** (EL2N, forgetting, the UNSEEN held-out score, ...).
features: (N, D) embeddings, used as given (Euclidean geometry; standardize or normalize them beforehand if
          their dimensions are on different scales).
labels:   (N,) non-negative integer class labels.
budget:   how many samples to KEEP.
returns:  `selected`, a bool mask of shape (N,) with exactly `budget` True entries: True = kept.

All functions accept all four inputs, even where a method ignores scores (geometric methods) or features
(score-based methods), so they can be swapped through the `BASELINES` registry. They refuse the same inputs:
a budget below 1, above N, or below the number of classes present raises ValueError, as do mismatched shapes
and non-finite values. Methods named in `CLASS_BALANCED` split the budget over classes with
`unseen.budgets.class_budgets` (proportional, exact, a class never gives more than it has, so a class smaller
than its share is kept whole and the rest goes to the others) and select inside each class; `random` and `ccs`
are global over the data set, as in their papers. Every result is a deterministic function of the inputs and
`seed`; ties (equal scores, identical features) are broken by sample index, lowest first.

No method builds an N x N matrix: geometric methods work per class with O(N_c) distance vectors, and D2 pruning
uses a sparse k-nearest-neighbour graph. (The registry's "random" is the function `random_uniform`, named so that
importing it never shadows the standard library's `random` module.)
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np

from unseen.budgets import random_subset, score_strata, stratified_quotas
from unseen.selection.common import check_fraction, hardest_cut, per_class, prepare, rank_within_class
from unseen.selection.geometric import d2_pruning, herding, kcenter_greedy

# --------------------------------------------------------------------------------------------------- random


def random_uniform(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """Uniform random subset of the whole data set (not class-balanced): the floor every method must beat.

    Returns (N,) bool, exactly `budget` True, drawn without replacement with `np.random.default_rng(seed)`.
    Scores and features are ignored.
    """
    _, _, labels, budget, _ = prepare(scores, features, labels, budget)
    selected = np.zeros(len(labels), dtype=bool)
    selected[np.random.default_rng(seed).choice(len(labels), size=budget, replace=False)] = True
    return selected


def random_class_balanced(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """Uniform random subset within each class, with per-class counts from `class_budgets` (the stratified random baseline).

    Returns (N,) bool, exactly `budget` True. Scores and features are ignored.
    """
    _, _, labels, _, budgets = prepare(scores, features, labels, budget)
    return random_subset(labels, budgets, seed)


# --------------------------------------------------------------------------------------------------- score order


def topk_hardest(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """Keep the highest-scoring (hardest) samples of each class: the monotonic score baseline of EL2N / forgetting.

    Paul et al., NeurIPS 2021 ("Deep Learning on a Data Diet"); Toneva et al., ICLR 2019 (forgetting).
    Returns (N,) bool: per class, the `class_budgets` largest scores; among equal scores the lower index wins.
    Features and seed are ignored (the result is deterministic).
    """
    scores, _, labels, _, budgets = prepare(scores, features, labels, budget)
    return rank_within_class(labels, -scores) < budgets[labels]


def topk_easiest(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """Keep the lowest-scoring (easiest, most prototypical) samples of each class: the reverse of `topk_hardest`.

    Sorscher et al., NeurIPS 2022 ("Beyond neural scaling laws"): keeping easy samples is the better end at high
    pruning rates. Returns (N,) bool: per class, the `class_budgets` smallest scores; ties go to the lower index.
    """
    scores, _, labels, _, budgets = prepare(scores, features, labels, budget)
    return rank_within_class(labels, scores) < budgets[labels]


# --------------------------------------------------------------------------------------------------- CCS


def ccs(
    scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, hard_cutoff: float = 0.1, bins: int = 50,
    flagged: np.ndarray | None = None, seed: int = 0,
) -> np.ndarray:
    """Coverage-centric Coreset Selection: cover the score range evenly instead of keeping one end of it.

    Zheng et al., ICLR 2023, "Coverage-centric Coreset Selection for High Pruning Rates".
    1. Never keep the hardest `hard_cutoff` fraction (the paper's beta: likely mislabeled or ambiguous samples);
       the cut is shortened if it would leave fewer than `budget` samples. Ties: the lower index counts as harder.
       `flagged` samples (likely label errors, e.g. `label_issue`) are never kept either, within the same limit.
    2. Split the remaining samples' score range [min, max] into `bins` equal-width strata ([lo, hi) each; the
       maximum falls in the last one).
    3. Allocate the budget with `stratified_quotas`: smallest strata first, each takes at most an equal share of
       what is left, so sparse (usually hard) strata are kept whole and their leftover goes to the dense ones.
    4. Sample each stratum's quota uniformly at random (`np.random.default_rng(seed)`).

    CCS is global over the data set in the paper (strata and beta are over all samples, not per class), and so is
    this function: it is NOT class-balanced. Features are ignored. Returns (N,) bool, exactly `budget` True.
    The paper tunes beta per pruning rate (0 at low rates, larger at high rates); 0.1 is a middle default.
    """
    scores, _, labels, budget, _ = prepare(scores, features, labels, budget)
    check_fraction("hard_cutoff", hard_cutoff)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    eligible = ~hardest_cut(scores, hard_cutoff, budget, flagged)
    stratum = score_strata(scores, eligible, bins)
    quotas = stratified_quotas(np.bincount(stratum[eligible], minlength=bins), budget)
    rng = np.random.default_rng(seed)
    selected = np.zeros(len(scores), dtype=bool)
    for b in np.flatnonzero(quotas):
        pool = np.flatnonzero(eligible & (stratum == b))
        selected[rng.choice(pool, size=int(quotas[b]), replace=False)] = True
    return selected


# --------------------------------------------------------------------------------------------------- geometry


def _distance_to_class_centre(features: np.ndarray, labels: np.ndarray, budgets: np.ndarray, center: str) -> np.ndarray:
    """Each sample's Euclidean distance to its class centre: the class mean, or the coordinate-wise median."""
    if center not in ("mean", "median"):
        raise ValueError(f"center must be 'mean' or 'median', got {center!r}")
    distance = np.zeros(len(labels))
    for members, _ in per_class(labels, np.bincount(labels, minlength=len(budgets))):
        x = features[members].astype(np.float64)
        centre = x.mean(axis=0) if center == "mean" else np.median(x, axis=0)
        distance[members] = np.linalg.norm(x - centre, axis=1)
    return distance


def moderate_ds(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """Moderate-DS as its authors define it: keep the samples of moderate distance to their class centre.

    Xia et al., ICLR 2023, "Moderate Coreset: A Universal Method of Data Selection for Real-world Data-efficient
    Deep Learning". Each sample's score is the Euclidean distance of its feature to its class's coordinate-wise median
    feature; all distances are ranked together (one ranking over the data set, as in the authors' code) and the
    `budget` samples in the band centred on the median rank are kept, so the nearest (easiest) and the farthest
    (hardest, often noisy) samples are dropped. Not class-balanced. Scores and seed are ignored; ties go to the lower
    index. O(N D) time.
    """
    _, features, labels, budget, budgets = prepare(scores, features, labels, budget)
    order = np.lexsort((np.arange(len(labels)), _distance_to_class_centre(features, labels, budgets, "median")))
    start = int(round(len(labels) * (0.5 - budget / len(labels) / 2)))
    selected = np.zeros(len(labels), dtype=bool)
    selected[order[start : start + budget]] = True
    return selected


def moderate_ds_class_balanced(
    scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, center: Literal["mean", "median"] = "mean", seed: int = 0
) -> np.ndarray:
    """Moderate-DS per class: in each class, the samples whose distance to the class centre is closest to the class's
    median distance (|d - median(d)| smallest), with class-balanced budgets. Scores and seed are ignored; ties go to
    the lower index."""
    _, features, labels, _, budgets = prepare(scores, features, labels, budget)
    distance = _distance_to_class_centre(features, labels, budgets, center)
    deviation = np.zeros(len(labels))
    for members, _ in per_class(labels, budgets):
        deviation[members] = np.abs(distance[members] - np.median(distance[members]))
    return rank_within_class(labels, deviation) < budgets[labels]


# --------------------------------------------------------------------------------------------------- registry

BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "random": random_uniform,
    "random_class_balanced": random_class_balanced,
    "topk_hardest": topk_hardest,
    "topk_easiest": topk_easiest,
    "ccs": ccs,
    "moderate_ds": moderate_ds,
    "moderate_ds_class_balanced": moderate_ds_class_balanced,
    "kcenter_greedy": kcenter_greedy,
    "herding": herding,
    "d2_pruning": d2_pruning,
}
"""Name -> baseline; every entry is called as fn(scores, features, labels, budget, seed=...) and returns the kept mask."""

CLASS_BALANCED: frozenset[str] = frozenset(BASELINES) - {"random", "ccs", "moderate_ds"}
"""Baselines whose per-class counts equal `class_budgets(labels, budget, num_classes)`; the others are global."""
