"""Alignment-constrained coreset selection: class-balanced, stratified over held-out scores, greedy in MMD.

Within each class the coreset covers the score range evenly (CCS-style strata, optionally without the
hardest fraction) and, inside those strata, greedily picks the sample that keeps the coreset's feature
distribution closest to the class's full distribution. The distance is the MMD under a Gaussian kernel,
approximated by random Fourier features so nothing N x N is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def budget_for(n_samples: int, prune_ratio: float) -> int:
    """Coreset size: the train split minus the pruned fraction, rounded to the nearest sample."""
    return int(round((1.0 - prune_ratio) * n_samples))


def class_budgets(labels: np.ndarray, budget: int, num_classes: int) -> np.ndarray:
    """Split `budget` over classes in proportion to their sizes (largest remainder), never above a class's size."""
    counts = np.bincount(labels, minlength=num_classes)
    if not 0 < budget <= counts.sum():
        raise ValueError(f"budget {budget} must be between 1 and the number of samples ({counts.sum()})")
    present = int((counts > 0).sum())
    if budget < present:
        raise ValueError(f"budget {budget} is smaller than the number of classes present ({present}); lower the prune ratio")
    share = budget * counts / counts.sum()
    budgets = np.minimum(np.maximum(np.floor(share).astype(np.int64), (counts > 0).astype(np.int64)), counts)
    while (missing := budget - budgets.sum()) != 0:
        room = counts - budgets if missing > 0 else budgets - (counts > 0)
        remainder = (share - budgets) * (1 if missing > 0 else -1)
        order = np.lexsort((np.arange(num_classes), -remainder))
        order = order[room[order] > 0][: abs(missing)]
        budgets[order] += np.sign(missing)
    return budgets


def stratified_quotas(bin_counts: np.ndarray, quota: int) -> np.ndarray:
    """CCS budget split over score strata: smallest strata first, each takes an equal share of what is left."""
    quotas = np.zeros_like(bin_counts)
    remaining = quota
    nonempty = np.flatnonzero(bin_counts > 0)
    for position, b in enumerate(nonempty[np.argsort(bin_counts[nonempty], kind="stable")]):
        quotas[b] = min(bin_counts[b], remaining // (len(nonempty) - position))
        remaining -= quotas[b]
    if remaining:
        raise ValueError(f"cannot place {quota} samples in strata holding {bin_counts.sum()}")
    return quotas


def median_bandwidth(x: np.ndarray, rng: np.random.Generator, sample: int = 1000) -> float:
    """The median pairwise distance on a random sample: the usual Gaussian-kernel bandwidth rule."""
    picked = x[rng.choice(len(x), size=min(sample, len(x)), replace=False)]
    sq = (picked**2).sum(1)
    distances = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * picked @ picked.T, 0))
    median = float(np.median(distances[np.triu_indices(len(picked), k=1)])) if len(picked) > 1 else 0.0
    return median if median > 0 else 1.0


def fourier_features(x: np.ndarray, n_features: int, bandwidth: float, rng: np.random.Generator) -> np.ndarray:
    """Random Fourier features (Rahimi & Recht 2007): z(a).z(b) approximates exp(-|a-b|^2 / (2 bandwidth^2))."""
    weights = rng.normal(scale=1.0 / bandwidth, size=(x.shape[1], n_features)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=n_features).astype(np.float32)
    return (np.sqrt(2.0 / n_features) * np.cos(x @ weights + phase)).astype(np.float32)


@dataclass(frozen=True)
class Coreset:
    """Which samples were kept, and the per-sample facts that decided it (one entry per input row)."""

    selected: np.ndarray  # bool
    cut_as_hardest: np.ndarray  # bool: in the hardest `hard_cutoff` fraction of its class, never eligible
    score_bin: np.ndarray  # int: score stratum within the class (-1 when cut)
    bin_quota: np.ndarray  # int: how many the stratum was allowed to keep
    class_budget: np.ndarray  # int: how many the sample's class keeps
    selection_rank: np.ndarray  # int: order in which the class's greedy picked it (-1 when not picked)
    class_mmd_after: np.ndarray  # float: MMD between class coreset and class after the pick (NaN when not picked)


def _greedy_mmd(z: np.ndarray, eligible: np.ndarray, bins: np.ndarray, quotas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pick sum(quotas) rows one by one, each minimising the MMD of the picked set to all rows, within stratum quotas."""
    target = z.mean(axis=0)
    norms = (z**2).sum(axis=1)
    toward_target = z @ target
    picked_dot = np.zeros(len(z), dtype=np.float64)  # z_i . (sum of picked)
    picked_sum = np.zeros(z.shape[1], dtype=np.float64)
    remaining = quotas.copy()
    available = eligible.copy()
    rank = np.full(len(z), -1, dtype=np.int32)
    mmd_after = np.full(len(z), np.nan, dtype=np.float32)
    for n in range(int(quotas.sum())):
        open_bin = np.zeros(len(z), dtype=bool)
        open_bin[available] = remaining[bins[available]] > 0
        # |(S + z_i)/(n+1) - mu|^2 * (n+1)^2 = |z_i|^2 + 2 z_i.S - 2(n+1) z_i.mu + const
        criterion = norms + 2 * picked_dot - 2 * (n + 1) * toward_target
        pick = int(np.argmin(np.where(open_bin, criterion, np.inf)))
        picked_sum += z[pick]
        picked_dot += z @ z[pick]
        available[pick] = False
        remaining[bins[pick]] -= 1
        rank[pick] = n
        mmd_after[pick] = np.sqrt(max(float(((picked_sum / (n + 1) - target) ** 2).sum()), 0.0))
    return rank, mmd_after


def select_coreset(
    scores: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    budget: int,
    *,
    num_classes: int | None = None,
    hard_cutoff: float = 0.0,
    score_bins: int = 50,
    fourier_dim: int = 256,
    seed: int = 0,
) -> Coreset:
    """Choose exactly `budget` samples, class-balanced, covering each class's score strata and its feature distribution.

    scores: (N,) held-out difficulty, higher = harder. features: (N, D) embeddings. labels: (N,) ints.
    hard_cutoff: fraction of each class's hardest samples that is never kept (likely label noise).
    """
    n = len(labels)
    if scores.shape != (n,) or features.shape[0] != n:
        raise ValueError(f"scores {scores.shape}, features {features.shape} and labels ({n},) must describe the same samples")
    num_classes = int(num_classes or labels.max() + 1)
    rng = np.random.default_rng(seed)
    standardized = ((features - features.mean(0)) / np.maximum(features.std(0), 1e-6)).astype(np.float32)
    z = fourier_features(standardized, fourier_dim, median_bandwidth(standardized, rng), rng)
    budgets = class_budgets(labels, budget, num_classes)

    selected = np.zeros(n, dtype=bool)
    cut = np.zeros(n, dtype=bool)
    score_bin = np.full(n, -1, dtype=np.int16)
    bin_quota = np.zeros(n, dtype=np.int32)
    rank = np.full(n, -1, dtype=np.int32)
    mmd_after = np.full(n, np.nan, dtype=np.float32)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        keep = int(budgets[c])
        n_cut = min(int(hard_cutoff * len(members)), len(members) - keep)
        hardest_first = members[np.lexsort((members, -scores[members]))]
        cut[hardest_first[:n_cut]] = True
        eligible = ~cut[members]
        values = scores[members]
        low, high = values[eligible].min(), values[eligible].max()
        edges = np.linspace(low, high, score_bins + 1)
        bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, score_bins - 1)
        quotas = stratified_quotas(np.bincount(bins[eligible], minlength=score_bins), keep)
        class_rank, class_mmd = _greedy_mmd(z[members], eligible, bins, quotas)
        selected[members] = class_rank >= 0
        score_bin[members] = np.where(eligible, bins, -1)
        bin_quota[members] = np.where(eligible, quotas[bins], 0)
        rank[members] = class_rank
        mmd_after[members] = class_mmd
    class_budget = budgets[labels].astype(np.int32)
    return Coreset(selected, cut, score_bin, bin_quota, class_budget, rank, mmd_after)


def random_subset(labels: np.ndarray, per_class: np.ndarray, seed: int) -> np.ndarray:
    """A uniformly random subset with the given number of samples per class: the baseline a coreset must beat."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), dtype=bool)
    for c, count in enumerate(per_class):
        members = np.flatnonzero(labels == c)
        chosen[rng.choice(members, size=int(count), replace=False)] = True
    return chosen


def mmd(a: np.ndarray, b: np.ndarray, *, fourier_dim: int = 512, seed: int = 0) -> float:
    """MMD between two feature sets (Gaussian kernel, median bandwidth of their union, random Fourier features)."""
    rng = np.random.default_rng(seed)
    both = np.concatenate([a, b]).astype(np.float32)
    z = fourier_features(both, fourier_dim, median_bandwidth(both, rng), rng)
    return float(np.linalg.norm(z[: len(a)].mean(0) - z[len(a) :].mean(0)))
