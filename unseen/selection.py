"""UNSEEN coreset selection: generalization importance under distribution alignment, diversity and adaptive ratios.

Within each class (budgets proportional to class sizes), the class's feature space is split into regions
by k-means. Each region keeps a share of the class budget that grows with its held-out difficulty and
shrinks with its density, so redundant dense regions are pruned harder than sparse ones. A greedy pass
then picks, inside the region budgets, the sample with the best gain

    importance_weight * difficulty rank  -  alignment_weight * MMD increase  -  diversity_weight * nearest similarity

where the MMD (Gaussian kernel, median-distance bandwidth) is between the coreset and the target
distribution of the class (its train samples, plus the unlabeled pool samples nearest to its centre when
a pool is given), and the similarity is the same kernel to the closest sample already kept. Kernels are
approximated by random Fourier features, so nothing N x N is ever built. The importance weight is 0 by
default: the held-out scores then act through the difficulty-weighted region budgets and the hard cutoff,
because a per-sample preference for the hardest samples cost accuracy at every prune ratio of the benchmark.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import pairwise_distances_argmin


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
class UnseenObjective:
    """The terms of UNSEEN selection; a weight of 0 (or `adaptive=False`) switches a term off for ablations."""

    importance_weight: float = 0.0
    alignment_weight: float = 1.0
    diversity_weight: float = 0.5
    adaptive: bool = True
    regions_per_class: int = 8
    difficulty_power: float = 1.0
    density_power: float = 1.0
    hard_cutoff: float = 0.0
    fourier_dim: int = 256


@dataclass(frozen=True)
class Coreset:
    """Which samples were kept, and the per-sample facts that decided it (one entry per input row)."""

    selected: np.ndarray  # bool
    cut_as_hardest: np.ndarray  # bool: in the hardest `hard_cutoff` fraction of its class, never eligible
    region: np.ndarray  # int: k-means region within the class
    region_budget: np.ndarray  # int: how many the sample's region keeps
    class_budget: np.ndarray  # int: how many the sample's class keeps
    selection_rank: np.ndarray  # int: order of the pick within its class (-1 when not picked)
    importance_term: np.ndarray  # float: difficulty rank in [0, 1] at pick time (NaN when not picked)
    alignment_term: np.ndarray  # float: normalised MMD increase in [0, 1] at pick time
    diversity_term: np.ndarray  # float: kernel similarity to the nearest sample already kept
    class_mmd_after: np.ndarray  # float: MMD between class coreset and class target after the pick


def allocate(weights: np.ndarray, capacity: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to `weights`, summing to `total`, none above its `capacity` (water-filling)."""
    weights = np.where(capacity > 0, np.maximum(weights, 0), 0).astype(np.float64)
    if total > capacity.sum():
        raise ValueError(f"cannot place {total} samples in groups holding {capacity.sum()}")
    result = np.zeros(len(weights), dtype=np.int64)
    open_ = capacity > result
    while (left := total - result.sum()) > 0:
        share = np.where(open_, weights, 0.0)
        if share.sum() <= 0:
            share = open_.astype(np.float64)
        ideal = left * share / share.sum()
        step = np.minimum(np.floor(ideal).astype(np.int64), capacity - result)
        if step.sum() == 0:  # hand out the remainder one by one, largest fractional share first
            order = np.lexsort((np.arange(len(ideal)), -ideal))
            order = order[open_[order]][:left]
            step[order] = 1
        result += step
        open_ = capacity > result
    return result


def _regions(x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """k-means regions of one class (scikit-learn); fewer distinct points than regions just leaves some empty."""
    count = min(count, len(x))
    if count <= 1:
        return np.zeros(len(x), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(n_clusters=count, n_init=1, max_iter=50, random_state=seed).fit_predict(x).astype(np.int64)


def region_budgets(
    x: np.ndarray, rank: np.ndarray, region: np.ndarray, eligible: np.ndarray, keep: int, objective: UnseenObjective
) -> np.ndarray:
    """Per-region budgets: proportional to eligible size, times difficulty^a / density^b when adaptive."""
    regions = int(region.max()) + 1
    capacity = np.bincount(region[eligible], minlength=regions)
    weights = capacity.astype(np.float64)
    if objective.adaptive:
        difficulty = np.array([rank[(region == r) & eligible].mean() if capacity[r] else 0.0 for r in range(regions)])
        spread = np.array([np.linalg.norm(x[region == r] - x[region == r].mean(0), axis=1).mean() if capacity[r] else 0.0 for r in range(regions)])
        density = 1.0 / np.maximum(spread, 1e-6)
        live = capacity > 0
        difficulty = (difficulty + 1e-3) / (difficulty[live].mean() + 1e-3)
        density = density / density[live].mean()
        weights = weights * difficulty**objective.difficulty_power * density ** (-objective.density_power)
    return allocate(weights, capacity, keep)


def _greedy(
    z: np.ndarray, target: np.ndarray, rank: np.ndarray, region: np.ndarray, quotas: np.ndarray, available: np.ndarray,
    objective: UnseenObjective, preselected: np.ndarray,
) -> dict[str, np.ndarray]:
    """Pick sum(quotas) rows one by one by the UNSEEN gain, within region quotas, after any preselected rows."""
    n = len(z)
    norms = (z**2).sum(axis=1)
    toward_target = z @ target
    picked_dot = z @ z[preselected].sum(axis=0) if preselected.any() else np.zeros(n)
    nearest = (z @ z[preselected].T).max(axis=1) if preselected.any() else np.zeros(n)
    picked_sum = z[preselected].sum(axis=0).astype(np.float64)
    count = int(preselected.sum())
    remaining = quotas.copy()
    out = {name: np.full(n, np.nan, dtype=np.float32) for name in ("importance", "alignment", "diversity", "mmd")}
    order = np.full(n, -1, dtype=np.int32)
    available = available & ~preselected
    for step in range(int(quotas.sum())):
        open_ = available & (remaining[region] > 0)
        candidates = np.flatnonzero(open_)
        # (n+1)^2 * |(S + z_i)/(n+1) - mu|^2 = |z_i|^2 + 2 z_i.S - 2(n+1) z_i.mu + const
        mmd_growth = norms[candidates] + 2 * picked_dot[candidates] - 2 * (count + 1) * toward_target[candidates]
        low, high = mmd_growth.min(), mmd_growth.max()
        alignment = (mmd_growth - low) / (high - low) if high > low else np.zeros(len(candidates))
        gain = (
            objective.importance_weight * rank[candidates]
            - objective.alignment_weight * alignment
            - objective.diversity_weight * np.clip(nearest[candidates], 0.0, 1.0)
        )
        best = int(np.argmax(gain))
        pick = int(candidates[best])
        out["importance"][pick] = rank[pick]
        out["alignment"][pick] = alignment[best]
        out["diversity"][pick] = np.clip(nearest[pick], 0.0, 1.0)
        similarity = z @ z[pick]
        picked_dot += similarity
        np.maximum(nearest, similarity, out=nearest)
        picked_sum += z[pick]
        count += 1
        available[pick] = False
        remaining[region[pick]] -= 1
        order[pick] = step
        out["mmd"][pick] = np.sqrt(max(float(((picked_sum / count - target) ** 2).sum()), 0.0))
    return {"order": order, **out}


def standardize(features: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std, computed in chunks (no second copy of a large feature matrix)."""
    total = np.zeros(features.shape[1], dtype=np.float64)
    squares = np.zeros(features.shape[1], dtype=np.float64)
    for start in range(0, len(features), chunk):
        block = features[start : start + chunk].astype(np.float64)
        total += block.sum(0)
        squares += (block**2).sum(0)
    mean = total / len(features)
    std = np.sqrt(np.maximum(squares / len(features) - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def kernel_features(features: np.ndarray, dim: int, rng: np.random.Generator, chunk: int = 65536) -> np.ndarray:
    """Random Fourier features of the standardized features, built chunk by chunk."""
    mean, std = standardize(features, chunk)
    sample = (features[rng.choice(len(features), size=min(2000, len(features)), replace=False)] - mean) / std
    bandwidth = median_bandwidth(sample.astype(np.float32), rng)
    weights = rng.normal(scale=1.0 / bandwidth, size=(features.shape[1], dim)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=dim).astype(np.float32)
    out = np.empty((len(features), dim), dtype=np.float32)
    for start in range(0, len(features), chunk):
        block = (features[start : start + chunk] - mean) / std
        out[start : start + chunk] = np.sqrt(2.0 / dim) * np.cos(block @ weights + phase)
    return out


def _difficulty_rank(values: np.ndarray) -> np.ndarray:
    """Rank in [0, 1] within the group (1 = hardest); ties share the order of their index."""
    if len(values) <= 1:
        return np.ones(len(values))
    order = np.lexsort((np.arange(len(values)), values))
    rank = np.empty(len(values))
    rank[order] = np.arange(len(values)) / (len(values) - 1)
    return rank


def select_coreset(
    scores: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    budget: int,
    *,
    objective: UnseenObjective = UnseenObjective(),
    pool_features: np.ndarray | None = None,
    already_selected: np.ndarray | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> Coreset:
    """Keep exactly `budget` samples (including `already_selected` ones), class-balanced, by the UNSEEN objective.

    scores: (N,) held-out difficulty, higher = harder. features: (N, D) embeddings. labels: (N,) ints.
    pool_features: (M, D) unlabeled samples (e.g. test images, new data) whose distribution the coreset
    should also match; each joins the target of the class whose centre is nearest.
    already_selected: (N,) bool, samples kept by earlier steps (multi-step UNSEEN); they count to the budget.
    """
    n = len(labels)
    if scores.shape != (n,) or features.shape[0] != n:
        raise ValueError(f"scores {scores.shape}, features {features.shape} and labels ({n},) must describe the same samples")
    num_classes = int(num_classes or labels.max() + 1)
    rng = np.random.default_rng(seed)
    both = features if pool_features is None else np.concatenate([features, pool_features])
    z_all = kernel_features(both, objective.fourier_dim, rng)
    z, z_pool = z_all[:n], z_all[n:]
    budgets = class_budgets(labels, budget, num_classes)
    preselected = np.zeros(n, dtype=bool) if already_selected is None else already_selected.astype(bool)
    if (np.bincount(labels[preselected], minlength=num_classes) > budgets).any():
        raise ValueError("already_selected holds more samples of a class than its budget")
    pool_class = None
    if pool_features is not None and len(pool_features):
        present = np.flatnonzero(np.bincount(labels, minlength=num_classes))
        centres = np.stack([features[labels == c].mean(0) for c in present])
        pool_class = present[pairwise_distances_argmin(pool_features, centres)]

    result = {
        "selected": np.zeros(n, dtype=bool),
        "cut": np.zeros(n, dtype=bool),
        "region": np.full(n, -1, dtype=np.int16),
        "region_budget": np.zeros(n, dtype=np.int32),
        "rank": np.full(n, -1, dtype=np.int32),
        **{name: np.full(n, np.nan, dtype=np.float32) for name in ("importance", "alignment", "diversity", "mmd")},
    }
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        keep, fixed = int(budgets[c]), preselected[members]
        n_cut = min(int(objective.hard_cutoff * len(members)), len(members) - keep)
        hardest_first = np.lexsort((members, -scores[members]))
        cut = np.zeros(len(members), dtype=bool)
        cut[hardest_first[:n_cut]] = True
        cut &= ~fixed
        eligible = ~cut
        rank = _difficulty_rank(scores[members])
        zc = z[members]
        region = _regions(zc, objective.regions_per_class, seed + c)
        quotas = region_budgets(zc, rank, region, eligible, keep, objective)
        quotas_left = quotas - np.bincount(region[fixed], minlength=len(quotas))
        quotas_left = _rebalance(quotas_left, np.bincount(region[eligible & ~fixed], minlength=len(quotas)), keep - int(fixed.sum()))
        target_rows = zc if pool_class is None else np.concatenate([zc, z_pool[pool_class == c]])
        picks = _greedy(zc, target_rows.mean(0), rank, region, quotas_left, eligible, objective, fixed)
        result["selected"][members] = (picks["order"] >= 0) | fixed
        result["cut"][members] = cut
        result["region"][members] = region
        result["region_budget"][members] = quotas[region]
        result["rank"][members] = picks["order"]
        for name in ("importance", "alignment", "diversity", "mmd"):
            result[name][members] = picks[name]
    return Coreset(
        result["selected"], result["cut"], result["region"], result["region_budget"], budgets[labels].astype(np.int32),
        result["rank"], result["importance"], result["alignment"], result["diversity"], result["mmd"],
    )


def _rebalance(quotas: np.ndarray, room: np.ndarray, total: int) -> np.ndarray:
    """Fix region quotas after preselection: keep them where possible, never above the room left, summing to total."""
    quotas = np.clip(quotas, 0, room)
    if quotas.sum() > total:
        return allocate(quotas.astype(np.float64), quotas, total)
    extra = total - int(quotas.sum())
    return quotas + (allocate(np.maximum(room - quotas, 0).astype(np.float64), room - quotas, extra) if extra else 0)


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
