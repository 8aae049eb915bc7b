"""The features stage as a Prefect task: embeddings of every train and test sample into features.parquet, and the
image files left out as unreadable into skipped_images.parquet."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.common import GPU_TAG, dataset_for, epoch_logger, shrinking_on_oom
from tasks.increment import features_folder, increment_plan, keep_copy
from tasks.runners import set_torch_threads
from tasks.tracking import Tracker
from unseen.config import Params
from unseen.data import ImageDataset
from unseen.features import (
    NOISY_SHARE_META, extend_features, extract_features, features_columns, proxy_epochs_at_most, recorded_noisy_label_share,
)
from unseen.increment import IncrementPlan
from unseen.tables import FEATURES, SKIPPED_IMAGES, write_table
from unseen.training import pick_device


@task(name="features", cache_policy=NO_CACHE, tags=[GPU_TAG])
def features_task(params: Params, tracker: Tracker) -> float:
    """Extract the embeddings (retrying with smaller batches when out of memory); returns the compute seconds."""
    set_torch_threads(params.orchestration)
    started = time.perf_counter()
    dataset = dataset_for(params)
    plan, kept = increment_plan(params, dataset), features_folder(params, dataset)
    with tracker.child_run("features", stage="features", scoring=plan.mode) as run_id:
        if plan.incremental:
            train, test, noisy_share = _extend(params, dataset, tracker, run_id, plan, kept)
        else:
            train, test, noisy_share = _extract(params, dataset, tracker, run_id, kept)
        compute = time.perf_counter() - started
        path = write_table(
            FEATURES, features_columns(dataset, train, test), params.output("features.parquet"),
            params_hash=params.stage_hash("features"), data_fingerprint=dataset.fingerprint, extractor=params.features.extractor,
            **({} if noisy_share is None else {NOISY_SHARE_META: f"{noisy_share:.4f}"}),  # for the select stage's verdicts
        )
        keep_copy(path, kept / "features.parquet")
        _write_skipped(params, dataset, tracker, run_id)
        tracker.log_metrics(run_id, {"embedding_dim": train.shape[1], "compute_seconds": compute, "skipped_images": len(dataset.skipped)})
    return compute


Embedded = tuple[np.ndarray, np.ndarray, float | None]
"""Train and test embeddings, and the proxy's noisy-label share where its check ran."""


def _extend(params: Params, dataset: ImageDataset, tracker: Tracker, run_id: str, plan: IncrementPlan, kept: Path) -> Embedded:
    """The extractor the cached scoring models scored with embeds the new samples; its noisy-label check stands."""
    base = plan.state.features_folder
    get_run_logger().info(f"[features] the extractor of {base} embeds the samples it has not embedded yet ({plan.reason})")
    (train, test), _ = shrinking_on_oom(
        params, tracker, run_id, "features", lambda p: p.features.batch_size,
        lambda p: extend_features(dataset, p.features, base, device=pick_device()),
    )
    if (base / "extractor.pt").is_file() and base != kept:
        keep_copy(base / "extractor.pt", kept / "extractor.pt")
    return train, test, recorded_noisy_label_share(base / "features.parquet") if (base / "features.parquet").is_file() else None


def _extract(params: Params, dataset: ImageDataset, tracker: Tracker, run_id: str, kept: Path) -> Embedded:
    """The extractor trained (the proxy) or loaded, kept for later increments, and every sample embedded."""
    logged = epoch_logger(tracker, run_id, "[features] proxy", proxy_epochs_at_most(params.features, len(dataset.train)))
    shares: list[float] = []

    def on_epoch(epoch: int, model, stats: dict[str, float]) -> None:
        logged(epoch, model, stats)
        if "noisy_label_share" in stats:
            shares.append(stats["noisy_label_share"])

    (train, test), _ = shrinking_on_oom(
        params, tracker, run_id, "features", lambda p: p.features.proxy.batch_size,
        lambda p: extract_features(dataset, p.features, seed=params.seed, device=pick_device(), on_epoch=on_epoch, keep_extractor=kept / "extractor.pt"),
    )
    return train, test, shares[-1] if shares else None


def _write_skipped(params: Params, dataset: ImageDataset, tracker: Tracker, run_id: str) -> None:
    """skipped_images.parquet: the image files left out as unreadable (empty when none), logged and warned about."""
    skipped = params.output("skipped_images.parquet")
    write_table(
        SKIPPED_IMAGES,
        {
            "sample_id": np.array([s.sample_id for s in dataset.skipped], dtype=np.int64),
            "split": np.array([s.split for s in dataset.skipped], dtype=object),
            "file": np.array([s.file for s in dataset.skipped], dtype=object),
            "error": np.array([s.error for s in dataset.skipped], dtype=object),
        },
        skipped, params_hash=params.stage_hash("features"), data_fingerprint=dataset.fingerprint,
    )
    if dataset.skipped:
        tracker.log_artifact(run_id, skipped)
        get_run_logger().warning(f"[features] {len(dataset.skipped)} unreadable image files left out, listed in {skipped}")
