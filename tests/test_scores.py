"""Held-out scoring: EL2N values, fold structure, and the unseen property."""

import numpy as np
import pytest
import torch

from unseen.config import DataParams, ScoringParams, TrainRecipe
from unseen.data import load_dataset
from unseen.scores import FoldOutputs, el2n, score_fold, stratified_folds, unseen_scores


def test_el2n_matches_hand_computed_values():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    labels = np.array([0, 0])
    # sample 0: (0.3, 0.2, 0.1) -> sqrt(0.14); sample 1: (0.9, 0.1, 0.8) -> sqrt(1.46)
    np.testing.assert_allclose(el2n(probs, labels), [np.sqrt(0.14), np.sqrt(1.46)], rtol=1e-6)


def test_unseen_scores_average_the_epoch_window():
    probs = np.zeros((3, 2, 2), dtype=np.float32)
    probs[:, :, 0] = [[1.0, 0.5], [0.5, 0.5], [0.0, 1.0]]
    probs[:, :, 1] = 1 - probs[:, :, 0]
    outputs = FoldOutputs(0, np.array([7, 3]), np.array([0, 0]), probs, np.array([1, 2]))
    columns = unseen_scores([outputs], (2, 3))
    # sorted by sample_id: id 3 is the second sample; epochs 2..3 -> EL2N of (0.5) and (1.0) for id 7, (0.5) and (0) for id 3
    assert list(columns["sample_id"]) == [3, 7]
    np.testing.assert_allclose(columns["el2n_unseen"], [np.sqrt(0.5) / 2, (np.sqrt(0.5) + np.sqrt(2)) / 2], rtol=1e-6)


def test_folds_are_stratified_and_partition_the_data():
    labels = np.repeat(np.arange(5), 40)
    fold_of = stratified_folds(labels, 4, seed=0)
    assert set(fold_of) == {0, 1, 2, 3}
    for fold in range(4):
        assert list(np.bincount(labels[fold_of == fold])) == [10] * 5
    assert not np.array_equal(fold_of, stratified_folds(labels, 4, seed=1))


def test_more_folds_than_smallest_class_is_refused():
    with pytest.raises(ValueError, match="smallest class"):
        stratified_folds(np.array([0, 0, 0, 1, 1]), 3, seed=0)


@pytest.fixture(scope="module")
def small_dataset(fashion_root):
    return load_dataset(DataParams(root=str(fashion_root), download=False, train_subset=600, test_subset=100))


def test_fold_model_never_trains_on_what_it_scores(small_dataset):
    params = ScoringParams(folds=3, recipe=TrainRecipe(epochs=2), score_epochs=(1, 2))
    labels = small_dataset.train.labels.numpy()
    fold_of = stratified_folds(labels, 3, seed=0)
    seen_epochs = []
    outputs = score_fold(small_dataset, fold_of, 1, params, seed=0, device=torch.device("cpu"), on_epoch=lambda e, s: seen_epochs.append(e))
    assert seen_epochs == [1, 2]
    assert outputs.probs.shape == (2, (fold_of == 1).sum(), 10)
    np.testing.assert_allclose(outputs.probs.sum(-1), 1.0, atol=1e-4)
    assert set(outputs.sample_ids) == set(small_dataset.train.sample_ids[fold_of == 1])
    assert not set(outputs.sample_ids) & set(outputs.train_sample_ids)
    assert len(outputs.sample_ids) + len(outputs.train_sample_ids) == len(labels)


def test_scoring_is_deterministic_for_a_seed(small_dataset):
    params = ScoringParams(folds=2, recipe=TrainRecipe(epochs=1), score_epochs=(1, 1))
    fold_of = stratified_folds(small_dataset.train.labels.numpy(), 2, seed=0)
    a = score_fold(small_dataset, fold_of, 0, params, seed=5, device=torch.device("cpu"))
    b = score_fold(small_dataset, fold_of, 0, params, seed=5, device=torch.device("cpu"))
    c = score_fold(small_dataset, fold_of, 0, params, seed=6, device=torch.device("cpu"))
    np.testing.assert_array_equal(a.probs, b.probs)
    assert not np.allclose(a.probs, c.probs)
