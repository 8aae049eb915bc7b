"""Budget arithmetic: how many samples a coreset keeps, and how a budget is split over classes, strata and regions.

Ground floor of the library (numpy only): the data loader's stratified subsets, the selection methods and the
preflight checks all split budgets the same way.
"""

from __future__ import annotations

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


def difficulty_class_budgets(
    labels: np.ndarray, hardness: np.ndarray, budget: int, num_classes: int, *, power: float = 1.0,
    floor: np.ndarray | None = None, unusable: np.ndarray | None = None,
) -> np.ndarray:
    """Split `budget` over classes in proportion to size x (mean hardness / its mean over classes)^power: a harder class
    keeps more, as a harder region does inside a class. `hardness` (N,) in [0, 1], e.g. the data set-wide difficulty
    rank; each present class keeps at least `floor` (default 1), and at most its size less its `unusable` samples
    (e.g. label issues) while the others can take the rest."""
    counts = np.bincount(labels, minlength=num_classes)
    class_budgets(labels, budget, num_classes)  # the same checks: budget within the samples, at least one per class
    mean = np.bincount(labels, weights=hardness, minlength=num_classes) / np.maximum(counts, 1)
    relative = (mean + 1e-3) / (mean[counts > 0].mean() + 1e-3)
    return _weighted_class_budgets(labels, counts * relative**power, budget, num_classes, floor, unusable)


def coverage_class_budgets(
    labels: np.ndarray, scores: np.ndarray, budget: int, num_classes: int, *, strata: int,
    floor: np.ndarray | None = None, unusable: np.ndarray | None = None,
) -> np.ndarray:
    """Split `budget` over classes as CCS's data-set-wide coverage does: `stratified_quotas` over equal-width strata of
    the usable samples' score range, each stratum's quota shared by its classes in proportion to their samples in it.
    `floor` and `unusable` as for `difficulty_class_budgets`."""
    class_budgets(labels, budget, num_classes)  # the same checks
    usable = np.ones(len(labels), dtype=bool) if unusable is None else ~np.asarray(unusable, dtype=bool)
    usable = usable if usable.sum() >= budget else np.ones(len(labels), dtype=bool)
    stratum = score_strata(scores, usable, strata)
    quotas = stratified_quotas(np.bincount(stratum[usable], minlength=strata), budget)
    members = np.zeros((strata, num_classes))
    np.add.at(members, (stratum[usable], labels[usable]), 1.0)
    share = (quotas[:, None] * members / np.maximum(members.sum(axis=1, keepdims=True), 1.0)).sum(axis=0)
    return _weighted_class_budgets(labels, share, budget, num_classes, floor, unusable)


def _weighted_class_budgets(
    labels: np.ndarray, weights: np.ndarray, budget: int, num_classes: int, floor: np.ndarray | None, unusable: np.ndarray | None,
) -> np.ndarray:
    """`budget` split over classes in proportion to `weights`: each present class at least `floor` (default 1), at most its
    size less its `unusable` samples while the others can take the rest."""
    counts = np.bincount(labels, minlength=num_classes)
    present = counts > 0
    floor = present.astype(np.int64) if floor is None else np.maximum(floor, present)
    usable = np.maximum(counts - (0 if unusable is None else np.bincount(labels[unusable], minlength=num_classes)), floor)
    capacity = usable if usable.sum() >= budget else counts
    return floor + allocate(weights, capacity - floor, budget - int(floor.sum()))


def score_strata(scores: np.ndarray, eligible: np.ndarray, strata: int) -> np.ndarray:
    """Each sample's equal-width stratum of the eligible samples' score range [min, max] (CCS's strata: [lo, hi) each,
    the maximum in the last one)."""
    values = scores[eligible]
    edges = np.linspace(values.min(), values.max(), strata + 1)
    return np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, strata - 1)


def stratified_quotas(bin_counts: np.ndarray, quota: int, tilt: float = 0.0) -> np.ndarray:
    """CCS budget split over score strata: smallest strata first, each takes an equal share of what is left. With
    `tilt` in (0, 1] the shares are in proportion to stratum size**tilt instead (1: to size, as a random draw keeps)."""
    if tilt > 0:
        return allocate(bin_counts.astype(np.float64) ** tilt, bin_counts, quota)
    quotas = np.zeros_like(bin_counts)
    remaining = quota
    nonempty = np.flatnonzero(bin_counts > 0)
    for position, b in enumerate(nonempty[np.argsort(bin_counts[nonempty], kind="stable")]):
        quotas[b] = min(bin_counts[b], remaining // (len(nonempty) - position))
        remaining -= quotas[b]
    if remaining:
        raise ValueError(f"cannot place {quota} samples in strata holding {bin_counts.sum()}")
    return quotas


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


def rebalance(quotas: np.ndarray, room: np.ndarray, total: int) -> np.ndarray:
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
