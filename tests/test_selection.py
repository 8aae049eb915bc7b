"""UNSEEN selection: exact budgets, class balance, alignment, diversity, adaptive regions, ablations, determinism."""

import dataclasses

import numpy as np
import pytest

from unseen.budgets import allocate, budget_for, class_budgets, coverage_class_budgets, difficulty_class_budgets, random_subset, stratified_quotas
from unseen.selection import UnseenObjective, mmd, select_coreset
from unseen.config import SelectParams
from unseen.selection.kernels import fourier_features, fourier_means, grid_step


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
    assert list(class_budgets(labels, 37, 3)) == [19, 11, 7]  # 18.5, 11.1, 7.4: largest remainders to class 0
    assert list(class_budgets(labels, 100, 3)) == [50, 30, 20]
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        class_budgets(np.array([0, 1, 2, 2]), 2, 3)


def test_allocate_is_proportional_capped_and_exact():
    assert list(allocate(np.array([1.0, 1.0, 2.0]), np.array([10, 10, 10]), 8)) == [2, 2, 4]
    assert list(allocate(np.array([1.0, 1.0, 100.0]), np.array([10, 10, 3]), 12)) == [5, 4, 3]  # capped, rest shared
    assert allocate(np.array([0.0, 0.0]), np.array([2, 3]), 5).sum() == 5
    with pytest.raises(ValueError):
        allocate(np.ones(2), np.array([1, 1]), 3)


def test_stratified_quotas_fill_small_strata_and_redistribute():
    quotas = stratified_quotas(np.array([2, 0, 10, 10]), 12)
    assert quotas.sum() == 12 and quotas[0] == 2 and quotas[1] == 0 and sorted(quotas[2:]) == [5, 5]


def test_fourier_features_approximate_gaussian_kernel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 4)).astype(np.float32)
    z = fourier_features(np.stack([a, b]), 20000, 1.5, np.random.default_rng(1))
    assert abs(float(z[0] @ z[1]) - np.exp(-np.sum((a - b) ** 2) / (2 * 1.5**2))) < 0.03


@pytest.mark.parametrize("dim", [8, 100, 128, 256, 1000, 20000])
def test_fourier_features_lie_on_a_grid_whose_float32_dot_products_are_exact(dim):
    """Any two features' float32 dot product, in any summation order, equals the exact one: the greedy's products give
    the same bits under every BLAS kernel (benchmarks/blas_kernels.py)."""
    step = grid_step(dim)
    assert np.log2(step) == round(np.log2(step)) and dim * (np.sqrt(2.0 / dim) / step) ** 2 <= 2**24
    x = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    z = fourier_features(x, dim, 1.0, np.random.default_rng(1))
    units = z.astype(np.float64) / step
    np.testing.assert_array_equal(units, np.rint(units))
    exact = units[:40] @ units[40:80].T * step**2  # integers under 2**53: exact in float64
    np.testing.assert_array_equal(z[:40] @ z[40:80].T, exact)
    np.testing.assert_array_equal(z[:40][:, ::-1] @ z[40:80][:, ::-1].T, exact)  # the other order


@pytest.mark.parametrize("prune_ratio", [0.3, 0.5, 0.9])
def test_coreset_has_exact_budget_and_class_balance(prune_ratio):
    scores, features, labels = _toy()
    budget = budget_for(len(labels), prune_ratio)
    coreset = select_coreset(scores, features, labels, budget, objective=UnseenObjective(class_budgets="proportional"))
    assert coreset.selected.sum() == budget
    assert list(np.bincount(labels[coreset.selected], minlength=5)) == list(class_budgets(labels, budget, 5))
    assert (coreset.selection_rank[coreset.selected] >= 0).all() and (coreset.selection_rank[~coreset.selected] == -1).all()
    for c in range(5):  # region budgets are honoured and sum to the class budget
        members = labels == c
        for r in np.unique(coreset.region[members]):
            in_region = members & (coreset.region == r)
            assert coreset.selected[in_region].sum() == coreset.region_budget[in_region][0]


def _class_gap(features, labels, selected, other):
    standardized = (features - features.mean(0)) / features.std(0)
    return np.mean([
        mmd(standardized[other & (labels == c)], standardized[labels == c], fourier_dim=2048, seed=9)
        - mmd(standardized[selected & (labels == c)], standardized[labels == c], fourier_dim=2048, seed=9)
        for c in range(5)
    ])


def test_alignment_term_brings_the_coreset_closer_to_each_class():
    scores, features, labels = _toy()
    aligned = select_coreset(scores, features, labels, 600)
    unaligned = select_coreset(scores, features, labels, 600, objective=UnseenObjective(alignment_weight=0))
    random = random_subset(labels, np.bincount(labels[aligned.selected], minlength=5), 0)
    assert _class_gap(features, labels, aligned.selected, random) > 0
    assert _class_gap(features, labels, aligned.selected, unaligned.selected) > 0


def test_importance_term_prefers_hard_samples_and_hard_cutoff_drops_the_hardest():
    scores, features, labels = _toy()
    plain = select_coreset(scores, features, labels, 900)
    important = select_coreset(scores, features, labels, 900, objective=UnseenObjective(importance_weight=1.0))
    assert scores[important.selected].mean() > scores[plain.selected].mean()
    cut = select_coreset(scores, features, labels, 900, objective=UnseenObjective(hard_cutoff=0.1))
    for c in range(5):
        members = np.flatnonzero(labels == c)
        hardest = members[np.argsort(-scores[members], kind="stable")[: int(0.1 * len(members))]]
        assert cut.cut_as_hardest[hardest].all() and not cut.selected[hardest].any()


def test_diversity_term_avoids_near_duplicates():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 8)).astype(np.float32)
    features = np.concatenate([base, base + 1e-4])  # every sample has a twin
    labels = np.zeros(400, dtype=np.int64)
    scores = np.ones(400, dtype=np.float32)
    objective = UnseenObjective(alignment_weight=0, importance_weight=0, diversity_weight=1.0, adaptive=False, regions_per_class=1)
    diverse = select_coreset(scores, features, labels, 100, objective=objective)
    twins = diverse.selected[:200] & diverse.selected[200:]
    assert twins.sum() == 0


def test_adaptive_ratio_prunes_dense_regions_harder():
    rng = np.random.default_rng(1)
    dense = rng.normal(scale=0.05, size=(500, 2))
    sparse = rng.normal(scale=1.0, size=(500, 2)) + 10
    features = np.concatenate([dense, sparse]).astype(np.float32)
    labels = np.zeros(1000, dtype=np.int64)
    scores = np.full(1000, 0.5, dtype=np.float32)
    objective = UnseenObjective(regions_per_class=2, importance_weight=0, difficulty_power=0)
    adaptive = select_coreset(scores, features, labels, 200, objective=objective)
    flat = select_coreset(scores, features, labels, 200, objective=UnseenObjective(regions_per_class=2, importance_weight=0, adaptive=False))
    assert adaptive.selected[:500].sum() < adaptive.selected[500:].sum()
    assert flat.selected[:500].sum() == flat.selected[500:].sum() == 100


def test_each_ablation_switch_changes_only_its_term():
    scores, features, labels = _toy(n=1200)
    base = UnseenObjective(regions_per_class=8)  # adaptive weighs regions: with one per class it has nothing to weigh
    reference = select_coreset(scores, features, labels, 300, objective=base)
    for change in ({"alignment_weight": 0.0}, {"diversity_weight": 0.0}, {"adaptive": False}, {"importance_weight": 1.0}):
        other = select_coreset(scores, features, labels, 300, objective=UnseenObjective(**{**base.__dict__, **change}))
        assert not np.array_equal(other.selected, reference.selected), change
        if "adaptive" not in change:  # the regions and their budgets do not depend on the gain weights
            np.testing.assert_array_equal(other.region_budget, reference.region_budget)
        np.testing.assert_array_equal(other.region, reference.region)


def test_unlabeled_pool_moves_the_target():
    scores, features, labels = _toy()
    pool = features[labels == 0][:300].copy()
    pool[:, -1] -= 3.0  # an unlabeled population shifted along the widest axis, still nearest class 0's centre
    with_pool = select_coreset(scores, features, labels, 600, pool_features=pool)
    without = select_coreset(scores, features, labels, 600)
    shifted = features[with_pool.selected & (labels == 0), -1].mean()
    assert shifted < features[without.selected & (labels == 0), -1].mean() - 0.5


def test_already_selected_samples_stay_and_count_to_the_budget():
    scores, features, labels = _toy(n=1000)
    first = select_coreset(scores, features, labels, 200)
    grown = select_coreset(scores, features, labels, 400, already_selected=first.selected)
    assert grown.selected.sum() == 400 and grown.selected[first.selected].all()


def test_selection_is_deterministic_and_seed_dependent():
    scores, features, labels = _toy()
    first = select_coreset(scores, features, labels, 500, seed=3)
    second = select_coreset(scores, features, labels, 500, seed=3)
    other = select_coreset(scores, features, labels, 500, seed=4)
    assert np.array_equal(first.selected, second.selected) and np.array_equal(first.selection_rank, second.selection_rank)
    assert not np.array_equal(first.selected, other.selected)


def test_degenerate_inputs_identical_features_tiny_class_one_region():
    labels = np.array([0] * 40 + [1] * 3)
    features = np.ones((43, 4), dtype=np.float32)
    scores = np.zeros(43, dtype=np.float32)
    proportional = UnseenObjective(regions_per_class=1, class_budgets="proportional")
    coreset = select_coreset(scores, features, labels, 30, objective=proportional)
    assert coreset.selected.sum() == 30 and coreset.selected[labels == 1].sum() == 2  # 30 * 3 / 43 = 2.09
    again = select_coreset(scores, features, labels, 30)  # identical features: k-means finds one region, still exact
    assert again.selected.sum() == 30


def test_random_subset_matches_per_class_counts():
    labels = np.repeat(np.arange(4), 25)
    chosen = random_subset(labels, np.array([5, 0, 25, 1]), seed=0)
    assert list(np.bincount(labels[chosen], minlength=4)) == [5, 0, 25, 1]


def test_step_budgets_equal_and_geometric():
    from unseen.selection import step_budgets

    assert step_budgets(300, 3, "equal") == [100, 200, 300]
    assert step_budgets(700, 3, "geometric") == [100, 300, 700]
    assert step_budgets(50, 1) == [50]


def test_flagged_label_issues_are_never_kept_while_budgets_hold():
    scores, features, labels = _toy(n=600)
    flagged = np.zeros(600, dtype=bool)
    flagged[::7] = True
    coreset = select_coreset(scores, features, labels, 300, flagged=flagged)
    assert coreset.selected.sum() == 300 and not (coreset.selected & flagged).any()
    assert (coreset.cut_as_hardest == flagged).all()  # reported as cut in coreset.parquet
    # a class that cannot fill its budget without them keeps the easiest flagged ones it needs
    tight = select_coreset(scores, features, labels, 590, flagged=flagged)
    assert tight.selected.sum() == 590 and (tight.selected & flagged).sum() == 590 - (~flagged).sum()


def test_label_issues_as_a_stratum_take_an_equal_share():
    # one class: 16 samples in [0, 0.5), 4 in [0.5, 1] (the two strata of the unflagged range) and 10 flagged at 2.0
    scores = np.concatenate([np.linspace(0, 0.45, 16), np.linspace(0.5, 1.0, 4), np.full(10, 2.0)])
    flagged = np.arange(30) >= 20
    labels = np.zeros(30, dtype=np.int64)
    features = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    terms = dict(adaptive=False, alignment_weight=0.0, diversity_weight=0.0, coverage_strata=2, class_budgets="proportional")
    apart = UnseenObjective(**terms, label_issues="stratum")
    # smallest stratum first, each an equal share of what is left: [0.5, 1] 4, the flagged 8 // 2 = 4, [0, 0.5) 4
    kept = select_coreset(scores, features, labels, 12, objective=apart, flagged=flagged).selected
    assert [kept[:16].sum(), kept[16:20].sum(), kept[20:].sum()] == [4, 4, 4]
    # a budget of 24: 4, then 20 // 2 = 10 flagged (all of them) and 10 of the easy stratum
    kept = select_coreset(scores, features, labels, 24, objective=apart, flagged=flagged).selected
    assert [kept[:16].sum(), kept[16:20].sum(), kept[20:].sum()] == [10, 4, 10]
    # cut: none of them, the budget to the two strata
    cut = select_coreset(scores, features, labels, 12, objective=UnseenObjective(**terms), flagged=flagged)
    assert [cut.selected[:16].sum(), cut.selected[16:20].sum(), cut.selected[20:].sum()] == [8, 4, 0]
    assert not cut.selected[20:].any() and cut.cut_as_hardest[20:].all()
    assert UnseenObjective.from_params(SelectParams(label_issues="stratum")).label_issues == "stratum"
    with pytest.raises(ValueError, match="coverage_strata"):
        SelectParams(label_issues="stratum", coverage_strata=0)


def test_label_issues_stratum_sits_outside_the_data_sets_range_too():
    # coverage_range dataset: the unflagged samples' range [0, 1] splits in two for both classes; the flagged (at 3.0)
    # would otherwise stretch it so that every unflagged sample fell in the first stratum
    scores = np.concatenate([np.linspace(0, 1, 20), np.full(4, 3.0)] * 2)
    labels = np.repeat([0, 1], 24)
    flagged = np.tile(np.arange(24) >= 20, 2)
    features = np.random.default_rng(1).normal(size=(48, 4)).astype(np.float32)
    terms = dict(adaptive=False, alignment_weight=0.0, diversity_weight=0.0, coverage_strata=2, coverage_range="dataset", class_budgets="proportional")
    kept = select_coreset(scores, features, labels, 18, objective=UnseenObjective(**terms, label_issues="stratum"), flagged=flagged).selected
    # per class 9 over strata of 10, 10 and 4 flagged: smallest first, 9 // 3 = 3 each (with the flagged in the range,
    # all 20 unflagged would share the first stratum: 4 flagged, then 5 of them)
    for c in (0, 1):
        own = kept[labels == c]
        assert [own[:10].sum(), own[10:20].sum(), own[20:].sum()] == [3, 3, 3]


def test_label_issues_auto_keeps_a_few_as_a_stratum_and_cuts_many():
    from unseen.selection import label_issue_handling

    scores, features, labels = _toy(n=1000, classes=2)
    few, many = np.arange(1000) % 50 == 0, np.arange(1000) % 5 == 0  # 2% and 20% of the samples
    auto = UnseenObjective(label_issues="auto")
    assert label_issue_handling(auto, few) == "stratum" and label_issue_handling(auto, many) == "cut"
    assert label_issue_handling(UnseenObjective(label_issues="auto", coverage_strata=0), few) == "cut"  # no strata to join
    assert label_issue_handling(UnseenObjective(label_issues="auto", label_issue_rate=0.01), few) == "cut"
    for flagged, handling in ((few, "stratum"), (many, "cut")):
        chosen = select_coreset(scores, features, labels, 700, objective=auto, flagged=flagged)
        same = select_coreset(scores, features, labels, 700, objective=UnseenObjective(label_issues=handling), flagged=flagged)
        assert (chosen.selected == same.selected).all()
    assert (select_coreset(scores, features, labels, 700, objective=auto, flagged=few).selected & few).any()


def test_coverage_strata_spread_each_region_over_the_difficulty_range():
    scores, features, labels = _toy(n=2000, classes=2)
    plain = select_coreset(scores, features, labels, 400, objective=UnseenObjective(regions_per_class=2, adaptive=False, coverage_strata=0))
    covered = select_coreset(scores, features, labels, 400, objective=UnseenObjective(regions_per_class=2, adaptive=False, coverage_strata=5))
    assert covered.selected.sum() == 400 and list(np.bincount(labels[covered.selected])) == list(np.bincount(labels[plain.selected]))
    top = scores >= np.quantile(scores, 0.95)  # the sparse hard end of the range: CCS's allocation keeps more of it
    assert (covered.selected & top).sum() > (plain.selected & top).sum()


def test_coverage_range_dataset_splits_the_whole_data_sets_range():
    # class 0 is easy: 90 samples in [0, 0.05), 10 in [0.05, 0.1); class 1 spans [0, 1]
    scores = np.concatenate([np.linspace(0, 0.049, 90), np.linspace(0.05, 0.1, 10), np.linspace(0, 1, 100)])
    labels = np.repeat([0, 1], 100)
    features = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    terms = dict(regions_per_class=1, adaptive=False, alignment_weight=0.0, diversity_weight=0.0, coverage_strata=2, class_budgets="proportional")
    own = select_coreset(scores, features, labels, 40, objective=UnseenObjective(**terms))
    shared = select_coreset(scores, features, labels, 40, objective=UnseenObjective(**terms, coverage_range="dataset"))
    upper = (labels == 0) & (scores >= 0.05)
    # own range: strata [0, 0.05) and [0.05, 0.1] get 10 each, so class 0 keeps all 10 of its upper half;
    # the data set's range [0, 1]: class 0 lies in the first stratum, whose 20 picks are a seeded draw of its 100
    assert (own.selected & upper).sum() == 10
    assert (shared.selected & upper).sum() < 10
    assert list(np.bincount(labels[shared.selected])) == [20, 20]


def test_coverage_tilt_leans_stratum_quotas_toward_populous_strata():
    counts = np.array([64, 16, 4, 0])
    # tilt 0: CCS's equal shares, the sparse stratum whole first: 4, then 20 // 2 = 10 each
    assert list(stratified_quotas(counts, 24)) == [10, 10, 4, 0]
    # tilt 1: as the sizes, 64:16:4 of 24 = 18.3, 4.6, 1.1: floors 18, 4, 1, the one left to the largest share
    assert list(stratified_quotas(counts, 24, 1.0)) == [19, 4, 1, 0]
    # tilt 0.5: as sqrt(size) = 8:4:2 of 24 = 13.7, 6.9, 3.4: floors 13, 6, 3; of the two left, 2 x 4/7 = 1.1 gives the
    # first one more, and the last one goes to the largest share
    assert list(stratified_quotas(counts, 24, 0.5)) == [15, 6, 3, 0]
    params = SelectParams(coverage_tilt="prune_ratio", prune_ratio=0.7)
    assert UnseenObjective.from_params(params).coverage_tilt == 0.7
    schedule = {0.5: 0.25, 0.8: 0.5}  # the entry with the largest prune ratio not above the run's; 0 below them all
    assert [SelectParams(coverage_tilt=schedule, prune_ratio=r).tilt for r in (0.3, 0.5, 0.7, 0.8, 0.9)] == [0.0, 0.25, 0.25, 0.5, 0.5]


def test_difficulty_power_schedule_sets_the_class_budgets_power_by_prune_ratio():
    """{0.8: 0}: power 1 below 80% pruning (the default below all entries), 0 from there, where a class keeps its share."""
    powers = [UnseenObjective.from_params(SelectParams(difficulty_power={0.8: 0.0}, prune_ratio=r)).difficulty_power for r in (0.5, 0.79, 0.8, 0.9)]
    assert powers == [1.0, 1.0, 0.0, 0.0]
    labels = np.repeat([0, 1], 50)
    hardness = np.where(labels == 1, 0.9, 0.1)
    assert list(difficulty_class_budgets(labels, hardness, 20, 2, power=1.0)) == [2, 18]  # sizes x 0.1 : 0.9 of 20
    assert list(difficulty_class_budgets(labels, hardness, 20, 2, power=0.0)) == list(class_budgets(labels, 20, 2)) == [10, 10]


def test_hard_cutoff_schedule_cuts_each_class_hardest_fraction_from_its_prune_ratio():
    """{0.9: 0.3}: auto (the label issues) below 90% pruning, each class's hardest 30% from there."""
    from unseen.selection.objective import cut_flags

    flagged = np.zeros(100, dtype=bool)
    flagged[[3, 97]] = True
    below, at = (SelectParams(hard_cutoff={0.9: 0.3}, prune_ratio=r) for r in (0.7, 0.9))
    assert (below.cutoff, at.cutoff) == ("auto", 0.3)
    assert UnseenObjective.from_params(below).hard_cutoff == 0.0 and cut_flags(below, flagged) is flagged
    assert UnseenObjective.from_params(at).hard_cutoff == 0.3 and cut_flags(at, flagged) is None
    labels = np.repeat([0, 1], 50)
    scores = np.tile(np.linspace(0.0, 1.0, 50), 2)  # each class: the hardest 15 are its last 15 rows
    features = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    picked = select_coreset(scores, features, labels, 10, objective=UnseenObjective.from_params(at)).selected
    assert picked.sum() == 10 and not picked[np.r_[35:50, 85:100]].any()
    cutting = dataclasses.replace(UnseenObjective.from_params(below), label_issues="cut")  # auto would keep 2% as a stratum
    cut = select_coreset(scores, features, labels, 10, objective=cutting, flagged=cut_flags(below, flagged))
    assert not cut.selected[[3, 97]].any() and cut.selected[np.r_[35:50, 85:100]].any()


def test_misclassified_cutoff_never_keeps_the_flagged_samples_however_few():
    """{0.9: misclassified}: from 90% pruning the flagged (held-out misclassified) samples are cut, even where auto would
    keep so few of them as a coverage stratum; below 90% auto applies."""
    from unseen.selection.objective import cut_flags

    flagged = np.zeros(100, dtype=bool)
    flagged[[3, 97]] = True  # 2%: auto keeps them as a stratum (under label_issue_rate 5%)
    below, at = (SelectParams(hard_cutoff={0.9: "misclassified"}, prune_ratio=r) for r in (0.7, 0.9))
    assert (below.cutoff, at.cutoff) == ("auto", "misclassified")
    objective = UnseenObjective.from_params(at)
    assert (objective.hard_cutoff, objective.label_issues) == (0.0, "cut") and cut_flags(at, flagged) is flagged
    labels = np.repeat([0, 1], 50)
    scores = np.tile(np.linspace(0.0, 1.0, 50), 2)
    features = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    stratum = select_coreset(scores, features, labels, 60, objective=UnseenObjective.from_params(below), flagged=cut_flags(below, flagged))
    cut = select_coreset(scores, features, labels, 60, objective=objective, flagged=cut_flags(at, flagged))
    assert stratum.selected[[3, 97]].all() and not cut.selected[[3, 97]].any() and cut.cut_as_hardest[[3, 97]].all()
    assert cut.selected.sum() == 60


def test_oversampled_cuts_the_misclassified_only_where_the_coverage_over_samples_them():
    """{0.9: oversampled}: where auto's coreset keeps a larger share of the misclassified samples than the data holds (a
    sparse hard tail that equal stratum shares keep whole), they are cut; where it keeps fewer, the coreset is auto's."""
    from unseen.selection import cut_if_oversampled
    from unseen.selection.objective import cut_flags

    params = SelectParams(hard_cutoff={0.9: "oversampled"}, prune_ratio=0.9)
    objective, auto = UnseenObjective.from_params(params), UnseenObjective.from_params(params.model_copy(update={"hard_cutoff": "auto"}))
    assert params.cutoff == "oversampled" and objective.cut_oversampled and not auto.cut_oversampled
    labels = np.repeat([0, 1], 100)
    scores = np.tile(np.r_[np.linspace(0.0, 0.3, 90), np.linspace(0.7, 1.4, 10)], 2)  # each class: 10 sparse hard samples
    features = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    flagged = cut_flags(params, np.zeros(200, dtype=bool))
    hard_tail, easiest = scores > 0.5, np.tile(np.arange(100) < 10, 2)
    plain = select_coreset(scores, features, labels, 40, objective=auto, flagged=flagged)
    assert plain.selected[hard_tail].sum() > 0.1 * 40  # auto keeps the tail (nearly) whole: more than its 10% share
    cut = cut_if_oversampled(scores, features, labels, 40, objective=objective, flagged=flagged, misclassified=hard_tail)
    assert cut.selected.sum() == 40 and not cut.selected[hard_tail].any() and cut.cut_as_hardest[hard_tail].all()
    assert plain.selected[easiest].sum() < 0.1 * 40  # auto keeps fewer of the easiest tenth than their share
    kept = cut_if_oversampled(scores, features, labels, 40, objective=objective, flagged=flagged, misclassified=easiest)
    np.testing.assert_array_equal(kept.selected, plain.selected)
    clean = UnseenObjective.from_params(params.model_copy(update={"hard_cutoff": "oversampled_noisy"}))  # no label issue cut: auto's
    assert clean.cut_oversampled == "oversampled_noisy"
    np.testing.assert_array_equal(cut_if_oversampled(scores, features, labels, 40, objective=clean, flagged=flagged, misclassified=hard_tail).selected, plain.selected)
    from unseen.selection import random_baseline, selection_report

    issues = np.zeros(200, dtype=bool)
    issues[99] = True  # a label issue in the tail: auto keeps it as a stratum (0.5% of the samples), the cut takes it
    for coreset, handled in ((cut_if_oversampled(scores, features, labels, 40, objective=objective, flagged=issues, misclassified=hard_tail), "cut"),
                             (cut_if_oversampled(scores, features, labels, 40, objective=auto, flagged=issues), "stratum")):
        report = selection_report(coreset, random_baseline(labels, coreset, 2, 0), features, features[:20], labels, flagged=issues, select=params,
                                  misclassified=hard_tail, proxy_check=(0.2, 0.1))
        assert report["label_issues_handled_as"] == handled and report["misclassified_kept"] == int(coreset.selected[hard_tail].sum())
        assert (report["labels_noisy_by_fold_models"], report["labels_noisy_by_proxy"]) == (0, 1)  # 0.5% flagged; a proxy share of 0.2


def test_oversampled_compares_with_the_samples_the_label_issue_cut_left():
    """Noisy labels: the cut takes most misclassified samples, so a coreset can hold fewer than the split's share and
    still over-sample those the cut left (the misclassified true samples and the noise it missed); they are cut too."""
    from unseen.selection import cut_if_oversampled
    from unseen.selection.objective import cut_flags

    params = SelectParams(hard_cutoff="oversampled", prune_ratio=0.8)
    objective, auto = UnseenObjective.from_params(params), UnseenObjective.from_params(params.model_copy(update={"hard_cutoff": "auto"}))
    labels = np.repeat([0, 1], 100)
    scores = np.tile(np.r_[np.linspace(0.0, 0.3, 40), np.linspace(0.7, 1.4, 10), np.linspace(1.5, 2.0, 50)], 2)
    features = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    issues = np.tile(np.arange(100) >= 50, 2)  # half of each class flagged: the labels count as noisy and are cut
    misclassified = np.tile(np.arange(100) >= 40, 2)  # the flagged and the sparse tail the cut left
    plain = select_coreset(scores, features, labels, 40, objective=auto, flagged=cut_flags(params, issues))
    assert plain.cut_as_hardest[issues].all() and misclassified[plain.selected].mean() <= misclassified.mean()
    assert misclassified[plain.selected].mean() > misclassified[~plain.cut_as_hardest].mean()
    cut = cut_if_oversampled(scores, features, labels, 40, objective=objective, flagged=cut_flags(params, issues), misclassified=misclassified)
    assert cut.selected.sum() == 40 and not cut.selected[misclassified].any() and cut.cut_as_hardest[misclassified].all()
    noisy = UnseenObjective.from_params(params.model_copy(update={"hard_cutoff": "oversampled_noisy"}))  # the label issues were cut
    np.testing.assert_array_equal(
        cut_if_oversampled(scores, features, labels, 40, objective=noisy, flagged=cut_flags(params, issues), misclassified=misclassified).selected, cut.selected,
    )


def test_greedy_picks_and_terms_on_a_hand_checked_case():
    from unseen.selection.picks import GainWeights, _greedy

    # target 0, so the MMD growth is |z|^2 + 2 z.S (S: the picked sum); gain = rank - alignment - 0.5 * clip(nearest)
    z = np.array([[-1, 2], [0, 1], [-1, 2], [-2, -2], [-2, 1]], dtype=np.float32)
    rank = np.array([1.0, 0.0, 1.0, 0.5, 0.5])
    region, quotas = np.array([1, 0, 0, 0, 1]), np.array([3, 1])
    weights = GainWeights(importance_weight=1.0, alignment_weight=1.0, diversity_weight=0.5)
    picks = _greedy(z, np.zeros(2), 1, rank, region, quotas, np.ones(5, dtype=bool), weights, np.zeros(5, dtype=bool))
    # step 0: growth 5,1,5,8,5 -> alignment 4/7,0,4/7,1,4/7 -> gains 3/7,0,3/7,-1/2,-1/14: rows 0 and 2 tie, row 0 wins;
    #         region 1 is full, so row 4 closes
    # step 1: growth 5,15,4 for rows 1-3 (closed row 4's 13 and picked row 0's 15 stay out) -> gains -13/22,-1/2,1/2: row 3
    # step 2: growth 1,11 for rows 1,2 (picked row 3's 20 stays out) -> gains -1/2,-1/2 (nearest 2, 5): the tie goes to row 1
    # step 3: row 2 alone, alignment 0
    assert picks["order"].tolist() == [0, 2, 3, 1, -1]
    np.testing.assert_array_equal(picks["importance_term"], [1.0, 0.0, 1.0, 0.5, np.nan])
    np.testing.assert_allclose(picks["alignment_term"], [4 / 7, 0.0, 0.0, 0.0, np.nan], rtol=1e-6)
    np.testing.assert_array_equal(picks["diversity_term"], [0.0, 1.0, 1.0, 0.0, np.nan])
    np.testing.assert_allclose(picks["class_mmd_after"], [np.sqrt(5), np.sqrt(10) / 3, 1.25, 1.5, np.nan], rtol=1e-6)


def test_without_alignment_or_diversity_each_cell_keeps_a_seeded_draw_or_its_hardest():
    from unseen.selection.picks import GainWeights, pick_in_cells

    z = np.array([[1, 0], [0, 1], [1, 1], [2, 0], [0, 2], [3, 0]], dtype=np.float32)
    rank = np.array([0.1, 0.9, 0.5, 0.3, 0.2, 0.8])
    cell, quotas, none = np.array([0, 0, 0, 1, 1, 1]), np.array([2, 1]), np.zeros(6, dtype=bool)
    hardest = GainWeights(importance_weight=1.0, alignment_weight=0.0, diversity_weight=0.0)
    picks = pick_in_cells(z, np.zeros((1, 2), dtype=np.float32), rank, cell, quotas, np.ones(6, dtype=bool), hardest, none, seed=0)
    # cell 0 keeps its two hardest (rows 1, 2), cell 1 its hardest (row 5), picked hardest first: rows 1, 5, 2
    assert picks["order"].tolist() == [-1, 0, 2, -1, -1, 1]
    np.testing.assert_allclose(picks["importance_term"], [np.nan, 0.9, 0.5, np.nan, np.nan, 0.8], rtol=1e-6)
    assert np.isnan(picks["alignment_term"]).all() and np.isnan(picks["diversity_term"]).all()  # off: not recorded
    # the running class mean after each pick: (0,1), (1.5,0.5), (4/3,2/3) against the target 0
    np.testing.assert_allclose(picks["class_mmd_after"][[1, 5, 2]], [1.0, np.sqrt(2.5), np.sqrt(20) / 3], rtol=1e-6)

    drawn = GainWeights(importance_weight=0.0, alignment_weight=0.0, diversity_weight=0.0)
    rows, cells = np.arange(400), np.arange(400) % 4
    available, fixed = rows % 8 != 0, rows == 1  # cell 0: 50 of its 100 rows unavailable; cell 1 holds the preselected row
    quotas = np.array([50, 99, 0, 20])  # cells 0 and 1 take every row they may take: a slip would show every time
    draws = [pick_in_cells(np.zeros((400, 2), dtype=np.float32), np.zeros((1, 2), dtype=np.float32), rows / 400, cells,
                           quotas, available, drawn, fixed, seed=seed)["order"] >= 0 for seed in (0, 0, 1)]
    assert (draws[0] == draws[1]).all() and (draws[0] != draws[2]).any()  # the same seed, the same picks
    assert np.bincount(cells[draws[0]], minlength=4).tolist() == [50, 99, 0, 20]
    assert not (draws[0] & ~available).any() and not draws[0][1]  # neither unavailable nor preselected rows
    with pytest.raises(ValueError, match="available rows for quotas"):  # more asked of a cell than it holds
        pick_in_cells(np.zeros((400, 2), dtype=np.float32), np.zeros((1, 2), dtype=np.float32), rows / 400, cells,
                      np.array([51, 0, 0, 0]), available, drawn, fixed, seed=0)


def test_coverage_class_budgets_split_the_budget_as_data_set_wide_strata_do():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.0, 0.0, 0.0, 0.1, 1.0, 0.9])
    # strata [0, 0.5) and [0.5, 1]: 4 and 2 samples; quotas 2 and 2 (the sparse stratum whole first), all of the
    # second stratum class 1's: budgets 2 and 2 where the class sizes would give 3 and 1
    assert coverage_class_budgets(labels, scores, 4, 2, strata=2).tolist() == [2, 2]
    assert class_budgets(labels, 4, 2).tolist() == [3, 1]
    # sample 4 unusable: the range shrinks to [0, 0.9], quotas 3 and 1
    assert coverage_class_budgets(labels, scores, 4, 2, strata=2, unusable=np.arange(6) == 4).tolist() == [3, 1]
    # both class 1 samples unusable: the strata cover class 0 alone, and class 1 keeps only the floor of 1 (no class left empty)
    assert coverage_class_budgets(labels, scores, 4, 2, strata=2, unusable=labels == 1).tolist() == [3, 1]
    # an earlier step's picks are a floor
    assert coverage_class_budgets(labels, scores, 4, 2, strata=2, floor=np.array([3, 0])).tolist() == [3, 1]
    scores, features, labels = _toy(n=1200)
    coreset = select_coreset(scores, features, labels, 300, objective=UnseenObjective(class_budgets="coverage", score_bins=5))
    expected = coverage_class_budgets(labels, scores, 300, int(labels.max()) + 1, strata=5)
    assert expected.tolist() != class_budgets(labels, 300, int(labels.max()) + 1).tolist()  # the toy tells the two apart
    assert np.bincount(labels[coreset.selected]).tolist() == expected.tolist()


def test_difficulty_class_budgets_give_the_harder_class_more_within_its_usable_samples():
    labels = np.repeat([0, 1], 4)
    hardness = np.repeat([0.25, 0.75], 4)
    # relative hardness 0.251/0.501 and 0.751/0.501: weights 2.0 and 6.0 share the 2 samples left after one per class
    assert difficulty_class_budgets(labels, hardness, 4, 2).tolist() == [1, 3]
    assert difficulty_class_budgets(labels, hardness, 4, 2, power=0.0).tolist() == [2, 2]
    unusable = np.array([0, 0, 0, 0, 1, 1, 0, 0], dtype=bool)  # class 1 can give 2 samples: class 0 takes the rest
    assert difficulty_class_budgets(labels, hardness, 4, 2, unusable=unusable).tolist() == [2, 2]
    assert difficulty_class_budgets(labels, hardness, 6, 2, unusable=unusable).tolist() == [4, 2]
    assert difficulty_class_budgets(labels, hardness, 4, 2, floor=np.array([2, 0])).tolist() == [2, 2]


def test_unseen_difficulty_class_budgets_keep_more_of_the_hard_class():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 300)
    features = rng.normal(size=(600, 4)) + labels[:, None]
    scores = rng.random(600) + labels  # class 1 is the harder one
    kept = select_coreset(scores, features, labels, 200, objective=UnseenObjective(regions_per_class=2, class_budgets="difficulty"))
    counts = np.bincount(labels[kept.selected], minlength=2)
    assert counts.sum() == 200 and counts[1] > counts[0]
    assert kept.class_budget[labels == 1][0] == counts[1]


def test_fourier_means_are_the_means_of_the_fourier_features_without_the_matrix():
    x = np.random.default_rng(0).normal(size=(1000, 8)).astype(np.float32)
    groups = {"all": np.ones(1000, dtype=bool), "odd": np.arange(1000) % 2 == 1, "none": np.zeros(1000, dtype=bool)}
    z = fourier_features(x, 64, 2.0, np.random.default_rng(3))
    means = fourier_means(x, groups, 64, 2.0, np.random.default_rng(3), chunk=128)  # the same draw, in 8 chunks
    assert np.allclose(means["all"], z.mean(0), atol=1e-6) and np.allclose(means["odd"], z[1::2].mean(0), atol=1e-6)
    assert not means["none"].any()


def test_select_added_keeps_the_earlier_coreset_and_picks_the_hardest_new_samples_to_fill_the_budget():
    """Six earlier samples of which 0-2 were kept, four new ones: the grown budget of 5 leaves 2 places, which the
    topk_hardest method gives to the hardest new samples (rows 7 and 9); no earlier sample changes."""
    from unseen.selection import select_added

    labels = np.zeros(10, dtype=np.int64)
    difficulty = np.array([0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 0.1, 0.9, 0.5, 0.7])
    kept, added = np.arange(10) < 3, np.arange(10) >= 6
    params = SelectParams(method="topk_hardest", prune_ratio=0.5, hard_cutoff=0.0)
    coreset = select_added(params, kept, added, difficulty, np.zeros((10, 2), np.float32), labels, num_classes=1)
    np.testing.assert_array_equal(np.flatnonzero(coreset.selected), [0, 1, 2, 7, 9])
    assert set(coreset.class_budget) == {5}


def test_select_added_with_unseen_fills_the_grown_budget_from_the_new_samples_only():
    from unseen.selection import select_added

    scores, features, labels = _toy(n=1200)
    kept, added = np.zeros(1200, dtype=bool), np.arange(1200) >= 1000
    kept[:1000:2] = True
    params = SelectParams(prune_ratio=0.5, hard_cutoff=0.0, steps=3)
    coreset = select_added(params, kept, added, scores, features, labels, num_classes=5)
    assert coreset.selected.sum() == 600 and coreset.selected[added].sum() == 100
    np.testing.assert_array_equal(coreset.selected[~added], kept[~added])
    assert (coreset.selection_rank[~added] == -1).all() and (coreset.selection_rank[added & coreset.selected] >= 0).all()
