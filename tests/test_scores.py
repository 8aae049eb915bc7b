"""Scoring engine: every score on hand-computed values, the unseen property, repeats, plug-in scores, determinism."""

import sys
import types

import numpy as np
import pytest
import torch

from unseen.config import DataParams, ScoresParams, SelectParams, TrainRecipe
from unseen.data import load_dataset
from unseen.scores import SCORES, ModelRecord, ScoreError, ScoringModel, combine_records, difficulty, register_score, resolve_score, scoring_models, stratified_folds, train_scoring_model
from unseen.scores.functions import aum, el2n, entropy, forgetting, grand, label_issue_flags, label_rank, loss, margin

# two samples, two epochs, three classes; labels 0 and 2
LOGITS = np.array(
    [
        [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]],
        [[0.0, 1.0, 0.5], [0.0, 0.0, 2.0]],
    ]
)
LABELS = np.array([0, 2])
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)


def test_el2n_by_hand():
    probs = np.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]])
    # sample 0: (0.3, 0.2, 0.1) -> sqrt(0.14); sample 1 (label 0): (0.9, 0.1, 0.8) -> sqrt(1.46)
    np.testing.assert_allclose(el2n(probs, None, np.array([0, 0])), [np.sqrt(0.14), np.sqrt(1.46)])


def test_grand_scales_the_error_by_the_last_layer_input_norm():
    probs = np.array([[[0.7, 0.2, 0.1]]])
    norms = np.array([[2.0]])
    # gradient of CE w.r.t. W (= (p - y) h^T) and b (= p - y): ||p - y|| * sqrt(||h||^2 + 1)
    np.testing.assert_allclose(grand(probs, None, np.array([0]), norms), [np.sqrt(0.14) * np.sqrt(5.0)])


def test_loss_entropy_margin_by_hand():
    np.testing.assert_allclose(loss(PROBS, LOGITS, LABELS), [(-np.log(PROBS[0, 0, 0]) - np.log(PROBS[1, 0, 0])) / 2, (-np.log(PROBS[0, 1, 2]) - np.log(PROBS[1, 1, 2])) / 2])
    expected_entropy = -(PROBS * np.log(PROBS)).sum(-1).mean(0)
    np.testing.assert_allclose(entropy(PROBS, LOGITS, LABELS), expected_entropy)
    # last epoch: sample 0 true logit 0.0, best other 1.0 -> -1; sample 1 true 2.0, best other 0.0 -> 2
    np.testing.assert_allclose(margin(PROBS, LOGITS, LABELS), [-1.0, 2.0])


def test_aum_averages_margins_and_is_negative_for_a_mislabel():
    # sample 0: epoch 1 margin 2-1 = 1, epoch 2: 0-1 = -1 -> 0; sample 1: 1-3 = -2, 2-0 = 2 -> 0
    np.testing.assert_allclose(aum(PROBS, LOGITS, LABELS), [0.0, 0.0])
    always_wrong = np.array([[[0.0, 2.0]], [[0.0, 3.0]]])
    assert aum(None, always_wrong, np.array([0]))[0] == pytest.approx(-2.5)


def test_label_rank_and_the_flags_it_limits():
    # mean probabilities over the two epochs: sample 0 (label 0) (0.5, 0.3, 0.2) -> rank 1; sample 1 (label 2)
    # (0.1, 0.6, 0.3) -> rank 2; sample 2 (label 0) (0.1, 0.2, 0.7) -> rank 3
    probs = np.array([[[0.6, 0.3, 0.1], [0.1, 0.5, 0.4], [0.1, 0.1, 0.8]], [[0.4, 0.3, 0.3], [0.1, 0.7, 0.2], [0.1, 0.3, 0.6]]])
    ranks = label_rank(probs, None, np.array([0, 2, 0]))
    np.testing.assert_array_equal(ranks, [1.0, 2.0, 3.0])
    columns = {"label_issue_unseen": np.array([1.0, 1.0, 1.0]), "loss_unseen": np.array([0.1, 3.0, 3.0]), "label_rank_unseen": ranks}
    assert list(label_issue_flags(columns, "el2n_unseen")) == [True, True, True]
    assert list(label_issue_flags(columns, "el2n_unseen", max_probability=0.1)) == [False, True, True]  # exp(-3) < 0.1
    assert list(label_issue_flags(columns, "el2n_unseen", max_probability=0.1, min_rank=3)) == [False, False, True]


def test_cut_flags_follow_the_hard_cutoff_kind():
    """auto: the label issues under their limits; misclassified: a negative held-out margin, whatever cleanlab says."""
    from unseen.scores import cut_flag_columns, cut_flags_of, oversampled_candidates_of

    columns = {"label_issue_unseen": np.array([1.0, 1.0, 0.0, 0.0]), "loss_unseen": np.array([0.1, 3.0, 1.0, 0.2]),
               "margin_unseen": np.array([-0.5, -2.0, -0.1, 0.0])}
    auto, misclassified, fraction = (SelectParams(hard_cutoff=cut) for cut in ("auto", "misclassified", 0.2))
    assert cut_flags_of(columns, auto).tolist() == [False, True, False, False]  # exp(-0.1) is above the 0.1 limit
    assert cut_flags_of(columns, misclassified).tolist() == [True, True, True, False]  # a zero margin is a tie, not a mistake
    assert cut_flags_of(columns, fraction) is None
    assert [cut_flag_columns(p) for p in (auto, misclassified, fraction)] == [["label_issue_unseen", "loss_unseen"], ["margin_unseen"], []]
    seen = SelectParams(hard_cutoff="misclassified", score="el2n_seen")
    assert cut_flag_columns(seen) == ["margin_seen"]
    for kind in ("oversampled", "oversampled_noisy"):  # auto's label issues, and the misclassified it may cut too
        oversampled = SelectParams(hard_cutoff=kind)
        assert cut_flags_of(columns, oversampled).tolist() == cut_flags_of(columns, auto).tolist()
        assert oversampled_candidates_of(columns, oversampled).tolist() == [True, True, True, False]
        assert oversampled_candidates_of(columns, auto) is None and cut_flag_columns(oversampled)[-1] == "margin_unseen"


def test_cut_by_probability_takes_every_sample_under_the_limit_only_where_the_labels_are_noisy():
    """label_issues_by probability: with as many flagged samples as label noise leaves, every sample whose label the
    held-out models give under the limit is cut, flagged or not; below label_issue_rate (clean labels) cleanlab's flags
    stay as they are, sample for sample."""
    from unseen.scores import cut_flags_of

    columns = {"label_issue_unseen": np.array([1.0, 1.0, 0.0, 0.0, 0.0]), "loss_unseen": np.array([3.0, 0.1, 3.0, 0.2, 2.5])}
    noisy, noisy_by_probability = SelectParams(label_issue_rate=0.2), SelectParams(label_issue_rate=0.2, label_issues_by="probability")
    assert cut_flags_of(columns, noisy).tolist() == [True, False, False, False, False]
    assert cut_flags_of(columns, noisy_by_probability).tolist() == [True, False, True, False, True]  # exp(-2.5) = 0.082 < 0.1
    clean_by_probability = SelectParams(label_issue_rate=0.3, label_issues_by="probability")  # 1 flagged of 5 is under 0.3
    assert cut_flags_of(columns, clean_by_probability).tolist() == cut_flags_of(columns, noisy).tolist()
    unlimited = SelectParams(label_issue_rate=0.2, label_issue_max_probability=None)  # no limit: every flagged sample, either way
    assert cut_flags_of(columns, unlimited.model_copy(update={"label_issues_by": "probability"})).tolist() == [True, True, False, False, False]


def test_forgetting_counts_transitions_and_ranks_never_learned_highest():
    # correctness over 4 epochs: learned-forgotten-learned-forgotten (2 events); always right (0); never right (-> 4)
    right, wrong = [1.0, 0.0], [0.0, 1.0]
    logits = np.array([[right, right, wrong], [wrong, right, wrong], [right, right, wrong], [wrong, right, wrong]])
    values = forgetting(None, logits, np.array([0, 0, 0]))
    np.testing.assert_array_equal(values, [2.0, 0.0, 4.0])
    assert values.argmax() == 2


def test_directions_orient_every_score_to_higher_is_harder():
    assert not SCORES["margin"].higher_is_harder and not SCORES["aum"].higher_is_harder and SCORES["el2n"].higher_is_harder
    np.testing.assert_array_equal(difficulty(np.array([1.0, -2.0]), "aum_unseen"), [-1.0, 2.0])
    np.testing.assert_array_equal(difficulty(np.array([1.0, -2.0]), "el2n_seen"), [1.0, -2.0])


def test_folds_are_stratified_and_partition_the_data():
    labels = np.repeat(np.arange(5), 40)
    fold_of = stratified_folds(labels, 4, seed=0)
    for fold in range(4):
        assert list(np.bincount(labels[fold_of == fold])) == [10] * 5
    with pytest.raises(ValueError, match="smallest class"):
        stratified_folds(np.array([0, 0, 0, 1, 1]), 3, seed=0)


def _record(model, ids, labels, logits, trained_on):
    return ModelRecord(model, np.array(ids), np.array(labels), (1,), np.array(logits, dtype=np.float32)[None], np.ones((1, len(ids)), np.float32), np.array(trained_on))


def test_combine_averages_repeats_keeps_spread_and_refuses_a_seen_record_labelled_unseen():
    good, bad = [4.0, 0.0], [0.0, 4.0]
    records = [
        _record(ScoringModel("unseen", 0, 0), [10], [0], [good], [False, True]),
        _record(ScoringModel("unseen", 0, 1), [11], [0], [bad], [True, False]),
        _record(ScoringModel("unseen", 1, 0), [10], [0], [bad], [False, True]),
        _record(ScoringModel("unseen", 1, 1), [11], [0], [bad], [True, False]),
    ]
    table = combine_records(records, ["margin"], np.array([10, 11]), np.array([0, 0]))
    np.testing.assert_allclose(table.columns["margin_unseen"], [0.0, -4.0])  # sample 10: (4 + -4) / 2
    np.testing.assert_allclose(table.columns["margin_unseen_std"], [4.0, 0.0])
    np.testing.assert_array_equal(table.folds, [[0, 0], [1, 1]])
    leaky = [_record(ScoringModel("unseen", 0, 0), [10], [0], [good], [True, True])]
    with pytest.raises(ValueError, match="trained on samples it scores"):
        combine_records(leaky, ["margin"], np.array([10, 11]), np.array([0, 0]))


def test_a_registered_function_by_import_path_is_scored():
    module = types.ModuleType("my_scores")

    def confidence_gap(probs_per_epoch, logits_per_epoch, labels):
        return 1.0 - probs_per_epoch.max(axis=-1).mean(axis=0)

    module.confidence_gap = confidence_gap
    sys.modules["my_scores"] = module
    spec = resolve_score("my_scores:confidence_gap")
    assert spec.name == "confidence_gap" and SCORES["confidence_gap"] is spec
    records = [_record(ScoringModel("unseen", 0, 0), [1, 2], [0, 1], [[3.0, 0.0], [0.0, 0.0]], [False, False])]
    table = combine_records(records, ["confidence_gap"], np.array([1, 2]), np.array([0, 1]))
    np.testing.assert_allclose(table.columns["confidence_gap_unseen"], [1 - np.exp(3) / (np.exp(3) + 1), 0.5], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown score 'nope'"):
        resolve_score("nope")


def test_a_score_that_returns_nan_is_refused_by_name_and_sample_and_not_retried():
    from prefect.states import Failed

    from tasks.common import _retry_unless_input_error

    def broken(probs_per_epoch, logits_per_epoch, labels):
        return np.where(labels == 1, np.nan, 0.0)

    register_score("broken", broken)
    records = [_record(ScoringModel("unseen", 0, 0), [1, 2], [0, 1], [[3.0, 0.0], [0.0, 0.0]], [False, False])]
    with pytest.raises(ScoreError, match=r"score 'broken' returned 1 NaN or inf values on unseen_r0_f0, first at sample_id 2") as info:
        combine_records(records, ["broken"], np.array([1, 2]), np.array([0, 1]))
    assert not _retry_unless_input_error(None, None, Failed(data=info.value))  # a retry cannot mend the function
    assert _retry_unless_input_error(None, None, Failed(data=ConnectionResetError("transient")))


@pytest.fixture(scope="module")
def small_dataset(fashion_root):
    return load_dataset(DataParams(root=str(fashion_root), download=False, train_subset=600, test_subset=100))


def test_unseen_models_never_score_what_they_trained_on(small_dataset):
    params = ScoresParams(scorer="cnn", folds=3, repeats=2, seen=True, recipe=TrainRecipe(epochs=2), score_epochs=(1, 2))
    models = scoring_models(params)
    assert [m.name for m in models] == ["unseen_r0_f0", "unseen_r0_f1", "unseen_r0_f2", "unseen_r1_f0", "unseen_r1_f1", "unseen_r1_f2", "seen_r0", "seen_r1"]
    records = [train_scoring_model(small_dataset, m, params, seed=0, device=torch.device("cpu")) for m in models]
    position = {int(s): i for i, s in enumerate(small_dataset.train.sample_ids)}
    for record in records:
        scored = np.array([position[int(s)] for s in record.sample_ids])
        if record.model.kind == "unseen":
            assert not record.trained_on[scored].any()
            assert record.trained_on.sum() + len(scored) == len(small_dataset.train)
        else:
            assert record.trained_on.all() and len(scored) == len(small_dataset.train)
        assert record.logits.shape == (2, len(scored), 10) and record.record_seconds > 0
    table = combine_records(records, ["el2n", "aum", "forgetting"], small_dataset.train.sample_ids, small_dataset.train.labels.numpy())
    for r in range(2):  # every sample held out exactly once per repeat, the two partitions differ
        assert set(table.folds[:, r]) == {0, 1, 2}
    assert not np.array_equal(table.folds[:, 0], table.folds[:, 1])
    assert {"el2n_unseen", "el2n_unseen_std", "el2n_seen", "aum_seen_std", "forgetting_unseen"} <= set(table.columns)
    assert (table.columns["el2n_unseen_std"] > 0).any()


def test_scoring_is_deterministic_for_a_seed(small_dataset):
    params = ScoresParams(scorer="cnn", folds=2, recipe=TrainRecipe(epochs=1), score_epochs=(1, 1))
    model = ScoringModel("unseen", 0, 0)
    a = train_scoring_model(small_dataset, model, params, seed=5, device=torch.device("cpu"))
    b = train_scoring_model(small_dataset, model, params, seed=5, device=torch.device("cpu"))
    c = train_scoring_model(small_dataset, model, params, seed=6, device=torch.device("cpu"))
    np.testing.assert_array_equal(a.logits, b.logits)
    assert not np.allclose(a.logits, c.logits)


def test_label_issue_flags_flipped_labels_from_out_of_sample_probabilities():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 5, 1000)
    flipped = rng.random(1000) < 0.2
    labels = np.where(flipped, (true + rng.integers(1, 5, 1000)) % 5, true)
    logits = 3.0 * np.eye(5)[true] + rng.normal(size=(1000, 5))  # a model that learned the true classes
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True))[None]
    flags = resolve_score("label_issue")(probs, logits[None], labels, np.ones((1, 1000)))
    assert set(np.unique(flags)) == {0.0, 1.0}
    assert flags[flipped].mean() > 0.8 and flags[~flipped].mean() < 0.1
    memorized = (np.exp(5.0 * np.eye(5)[labels]) / np.exp(5.0 * np.eye(5)[labels]).sum(1, keepdims=True))[None]
    assert resolve_score("label_issue")(memorized, memorized, labels, np.ones((1, 1000))).sum() == 0  # a seen model fits the flips


def test_label_issue_flags_keep_the_flagged_samples_whose_label_keeps_a_fair_probability():
    from unseen.scores.functions import label_issue_flags

    columns = {"label_issue_unseen": np.array([1.0, 1.0, 0.0, 0.5]), "loss_unseen": -np.log([0.01, 0.3, 0.001, 0.04])}
    assert label_issue_flags(columns, "el2n_unseen").tolist() == [True, True, False, True]
    # below 5%: the first (1%) and the last (4%, flagged by half the repeats); the 30% one is ambiguous, not flipped
    assert label_issue_flags(columns, "el2n_unseen", max_probability=0.05).tolist() == [True, False, False, True]


def test_label_issues_of_a_fold_missing_a_class_leave_the_probabilities_as_they_were():
    """A class with no sample in the fold is dropped from the probabilities cleanlab sees (it requires every class to
    occur), on a copy: the caller's mean probabilities are not changed."""
    from cleanlab.filter import find_label_issues

    rng = np.random.default_rng(2)
    true = rng.integers(0, 4, 600)
    labels = np.where(rng.random(600) < 0.2, (true + 1) % 4, true)
    logits = 3.0 * np.eye(6)[true] + rng.normal(size=(600, 6))  # classes 4 and 5 occur in no label
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)[None]
    before = probs.copy()
    flags = resolve_score("label_issue")(probs, None, labels, np.ones((1, 600)))
    kept = probs[0][:, :4] / probs[0][:, :4].sum(1, keepdims=True)
    np.testing.assert_array_equal(flags, find_label_issues(labels, kept, filter_by="prune_by_noise_rate", n_jobs=1))
    np.testing.assert_array_equal(probs, before)
    assert flags.sum() > 50


def test_scores_computed_in_chunks_equal_scores_computed_whole(monkeypatch):
    """A record is scored in chunks of samples (bounded memory at any size); the values do not depend on the chunk."""
    from unseen.scores import scoring as records_module

    rng = np.random.default_rng(1)
    n, classes = 400, 6
    labels = rng.integers(0, classes, n)
    logits = (rng.normal(size=(3, n, classes)) + 2.5 * np.eye(classes)[labels]).astype(np.float32)
    record = ModelRecord(ScoringModel("unseen", 0, 0), np.arange(n), labels, (1, 2, 3), logits, rng.random((3, n)).astype(np.float32), np.zeros(n, bool))
    specs = [SCORES[name] for name in ("el2n", "grand", "loss", "entropy", "margin", "aum", "forgetting", "label_issue")]
    whole = records_module.record_scores(record, specs)
    monkeypatch.setattr(records_module, "CHUNK_LOGITS", 7 * 3 * classes)  # chunks of 7 samples
    chunked = records_module.record_scores(record, specs)
    for name in whole:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-6, err_msg=name)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(whole["el2n"], el2n(probs, logits, labels), rtol=1e-6)


def _clusters(n: int = 900, classes: int = 3, noise: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    x = rng.normal(size=(n, 8)).astype(np.float32) + 3.0 * np.eye(classes, 8, dtype=np.float32)[true]
    flipped = rng.random(n) < noise
    return x, np.where(flipped, (true + 1) % classes, true), flipped


def test_probe_scores_from_embeddings_are_held_out_deterministic_and_find_flipped_labels():
    from sklearn.metrics import roc_auc_score

    from unseen.config import ProbeRecipe
    from unseen.scores import embedding_scores, probe_record

    x, labels, flipped = _clusters()
    params = ScoresParams(scorer="probe", folds=3, repeats=2, seen=True, probe=ProbeRecipe(epochs=4, score_epochs=(2, 4), batch_size=64))
    table = embedding_scores(x, labels, params, seed=0)
    again = embedding_scores(x, labels, params, seed=0)
    for name, values in table.columns.items():
        np.testing.assert_array_equal(values, again.columns[name], err_msg=name)
    assert set(table.folds[:, 0]) == {0, 1, 2} and {"el2n_unseen_std", "aum_seen", "forgetting_unseen", "label_issue_unseen"} <= set(table.columns)
    assert roc_auc_score(flipped, table.columns["el2n_unseen"]) > 0.9
    assert table.cut_flags(SelectParams(label_issue_max_probability=None))[flipped].mean() > 0.6
    record = probe_record(x, labels, np.arange(len(x)), ScoringModel("unseen", 0, 1), params, num_classes=3, seed=0, device=torch.device("cpu"))
    assert not record.trained_on[record.sample_ids].any() and record.logits.shape == (3, len(record.sample_ids), 3)
    with pytest.raises(ValueError, match="one embedding row per train sample"):
        probe_record(x[:-1], labels, np.arange(len(x)), ScoringModel("unseen", 0, 1), params, num_classes=3, seed=0)


def test_the_probe_scorer_trains_on_the_embeddings_of_the_train_split(small_dataset):
    from unseen.config import ProbeRecipe

    params = ScoresParams(scorer="probe", folds=2, probe=ProbeRecipe(epochs=10, score_epochs=(9, 10), batch_size=32))
    with pytest.raises(ValueError, match="features.parquet"):
        train_scoring_model(small_dataset, ScoringModel("unseen", 0, 0), params, seed=0)
    embeddings = small_dataset.train.images.flatten(1).float().numpy()[:, ::7]
    record = train_scoring_model(small_dataset, ScoringModel("unseen", 0, 0), params, seed=0, embeddings=embeddings)
    assert record.logits.shape == (2, len(record.sample_ids), 10) and record.epochs == (9, 10)
    assert (record.logits.argmax(-1)[-1] == record.labels).mean() > 0.6  # a pixel probe learns Fashion-MNIST classes


def test_seen_scores_use_their_published_windows_and_held_out_scores_keep_theirs():
    """Defaults for the CNN's 10 epochs: seen EL2N and GraNd at epoch 1 (a tenth of training), seen forgetting over every
    epoch, seen AUM over epochs 1-3; every held-out score, and every other seen score, over score_epochs [6, 10]."""
    params = ScoresParams(scorer="cnn", seen=True)
    assert [params.window("seen", name) for name in ("el2n", "grand", "forgetting", "aum", "loss")] == [(1, 1), (1, 1), (1, 10), (1, 3), (6, 10)]
    assert {params.window("unseen", name) for name in ("el2n", "forgetting", "aum")} == {(6, 10)}
    assert params.recorded_window("seen") == (1, 10) and params.recorded_window("unseen") == (6, 10)
    at_200 = ScoresParams(scorer="cnn", recipe=TrainRecipe(epochs=200), score_epochs=(100, 200))
    assert at_200.window("seen", "el2n") == (20, 20) and at_200.window("seen", "aum") == (1, 66)
    assert ScoresParams(seen_windows={}).recorded_window("seen") == ScoresParams().probe.score_epochs  # one window for all
    with pytest.raises(ValueError, match=r"seen_windows.el2n: \[0.5, 0.2\] must be fractions of training"):
        ScoresParams(seen_windows={"el2n": (0.5, 0.2)})


def test_each_score_of_a_seen_record_averages_only_its_window():
    """Hand-checked: two samples, epochs 1-4; sample 0 is right from epoch 2 on, sample 1 right at 1 and 3 only."""
    from unseen.scores.scoring import record_scores

    params = ScoresParams(scorer="cnn", recipe=TrainRecipe(epochs=4), score_epochs=(3, 4), seen_windows={"el2n": (0.25, 0.25), "forgetting": (0.0, 1.0)})
    right, wrong = [2.0, 0.0], [0.0, 2.0]
    logits = np.array([[wrong, right], [right, wrong], [right, right], [right, wrong]], dtype=np.float32)  # (epochs, samples, classes)
    record = ModelRecord(ScoringModel("seen", 0), np.array([0, 1]), np.array([0, 0]), (1, 2, 3, 4), logits, np.ones((4, 2), np.float32), np.ones(2, bool))
    specs = [SCORES[name] for name in ("el2n", "forgetting", "loss")]
    scores = record_scores(record, specs, lambda name: params.window("seen", name))
    p_right = np.exp(2) / (np.exp(2) + 1)
    np.testing.assert_allclose(scores["el2n"], [np.sqrt(2) * p_right, np.sqrt(2) * (1 - p_right)], rtol=1e-6)  # epoch 1 only
    np.testing.assert_array_equal(scores["forgetting"], [0, 2])  # epochs 1-4: sample 1 is forgotten at 2 and at 4
    np.testing.assert_allclose(scores["loss"], [np.log1p(np.exp(-2)), (np.log1p(np.exp(-2)) + np.log1p(np.exp(2))) / 2], rtol=1e-6)  # 3-4


def test_a_seen_probe_records_every_epoch_its_scores_need_and_a_fold_probe_only_its_window():
    from unseen.config import ProbeRecipe
    from unseen.scores import probe_record

    x, labels, _ = _clusters()
    params = ScoresParams(scorer="probe", seen=True, probe=ProbeRecipe(epochs=4, score_epochs=(3, 4), batch_size=64))
    seen = probe_record(x, labels, np.arange(len(x)), ScoringModel("seen", 0), params, num_classes=3, seed=0, device=torch.device("cpu"))
    fold = probe_record(x, labels, np.arange(len(x)), ScoringModel("unseen", 0, 0), params, num_classes=3, seed=0, device=torch.device("cpu"))
    assert seen.epochs == (1, 2, 3, 4) and seen.logits.shape[0] == 4
    assert fold.epochs == (3, 4) and fold.logits.shape[0] == 2
