"""The retrain stage as Prefect tasks: the target model trained on the coreset and on the same-size random subset,
the coreset model saved and registered in MLflow, and metrics.json."""

from __future__ import annotations

import time

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import GPU_TAG, dataset_for, epoch_logger, shrinking_on_oom
from tasks.lineage import file_md5, git_commit
from tasks.runners import set_torch_threads
from tasks.tracking import Tracker
from unseen.checks import coreset_input
from unseen.config import Params
from unseen.io import write_json
from unseen.models import PixelClassifier, load_model, save_model
from unseen.retrain import train_and_test


@task(name="retrain", cache_policy=NO_CACHE, tags=[GPU_TAG])
def retrain_task(params: Params, tracker: Tracker, subset: str) -> dict[str, float | str]:
    """Train the target model from scratch on the coreset ('coreset') or on the same-size random subset ('random')."""
    set_torch_threads(params.orchestration)
    dataset = dataset_for(params)
    table = coreset_input(params, dataset)
    chosen = table.column("selected" if subset == "coreset" else "random_selected").to_numpy(zero_copy_only=False)
    sample_ids = table.column("sample_id").to_numpy()[chosen]
    recipe = params.retrain.recipe
    with tracker.child_run(f"retrain/{subset}", stage="retrain", subset=subset) as run_id:
        started = time.perf_counter()
        on_epoch = epoch_logger(tracker, run_id, f"[retrain] {subset}", recipe.epochs)
        retrained, _ = shrinking_on_oom(
            params, tracker, run_id, f"retrain {subset}", lambda p: p.retrain.recipe.batch_size,
            lambda p: train_and_test(dataset, sample_ids, p.retrain, seed=params.seed, on_epoch=on_epoch),
        )
        model, test_accuracy = retrained.model, retrained.test_accuracy
        compute = time.perf_counter() - started
        tracker.log_metrics(run_id, {"test_accuracy": test_accuracy, "train_size": len(sample_ids), "compute_seconds": compute})
        if subset == "coreset":
            save_model(
                params.output("model.pt"), model.cpu(), model_name=recipe.model, classes=dataset.classes, image_shape=dataset.image_shape,
                mean=dataset.mean, std=dataset.std, data_fingerprint=dataset.fingerprint, params_hash=params.stage_hash("retrain"),
            )
    return {"test_accuracy": test_accuracy, "train_size": float(len(sample_ids)), "compute_seconds": compute, "run_id": run_id}


def _log_model(params: Params, tracker: Tracker, run_id: str, model: PixelClassifier) -> str:
    """Log the coreset model with mlflow.pytorch (pt2, no pickle) under the retrain run, register it, tagged with its
    lineage, and link it from the pipeline run."""
    import mlflow
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import infer_signature

    dataset = dataset_for(params)
    example = dataset.test.first(4).float().numpy()
    with torch.inference_mode():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    with tracker.active(run_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
            registered_model_name=params.tracking.registered_model,
        )
    version = str(info.registered_model_version)
    tags = {"git_commit": git_commit(), "data_fingerprint": dataset.fingerprint}
    for table in ("features", "scores", "coreset"):
        tags[f"dvc_md5.{table}"] = file_md5(params.output(f"{table}.parquet"))
    for key, value in tags.items():
        tracker.client.set_model_version_tag(params.tracking.registered_model, version, key, value)
    tracker.client.set_registered_model_alias(params.tracking.registered_model, "current", version)
    tracker.client.log_outputs(tracker.run_id, [LoggedModelOutput(info.model_id, step=0)])  # the pipeline run shows the model too
    tracker.client.set_tag(tracker.run_id, "unseen.registered_model", f"{params.tracking.registered_model}/{version}")
    return version


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(params: Params, tracker: Tracker, run_id: str) -> int:
    """Register model.pt, the coreset model, under the retrain run that trained it; returns the model version."""
    return int(_log_model(params, tracker, run_id, load_model(params.output("model.pt"))))


@task(name="retrain-metrics", cache_policy=NO_CACHE)
def metrics_task(params: Params, tracker: Tracker, coreset: dict, random: dict) -> dict[str, float]:
    """metrics.json: both test accuracies and the sizes, also on the parent MLflow run."""
    metrics = {
        "prune_ratio": params.select.prune_ratio,
        "train_size": len(dataset_for(params).train),
        "coreset_size": int(coreset["train_size"]),
        "test_accuracy_coreset": round(coreset["test_accuracy"], 6),
        "test_accuracy_random": round(random["test_accuracy"], 6),
    }
    write_json(params.output("metrics.json"), metrics)
    tracker.log_metrics(tracker.run_id, metrics)
    tracker.log_artifact(tracker.run_id, params.output("metrics.json"))
    return metrics
