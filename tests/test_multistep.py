"""Multi-step UNSEEN: the coreset grows to the budget and each step's model never scores what it trained on."""

import numpy as np
import pytest
import torch

from unseen.budgets import class_budgets
from unseen.config import DataParams, ScoresParams, SelectParams, TrainRecipe
from unseen.data import load_dataset
from unseen.scores import ModelRecord, ScoringModel, score_step, step_scores
from unseen.selection import select_multistep, step_difficulty


def test_multistep_grows_by_held_out_steps(fashion_root):
    dataset = load_dataset(DataParams(root=str(fashion_root), download=False, train_subset=600, test_subset=50))
    labels = dataset.train.labels.numpy()
    features = dataset.train.images.flatten(1).numpy().astype(np.float32)[:, ::8] / 255.0
    first_scores = np.random.default_rng(0).random(len(labels))
    scoring = ScoresParams(scorer="cnn", recipe=TrainRecipe(epochs=1), score_epochs=(1, 1))
    records = []

    def scorer(step, kept):
        scores, record = score_step(dataset, step, kept, scoring, "el2n", seed=0, device=torch.device("cpu"))
        records.append((step, kept.copy(), record))
        return scores

    params = SelectParams(prune_ratio=0.6, steps=3, hard_cutoff=0.0, class_budgets="proportional")
    coreset, joined = select_multistep(params, first_scores, features, labels, scorer, num_classes=10, seed=0)
    assert coreset.selected.sum() == 240
    assert list(np.bincount(labels[coreset.selected], minlength=10)) == list(class_budgets(labels, 240, 10))
    assert [int((joined == step).sum()) for step in (1, 2, 3)] == [80, 80, 80]
    assert ((joined > 0) == coreset.selected).all()
    assert [step for step, _, _ in records] == [2, 3]
    for step, kept, record in records:
        assert np.array_equal(record.trained_on, (joined > 0) & (joined < step))  # trained on the coreset of the previous step
        assert np.array_equal(kept, record.trained_on) and len(record.sample_ids) == (~kept).sum()  # and scored only the rest


def test_a_step_record_that_trained_on_what_it_scores_is_refused():
    kept = np.arange(10) < 4
    leaky = ModelRecord(
        model=ScoringModel("step", 1), sample_ids=np.arange(4, 10), labels=np.zeros(6, dtype=np.int64), epochs=(1,),
        logits=np.zeros((1, 6, 2), dtype=np.float32), embedding_norms=np.ones((1, 6), dtype=np.float32), trained_on=np.ones(10, dtype=bool),
    )
    with pytest.raises(ValueError, match="step-2: not held out"):
        step_scores(leaky, kept, "el2n")


def test_step_difficulty_replaces_the_scores_of_samples_not_yet_kept():
    held_out = np.arange(6, dtype=np.float64)
    joined = np.array([1, -1, 2, -1, 1, -1])
    difficulty = step_difficulty(held_out, joined, [np.array([10.0, 11.0, 12.0, 13.0]), np.array([20.0, 21.0, 22.0])])
    assert list(difficulty) == [0.0, 20.0, 11.0, 21.0, 4.0, 22.0]  # step 2 scored 1, 2, 3, 5; step 3 scored 1, 3, 5


def test_multistep_difficulty_class_budgets_keep_every_earlier_pick():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 100)
    features = rng.normal(size=(300, 4)) + labels[:, None]
    first_scores = rng.random(300) + 0.5 * labels

    def scorer(step, kept):  # later steps find class 0 the hardest: its budget rises, the earlier picks stay
        return rng.random(int((~kept).sum())) + 2.0 * (labels[~kept] == 0)

    params = SelectParams(prune_ratio=0.5, steps=3, hard_cutoff=0.0, class_budgets="difficulty", regions_per_class=2)
    coreset, joined = select_multistep(params, first_scores, features, labels, scorer, num_classes=3, seed=0)
    assert coreset.selected.sum() == 150 and ((joined > 0) == coreset.selected).all()
    first = np.bincount(labels[joined == 1], minlength=3)
    assert first[2] > first[0]  # step 1 follows the first scores: class 2 is the hardest
    assert np.bincount(labels[coreset.selected], minlength=3)[0] > first[0]
