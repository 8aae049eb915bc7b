"""The real Prefect flow end to end on 2,000 Fashion-MNIST samples, with a real MLflow SQLite store."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import tiny_params, write_params
from unseen.features import recorded_noisy_label_share
from unseen.tables import CORESET, FEATURES, SCORES, read_table


def _pipeline_params(tmp, fashion_root) -> dict:
    params = tiny_params(tmp, fashion_root)
    params["scores"].update(scorer="cnn", seen=True)  # the paper's CNN fold models end to end, and the classic seen scores
    params["features"].update(proxy_noisy_epochs=2)  # the proxy's noisy-label check runs, as params.yaml's does
    return params


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, fashion_root, prefect_api):
    from flows.prune import prune

    tmp = tmp_path_factory.mktemp("pipeline")
    params_file = write_params(tmp / "params.yaml", _pipeline_params(tmp, fashion_root))
    return tmp, params_file, prune(params_file=str(params_file))


def test_tables_have_their_schemas_and_row_counts(pipeline_run):
    tmp, _, result = pipeline_run
    outputs = tmp / "outputs"
    features = read_table(FEATURES, outputs / "features.parquet")
    assert len(features) == 2500 and (np.asarray(features.column("split")) == "train").sum() == 2000
    assert 0.0 <= recorded_noisy_label_share(outputs / "features.parquet") <= 1.0
    scores = read_table(SCORES, outputs / "scores.parquet")
    assert len(scores) == 2000 and {f[0] for f in scores.column("folds").to_pylist()} == {0, 1}
    for name in ("el2n", "grand", "loss", "entropy", "margin", "forgetting", "aum"):
        for variant in ("unseen", "seen"):
            assert np.isfinite(scores.column(f"{name}_{variant}").to_numpy()).all()
    report = json.loads((outputs / "scores_report.json").read_text())
    assert {"el2n_unseen_std", "el2n_seen_std", "el2n_spearman_seen_unseen", "aum_unseen_bins_holding_90pct"} <= set(report)
    coreset = read_table(CORESET, outputs / "coreset.parquet")
    assert len(coreset) == 2000
    assert coreset.column("selected").to_numpy(zero_copy_only=False).sum() == 1000
    assert coreset.column("random_selected").to_numpy(zero_copy_only=False).sum() == 1000
    metrics = json.loads((outputs / "metrics.json").read_text())
    assert metrics["coreset_size"] == 1000 and metrics["train_size"] == 2000
    assert 0.1 < metrics["test_accuracy_coreset"] <= 1 and 0.1 < metrics["test_accuracy_random"] <= 1
    assert [report.name for report in result["stages"]] == ["features", "scores", "select", "retrain"]


def test_mlflow_has_parent_children_and_registered_model(pipeline_run):
    import mlflow
    from mlflow import MlflowClient

    tmp, _, result = pipeline_run
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = client.get_run(result["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["select.prune_ratio"] == "0.5"
    assert parent.data.tags["unseen.cpu_kernels"] and parent.data.tags["unseen.blas_kernels"].startswith("OpenBLAS ")  # a coreset's bits depend on them
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'")
    names = sorted(run.info.run_name for run in children)
    assert names == [  # the default selection takes three steps: a step model before each later one
        "features", "retrain/coreset", "retrain/random", "scores/seen_r0", "scores/unseen_r0_f0", "scores/unseen_r0_f1", "select/step-2", "select/step-3",
    ]
    fold_run = next(run for run in children if run.info.run_name == "scores/unseen_r0_f0")
    assert len(client.get_metric_history(fold_run.info.run_id, "scored_accuracy")) == 2  # one point per recorded epoch
    assert "plots/scores_distributions.png" in [a.path for a in client.list_artifacts(result["run_id"], "plots")]

    version = client.get_model_version_by_alias("tiny-coreset-model", "current")
    assert set(version.tags) >= {"git_commit", "data_fingerprint", "dvc_md5.features", "dvc_md5.scores", "dvc_md5.coreset"}
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model("models:/tiny-coreset-model@current")
    pixels = torch.rand(7, 1, 28, 28) * 255
    assert model(pixels).shape == (7, 10)  # loads without pickle, any batch size


def test_the_run_shows_its_tables_model_and_summary_in_mlflow_and_on_the_flow_run(pipeline_run):
    from mlflow import MlflowClient
    from prefect.artifacts import Artifact

    from tasks.lineage import file_md5

    tmp, _, result = pipeline_run
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    parent = client.get_run(result["run_id"])
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    logged = {}
    for item in parent.inputs.dataset_inputs:
        tags = {tag.key: tag.value for tag in item.tags}
        logged[(item.dataset.name, tags["mlflow.data.context"])] = (item.dataset.digest, tags.get("unseen.params_hash"))
    assert set(logged) == {("features", "written"), ("skipped_images", "written"), ("scores", "written"), ("coreset", "written"), ("coreset_diff", "written")}  # once each: where it was made
    outputs = tmp / "outputs"
    assert logged[("scores", "written")][0] == file_md5(outputs / "scores.parquet")  # the DVC md5 as digest
    assert logged[("coreset", "written")][1] == read_table(CORESET, outputs / "coreset.parquet").schema.metadata[b"unseen.params_hash"].decode()
    note = parent.data.tags["mlflow.note.content"]
    assert "test accuracy, coreset model" in note and "| retrain |" in note
    assert f"#/experiments/{parent.info.experiment_id}/runs/{result['run_id']}?workflowType=machine_learning" in note  # the runs view
    version = client.get_model_version_by_alias("tiny-coreset-model", "current")
    (linked,) = [output.model_id for output in parent.outputs.model_outputs]  # the parent run shows the registered model
    assert linked in version.source and client.get_run(client.get_logged_model(linked).source_run_id).info.run_name == "retrain/coreset"
    summary = Artifact.get("prune-summary")
    assert "margin over random" in summary.data and "label issues the held-out models find" in summary.data and summary.flow_run_id is not None
    budgets = json.loads(Artifact.get("class-budgets").data)
    assert len(budgets) == 10 and sum(int(row["kept"]) for row in budgets) == 1000 and {"pool", "label_issues_cut"} <= set(budgets[0])


def test_same_params_give_the_same_coreset_and_cached_folds_are_reused(pipeline_run, fashion_root):
    from flows.prune import prune

    tmp, _, first = pipeline_run
    again = tmp / "again"
    again.mkdir()
    prune(params_file=str(write_params(again / "params.yaml", _pipeline_params(again, fashion_root))))
    for table in ("scores.parquet", "coreset.parquet"):
        assert pq.read_table(tmp / "outputs" / table).equals(pq.read_table(again / "outputs" / table))
    rerun = prune(params_file=str(tmp / "params.yaml"))
    scores_report = next(report for report in rerun["stages"] if report.name == "scores")
    assert scores_report.compute_seconds < 3.0  # every scoring model came from the per-model cache
    assert pq.read_table(tmp / "outputs" / "scores.parquet").equals(pq.read_table(again / "outputs" / "scores.parquet"))


def test_select_stage_runs_baselines_and_multi_step_with_tracked_steps(pipeline_run):
    from mlflow import MlflowClient

    from flows.prune import stage

    tmp, params_file, _ = pipeline_run
    baseline = stage(name="select", params_file=str(params_file), overrides=["select.method=ccs"])
    coreset = read_table(CORESET, tmp / "outputs" / "coreset.parquet")
    assert set(coreset.column("method").to_pylist()) == {"ccs"} and coreset.column("selected").to_numpy(zero_copy_only=False).sum() == 1000
    assert baseline["stages"][0].metrics["coreset_size"] == 1000

    result = stage(name="select", params_file=str(params_file), overrides=["select.steps=2"])
    coreset = read_table(CORESET, tmp / "outputs" / "coreset.parquet")
    steps = np.asarray(coreset.column("step"))
    selected = coreset.column("selected").to_numpy(zero_copy_only=False)
    assert (steps == 1).sum() == 500 and (steps == 2).sum() == 500 and ((steps > 0) == selected).all()
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    children = client.search_runs([client.get_run(result["run_id"]).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'")
    assert [run.info.run_name for run in children] == ["select/step-2"]
    report = json.loads((tmp / "outputs" / "select_report.json").read_text())
    assert {"mmd_to_train_coreset", "mmd_to_test_random", "coreset_per_class", "region_keep_ratio_histogram"} <= set(report)
    assert report["label_issues_flagged"] > 0  # label_issues auto: a stratum under label_issue_rate of the samples, else cut
    assert report["label_issues_handled_as"] == ("stratum" if report["label_issues_flagged_fraction"] < 0.05 else "cut")
    share = recorded_noisy_label_share(tmp / "outputs" / "features.parquet")  # both verdicts on the labels, side by side
    assert report["proxy_noisy_label_share"] == round(share, 4) and report["labels_noisy_by_proxy"] == int(share >= 0.1)
    assert report["labels_noisy_by_fold_models"] == int(report["label_issues_flagged_fraction"] >= 0.05)
    handled = {}
    for handling in ("cut", "stratum"):
        stage(name="select", params_file=str(params_file), overrides=[f"select.label_issues={handling}", "select.steps=1"])
        handled[handling] = json.loads((tmp / "outputs" / "select_report.json").read_text())
        assert handled[handling]["label_issues_handled_as"] == handling and handled[handling]["label_issues_flagged"] == report["label_issues_flagged"]
    assert handled["cut"]["label_issues_kept"] == 0 and 0 < handled["stratum"]["label_issues_kept"] <= report["label_issues_flagged"]


def test_the_summary_says_what_a_hard_cutoff_schedule_cuts():
    from flows.summary import result_lines
    from unseen.config import Params

    metrics = {"coreset_size": 100, "train_size": 1000, "test_accuracy_coreset": 0.8, "test_accuracy_random": 0.79, "model_version": 1}
    lines = {r: "\n".join(result_lines(Params.model_validate({"select": {"prune_ratio": r, "hard_cutoff": {0.9: 0.3}}}), metrics))
             for r in (0.5, 0.9)}
    assert "hardest 30% by el2n_unseen never kept" in lines[0.9] and "hardest" not in lines[0.5]
    flagged = {"label_issues_flagged": 110, "label_issues_flagged_fraction": 0.11, "label_issues_as_stratum": 0, "label_issues_kept": 0}
    lines = {r: "\n".join(result_lines(Params.model_validate({"select": {"prune_ratio": r, "hard_cutoff": {0.9: "misclassified"}}}), metrics | flagged))
             for r in (0.5, 0.9)}
    assert "samples the held-out models misclassify: 110 (11.0% of the train split), cut: 0 of them kept" in lines[0.9]
    assert "label issues the held-out models find: 110" in lines[0.5] and "misclassify" not in lines[0.5]
    assert "label_issues_by: cleanlab" in lines[0.5]  # the typed default; params.yaml's is probability
    verdicts = {"proxy_noisy_label_share": 0.061, "labels_noisy_by_fold_models": 1, "labels_noisy_by_proxy": 0}
    auto, by_hand = (Params.model_validate({"select": {"label_issues": value}}) for value in ("auto", "cut"))
    line = "\n".join(result_lines(auto, metrics | flagged | verdicts))
    assert "the fold models flag 11.0% of the train split (noisy from select.label_issue_rate 5%), the proxy's first epoch 6.1% (clean" in line
    assert "set select.label_issues to cut (noisy) or stratum (curated)" in line
    assert "disagree" not in "\n".join(result_lines(auto, metrics | flagged | verdicts | {"labels_noisy_by_proxy": 1}))
    assert "disagree" not in "\n".join(result_lines(by_hand, metrics | flagged | verdicts))  # the user decided
    oversampled = {"misclassified": 110, "misclassified_kept": 5}
    line = "\n".join(result_lines(Params.model_validate({"select": {"prune_ratio": 0.9, "hard_cutoff": "oversampled"}}), metrics | oversampled))
    assert "samples the held-out models misclassify: 110 (11.0% of the train split), 5 kept (5.0% of the coreset;" in line
