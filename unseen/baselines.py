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
`unseen.selection.class_budgets` (proportional, exact, a class never gives more than it has, so a class smaller
than its share is kept whole and the rest goes to the others) and select inside each class; `random` and `ccs`
are global over the data set, as in their papers. Every result is a deterministic function of the inputs and
`seed`; ties (equal scores, identical features) are broken by sample index, lowest first.

No method builds an N x N matrix: geometric methods work per class with O(N_c) distance vectors, and D2 pruning
uses a sparse k-nearest-neighbour graph. (The registry's "random" is the function `random_uniform`, named so that
importing it never shadows the standard library's `random` module.)
"""

from __future__ import annotations

import heapq
import inspect
import operator
from typing import Callable, Literal

import numpy as np
from sklearn.neighbors import NearestNeighbors

from unseen.selection import Coreset, class_budgets, random_subset, stratified_quotas

__all__ = [
    "BASELINES",
    "CLASS_BALANCED",
    "ccs",
    "d2_forward_scores",
    "d2_pruning",
    "herding",
    "kcenter_greedy",
    "moderate_ds",
    "random_uniform",
    "random_class_balanced",
    "topk_easiest",
    "topk_hardest",
]


# --------------------------------------------------------------------------------------------------- helpers


def _prepare(scores, features, labels, budget) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
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


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _rank_within_class(labels: np.ndarray, key: np.ndarray) -> np.ndarray:
    """(N,) int: each sample's position in its class when the class is sorted by `key` ascending, ties by index."""
    n = len(labels)
    order = np.lexsort((np.arange(n), key, labels))
    starts = np.concatenate([[0], np.cumsum(np.bincount(labels))[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[labels[order]]
    return rank


def _hardest_cut(scores: np.ndarray, fraction: float, keep: int) -> np.ndarray:
    """(n,) bool: the hardest `fraction` of these samples (ties: lower index counts as harder), never leaving fewer than `keep`."""
    n = len(scores)
    n_cut = min(int(fraction * n + 1e-9), n - keep)
    cut = np.zeros(n, dtype=bool)
    cut[np.lexsort((np.arange(n), -scores))[:n_cut]] = True
    return cut


def _per_class(labels: np.ndarray, budgets: np.ndarray):
    """Yield (member indices ascending, how many to keep) for every class with a non-zero budget, in class order; O(N log N)."""
    groups = np.split(np.argsort(labels, kind="stable"), np.cumsum(np.bincount(labels, minlength=len(budgets)))[:-1])
    for c in np.flatnonzero(budgets):
        yield groups[c], int(budgets[c])


# --------------------------------------------------------------------------------------------------- random


def random_uniform(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """Uniform random subset of the whole data set (not class-balanced): the floor every method must beat.

    Returns (N,) bool, exactly `budget` True, drawn without replacement with `np.random.default_rng(seed)`.
    Scores and features are ignored.
    """
    _, _, labels, budget, _ = _prepare(scores, features, labels, budget)
    selected = np.zeros(len(labels), dtype=bool)
    selected[np.random.default_rng(seed).choice(len(labels), size=budget, replace=False)] = True
    return selected


def random_class_balanced(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """Uniform random subset within each class, with per-class counts from `class_budgets` (the stratified random baseline).

    Returns (N,) bool, exactly `budget` True. Scores and features are ignored.
    """
    _, _, labels, _, budgets = _prepare(scores, features, labels, budget)
    return random_subset(labels, budgets, seed)


# --------------------------------------------------------------------------------------------------- score order


def topk_hardest(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """Keep the highest-scoring (hardest) samples of each class: the monotonic score baseline of EL2N / forgetting.

    Paul et al., NeurIPS 2021 ("Deep Learning on a Data Diet"); Toneva et al., ICLR 2019 (forgetting).
    Returns (N,) bool: per class, the `class_budgets` largest scores; among equal scores the lower index wins.
    Features and seed are ignored (the result is deterministic).
    """
    scores, _, labels, _, budgets = _prepare(scores, features, labels, budget)
    return _rank_within_class(labels, -scores) < budgets[labels]


def topk_easiest(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """Keep the lowest-scoring (easiest, most prototypical) samples of each class: the reverse of `topk_hardest`.

    Sorscher et al., NeurIPS 2022 ("Beyond neural scaling laws"): keeping easy samples is the better end at high
    pruning rates. Returns (N,) bool: per class, the `class_budgets` smallest scores; ties go to the lower index.
    """
    scores, _, labels, _, budgets = _prepare(scores, features, labels, budget)
    return _rank_within_class(labels, scores) < budgets[labels]


# --------------------------------------------------------------------------------------------------- CCS


def ccs(
    scores: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    budget: int,
    *,
    hard_cutoff: float = 0.1,
    bins: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """Coverage-centric Coreset Selection: cover the score range evenly instead of keeping one end of it.

    Zheng et al., ICLR 2023, "Coverage-centric Coreset Selection for High Pruning Rates".
    1. Never keep the hardest `hard_cutoff` fraction (the paper's beta: likely mislabeled or ambiguous samples);
       the cut is shortened if it would leave fewer than `budget` samples. Ties: the lower index counts as harder.
    2. Split the remaining samples' score range [min, max] into `bins` equal-width strata ([lo, hi) each; the
       maximum falls in the last one).
    3. Allocate the budget with `stratified_quotas`: smallest strata first, each takes at most an equal share of
       what is left, so sparse (usually hard) strata are kept whole and their leftover goes to the dense ones.
    4. Sample each stratum's quota uniformly at random (`np.random.default_rng(seed)`).

    CCS is global over the data set in the paper (strata and beta are over all samples, not per class), and so is
    this function: it is NOT class-balanced. Features are ignored. Returns (N,) bool, exactly `budget` True.
    The paper tunes beta per pruning rate (0 at low rates, larger at high rates); 0.1 is a middle default.
    """
    scores, _, labels, budget, _ = _prepare(scores, features, labels, budget)
    _check_fraction("hard_cutoff", hard_cutoff)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    eligible = ~_hardest_cut(scores, hard_cutoff, budget)
    values = scores[eligible]
    edges = np.linspace(values.min(), values.max(), bins + 1)
    stratum = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    quotas = stratified_quotas(np.bincount(stratum[eligible], minlength=bins), budget)
    rng = np.random.default_rng(seed)
    selected = np.zeros(len(scores), dtype=bool)
    for b in np.flatnonzero(quotas):
        pool = np.flatnonzero(eligible & (stratum == b))
        selected[rng.choice(pool, size=int(quotas[b]), replace=False)] = True
    return selected


# --------------------------------------------------------------------------------------------------- geometry


def moderate_ds(
    scores: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    budget: int,
    *,
    center: Literal["mean", "median"] = "mean",
    seed: int = 0,
) -> np.ndarray:
    """Moderate-DS: keep the samples of moderate difficulty, measured as distance to their class centre.

    Xia et al., ICLR 2023, "Moderate Coreset: A Universal Method of Data Selection for Real-world Data-efficient
    Deep Learning". Per class, each sample's score is the Euclidean distance of its feature to the class centre;
    the samples whose distance is closest to the class's median distance are kept (|d - median(d)| smallest), so
    both the nearest (easiest) and the farthest (hardest, often noisy) samples are dropped.
    center: "mean" (class mean of the features) or "median" (coordinate-wise median, as in the authors' code).
    Returns (N,) bool, class-balanced. Scores and seed are ignored; ties go to the lower index. O(N D) time.
    """
    _, features, labels, _, budgets = _prepare(scores, features, labels, budget)
    if center not in ("mean", "median"):
        raise ValueError(f"center must be 'mean' or 'median', got {center!r}")
    deviation = np.zeros(len(labels))
    for members, _ in _per_class(labels, budgets):
        x = features[members].astype(np.float64)
        centre = x.mean(axis=0) if center == "mean" else np.median(x, axis=0)
        distance = np.linalg.norm(x - centre, axis=1)
        deviation[members] = np.abs(distance - np.median(distance))
    return _rank_within_class(labels, deviation) < budgets[labels]


def kcenter_greedy(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """k-center greedy: each new centre is the sample farthest from all centres so far (a 2-approximation of k-center).

    Sener & Savarese, ICLR 2018, "Active Learning for Convolutional Neural Networks: A Core-Set Approach".
    Run per class (the class-balanced form used for data pruning; over the whole set the greedy is inherently
    O(N * budget), quadratic at moderate pruning rates): start from a random sample (`default_rng(seed)`, one draw
    per class in class order), then repeatedly add argmax of the running min-distance-to-centres vector.
    Returns (N,) bool, class-balanced. Scores are ignored; distance ties go to the lower index.
    O(N_c * k_c * D) time and O(N_c) extra memory per class; no N x N matrix.
    """
    _, features, labels, _, budgets = _prepare(scores, features, labels, budget)
    rng = np.random.default_rng(seed)
    selected = np.zeros(len(labels), dtype=bool)
    for members, keep in _per_class(labels, budgets):
        if keep == len(members):
            selected[members] = True
            continue
        x = features[members].astype(np.float64)
        pick = int(rng.integers(len(members)))
        nearest = np.full(len(members), np.inf)  # squared distance to the nearest centre
        for step in range(keep):
            selected[members[pick]] = True
            if step == keep - 1:
                break
            diff = x - x[pick]
            np.minimum(nearest, np.einsum("ij,ij->i", diff, diff), out=nearest)
            nearest[pick] = -np.inf  # centres are never picked again
            pick = int(np.argmax(nearest))
    return selected


def herding(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """Herding: greedily add the sample that brings the mean of the selected features closest to the class mean.

    Welling, ICML 2009, "Herding Dynamical Weights to Learn"; in the per-class form of DeepCore (Guo et al., DEXA
    2022, "DeepCore: A Comprehensive Library for Coreset Selection in Deep Learning"). At step t (selected sum S)
    the pick is argmin over unselected x of |(t + 1) * mu - S - x|; the first pick is the sample nearest the mean.
    Returns (N,) bool, class-balanced. Scores and seed are ignored; ties go to the lower index.
    O(N_c * D) per step with a running sum, O(N_c * k_c * D) per class.
    """
    _, features, labels, _, budgets = _prepare(scores, features, labels, budget)
    selected = np.zeros(len(labels), dtype=bool)
    for members, keep in _per_class(labels, budgets):
        if keep == len(members):
            selected[members] = True
            continue
        x = features[members].astype(np.float64)
        mu = x.mean(axis=0)
        norms = np.einsum("ij,ij->i", x, x)
        picked_sum = np.zeros(x.shape[1])
        available = np.ones(len(members), dtype=bool)
        for t in range(keep):
            target = (t + 1) * mu - picked_sum
            criterion = norms - 2.0 * (x @ target)  # |target - x|^2 - |target|^2
            pick = int(np.argmin(np.where(available, criterion, np.inf)))
            available[pick] = False
            picked_sum += x[pick]
            selected[members[pick]] = True
    return selected


# --------------------------------------------------------------------------------------------------- D2 pruning


def _knn_graph(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected kNN graph in CSR form: (indptr (n+1,), neighbours, distances / median kNN distance).

    i and j are joined when either is among the other's k nearest (self excluded); distances are divided by the
    median non-zero kNN distance so that gamma is unitless (1.0 weights a typical edge by exp(-1)).
    """
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    distance, neighbour = NearestNeighbors(n_neighbors=k).fit(x).kneighbors()  # self excluded, duplicates handled
    positive = distance[distance > 0]
    scale = float(np.median(positive)) if positive.size else 1.0
    rows = np.concatenate([np.repeat(np.arange(n), k), neighbour.ravel()])
    cols = np.concatenate([neighbour.ravel(), np.repeat(np.arange(n), k)])
    dist = np.concatenate([distance.ravel(), distance.ravel()]) / scale
    _, first = np.unique(rows * n + cols, return_index=True)  # one edge per ordered pair, sorted by row
    rows, cols, dist = rows[first], cols[first], dist[first]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return indptr, cols, dist


def _forward(scores: np.ndarray, graph, gamma: float) -> np.ndarray:
    indptr, cols, dist = graph
    rows = np.repeat(np.arange(len(scores)), np.diff(indptr))
    return scores + np.bincount(rows, weights=np.exp(-gamma * dist) * scores[cols], minlength=len(scores))


def d2_forward_scores(scores: np.ndarray, features: np.ndarray, *, k: int = 10, gamma: float = 1.0) -> np.ndarray:
    """D2 pruning's forward message passing over the given rows (pass one class): (N,) float64 updated scores.

    s_i' = s_i + sum over graph neighbours j of exp(-gamma * d_ij) * s_j, on the undirected kNN graph (k nearest,
    self excluded; an edge when either end is among the other's k nearest) with Euclidean distances divided by
    their median kNN distance. A hard sample in a dense hard region scores highest.
    """
    scores = np.asarray(scores, dtype=np.float64)
    features = np.asarray(features)
    if features.ndim != 2 or scores.shape != (features.shape[0],):
        raise ValueError(f"scores {scores.shape} and features {features.shape} must describe the same samples")
    return _forward(scores, _knn_graph(features, k), gamma)


def _reverse_select(scores: np.ndarray, graph, gamma_r: float, keep: int) -> np.ndarray:
    """Reverse message passing: pick the highest score, subtract exp(-gamma_r d) * its score from its neighbours, repeat.

    A lazy max-heap of (-score, index): every changed score is pushed again and stale entries are skipped, so
    ties go to the lower index and the cost is O((N + keep * k) log N).
    """
    indptr, cols, dist = graph
    current = scores.copy()
    taken = np.zeros(len(scores), dtype=bool)
    heap = [(-value, i) for i, value in enumerate(current.tolist())]
    heapq.heapify(heap)
    picked: list[int] = []
    while len(picked) < keep:
        negative, i = heapq.heappop(heap)
        if taken[i] or -negative != current[i]:
            continue
        taken[i] = True
        picked.append(i)
        neighbours = cols[indptr[i] : indptr[i + 1]]
        weights = np.exp(-gamma_r * dist[indptr[i] : indptr[i + 1]])
        open_ = ~taken[neighbours]
        neighbours, weights = neighbours[open_], weights[open_]
        current[neighbours] -= weights * current[i]
        for j, value in zip(neighbours.tolist(), current[neighbours].tolist()):
            heapq.heappush(heap, (-value, j))
    return np.asarray(picked, dtype=np.int64)


def d2_pruning(
    scores: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    budget: int,
    *,
    k: int = 10,
    gamma: float = 1.0,
    gamma_r: float = 1.0,
    hard_cutoff: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """D2 pruning: message passing on a kNN graph of the features to balance difficulty and diversity.

    Maharana, Yadav & Bansal, ICLR 2024, "D2 Pruning: Message Passing for Balancing Diversity and Difficulty in
    Data Pruning". Per class (class-balanced budgets):
    1. optionally drop the class's hardest `hard_cutoff` fraction (the paper's beta, as in CCS; default 0);
    2. build an undirected kNN graph (k=`k`) of the remaining samples' features, node value = difficulty score;
    3. forward message passing (`d2_forward_scores`): s_i += sum_j exp(-gamma * d_ij) * s_j, so difficult samples
       in difficult neighbourhoods rank first;
    4. selection with reverse message passing: repeatedly keep the highest-scoring sample i and lower each
       unselected neighbour j by exp(-gamma_r * d_ij) * s_i, so its near-duplicates lose priority (diversity).
    Distances d are Euclidean, divided by the class's median kNN distance (unitless gamma). Scores must be
    non-negative (messages are score-weighted; shift signed scores first). Returns (N,) bool, class-balanced;
    ties go to the lower index; seed is ignored. O(N_c k log N_c) per class for the graph (scikit-learn) and
    O((N_c + k_c k) log N_c) for the selection; memory O(N_c k), never N x N.
    """
    scores, features, labels, _, budgets = _prepare(scores, features, labels, budget)
    _check_fraction("hard_cutoff", hard_cutoff)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if (scores < 0).any():
        raise ValueError("d2_pruning needs non-negative difficulty scores (higher = harder); shift them, e.g. scores - scores.min()")
    selected = np.zeros(len(labels), dtype=bool)
    for members, keep in _per_class(labels, budgets):
        pool = members[~_hardest_cut(scores[members], hard_cutoff, keep)]
        if keep == len(pool):
            selected[pool] = True
            continue
        graph = _knn_graph(features[pool].astype(np.float64), k)
        forward = _forward(scores[pool], graph, gamma)
        selected[pool[_reverse_select(forward, graph, gamma_r, keep)]] = True
    return selected


# --------------------------------------------------------------------------------------------------- registry

BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "random": random_uniform,
    "random_class_balanced": random_class_balanced,
    "topk_hardest": topk_hardest,
    "topk_easiest": topk_easiest,
    "ccs": ccs,
    "moderate_ds": moderate_ds,
    "kcenter_greedy": kcenter_greedy,
    "herding": herding,
    "d2_pruning": d2_pruning,
}
"""Name -> baseline; every entry is called as fn(scores, features, labels, budget, seed=...) and returns the kept mask."""

CLASS_BALANCED: frozenset[str] = frozenset(BASELINES) - {"random", "ccs"}
"""Baselines whose per-class counts equal `class_budgets(labels, budget, num_classes)`; the others are global."""


def baseline_coreset(name: str, scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0, **options) -> Coreset:
    """Run baseline `name` and describe its result like an UNSEEN coreset (terms it has no notion of are NaN or -1).

    Options the method does not take (e.g. `bins` for a geometric method) are ignored.
    """
    method = BASELINES[name]
    accepted = {k: v for k, v in options.items() if k in inspect.signature(method).parameters}
    selected = method(scores, features, labels, budget, seed=seed, **accepted)
    n = len(labels)
    nan = np.full(n, np.nan, dtype=np.float32)
    per_class = np.bincount(labels[selected], minlength=int(labels.max()) + 1)
    return Coreset(
        selected=selected,
        cut_as_hardest=np.zeros(n, dtype=bool),
        region=np.full(n, -1, dtype=np.int16),
        region_budget=np.zeros(n, dtype=np.int32),
        class_budget=per_class[labels].astype(np.int32),
        selection_rank=np.full(n, -1, dtype=np.int32),
        importance_term=nan,
        alignment_term=nan,
        diversity_term=nan,
        class_mmd_after=nan,
    )
