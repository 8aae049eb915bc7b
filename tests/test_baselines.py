"""Baselines: one interface (exact budget, class balance, determinism, refusals) and each method's defining behaviour."""

import numpy as np
import pytest

from unseen.selection.baselines import (
    BASELINES,
    CLASS_BALANCED,
    ccs,
    moderate_ds,
    moderate_ds_class_balanced,
    random_class_balanced,
    random_uniform,
    topk_easiest,
    topk_hardest,
)
from unseen.selection.geometric import d2_forward_scores, d2_pruning, herding, kcenter_greedy
from unseen.budgets import class_budgets, random_subset, stratified_quotas

SEEDED = {"random", "random_class_balanced", "ccs", "kcenter_greedy", "d2_pruning"}  # the methods whose result depends on the seed (d2: strata of at most k samples are drawn)


def _toy(n=240, classes=3, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    features = (rng.normal(size=(n, dim)) + 2.0 * labels[:, None]).astype(np.float32)
    scores = rng.gamma(2.0, 0.2, n)
    return scores, features, labels


# ----------------------------------------------------------------------------------------------- shared interface


def test_registry_names_the_baselines():
    assert set(BASELINES) == {
        "random", "random_class_balanced", "topk_hardest", "topk_easiest", "ccs", "moderate_ds", "moderate_ds_class_balanced",
        "kcenter_greedy", "herding", "d2_pruning",
    }
    assert CLASS_BALANCED == set(BASELINES) - {"random", "ccs", "moderate_ds"}


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("budget", [3, 61, 239, 240])
def test_exact_budget_bool_mask_and_class_balance(name, budget):
    scores, features, labels = _toy()
    selected = BASELINES[name](scores, features, labels, budget, seed=1)
    assert selected.dtype == bool and selected.shape == labels.shape
    assert selected.sum() == budget
    if name in CLASS_BALANCED:
        assert list(np.bincount(labels[selected], minlength=3)) == list(class_budgets(labels, budget, 3))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_deterministic_for_a_seed(name):
    scores, features, labels = _toy()
    first = BASELINES[name](scores, features, labels, 50, seed=7)
    again = BASELINES[name](scores.copy(), features.copy(), labels.copy(), 50, seed=7)
    assert np.array_equal(first, again)
    other = BASELINES[name](scores, features, labels, 50, seed=8)
    assert np.array_equal(first, other) != (name in SEEDED)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_invalid_budgets_and_shapes_are_refused(name):
    scores, features, labels = _toy(n=30)
    method = BASELINES[name]
    with pytest.raises(ValueError, match="between 1 and the number of samples"):
        method(scores, features, labels, 31)
    with pytest.raises(ValueError, match="between 1 and the number of samples"):
        method(scores, features, labels, 0)
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        method(scores, features, labels, 2)
    with pytest.raises(ValueError, match="integer"):
        method(scores, features, labels, 3.5)
    with pytest.raises(ValueError, match="same samples"):
        method(scores[:-1], features, labels, 10)
    with pytest.raises(ValueError, match="finite"):
        method(np.where(np.arange(30) == 3, np.nan, scores), features, labels, 10)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_identical_features_equal_scores_and_a_tiny_class(name):
    labels = np.array([0] * 40 + [1] * 3)
    features = np.ones((43, 4), dtype=np.float32)
    scores = np.zeros(43)
    selected = BASELINES[name](scores, features, labels, 30)
    assert selected.sum() == 30
    assert np.array_equal(selected, BASELINES[name](scores, features, labels, 30))
    if name in CLASS_BALANCED:
        assert selected[labels == 1].sum() == 2  # proportional share 30 * 3 / 43 = 2.09
    full_tiny = BASELINES[name](scores, features, labels, 43)
    assert full_tiny.all()


@pytest.mark.parametrize("name", ["topk_hardest", "topk_easiest", "moderate_ds_class_balanced", "herding"])
def test_ties_go_to_the_lower_index(name):
    labels = np.zeros(10, dtype=int)
    selected = BASELINES[name](np.ones(10), np.zeros((10, 2)), labels, 4)
    assert list(np.flatnonzero(selected)) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------------------------- random


def test_random_is_uniform_over_the_whole_set_not_class_balanced():
    labels = np.array([0] * 50 + [1] * 50)
    features = np.zeros((100, 1))
    class_one = [random_uniform(np.zeros(100), features, labels, 10, seed=s)[labels == 1].sum() for s in range(30)]
    assert len(set(class_one)) > 2  # the split over classes varies with the draw
    hits = sum(random_uniform(np.zeros(100), features, labels, 10, seed=s).astype(int) for s in range(30))
    assert (hits > 0).sum() > 90  # 300 draws reach nearly every sample


def test_random_class_balanced_is_random_subset_with_class_budgets():
    scores, features, labels = _toy()
    expected = random_subset(labels, class_budgets(labels, 77, 3), 5)
    assert np.array_equal(random_class_balanced(scores, features, labels, 77, seed=5), expected)


# ----------------------------------------------------------------------------------------------- top-k


def test_topk_hardest_keeps_the_highest_scores_of_each_class_ties_by_index():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.2, 0.3, 5.0, 0.0, 4.0, 4.0])
    features = np.zeros((10, 2))
    assert list(class_budgets(labels, 5, 2)) == [3, 2]
    assert list(np.flatnonzero(topk_hardest(scores, features, labels, 5))) == [1, 2, 3, 6, 8]  # 0.9, 0.9, 0.5 | 5.0, 4.0 (index 8 before 9)
    assert list(np.flatnonzero(topk_easiest(scores, features, labels, 5))) == [0, 4, 5, 7, 8]  # 0.1, 0.2, 0.3 | 0.0, 4.0


# ----------------------------------------------------------------------------------------------- CCS


def test_ccs_cuts_the_hardest_and_fills_strata_by_stratified_quotas():
    scores = np.array([0.1] * 12 + [0.6] * 4 + [1.0] * 2 + [5.0] * 2)
    labels = np.arange(20) % 2
    features = np.zeros((20, 1))
    quotas = stratified_quotas(np.array([12, 6]), 8)  # strata [0.1, 0.55) and [0.55, 1.0] after the 5.0s are cut
    assert list(quotas) == [4, 4]
    for seed in range(5):
        selected = ccs(scores, features, labels, 8, hard_cutoff=0.1, bins=2, seed=seed)
        assert not selected[scores == 5.0].any()
        assert [selected[scores < 0.55].sum(), selected[(scores >= 0.55) & (scores <= 1.0)].sum()] == list(quotas)


def test_ccs_strata_span_the_score_range_on_skewed_scores():
    rng = np.random.default_rng(3)
    scores = rng.gamma(1.5, 0.3, 1000)
    labels = rng.integers(0, 4, 1000)
    selected = ccs(scores, np.zeros((1000, 1)), labels, 200, hard_cutoff=0.1, bins=10, seed=0)
    hardest = np.argsort(-scores)[:100]
    assert not selected[hardest].any()
    eligible = np.ones(1000, dtype=bool)
    eligible[hardest] = False
    edges = np.linspace(scores[eligible].min(), scores[eligible].max(), 11)
    stratum = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, 9)
    expected = stratified_quotas(np.bincount(stratum[eligible], minlength=10), 200)
    assert list(np.bincount(stratum[selected], minlength=10)) == list(expected)
    assert (expected > 0).sum() == 10


def test_ccs_shortens_the_cut_rather_than_miss_the_budget():
    scores = np.arange(20.0)
    selected = ccs(scores, np.zeros((20, 1)), np.zeros(20, dtype=int), 19, hard_cutoff=0.5, bins=4)
    assert selected.sum() == 19 and not selected[19]  # only the single hardest can go


def test_ccs_is_global_not_class_balanced():
    labels = np.array([0] * 10 + [1] * 10)
    scores = np.concatenate([np.zeros(10), np.arange(1.0, 11.0)])  # class 0 all easy, class 1 spread out
    counts = [ccs(scores, np.zeros((20, 1)), labels, 10, hard_cutoff=0.0, bins=2, seed=s)[labels == 1].sum() for s in range(10)]
    assert min(counts) >= 5 and max(counts) > 5  # the sparse hard stratum (all class 1) is kept whole


# ----------------------------------------------------------------------------------------------- Moderate-DS


def test_moderate_ds_class_balanced_keeps_the_median_distance_and_drops_both_ends():
    x = np.array([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0])
    features = np.concatenate([x, x + 100.0])[:, None]  # two classes with their own centres
    labels = np.repeat([0, 1], 7)
    selected = moderate_ds_class_balanced(np.zeros(14), features, labels, 4)
    assert list(np.flatnonzero(selected)) == [1, 5, 8, 12]  # distance 2 = the median of (3, 2, 1, 0, 1, 2, 3)
    assert not selected[[0, 3, 6, 7, 10, 13]].any()  # nearest (0) and farthest (3) from each centre are dropped


def test_moderate_ds_class_balanced_centre_mean_or_coordinate_median():
    features = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 100.0])[:, None]
    labels = np.zeros(7, dtype=int)
    # mean 16.43: distances 16.4 15.4 14.4 13.4 12.4 11.4 83.6, median 14.43 -> deviations 2 1 0 1 2 3 69.1
    assert list(np.flatnonzero(moderate_ds_class_balanced(np.zeros(7), features, labels, 5))) == [0, 1, 2, 3, 4]
    # coordinate median 3: distances 3 2 1 0 1 2 97, median 2 -> deviations 1 0 1 2 1 0 95
    assert list(np.flatnonzero(moderate_ds_class_balanced(np.zeros(7), features, labels, 5, center="median"))) == [0, 1, 2, 4, 5]
    with pytest.raises(ValueError, match="center"):
        moderate_ds_class_balanced(np.zeros(7), features, labels, 5, center="mode")


def test_moderate_ds_keeps_one_global_band_around_the_median_distance_to_the_class_median():
    # class 0 around 0 (median 0): distances 0 1 2 4 8; class 1 around 100 (median 100): distances 0 0.5 3 6 9
    features = np.array([0.0, 1.0, -2.0, 4.0, -8.0, 100.0, 100.5, 97.0, 106.0, 91.0])[:, None]
    labels = np.repeat([0, 1], 5)
    # all ten distances ranked: 0(0) 0(5) .5(6) 1(1) 2(2) 3(7) 4(3) 6(8) 8(4) 9(9); keep 4 from rank round(10 * 0.3) = 3
    assert list(np.flatnonzero(moderate_ds(np.zeros(10), features, labels, 4))) == [1, 2, 3, 7]  # not class-balanced: 3 + 1


# ----------------------------------------------------------------------------------------------- k-center greedy


def test_kcenter_greedy_picks_the_two_extremes_after_the_start():
    positions = np.array([0.0, 4.6, 4.8, 5.0, 5.2, 5.4, 10.0])  # the extremes are the farthest points from any start
    labels = np.zeros(7, dtype=int)
    starts = set()
    for seed in range(12):
        selected = kcenter_greedy(np.zeros(7), positions[:, None], labels, 3, seed=seed)
        assert selected[0] and selected[6] and selected.sum() == 3
        starts.add(int(np.flatnonzero(selected[1:6])[0]) if selected[1:6].any() else -1)
    assert len(starts) > 1  # the start point really is seeded


def test_kcenter_greedy_covers_clusters_per_class():
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    rng = np.random.default_rng(0)
    features = np.concatenate([c + 0.1 * rng.normal(size=(20, 2)) for c in centres] * 2)
    labels = np.repeat([0, 1], 60)
    cluster = np.tile(np.repeat(np.arange(3), 20), 2)
    selected = kcenter_greedy(np.zeros(120), features, labels, 6, seed=2)
    for c in (0, 1):
        assert sorted(cluster[selected & (labels == c)]) == [0, 1, 2]  # one centre per cluster in each class


# ----------------------------------------------------------------------------------------------- herding


def test_herding_first_pick_is_nearest_the_mean_and_its_mean_beats_random():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 3)) * np.array([1.0, 3.0, 0.5])
    labels = np.repeat([0, 1], 100)
    first = herding(np.zeros(200), features, labels, 2)
    for c in (0, 1):
        members = np.flatnonzero(labels == c)
        nearest = members[np.argmin(np.linalg.norm(features[members] - features[members].mean(0), axis=1))]
        assert list(np.flatnonzero(first & (labels == c))) == [nearest]
    selected = herding(np.zeros(200), features, labels, 20)
    for c in (0, 1):
        members = labels == c
        mu = features[members].mean(0)
        gap = np.linalg.norm(features[selected & members].mean(0) - mu)
        random_gaps = [np.linalg.norm(features[random_subset(labels, np.array([10, 10]), s) & members].mean(0) - mu) for s in range(20)]
        assert gap < min(random_gaps)


# ----------------------------------------------------------------------------------------------- D2 pruning


def test_d2_forward_message_passing_on_hand_computed_graph():
    # points 0, 1, 3 with k=1: nearest pairs 0-1 (d=1), 1-0, 3-1 (d=2); undirected edges 0-1, 1-3; median kNN distance 1
    forward = d2_forward_scores(np.array([1.0, 2.0, 3.0]), np.array([[0.0], [1.0], [3.0]]), k=1, gamma=1.0)
    e1, e2 = np.exp(-1.0), np.exp(-2.0)
    np.testing.assert_allclose(forward, [1 + 2 * e1, 2 + 1 * e1 + 3 * e2, 3 + 2 * e2])
    halved = d2_forward_scores(np.array([1.0, 2.0, 3.0]), np.array([[0.0], [1.0], [3.0]]), k=1, gamma=0.5)
    np.testing.assert_allclose(halved[0], 1 + 2 * np.exp(-0.5))


def _two_clusters():
    offsets = np.array([[0.0, 0.0], [0.01, 0.0], [0.0, 0.01], [0.01, 0.01]])
    features = np.concatenate([offsets, offsets + 10.0])
    return features, np.zeros(8, dtype=int), np.repeat([0, 1], 4)


def test_d2_pruning_picks_both_clusters_when_difficulty_is_equal():
    features, labels, cluster = _two_clusters()
    for k in (3, 5):  # k=3: each cluster is a clique; k=5: the clusters are also joined (more than k samples: no random draw)
        selected = d2_pruning(np.ones(8), features, labels, 2, k=k)
        assert sorted(cluster[selected]) == [0, 1]  # reverse message passing demotes the first pick's cluster


def test_d2_pruning_prefers_the_harder_cluster_first():
    features, labels, cluster = _two_clusters()
    scores = np.where(cluster == 1, 2.0, 1.0)
    assert list(cluster[d2_pruning(scores, features, labels, 1)]) == [1]
    assert sorted(cluster[d2_pruning(scores, features, labels, 2)]) == [0, 1]  # still diverse at the second pick
    assert list(cluster[d2_pruning(scores[::-1], features, labels, 1)]) == [0]


def test_d2_pruning_hard_cutoff_shift_and_refusals():
    scores, features, labels = _toy(n=60)
    selected = d2_pruning(scores, features, labels, 20, hard_cutoff=0.2)
    for c in range(3):
        members = np.flatnonzero(labels == c)
        hardest = members[np.argsort(-scores[members])[: int(0.2 * len(members))]]
        assert not selected[hardest].any()
    signed = scores - 1.0  # AUM-like: partly negative; shifted by its minimum, as the authors do
    assert np.array_equal(d2_pruning(signed, features, labels, 20), d2_pruning(signed - signed.min(), features, labels, 20))
    with pytest.raises(ValueError, match="hard_cutoff"):
        d2_pruning(scores, features, labels, 20, hard_cutoff=1.0)


def test_d2_pruning_covers_its_strata_like_ccs():
    scores = np.concatenate([np.full(18, 0.1), [0.9, 1.0]])  # two hard samples alone at the top of the range
    features = np.arange(20, dtype=float)[:, None]
    selected = d2_pruning(scores, features, np.zeros(20, dtype=int), 6, strata=2)
    assert selected[[18, 19]].all() and selected.sum() == 6  # the sparse hard stratum is kept whole


