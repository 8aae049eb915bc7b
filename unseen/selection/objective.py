"""UNSEEN coreset selection: generalization importance under distribution alignment, diversity and adaptive ratios.

Class budgets follow held-out difficulty (or class sizes). Within each class, the feature space can be split into
regions by k-means (`regions_per_class`; one by default, benchmarks/pilot_power.yaml); each region keeps a share of
the class budget that grows with its held-out difficulty and shrinks with its density, so redundant dense regions are
pruned harder than sparse ones. Each region's budget is spread over strata of the class's held-out difficulty range
(coverage), and inside each region x stratum cell a greedy pass picks the sample with the best gain

    importance_weight * difficulty rank  -  alignment_weight * MMD increase  -  diversity_weight * nearest similarity

where the MMD (Gaussian kernel, median-distance bandwidth) is between the coreset and the target
distribution of the class (its train samples, plus the unlabeled pool samples nearest to its centre when
a pool is given), and the similarity is the same kernel to the closest sample already kept. Kernels are
approximated by random Fourier features, so nothing N x N is ever built. The importance weight is 0 by
default: the held-out scores then act through the class budgets, the coverage strata and the label-issue cut,
because a per-sample preference for the hardest samples cost accuracy at every prune ratio of the benchmark.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import pairwise_distances_argmin

from unseen.budgets import (
    allocate, class_budgets, coverage_class_budgets, difficulty_class_budgets, rebalance, score_strata, stratified_quotas,
)
from unseen.config import OVERSAMPLED_CUTS, SelectParams
from unseen.selection.common import difficulty_rank, hardest_cut
from unseen.selection.coreset import Coreset
from unseen.selection.kernels import kernel_features
from unseen.selection.picks import TERMS, GainWeights, pick_in_cells


@dataclass(frozen=True)
class UnseenObjective:
    """The terms of UNSEEN selection; a weight of 0 (or `adaptive=False`) switches a term off for ablations."""

    importance_weight: float = 0.0
    alignment_weight: float = 1.0
    diversity_weight: float = 0.5
    adaptive: bool = True
    regions_per_class: int = 1
    difficulty_power: float = 1.0
    density_power: float = 1.0
    hard_cutoff: float = 0.0
    label_issues: Literal["cut", "stratum", "auto"] = "auto"  # the flagged samples: never kept, one more coverage stratum of each class, or auto
    label_issue_rate: float = 0.05  # auto: a stratum while the flagged samples are under this share of the samples, cut above
    fourier_dim: int = 256
    coverage_strata: int = 50  # > 0: each region keeps samples across its held-out difficulty range, in this many strata
    coverage_range: Literal["class", "dataset"] = "class"  # the range the strata split: each class's own, or the whole data set's (CCS's)
    coverage_tilt: float = 0.0  # stratum quotas in proportion to stratum size**tilt: 0 = CCS's equal shares, 1 = as the data
    class_budgets: Literal["proportional", "difficulty", "coverage"] = "difficulty"  # difficulty: a class keeps more the harder its held-out scores (the region rule, across classes); coverage: as CCS's data-set-wide strata split it
    score_bins: int = 50  # class_budgets coverage: the strata of the whole data set's held-out range (CCS's, select.score_bins)
    cut_oversampled: str | None = None  # the hard_cutoff kind (oversampled, oversampled_noisy) that selects again with the misclassified cut

    @classmethod
    def from_params(cls, select: SelectParams) -> "UnseenObjective":
        """The objective that the `select` params section describes."""
        return cls(
            importance_weight=select.importance_weight,
            alignment_weight=select.alignment_weight,
            diversity_weight=select.diversity_weight,
            adaptive=select.adaptive,
            regions_per_class=select.regions_per_class,
            difficulty_power=select.power,
            density_power=select.density_power,
            hard_cutoff=0.0 if isinstance(select.cutoff, str) else select.cutoff,
            label_issues="cut" if select.cutoff == "misclassified" else select.label_issues,
            label_issue_rate=select.label_issue_rate,
            fourier_dim=select.fourier_features,
            coverage_strata=select.coverage_strata,
            coverage_range=select.coverage_range,
            coverage_tilt=select.tilt,
            class_budgets=select.class_budgets,
            score_bins=select.score_bins,
            cut_oversampled=select.cutoff if select.cutoff in OVERSAMPLED_CUTS else None,
        )


def label_issue_handling(objective: UnseenObjective, flagged: np.ndarray | None) -> Literal["cut", "stratum"]:
    """What the objective does with the flagged samples: `label_issues` "auto" keeps them as a stratum while they are
    few enough to be ambiguous images of well-curated labels (under `label_issue_rate` of the samples; Northcutt et al.
    2021 count 3.3% errors on average in ten benchmark test sets), and cuts them when there are more: label noise."""
    if objective.label_issues != "auto":
        return objective.label_issues
    few = flagged is not None and len(flagged) > 0 and float(np.mean(flagged)) < objective.label_issue_rate
    return "stratum" if few and objective.coverage_strata else "cut"


def cut_flags(params: SelectParams, flagged: np.ndarray | None) -> np.ndarray | None:
    """The flagged samples to cut: `flagged` with `hard_cutoff` auto, misclassified or oversampled, none with a fraction."""
    if not isinstance(params.cutoff, str):
        return None
    if flagged is None:
        raise ValueError(
            f"select.hard_cutoff {params.cutoff!r} cuts flagged samples: pass flagged (unseen.scores.cut_flags_of, or ScoreTable.cut_flags)"
        )
    return np.asarray(flagged, dtype=bool)


def _regions(x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """k-means regions of one class (scikit-learn); fewer distinct points than regions just leaves some empty."""
    count = min(count, len(x))
    if count <= 1:
        return np.zeros(len(x), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(n_clusters=count, n_init=1, max_iter=50, random_state=seed).fit_predict(x.astype(np.float64)).astype(np.int64)


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


def select_coreset(
    scores: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    budget: int,
    *,
    objective: UnseenObjective = UnseenObjective(),
    pool_features: np.ndarray | None = None,
    already_selected: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> Coreset:
    """Keep exactly `budget` samples (including `already_selected` ones), class-balanced, by the UNSEEN objective.

    scores: (N,) held-out difficulty, higher = harder. features: (N, D) embeddings. labels: (N,) ints.
    pool_features: (M, D) unlabeled samples (e.g. test images, new data) whose distribution the coreset
    should also match; each joins the target of the class whose centre is nearest.
    already_selected: (N,) bool, samples kept by earlier steps (multi-step UNSEEN); they count to the budget.
    flagged: (N,) bool, likely label errors: never kept (after the hard cutoff, as long as each class can fill its budget),
    or with `objective.label_issues` "stratum" one more coverage stratum of each class, kept at an equal share like the
    others: most of them when pruning little, few when they are many or the budget is small.
    """
    n = len(labels)
    if objective.label_issues == "stratum" and not objective.coverage_strata:
        raise ValueError("label_issues 'stratum' keeps the label issues as one more coverage stratum: set coverage_strata > 0")
    objective = replace(objective, label_issues=label_issue_handling(objective, flagged))
    if scores.shape != (n,) or features.shape[0] != n:
        raise ValueError(f"scores {scores.shape}, features {features.shape} and labels ({n},) must describe the same samples")
    num_classes = int(num_classes or labels.max() + 1)
    rng = np.random.default_rng(seed)
    both = features if pool_features is None else np.concatenate([features, pool_features])
    z, z_pool = np.split(kernel_features(both, objective.fourier_dim, rng), [n])
    preselected = np.zeros(n, dtype=bool) if already_selected is None else already_selected.astype(bool)
    kept_before = np.bincount(labels[preselected], minlength=num_classes)
    budgets = _class_budgets(scores, labels, budget, num_classes, objective, kept_before, None if objective.label_issues == "stratum" else flagged)
    if (kept_before > budgets).any():
        raise ValueError("already_selected holds more samples of a class than its budget")
    pool_class = _nearest_class(pool_features, features, labels, num_classes)
    stratum = _dataset_strata(scores, flagged, objective)
    columns = _empty_columns(n)
    for c in np.flatnonzero(np.bincount(labels, minlength=num_classes)):
        members = np.flatnonzero(labels == c)
        pool = None if pool_class is None else z_pool[pool_class == c]
        class_flagged = None if flagged is None else flagged[members]
        class_stratum = None if stratum is None else stratum[members]
        picked = _select_class(scores[members], z[members], pool, int(budgets[c]), preselected[members], class_flagged, class_stratum, objective, seed + c)
        for name, values in picked.items():
            columns[name][members] = values
    return Coreset(class_budget=budgets[labels].astype(np.int32), **columns)


def cut_if_oversampled(
    scores: np.ndarray, features: np.ndarray, labels: np.ndarray, budget: int, *, objective: UnseenObjective,
    misclassified: np.ndarray | None = None, flagged: np.ndarray | None = None, **kwargs,
) -> Coreset:
    """`select_coreset`; with `objective.cut_oversampled`, again with the `misclassified` samples cut too when it keeps a
    larger share of them than the samples its cut left hold. The equal stratum shares keep the sparse hard end of a class
    whole, which a large set whose classes overlap, or whose noisy labels the cut only thinned, fills with samples the
    held-out models get wrong (README, "90% pruning"); a set they tell apart keeps fewer than their share, and its coreset
    stays as it was. oversampled_noisy acts only where the label issues were cut (noisy labels)."""
    coreset = select_coreset(scores, features, labels, budget, objective=objective, flagged=flagged, **kwargs)
    left = ~coreset.cut_as_hardest
    checks = objective.cut_oversampled and misclassified is not None and (objective.cut_oversampled == "oversampled" or not left.all())
    if not checks or misclassified[coreset.selected].mean() <= misclassified[left].mean():
        return coreset
    cut = misclassified if flagged is None else flagged | misclassified
    return select_coreset(scores, features, labels, budget, objective=replace(objective, label_issues="cut"), flagged=cut, **kwargs)


def _class_budgets(
    scores: np.ndarray, labels: np.ndarray, budget: int, num_classes: int, objective: UnseenObjective, floor: np.ndarray,
    flagged: np.ndarray | None,
) -> np.ndarray:
    """The class budgets `objective.class_budgets` names; never below `floor` (earlier steps' picks) but for proportional."""
    if objective.class_budgets == "proportional":
        return class_budgets(labels, budget, num_classes)
    if objective.class_budgets == "coverage":
        return coverage_class_budgets(labels, scores, budget, num_classes, strata=objective.score_bins, floor=floor, unusable=flagged)
    return difficulty_class_budgets(labels, difficulty_rank(scores), budget, num_classes, power=objective.difficulty_power, floor=floor, unusable=flagged)


def _empty_columns(n: int) -> dict[str, np.ndarray]:
    """The Coreset fields before any class is selected: nothing kept, nothing cut, no region, no gain terms."""
    return {
        "selected": np.zeros(n, dtype=bool),
        "cut_as_hardest": np.zeros(n, dtype=bool),
        "region": np.full(n, -1, dtype=np.int16),
        "region_budget": np.zeros(n, dtype=np.int32),
        "selection_rank": np.full(n, -1, dtype=np.int32),
        **{name: np.full(n, np.nan, dtype=np.float32) for name in TERMS},
    }


def _nearest_class(pool: np.ndarray | None, features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray | None:
    """The class whose centre is nearest to each unlabeled pool sample (None without a pool)."""
    if pool is None or not len(pool):
        return None
    present = np.flatnonzero(np.bincount(labels, minlength=num_classes))
    centres = np.stack([features[labels == c].mean(0) for c in present])
    return present[pairwise_distances_argmin(pool.astype(np.float64), centres.astype(np.float64))]


def _dataset_strata(scores: np.ndarray, flagged: np.ndarray | None, objective: UnseenObjective) -> np.ndarray | None:
    """With `coverage_range: dataset`, each sample's equal-width stratum of the whole data set's held-out range (its
    samples not flagged), as CCS stratifies; None with `class` (each class's own range, in `_select_class`)."""
    if not objective.coverage_strata or objective.coverage_range == "class":
        return None
    usable = np.ones(len(scores), dtype=bool) if flagged is None or flagged.all() else ~flagged
    return score_strata(scores, usable, objective.coverage_strata)


def _coverage_cells(
    scores: np.ndarray, region: np.ndarray, eligible: np.ndarray, quotas: np.ndarray, strata: int, stratum: np.ndarray | None,
    tilt: float, apart: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Region x difficulty-stratum cells and their quotas: each region's quota is spread over equal-width strata of the
    class's held-out difficulty range (or the given data-set-wide `stratum`), sparse strata kept whole first (CCS's
    coverage, inside every region; `tilt` > 0 leans the shares toward the populous strata, see `stratified_quotas`).
    The `apart` rows (label issues kept as a stratum) form one more stratum, outside the range the others split."""
    ranged = eligible if apart is None or not (eligible & ~apart).any() else eligible & ~apart
    stratum = score_strata(scores, ranged, strata) if stratum is None else stratum
    if apart is not None:
        stratum, strata = np.where(apart, strata, stratum), strata + 1
    cell = region * strata + stratum
    cell_quotas = np.zeros(len(quotas) * strata, dtype=np.int64)
    for r, quota in enumerate(quotas):
        counts = np.bincount(stratum[(region == r) & eligible], minlength=strata)
        cell_quotas[r * strata : (r + 1) * strata] = stratified_quotas(counts, int(quota), tilt)
    return cell, cell_quotas


def _select_class(
    scores: np.ndarray, z: np.ndarray, z_pool: np.ndarray | None, keep: int, fixed: np.ndarray, flagged: np.ndarray | None,
    stratum: np.ndarray | None, objective: UnseenObjective, seed: int,
) -> dict[str, np.ndarray]:
    """One class: hard cut, regions and their budgets, then the greedy picks inside them (after the fixed ones)."""
    apart = flagged if objective.label_issues == "stratum" else None
    cut = hardest_cut(scores, objective.hard_cutoff, keep, None if apart is not None else flagged) & ~fixed
    eligible = ~cut
    rank = difficulty_rank(scores)
    region = _regions(z, objective.regions_per_class, seed)
    quotas = region_budgets(z, rank, region, eligible, keep, objective)
    unit, unit_quotas = region, quotas
    if objective.coverage_strata:
        unit, unit_quotas = _coverage_cells(scores, region, eligible, quotas, objective.coverage_strata, stratum, objective.coverage_tilt, apart)
    quotas_left = unit_quotas - np.bincount(unit[fixed], minlength=len(unit_quotas))
    quotas_left = rebalance(quotas_left, np.bincount(unit[eligible & ~fixed], minlength=len(unit_quotas)), keep - int(fixed.sum()))
    target_rows = z if z_pool is None else np.concatenate([z, z_pool])
    weights = GainWeights(objective.importance_weight, objective.alignment_weight, objective.diversity_weight)
    picks = pick_in_cells(z, target_rows, rank, unit, quotas_left, eligible, weights, fixed, seed)
    order = picks.pop("order")
    return {
        "selected": (order >= 0) | fixed,
        "cut_as_hardest": cut,
        "region": region,
        "region_budget": quotas[region],
        "selection_rank": order,
        **picks,
    }
