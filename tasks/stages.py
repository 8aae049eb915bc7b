"""The four stages as Prefect tasks, plus the functions that submit them; the logic lives in `unseen`.

Tasks pass file paths, never tensors, so any task runner (threads, processes, Dask) can carry them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from prefect import get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE

from unseen import reports
from unseen.config import STAGE_PARAMS, DataParams, Params, SelectParams
from unseen.data import ImageDataset, load_dataset
from unseen.features import extract_features
from unseen.inputs import coreset_input, features_input, scores_input
from unseen.io import atomic_path
from unseen.models import PixelClassifier, load_model, save_model
from unseen.reports import compare_seen_unseen
from unseen.scores import ModelRecord, ScoringModel, combine_records, difficulty, resolve_score, scoring_models, train_scoring_model
from unseen.baselines import baseline_coreset
from unseen.multistep import StepReport, incremental_coreset, score_step
from unseen.selection import UnseenObjective, budget_for, random_subset, select_coreset
from unseen.tables import CORESET, FEATURES, MODEL_OUTPUTS, SCORES, TableError, list_column, positions_of, read_table, table_meta, write_table
from unseen.training import accuracy, pick_device, predict_logits, train_model
from tasks.runners import map_on_workers, set_torch_threads
from tasks.tracking import Tracker, git_commit

_DATA_LOCK = threading.Lock()


@dataclass
class StageReport:
    """What one stage did: its outputs, wall time, and the seconds spent in library compute."""

    name: str
    outputs: list[str]
    wall_seconds: float = 0.0
    compute_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


@functools.lru_cache(maxsize=2)
def _cached_dataset(data: DataParams, seed: int) -> ImageDataset:
    return load_dataset(data, seed)


def dataset_for(params: Params) -> ImageDataset:
    """Load the data set once per process, whichever task asks first."""
    with _DATA_LOCK:
        return _cached_dataset(params.data, params.seed)


def stage_hash(params: Params, stage: str) -> str:
    return params.section_hash(*STAGE_PARAMS[stage])


def file_md5(path: str | Path) -> str:
    """The MD5 of a file's bytes: the hash DVC 3 records for a file output."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _with_retries(params: Params, fn):
    return fn.with_options(retries=params.orchestration.retries, retry_delay_seconds=params.orchestration.retry_delay_seconds)


def _epoch_logger(tracker: Tracker, run_id: str, label: str, total: int):
    logger = get_run_logger()

    def on_epoch(epoch: int, *rest) -> None:
        stats = rest[-1]
        tracker.log_metrics(run_id, stats, step=epoch)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in stats.items() if k != "epoch_seconds")
        logger.info(f"{label} epoch {epoch}/{total}  {shown}  ({stats['epoch_seconds']:.1f} s)")

    return on_epoch


def _shrinking_on_oom(params: Params, tracker: Tracker, run_id: str, what: str, batch_of, work):
    """(`work(params)`, the params it finally ran with): after each out-of-memory error, `work` runs again with every
    batch size halved, down to `orchestration.min_batch_size`; each retry is logged and tagged on the MLflow run.

    Outputs keep the original params' hash: the smaller batch is how this stage fitted on this device, recorded, not
    another configuration (a rerun reuses them).
    """
    current, retries = params, 0
    while True:
        try:
            return work(current), current
        except torch.OutOfMemoryError as exc:
            smaller = current.with_halved_batches()
            if smaller is None:
                exc.add_note(f"[{what}] still out of memory at batch size {batch_of(current)} (orchestration.min_batch_size); "
                             "lower orchestration.min_batch_size or use a device with more memory")
                raise
        # outside the except block, so the failed attempt's tensors (held by the traceback) are freed first
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        retries += 1
        get_run_logger().warning(f"[{what}] out of memory at batch size {batch_of(current)}; retrying with {batch_of(smaller)}")
        tracker.client.set_tag(run_id, "oom_retries", str(retries))
        tracker.client.set_tag(run_id, "batch_size", str(batch_of(smaller)))
        current = smaller


# ---- features ---------------------------------------------------------------------------------


@task(name="features", cache_policy=NO_CACHE, tags=["gpu"])
def features_task(params: Params, tracker: Tracker) -> float:
    started = time.perf_counter()
    dataset = dataset_for(params)
    with tracker.child_run("features", stage="features") as run_id:
        on_epoch = _epoch_logger(tracker, run_id, "[features] proxy", params.features.proxy.epochs)
        (train, test), _ = _shrinking_on_oom(
            params, tracker, run_id, "features", lambda p: p.features.proxy.batch_size,
            lambda p: extract_features(dataset, p.features, seed=params.seed, device=pick_device(), on_epoch=on_epoch),
        )
        compute = time.perf_counter() - started
        path = params.output("features.parquet")
        write_table(
            FEATURES,
            {
                "sample_id": np.concatenate([dataset.train.sample_ids, dataset.test.sample_ids]),
                "split": np.array(["train"] * len(train) + ["test"] * len(test)),
                "label": np.concatenate([dataset.train.labels.numpy(), dataset.test.labels.numpy()]),
                "embedding": np.concatenate([train, test]),
            },
            path,
            params_hash=stage_hash(params, "features"),
            data_fingerprint=dataset.fingerprint,
            extractor=params.features.extractor,
        )
        tracker.log_metrics(run_id, {"embedding_dim": train.shape[1], "compute_seconds": compute})
    return compute


def features_stage(params: Params, tracker: Tracker) -> StageReport:
    compute = _with_retries(params, features_task)(params, tracker)
    return StageReport("features", [str(params.output("features.parquet"))], compute_seconds=compute)


# ---- scores -----------------------------------------------------------------------------------


def model_cache_path(params: Params, dataset: ImageDataset, model: ScoringModel) -> Path:
    """A finished scoring model's records, keyed by the params and data that made them, so reruns skip it."""
    key = f"{stage_hash(params, 'scores')}-{dataset.fingerprint}"
    return params.output("cache", "scoring", key, f"{model.name}.parquet")


def _write_record(params: Params, dataset: ImageDataset, record: ModelRecord, path: Path, batch_size: int) -> None:
    epochs, n, classes = record.logits.shape
    write_table(
        MODEL_OUTPUTS,
        {
            "sample_id": record.sample_ids,
            "label": record.labels,
            "logits": record.logits.transpose(1, 0, 2).reshape(n, epochs * classes),
            "embedding_norms": record.embedding_norms.T,
        },
        path,
        params_hash=stage_hash(params, "scores"),
        data_fingerprint=dataset.fingerprint,
        kind=record.model.kind,
        repeat=str(record.model.repeat),
        fold=str(record.model.fold),
        epochs=",".join(map(str, record.epochs)),
        classes=str(classes),
        trained_on=base64.b64encode(np.packbits(record.trained_on)).decode(),
        train_seconds=f"{record.train_seconds:.3f}",
        record_seconds=f"{record.record_seconds:.3f}",
        batch_size=str(batch_size),  # smaller than scoring.recipe.batch_size after an out-of-memory retry
    )


def read_record(params: Params, dataset: ImageDataset, path: str | Path) -> ModelRecord:
    """A scoring model's records back from its cache table, checked against this run's params and data."""
    table = read_table(MODEL_OUTPUTS, path, data_fingerprint=dataset.fingerprint, params_hash=stage_hash(params, "scores"))
    meta = table_meta(table)
    epochs = tuple(int(e) for e in meta["epochs"].split(","))
    n, classes = len(table), int(meta["classes"])
    trained_on = np.unpackbits(np.frombuffer(base64.b64decode(meta["trained_on"]), dtype=np.uint8))[: len(dataset.train)].astype(bool)
    return ModelRecord(
        model=ScoringModel(meta["kind"], int(meta["repeat"]), int(meta["fold"])),
        sample_ids=table.column("sample_id").to_numpy(),
        labels=table.column("label").to_numpy().astype(np.int64),
        epochs=epochs,
        logits=list_column(table, "logits").reshape(n, len(epochs), classes).transpose(1, 0, 2),
        embedding_norms=list_column(table, "embedding_norms").T,
        trained_on=trained_on,
        train_seconds=float(meta["train_seconds"]),
        record_seconds=float(meta["record_seconds"]),
    )


@task(name="scoring-model", cache_policy=NO_CACHE, tags=["gpu"])
def scoring_model_task(params: Params, tracker: Tracker, model: ScoringModel) -> tuple[str, float]:
    """Train one scoring model (an unseen fold model or a seen model) unless its records are cached."""
    set_torch_threads(params.orchestration)
    logger = get_run_logger()
    started = time.perf_counter()
    dataset = dataset_for(params)
    path = model_cache_path(params, dataset, model)
    if path.is_file():
        logger.info(f"[scores] {model.name} already recorded: {path}")
        return str(path), 0.0
    with tracker.child_run(f"scores/{model.name}", stage="scores", kind=model.kind, repeat=str(model.repeat), fold=str(model.fold)) as run_id:
        on_epoch = _epoch_logger(tracker, run_id, f"[scores] {model.name}", params.scoring.recipe.epochs)
        record, used = _shrinking_on_oom(
            params, tracker, run_id, f"scores {model.name}", lambda p: p.scoring.recipe.batch_size,
            lambda p: train_scoring_model(dataset, model, p.scoring, seed=params.seed, device=pick_device(), on_epoch=on_epoch),
        )
        compute = time.perf_counter() - started
        _write_record(params, dataset, record, path, used.scoring.recipe.batch_size)
        tracker.log_metrics(
            run_id,
            {
                "compute_seconds": compute,
                "train_seconds": record.train_seconds,
                "record_seconds": record.record_seconds,
                "trained_on": int(record.trained_on.sum()),
                "scored": len(record.sample_ids),
            },
        )
    return str(path), compute


@task(name="combine-scores", cache_policy=NO_CACHE)
def combine_scores_task(params: Params, tracker: Tracker, record_paths: list[str]) -> tuple[float, dict[str, float]]:
    """All scores, seen and unseen, into scores.parquet; their distributions into score_report.json and MLflow."""
    dataset = dataset_for(params)
    started = time.perf_counter()
    records = [read_record(params, dataset, path) for path in record_paths]
    names = list(params.scoring.score_names)
    for entry in params.scoring.scores:
        resolve_score(entry)
    table = combine_records(records, names, dataset.train.sample_ids, dataset.train.labels.numpy())
    oriented = {name: difficulty(values, name) for name, values in table.columns.items() if not name.endswith("_std")}
    report = compare_seen_unseen(oriented, names)
    compute = time.perf_counter() - started
    unseen = [r for r in records if r.model.kind == "unseen"]
    report["recording_overhead_unseen"] = sum(r.record_seconds for r in unseen) / max(sum(r.train_seconds for r in unseen), 1e-9)
    path = params.output("scores.parquet")
    write_table(
        SCORES,
        {"sample_id": table.sample_ids, "label": table.labels, "folds": table.folds, **table.columns},
        path,
        params_hash=stage_hash(params, "scores"),
        data_fingerprint=dataset.fingerprint,
    )
    with atomic_path(params.output("score_report.json")) as tmp:
        tmp.write_text(json.dumps({k: round(v, 6) for k, v in report.items()}, indent=2) + "\n")
    plot = reports.seen_unseen_histograms(oriented, names, params.output("plots", "score_distributions.png"))
    tracker.log_artifact(tracker.run_id, path, "tables")
    tracker.log_artifact(tracker.run_id, plot, "plots")
    tracker.log_metrics(tracker.run_id, report)
    return compute, report


def scores_stage(params: Params, tracker: Tracker) -> StageReport:
    models = scoring_models(params.scoring)
    results = map_on_workers(_with_retries(params, scoring_model_task), unmapped(params), unmapped(tracker), models).result()
    compute, report = _with_retries(params, combine_scores_task)(params, tracker, [path for path, _ in results])
    outputs = [str(params.output("scores.parquet")), str(params.output("score_report.json"))]
    return StageReport("scores", outputs, compute_seconds=compute + sum(c for _, c in results))


# ---- select -----------------------------------------------------------------------------------


def objective_from(select: SelectParams) -> UnseenObjective:
    return UnseenObjective(
        importance_weight=select.importance_weight,
        alignment_weight=select.alignment_weight,
        diversity_weight=select.diversity_weight,
        adaptive=select.adaptive,
        regions_per_class=select.regions_per_class,
        difficulty_power=select.difficulty_power,
        density_power=select.density_power,
        hard_cutoff=select.hard_cutoff,
        fourier_dim=select.fourier_features,
    )


@task(name="step-scoring", cache_policy=NO_CACHE, tags=["gpu"])
def step_scoring_task(params: Params, tracker: Tracker, step: int, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multi-step UNSEEN, one step: a scoring model trained on the coreset so far scores the rest (on a worker under Dask)."""
    set_torch_threads(params.orchestration)
    dataset = dataset_for(params)
    with tracker.child_run(f"select/step-{step}", stage="select", step=str(step)) as run_id:
        on_epoch = _epoch_logger(tracker, run_id, f"[select] step {step}/{params.select.steps} scoring model", params.scoring.recipe.epochs)
        (scores, record), _ = _shrinking_on_oom(
            params, tracker, run_id, f"select step {step}", lambda p: p.scoring.recipe.batch_size,
            lambda p: score_step(dataset, step, kept, p.scoring, params.select.score.rpartition("_")[0], seed=params.seed, device=pick_device(), on_epoch=on_epoch),
        )
        tracker.log_metrics(run_id, {"trained_on": int(record.trained_on.sum()), "scored": len(record.sample_ids)})
    return scores, record.trained_on


def _incremental(params, tracker, dataset, score_ids, oriented, features, test_embedding, budget, inline_steps=False):
    """Multi-step UNSEEN: the selection runs here, each step's scoring model in a task of its own (mapped onto workers).

    inline_steps: train each step's model in the calling task instead, for callers that are themselves a mapped task
    (a benchmark cell): they hold a worker slot while they wait, so a nested mapped task could wait for ever."""
    if not np.array_equal(score_ids, dataset.train.sample_ids):
        raise TableError(f"{params.output('scores.parquet')}: its sample_ids are not the train split's; rerun the scores stage")

    def scorer(step: int, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if inline_steps:
            return step_scoring_task.fn(params, tracker, step, kept)
        return map_on_workers(_with_retries(params, step_scoring_task), unmapped(params), unmapped(tracker), [step], [kept]).result()[0]

    def on_step(report: StepReport) -> None:
        get_run_logger().info(f"[select] step {report.step}/{params.select.steps}: coreset grows to {report.size}")
        tracker.log_metrics(tracker.run_id, {"multistep_coreset_size": report.size}, step=report.step)

    return incremental_coreset(
        features, dataset.train.labels.numpy(), oriented, budget, scorer, steps=params.select.steps, schedule=params.select.step_schedule,
        num_classes=dataset.num_classes, objective=objective_from(params.select),
        pool_features=test_embedding if params.select.target_pool == "test" else None, seed=params.seed, on_step=on_step,
    )


@task(name="select", cache_policy=NO_CACHE)  # CPU work; multi-step scoring runs in gpu-tagged step tasks
def select_task(params: Params, tracker: Tracker, inline_steps: bool = False) -> tuple[float, dict[str, float]]:
    dataset = dataset_for(params)
    train_ids, train_embedding, test_embedding = features_input(params, dataset)
    score_ids, labels, values = scores_input(params, dataset)
    features = train_embedding[positions_of(train_ids, score_ids, f"{params.output('features.parquet')} (train rows)")]
    budget = budget_for(len(score_ids), params.select.prune_ratio)

    started = time.perf_counter()
    oriented = difficulty(values, params.select.score)
    joined = None
    if params.select.steps > 1:
        coreset, joined = _incremental(params, tracker, dataset, score_ids, oriented, features, test_embedding, budget, inline_steps)
    elif params.select.method == "unseen":
        coreset = select_coreset(
            oriented,
            features,
            labels,
            budget,
            objective=objective_from(params.select),
            pool_features=test_embedding if params.select.target_pool == "test" else None,
            num_classes=dataset.num_classes,
            seed=params.seed,
        )
    else:
        standardized = (features - features.mean(0)) / np.maximum(features.std(0), 1e-6)
        coreset = baseline_coreset(
            params.select.method, oriented, standardized, labels, budget, seed=params.seed,
            hard_cutoff=params.select.hard_cutoff, bins=params.select.score_bins,
        )
    random_selected = random_subset(labels, np.bincount(labels[coreset.selected], minlength=dataset.num_classes), params.seed)
    report = reports.selection_report(coreset, random_selected, features, test_embedding, labels, seed=params.seed)
    compute = time.perf_counter() - started

    path = params.output("coreset.parquet")
    masked = np.ma.masked_invalid
    write_table(
        CORESET,
        {
            "sample_id": score_ids,
            "label": labels,
            "selected": coreset.selected,
            "random_selected": random_selected,
            "method": np.full(len(labels), params.select.method),
            "step": joined if joined is not None else np.where(coreset.selected, 1, -1),
            "score": values,
            "cut_as_hardest": coreset.cut_as_hardest,
            "region": coreset.region,
            "region_budget": coreset.region_budget,
            "class_budget": coreset.class_budget,
            "selection_rank": coreset.selection_rank,
            "importance_term": masked(coreset.importance_term),
            "alignment_term": masked(coreset.alignment_term),
            "diversity_term": masked(coreset.diversity_term),
            "class_mmd_after": masked(coreset.class_mmd_after),
        },
        path,
        params_hash=stage_hash(params, "select"),
        data_fingerprint=dataset.fingerprint,
        score_column=params.select.score,
    )
    with atomic_path(params.output("selection_report.json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    flat = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    flat.update({f"coreset_class_{c}": n for c, n in enumerate(report["coreset_per_class"])})
    tracker.log_metrics(tracker.run_id, {**flat, "select_compute_seconds": compute})
    tracker.log_artifact(tracker.run_id, path, "tables")
    tracker.log_artifact(tracker.run_id, params.output("selection_report.json"))
    return compute, flat


def select_stage(params: Params, tracker: Tracker) -> StageReport:
    compute, metrics = _with_retries(params, select_task)(params, tracker)
    outputs = [str(params.output("coreset.parquet")), str(params.output("selection_report.json"))]
    return StageReport("select", outputs, compute_seconds=compute, metrics=metrics)


# ---- retrain ----------------------------------------------------------------------------------


def _register(params: Params, tracker: Tracker, run_id: str, model: PixelClassifier, dataset: ImageDataset) -> str:
    """Log the coreset model with mlflow.pytorch (pt2, no pickle) and register it, tagged with its lineage."""
    import mlflow
    from mlflow.models import infer_signature

    example = dataset.test.images[:4].float().numpy()
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
    client = tracker.client
    version = str(info.registered_model_version)
    tags = {"git_commit": git_commit(), "data_fingerprint": dataset.fingerprint}
    for table in ("features", "scores", "coreset"):
        tags[f"dvc_md5.{table}"] = file_md5(params.output(f"{table}.parquet"))
    for key, value in tags.items():
        client.set_model_version_tag(params.tracking.registered_model, version, key, value)
    client.set_registered_model_alias(params.tracking.registered_model, "current", version)
    return version


@task(name="retrain", cache_policy=NO_CACHE, tags=["gpu"])
def retrain_task(params: Params, tracker: Tracker, subset: str) -> dict[str, float | str]:
    """Train the target model from scratch on the coreset ('coreset') or on the same-size random subset ('random')."""
    set_torch_threads(params.orchestration)
    dataset = dataset_for(params)
    table = coreset_input(params, dataset)
    chosen = table.column("selected" if subset == "coreset" else "random_selected").to_numpy(zero_copy_only=False)
    sample_ids = table.column("sample_id").to_numpy()[chosen]
    train_split = dataset.train.take(positions_of(dataset.train.sample_ids, sample_ids, "the train split"))
    recipe = params.retrain.recipe
    with tracker.child_run(f"retrain/{subset}", stage="retrain", subset=subset) as run_id:
        started = time.perf_counter()
        on_epoch = _epoch_logger(tracker, run_id, f"[retrain] {subset}", recipe.epochs)

        def train_and_test(p: Params):
            model = train_model(dataset, train_split, p.retrain.recipe, seed=params.seed, device=pick_device(), on_epoch=on_epoch)
            logits = predict_logits(model, dataset, dataset.test.images, batch_size=p.retrain.batch_size_eval)
            return model, accuracy(logits, dataset.test.labels)

        (model, test_accuracy), _ = _shrinking_on_oom(params, tracker, run_id, f"retrain {subset}", lambda p: p.retrain.recipe.batch_size, train_and_test)
        compute = time.perf_counter() - started
        tracker.log_metrics(run_id, {"test_accuracy": test_accuracy, "train_size": len(sample_ids), "compute_seconds": compute})
        result = {"test_accuracy": test_accuracy, "train_size": float(len(sample_ids)), "compute_seconds": compute, "run_id": run_id}
        if subset == "coreset":
            save_model(
                params.output("model.pt"), model.cpu(), model_name=recipe.model, classes=dataset.classes, image_shape=dataset.image_shape,
                mean=dataset.mean, std=dataset.std, data_fingerprint=dataset.fingerprint, params_hash=stage_hash(params, "retrain"),
            )
    return result


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(params: Params, tracker: Tracker, run_id: str) -> int:
    """Register model.pt, the coreset model, under the retrain run that trained it; returns the model version."""
    return int(_register(params, tracker, run_id, load_model(params.output("model.pt")), dataset_for(params)))


def retrain_stage(params: Params, tracker: Tracker) -> StageReport:
    coreset_run, random_run = map_on_workers(_with_retries(params, retrain_task), unmapped(params), unmapped(tracker), ["coreset", "random"])
    coreset = coreset_run.result()
    version = _with_retries(params, register_task)(params, tracker, coreset["run_id"])  # in this thread, while the random subset trains
    random = random_run.result()
    metrics = {
        "prune_ratio": params.select.prune_ratio,
        "train_size": len(dataset_for(params).train),
        "coreset_size": int(coreset["train_size"]),
        "test_accuracy_coreset": round(coreset["test_accuracy"], 6),
        "test_accuracy_random": round(random["test_accuracy"], 6),
    }
    with atomic_path(params.output("metrics.json")) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tracker.log_metrics(tracker.run_id, {k: v for k, v in metrics.items()})
    tracker.log_artifact(tracker.run_id, params.output("metrics.json"))
    outputs = [str(params.output("model.pt")), str(params.output("metrics.json"))]
    metrics["model_version"] = version
    return StageReport("retrain", outputs, compute_seconds=coreset["compute_seconds"] + random["compute_seconds"], metrics=metrics)


STAGES = {"features": features_stage, "scores": scores_stage, "select": select_stage, "retrain": retrain_stage}


def run_stage(name: str, params: Params, tracker: Tracker) -> StageReport:
    """Run one stage's tasks to completion and time it."""
    get_run_logger().info(f"[{name}] starting")
    started = time.perf_counter()
    report = STAGES[name](params, tracker)
    report.wall_seconds = time.perf_counter() - started
    get_run_logger().info(f"[{name}] done in {report.wall_seconds:.1f} s -> {', '.join(report.outputs)}")
    return report
