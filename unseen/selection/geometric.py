"""Geometric baselines: k-center greedy, herding and D2 pruning, per class, never building an N x N matrix.

Same interface as every baseline (`unseen.selection.baselines`): (scores, features, labels, budget, *, seed) -> kept mask.
"""

from __future__ import annotations

import heapq

import numpy as np
from sklearn.neighbors import NearestNeighbors

from unseen.budgets import stratified_quotas
from unseen.selection.common import check_fraction, hardest_cut, per_class, prepare


def _classes_to_choose_in(features: np.ndarray, labels: np.ndarray, budgets: np.ndarray, selected: np.ndarray):
    """Yield (members, how many to keep, their float64 features) for each class with a choice to make; a class kept
    whole is marked in `selected` and skipped."""
    for members, keep in per_class(labels, budgets):
        if keep == len(members):
            selected[members] = True
            continue
        yield members, keep, features[members].astype(np.float64)


def kcenter_greedy(scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """k-center greedy: each new centre is the sample farthest from all centres so far (a 2-approximation of k-center).

    Sener & Savarese, ICLR 2018, "Active Learning for Convolutional Neural Networks: A Core-Set Approach".
    Run per class (the class-balanced form used for data pruning; over the whole set the greedy is inherently
    O(N * budget), quadratic at moderate pruning rates): start from a random sample (`default_rng(seed)`, one draw
    per class in class order), then repeatedly add argmax of the running min-distance-to-centres vector.
    Returns (N,) bool, class-balanced. Scores are ignored; distance ties go to the lower index.
    O(N_c * k_c * D) time and O(N_c) extra memory per class; no N x N matrix.
    """
    _, features, labels, _, budgets = prepare(scores, features, labels, budget)
    rng = np.random.default_rng(seed)
    selected = np.zeros(len(labels), dtype=bool)
    for members, keep, x in _classes_to_choose_in(features, labels, budgets, selected):
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
    _, features, labels, _, budgets = prepare(scores, features, labels, budget)
    selected = np.zeros(len(labels), dtype=bool)
    for members, keep, x in _classes_to_choose_in(features, labels, budgets, selected):
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
    """Undirected kNN graph in CSR form: (indptr (n+1,), neighbours, Euclidean distances).

    i and j are joined when either is among the other's k nearest (self excluded), as in the authors' graph.
    """
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    distance, neighbour = NearestNeighbors(n_neighbors=k).fit(x).kneighbors()  # self excluded, duplicates handled
    rows = np.concatenate([np.repeat(np.arange(n), k), neighbour.ravel()])
    cols = np.concatenate([neighbour.ravel(), np.repeat(np.arange(n), k)])
    dist = np.concatenate([distance.ravel(), distance.ravel()])
    _, first = np.unique(rows * n + cols, return_index=True)  # one edge per ordered pair, sorted by row
    rows, cols, dist = rows[first], cols[first], dist[first]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return indptr, cols, dist


def _forward(scores: np.ndarray, graph, gamma: float) -> np.ndarray:
    indptr, cols, dist = graph
    rows = np.repeat(np.arange(len(scores)), np.diff(indptr))
    return scores + np.bincount(rows, weights=np.exp(-gamma * dist) * scores[cols], minlength=len(scores))


def d2_forward_scores(scores: np.ndarray, features: np.ndarray, *, k: int = 5, gamma: float = 1.0) -> np.ndarray:
    """D2 pruning's forward message passing over the given rows (pass one class): (N,) float64 updated scores.

    s_i' = s_i + sum over graph neighbours j of exp(-gamma * d_ij) * s_j, on the undirected kNN graph (k nearest,
    self excluded; an edge when either end is among the other's k nearest) with Euclidean distances. A hard sample
    in a dense hard region scores highest.
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
    scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, k: int = 5, gamma: float = 1.0, gamma_r: float = 0.1,
    strata: int = 25, hard_cutoff: float = 0.0, flagged: np.ndarray | None = None, seed: int = 0,
) -> np.ndarray:
    """D2 pruning: message passing on a kNN graph of the features to balance difficulty and diversity.

    Maharana, Yadav & Bansal, ICLR 2024, "D2 Pruning: Message Passing for Balancing Diversity and Difficulty in
    Data Pruning", as its README runs it on CIFAR (label-balanced, k=5, gamma 0.1, 25 strata). Per class:
    1. drop the class's hardest `hard_cutoff` fraction (the README's mis-ratio, e.g. 0.4 at 90% pruning) and the
       `flagged` samples; signed scores (AUM, margin) are first shifted by their minimum, as the authors do;
    2. split the class's score range into `strata` equal-width strata and allocate its budget over them with the CCS
       allocation (`stratified_quotas`: sparse strata kept whole);
    3. inside each stratum: an undirected kNN graph (k=`k`) of the features, node value = difficulty; forward message
       passing (`d2_forward_scores`): s_i += sum_j exp(-gamma * d_ij) * s_j; then reverse message passing: keep the
       highest-scoring sample i and lower each unselected neighbour j by exp(-gamma_r * d_ij) * s_i, repeatedly.
       A stratum with at most k samples is sampled at random (`default_rng(seed)`), as in the reference.
    Distances are Euclidean on the features as given. Returns (N,) bool, class-balanced; ties go to the lower index.
    Memory O(N_c k), never N x N.
    """
    scores, features, labels, _, budgets = prepare(scores, features, labels, budget)
    check_fraction("hard_cutoff", hard_cutoff)
    if k < 1 or strata < 1:
        raise ValueError(f"k and strata must be at least 1, got k={k}, strata={strata}")
    scores = scores - min(scores.min(), 0.0)
    rng = np.random.default_rng(seed)
    selected = np.zeros(len(labels), dtype=bool)
    for members, keep in per_class(labels, budgets):
        pool = members[~hardest_cut(scores[members], hard_cutoff, keep, None if flagged is None else flagged[members])]
        values = scores[pool]
        edges = np.linspace(values.min(), values.max(), strata + 1)
        stratum = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, strata - 1)
        quotas = stratified_quotas(np.bincount(stratum, minlength=strata), keep)
        for b in np.flatnonzero(quotas):
            cell = pool[stratum == b]
            if quotas[b] == len(cell):
                selected[cell] = True
            elif len(cell) <= k:
                selected[rng.choice(cell, size=int(quotas[b]), replace=False)] = True
            else:
                graph = _knn_graph(features[cell].astype(np.float64), k)
                selected[cell[_reverse_select(_forward(scores[cell], graph, gamma), graph, gamma_r, int(quotas[b]))]] = True
    return selected
