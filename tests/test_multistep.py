"""Multi-step UNSEEN: the coreset grows to the budget and each step's model never scores what it trained on."""

import numpy as np
import pytest
import torch

from unseen.config import DataParams, ScoringParams, TrainRecipe
from unseen.data import load_dataset
from unseen.multistep import incremental_coreset, local_step_scorer
from unseen.selection import class_budgets


def test_incremental_coreset_grows_by_held_out_steps(fashion_root):
    dataset = load_dataset(DataParams(root=str(fashion_root), download=False, train_subset=600, test_subset=50))
    labels = dataset.train.labels.numpy()
    features = dataset.train.images.flatten(1).numpy().astype(np.float32)[:, ::8] / 255.0
    first_scores = np.random.default_rng(0).random(len(labels))
    reports = []
    scorer = local_step_scorer(
        dataset, ScoringParams(recipe=TrainRecipe(epochs=1), score_epochs=(1, 1)), "el2n", seed=0, device=torch.device("cpu")
    )
    coreset, joined = incremental_coreset(
        features, labels, first_scores, 240, scorer, steps=3, schedule="equal", num_classes=10, seed=0, on_step=reports.append
    )
    assert coreset.selected.sum() == 240
    assert list(np.bincount(labels[coreset.selected], minlength=10)) == list(class_budgets(labels, 240, 10))
    assert [(r.step, r.size) for r in reports] == [(1, 80), (2, 160), (3, 240)]
    assert [int((joined == step).sum()) for step in (1, 2, 3)] == [80, 80, 80]
    assert ((joined > 0) == coreset.selected).all()
    for report in reports[1:]:
        assert report.trained_on.sum() == report.size - 80  # trained on the coreset of the previous step
        assert np.array_equal(report.trained_on, (joined > 0) & (joined < report.step))  # so it scored only the rest


def test_a_scorer_that_trains_on_what_it_scores_is_refused():
    labels = np.repeat(np.arange(2), 20)
    features = np.random.default_rng(0).random((40, 4)).astype(np.float32)

    def leaky(step, kept):
        return np.zeros((~kept).sum()), np.ones(len(kept), dtype=bool)

    with pytest.raises(ValueError, match="step 2: the scoring model trained on samples it scores"):
        incremental_coreset(features, labels, np.zeros(40), 20, leaky, steps=2, schedule="equal", num_classes=2)
