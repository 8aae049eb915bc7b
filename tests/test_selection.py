"""Selection: exact budgets, class balance, strata, MMD alignment, determinism."""

import numpy as np
import pytest

from unseen.selection import (
    budget_for,
    class_budgets,
    fourier_features,
    mmd,
    random_subset,
    select_coreset,
    stratified_quotas,
)


def _toy(n=3000, classes=5, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    scales = np.linspace(0.3, 3.0, dim)
    features = (rng.normal(size=(n, dim)) * scales + labels[:, None]).astype(np.float32)
    scores = rng.gamma(2.0, 0.2, n).astype(np.float32)
    return scores, features, labels


def test_budget_is_rounded_fraction_of_train_split():
    assert budget_for(60000, 0.5) == 30000
    assert budget_for(1001, 0.7) == 300
    assert budget_for(10, 0.96) == 0


def test_class_budgets_are_proportional_exact_and_capped():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    budgets = class_budgets(labels, 37, 3)
    assert budgets.sum() == 37
    assert list(budgets) == [19, 11, 7]  # 18.5, 11.1, 7.4 -> largest remainders go to class 0
    full = class_budgets(labels, 100, 3)
    assert list(full) == [50, 30, 20]


def test_class_budget_smaller_than_classes_is_refused():
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        class_budgets(np.array([0, 1, 2, 2]), 2, 3)


def test_stratified_quotas_fill_small_strata_and_redistribute():
    quotas = stratified_quotas(np.array([2, 0, 10, 10]), 12)
    assert quotas.sum() == 12
    assert quotas[0] == 2 and quotas[1] == 0  # the small stratum is kept whole, its leftover goes to the others
    assert sorted(quotas[2:]) == [5, 5]


def test_fourier_features_approximate_gaussian_kernel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 4)).astype(np.float32)
    z = fourier_features(np.stack([a, b]), 20000, 1.5, np.random.default_rng(1))
    exact = np.exp(-np.sum((a - b) ** 2) / (2 * 1.5**2))
    assert abs(float(z[0] @ z[1]) - exact) < 0.03


@pytest.mark.parametrize("prune_ratio", [0.3, 0.5, 0.9])
def test_coreset_has_exact_budget_and_class_balance(prune_ratio):
    scores, features, labels = _toy()
    budget = budget_for(len(labels), prune_ratio)
    coreset = select_coreset(scores, features, labels, budget, score_bins=10)
    assert coreset.selected.sum() == budget
    expected = class_budgets(labels, budget, 5)
    assert list(np.bincount(labels[coreset.selected], minlength=5)) == list(expected)
    assert (coreset.selection_rank[coreset.selected] >= 0).all() and (coreset.selection_rank[~coreset.selected] == -1).all()


def test_coreset_is_closer_to_class_distribution_than_random():
    scores, features, labels = _toy()
    coreset = select_coreset(scores, features, labels, 600, score_bins=5)
    per_class = np.bincount(labels[coreset.selected], minlength=5)
    standardized = (features - features.mean(0)) / features.std(0)
    gaps = []
    for seed in range(5):
        random = random_subset(labels, per_class, seed)
        for c in range(5):
            members = labels == c
            gaps.append(
                mmd(standardized[random & members], standardized[members], fourier_dim=2048, seed=9)
                - mmd(standardized[coreset.selected & members], standardized[members], fourier_dim=2048, seed=9)
            )
    assert np.mean(gaps) > 0 and np.mean(np.array(gaps) > 0) > 0.8


def test_hard_cutoff_drops_hardest_and_strata_span_the_rest():
    scores, features, labels = _toy()
    coreset = select_coreset(scores, features, labels, 900, hard_cutoff=0.1, score_bins=10)
    for c in range(5):
        members = np.flatnonzero(labels == c)
        n_cut = int(0.1 * len(members))
        hardest = members[np.argsort(-scores[members], kind="stable")[:n_cut]]
        assert coreset.cut_as_hardest[hardest].all() and coreset.cut_as_hardest[members].sum() == n_cut
        assert not coreset.selected[hardest].any()
        kept_bins = set(coreset.score_bin[members][coreset.selected[members]])
        assert len(kept_bins) >= 8  # coverage of the score range, not just the easy end
    bins_quota_ok = [
        (coreset.selected & (labels == c) & (coreset.score_bin == b)).sum() <= coreset.bin_quota[(labels == c) & (coreset.score_bin == b)].max(initial=0)
        for c in range(5)
        for b in range(10)
    ]
    assert all(bins_quota_ok)


def test_selection_is_deterministic_and_seed_dependent():
    scores, features, labels = _toy()
    first = select_coreset(scores, features, labels, 500, seed=3)
    second = select_coreset(scores, features, labels, 500, seed=3)
    other = select_coreset(scores, features, labels, 500, seed=4)
    assert np.array_equal(first.selected, second.selected) and np.array_equal(first.selection_rank, second.selection_rank)
    assert not np.array_equal(first.selected, other.selected)


def test_degenerate_inputs_identical_features_and_tiny_class():
    labels = np.array([0] * 40 + [1] * 3)
    features = np.ones((43, 4), dtype=np.float32)
    scores = np.zeros(43, dtype=np.float32)
    coreset = select_coreset(scores, features, labels, 30, score_bins=5)
    assert coreset.selected.sum() == 30
    assert coreset.selected[labels == 1].sum() == 2  # proportional share 30 * 3 / 43 = 2.09


def test_random_subset_matches_per_class_counts():
    labels = np.repeat(np.arange(4), 25)
    chosen = random_subset(labels, np.array([5, 0, 25, 1]), seed=0)
    assert list(np.bincount(labels[chosen], minlength=4)) == [5, 0, 25, 1]
