"""Re-pruning a grown collection: the first 1,600 Fashion-MNIST train samples, then the first 2,000 (a prefix stands in
for a collection that grows). New samples are scored by the fold models that never saw them, old samples keep their
scores, the coreset diff matches the two coresets, a scheduled run on unchanged data changes nothing, and a crash
in the middle of an increment resumes."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

import tasks.scores
from tests.conftest import tiny_params, write_params
from unseen.config import IncrementParams
from unseen.features import recorded_noisy_label_share
from unseen.increment import ScoringState, plan_increment, plan_selection
from unseen.scores import ModelRecord, ScoringModel, combine_records, load_record
from unseen.tables import CORESET, CORESET_DIFF, SCORES, read_table

FIRST, GROWN = 1600, 2000
PER_SAMPLE = ("el2n", "grand", "loss", "entropy", "margin", "forgetting", "aum")  # label_issue is a whole-set estimate


def _state(**changes) -> ScoringState:
    values = dict(folder=".", recipe="r", features_folder=".", trained_on=4, train_size=4, weights=True)
    return ScoringState(**{**values, **changes})


@pytest.mark.parametrize(
    ("ids", "labels", "state", "policy", "expected"),
    [
        ([0, 1, 2, 3, 4], [0, 1, 0, 1, 0], _state(), IncrementParams(), "incremental"),
        ([0, 1, 2, 3], [0, 1, 0, 1], _state(), IncrementParams(), "incremental"),
        ([0, 1, 2, 3, 4, 5], [0, 1, 0, 1, 0, 1], _state(), IncrementParams(), "grew by 50%"),
        ([0, 1, 2, 3, 4], [0, 1, 0, 1, 0], _state(), IncrementParams(enabled=False), "increment.enabled is false"),
        ([0, 1, 2, 3, 4], [0, 1, 0, 1, 0], None, IncrementParams(), "no earlier scoring models"),
        ([0, 1, 2, 3, 4], [0, 1, 0, 1, 0], _state(recipe="other"), IncrementParams(), "params other than"),
        ([0, 1, 2, 3, 4], [0, 1, 0, 1, 0], _state(weights=False), IncrementParams(), "kept no weights"),
        ([0, 1, 3, 4], [0, 1, 1, 0], _state(), IncrementParams(), "1 samples left the collection (first sample_id 2)"),
        ([0, 1, 2, 3, 4], [0, 1, 1, 1, 0], _state(), IncrementParams(), "1 labels changed (first sample_id 2)"),
    ],
)
def test_plan_says_incremental_only_when_the_cached_models_may_score_the_new_samples(ids, labels, state, policy, expected):
    plan = plan_increment(
        state, recipe="r", policy=policy, extractor="proxy", sample_ids=np.array(ids), labels=np.array(labels),
        state_ids=np.arange(4) if state else None, state_labels=np.array([0, 1, 0, 1]) if state else None,
    )
    assert plan.mode == expected if expected == "incremental" else expected in plan.reason
    if plan.incremental:
        np.testing.assert_array_equal(plan.new_ids, np.setdiff1d(ids, np.arange(4)))


EARLIER = dict(before_recipe="r", before_ids=np.arange(4), before_selected=np.array([True, False, True, False]),
               before_scores=np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32))


@pytest.mark.parametrize(
    ("ids", "scores", "earlier", "policy", "budget", "expected"),
    [
        ([3, 0, 5, 1, 2, 4], [0.4, 0.1, 0.9, 0.2, 0.3, 0.5], EARLIER, IncrementParams(), 4, "keep"),
        ([3, 0, 5, 1, 2, 4], [0.4, 0.1, 0.9, 0.2, 0.3, 0.5], EARLIER, IncrementParams(selection="reselect"), 3, "increment.selection is reselect"),
        ([3, 0, 5, 1, 2, 4], [0.4, 0.1, 0.9, 0.2, 0.3, 0.5], {}, IncrementParams(), 3, "no earlier coreset"),
        ([3, 0, 5, 1, 2, 4], [0.4, 0.1, 0.9, 0.2, 0.3, 0.5], {**EARLIER, "before_recipe": "other"}, IncrementParams(), 3, "params other than"),
        ([3, 0, 5, 1, 2, 4], [0.4, 0.1, 0.9, 0.2, 0.3, 0.5], {**EARLIER, "before_recipe": None}, IncrementParams(), 3, "older version"),
        ([3, 0, 5, 1, 4], [0.4, 0.1, 0.9, 0.2, 0.5], EARLIER, IncrementParams(), 3, "1 samples left the collection (first sample_id 2)"),
        ([3, 0, 1, 2], [0.4, 0.1, 0.2, 0.3], EARLIER, IncrementParams(), 2, "no samples were added"),
        ([3, 0, 5, 1, 2, 4], [0.4, 0.1, 0.9, 0.2, 0.35, 0.5], EARLIER, IncrementParams(), 3, "scored again"),
        ([3, 0, 5, 1, 2, 4], [0.4, 0.1, 0.9, 0.2, 0.3, 0.5], EARLIER, IncrementParams(), 5, "leaves 3 places beside the earlier 2 picks"),
        ([3, 0, 5, 1, 2, 4, 7], [0.4, 0.1, 0.9, 0.2, 0.3, 0.5, 0.6], EARLIER, IncrementParams(), 3, "needs between 2 (one per class among them)"),
    ],
)
def test_a_grown_collection_keeps_its_coreset_only_while_the_earlier_samples_keep_their_scores(ids, scores, earlier, policy, budget, expected):
    labels = np.array(ids) % 2
    plan = plan_selection(policy, recipe="r", sample_ids=np.array(ids), labels=labels, scores=np.array(scores), budget=budget, **earlier)
    assert plan.mode == expected if expected == "keep" else expected in plan.reason
    if plan.mode == "keep":
        np.testing.assert_array_equal(plan.kept, [False, True, False, False, True, False])  # sample_ids 0 and 2, in this run's order
        np.testing.assert_array_equal(plan.added, [False, False, True, False, False, True])


def test_a_sample_held_out_by_both_fold_models_gets_their_mean_and_names_both():
    """Sample 2 was added after two fold models trained (each on the other's sample): both score it; its score is
    their mean, its fold -1, its scored_by both names."""
    logits = {0: np.log([[[0.9, 0.1], [0.6, 0.4]]]), 1: np.log([[[0.2, 0.8], [0.5, 0.5]]])}
    records = [
        ModelRecord(ScoringModel("unseen", 0, fold), np.array([fold, 2]), np.array([fold, 0]), (1,), logits[fold].astype(np.float32),
                    np.ones((1, 2), np.float32), np.array([fold == 1, fold == 0, False]))
        for fold in (0, 1)
    ]
    table = combine_records(records, ["loss"], np.array([0, 1, 2]), np.array([0, 1, 0]))
    np.testing.assert_allclose(table.columns["loss_unseen"], [-np.log(0.9), -np.log(0.8), (-np.log(0.6) - np.log(0.5)) / 2], rtol=1e-6)
    np.testing.assert_array_equal(table.folds[:, 0], [0, 1, -1])
    assert list(table.scored_by) == ["unseen_r0_f0", "unseen_r0_f1", "unseen_r0_f0,unseen_r0_f1"]


def _grow_params(folder, fashion_root, first: int):
    return tiny_params(folder, fashion_root, data={"train_subset": None, "train_first": first}, features={"proxy_noisy_epochs": 2})


@pytest.fixture(scope="module")
def grown(tmp_path_factory, fashion_root, prefect_api):
    """A run on the first 1,600 samples, its tables kept aside, then a run on the first 2,000 in the same folder that
    stops after selection (no retraining: the registered model keeps its one version)."""
    from flows.prune import prune

    folder = tmp_path_factory.mktemp("grow")
    params_file = write_params(folder / "params.yaml", _grow_params(folder, fashion_root, FIRST))
    first = prune(params_file=str(params_file))
    before = folder / "before"
    shutil.copytree(folder / "outputs", before)
    write_params(params_file, _grow_params(folder, fashion_root, GROWN))
    return folder, before, first, prune(params_file=str(params_file), until="select")


def _column(table, name):
    return table.column(name).to_numpy(zero_copy_only=False)


def test_new_samples_are_scored_only_by_fold_models_that_never_saw_them(grown):
    folder, _, first, second = grown
    scores = read_table(SCORES, folder / "outputs" / "scores.parquet")
    ids, new = _column(scores, "sample_id"), _column(scores, "sample_id") >= FIRST
    assert len(ids) == GROWN and new.sum() == GROWN - FIRST
    assert set(_column(scores, "scored_by")[new]) == {"unseen_r0_f0,unseen_r0_f1"}
    assert set(_column(scores, "scored_by")[~new]) == {"unseen_r0_f0", "unseen_r0_f1"}
    assert all(folds == [-1] for folds in scores.column("folds").to_pylist()[FIRST:])
    [cache] = [p for p in (folder / "outputs" / "cache" / "scores").iterdir() if p.is_dir() and (p / "state.json").read_text().count('"incremental": true')]
    for fold in (0, 1):
        record = load_record(cache / f"unseen_r0_f{fold}.parquet", params_hash=None, data_fingerprint=None, train_size=GROWN)
        assert not record.trained_on[FIRST:].any() and set(range(FIRST, GROWN)) <= set(record.sample_ids.tolist())
        assert record.trained_on[:FIRST].sum() == FIRST // 2  # the fold model trained on the other half of the first 1,600
    meta = scores.schema.metadata
    assert meta[b"unseen.scoring"].startswith(b"incremental: 400 new samples") and meta[b"unseen.scoring_models_from"] != cache.name.encode()
    scores_stage = {r.name: r for r in second["stages"]}["scores"]
    assert scores_stage.metrics == {"scored_incrementally": 1.0, "new_samples_scored": 400.0}
    assert "incremental: 400 new samples" in scores_stage.notes[0]
    assert {r.name: r for r in first["stages"]}["scores"].metrics["scored_incrementally"] == 0.0


def test_the_grown_run_keeps_its_extractors_noisy_label_check(grown):
    """The earlier extractor embeds the new samples, so its first-epoch check stays the proxy's verdict on the labels."""
    folder, before, _, _ = grown
    share = recorded_noisy_label_share(before / "features.parquet")
    assert share is not None and recorded_noisy_label_share(folder / "outputs" / "features.parquet") == share


def test_old_samples_keep_their_scores(grown):
    folder, before, _, _ = grown
    old, now = (read_table(SCORES, path / "scores.parquet") for path in (before, folder / "outputs"))
    for name in PER_SAMPLE:
        np.testing.assert_array_equal(_column(now, f"{name}_unseen")[:FIRST], _column(old, f"{name}_unseen"))


def test_the_diff_table_matches_the_two_coresets(grown):
    folder, before, _, second = grown
    old, now = (read_table(CORESET, path / "coreset.parquet") for path in (before, folder / "outputs"))
    diff = read_table(CORESET_DIFF, folder / "outputs" / "coreset_diff.parquet")
    ids = _column(diff, "sample_id")
    np.testing.assert_array_equal(ids, np.arange(GROWN))
    np.testing.assert_array_equal(_column(diff, "before"), np.isin(ids, _column(old, "sample_id")[_column(old, "selected")]))
    np.testing.assert_array_equal(_column(diff, "after"), np.isin(ids, _column(now, "sample_id")[_column(now, "selected")]))
    reasons = _column(diff, "reason")
    assert set(reasons[FIRST:]) <= {"new sample, selected", "new sample, not selected"}
    assert (reasons == "kept").sum() == (_column(diff, "before") & _column(diff, "after")).sum()
    assert [r.name for r in second["stages"]] == ["features", "scores", "select"]
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    assert [v.version for v in client.search_model_versions("name = 'tiny-coreset-model'")] == [1]  # retraining was off
    select = {r.name: r for r in second["stages"]}["select"].metrics
    assert select["coreset_added"] == (_column(diff, "after") & ~_column(diff, "before")).sum()
    assert select["new_samples"] == GROWN - FIRST


def test_the_grown_run_keeps_the_earlier_coreset_and_selects_among_the_new_samples(grown):
    folder, before, _, second = grown
    old, now = (read_table(CORESET, path / "coreset.parquet") for path in (before, folder / "outputs"))
    earlier = _column(now, "sample_id") < FIRST
    np.testing.assert_array_equal(_column(now, "selected")[earlier], _column(old, "selected"))
    np.testing.assert_array_equal(_column(now, "step")[earlier], np.where(_column(old, "selected"), 0, -1))
    select = {r.name: r for r in second["stages"]}["select"]
    assert select.metrics["selected_incrementally"] == 1 and select.metrics["coreset_dropped"] == 0
    assert _column(now, "selected").sum() == GROWN // 2 and _column(now, "selected")[~earlier].sum() == (GROWN - FIRST) // 2
    assert select.notes == [f"the earlier coreset's {FIRST // 2} samples kept, the {GROWN - FIRST} new samples selected among themselves "
                            "(the earlier samples kept the scores it was selected by; increment.selection keep)"]


def test_a_scheduled_run_on_unchanged_data_changes_nothing(grown):
    from flows.prune import prune

    folder, _, _, second = grown
    outputs = sorted(p for p in (folder / "outputs").rglob("*") if p.is_file() and p.name != ".lock")
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = len(client.search_runs([second["experiment_id"]]))
    result = prune(params_file=str(folder / "params.yaml"), only_if_changed=True, until="select")
    assert result["skipped"]
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps
    assert len(client.search_runs([second["experiment_id"]])) == runs


def test_a_crash_in_the_middle_of_an_increment_resumes(grown, tmp_path, fashion_root, prefect_api, monkeypatch):
    """The second fold model fails while scoring the new samples; the rerun extends only that one and gives the same
    scores as the uninterrupted increment."""
    from flows.prune import stage

    folder, before, *_ = grown
    shutil.copytree(before, tmp_path / "outputs")  # the outputs folder after the run on the first 1,600 samples
    params_file = write_params(tmp_path / "params.yaml", _grow_params(tmp_path, fashion_root, GROWN))
    stage(name="features", params_file=str(params_file))
    real, calls, crashed = tasks.scores.score_new_samples, [], []

    def fails_on_f1(path, *args, **kwargs):
        calls.append(path.name)
        if path.name == "unseen_r0_f1.weights.pt" and not crashed:
            crashed.append(path.name)
            raise RuntimeError("injected crash")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tasks.scores, "score_new_samples", fails_on_f1)
    with pytest.raises(Exception, match="injected crash"):
        stage(name="scores", params_file=str(params_file))
    assert read_table(SCORES, tmp_path / "outputs" / "scores.parquet").num_rows == FIRST  # the table before the increment, untouched
    calls.clear()
    stage(name="scores", params_file=str(params_file))
    assert calls == ["unseen_r0_f1.weights.pt"]
    resumed, uninterrupted = (pq.read_table(path / "outputs" / "scores.parquet") for path in (tmp_path, folder))
    assert resumed.equals(uninterrupted)
