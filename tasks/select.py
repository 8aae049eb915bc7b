"""The select stage as Prefect tasks: one selection step per task (multi-step UNSEEN alternates it with a step
scoring model), the last step writing coreset.parquet, the select report and the same-size random baseline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.common import dataset_for
from tasks.increment import keep_copy, last_coreset, selection_plan
from tasks.scores import read_record, scoring_model_task_for
from tasks.tracking import Tracker
from unseen.checks import cut_flags_input, scores_input
from unseen.features import read_features, recorded_noisy_label_share
from unseen.config import LABEL_ISSUE_CUTS, Params
from unseen.data import ImageDataset
from unseen.increment import SelectionPlan
from unseen.io import write_csv, write_json
from unseen.scores import ScoringModel, difficulty, step_scores
from unseen.selection import (
    class_budget_rows, coreset_diff, random_baseline, select, select_added, select_step, selection_report, step_difficulty,
)
from unseen.tables import CORESET, CORESET_DIFF, positions_of, read_table, write_table


@task(name="select", cache_policy=NO_CACHE)
def select_task(
    params: Params, tracker: Tracker, step: int = 1, joined: np.ndarray | None = None, step_records: list[str] | tuple[str, ...] = (),
    plan: SelectionPlan | None = None,
) -> tuple[float, dict[str, float], np.ndarray]:
    """Selection step `step` of `select.steps` on features.parquet and scores.parquet (plus, after step 1, the step
    models' records so far), or with a `keep` plan the new samples only, in one step: (compute seconds, metrics of
    the last step, the step each sample joined at: 0 for the earlier coreset's samples)."""
    dataset = dataset_for(params)
    train_ids, train_embedding, test_embedding = read_features(params, dataset)
    score_ids, labels, values = scores_input(params, dataset)
    features = train_embedding[positions_of(train_ids, score_ids, f"{params.output('features.parquet')} (train rows)")]
    pool = test_embedding if params.select.target_pool == "test" else None
    started = time.perf_counter()
    held_out = difficulty(values, params.select.score)
    flagged, misclassified = cut_flags_input(params, dataset)
    kwargs = dict(num_classes=dataset.num_classes, pool_features=pool, flagged=flagged, misclassified=misclassified, seed=params.seed)
    keeps = plan is not None and plan.keeps
    if keeps:
        coreset = select_added(params.select, plan.kept, plan.added, held_out, features, labels, **kwargs)
        joined = np.where(plan.kept, 0, np.where(coreset.selected, 1, -1))
    elif params.select.selection_steps == 1:
        coreset, joined = select(params.select, held_out, features, labels, **kwargs), None
    else:
        records = [read_record(params, dataset, path, stage="select") for path in step_records]
        kept_before = [(joined >= 1) & (joined < t) for t in range(2, step + 1)] if joined is not None else []
        scores = [step_scores(record, kept, params.select.score_name) for record, kept in zip(records, kept_before)]
        current = held_out if joined is None else step_difficulty(held_out, joined, scores)
        coreset, joined = select_step(params.select, step, current, features, labels, joined, **kwargs)
        get_run_logger().info(f"[select] step {step}/{params.select.selection_steps}: coreset grows to {int(coreset.selected.sum())}")
        tracker.log_metrics(tracker.run_id, {"multistep_coreset_size": int(coreset.selected.sum())}, step=step)
        if step < params.select.selection_steps:
            return time.perf_counter() - started, {}, joined
    random_selected = random_baseline(labels, coreset, dataset.num_classes, params.seed)
    report = selection_report(coreset, random_selected, features, test_embedding, labels, seed=params.seed, flagged=flagged, select=params.select,
                              misclassified=misclassified, proxy_check=proxy_check(params))
    compute = time.perf_counter() - started
    report["selected_incrementally"] = int(keeps)
    columns = coreset.table_columns(
        sample_ids=score_ids, labels=labels, random_selected=random_selected, method=params.select.method, joined_step=joined, score=values
    )
    flat = write_coreset(params, dataset, tracker, columns, report)
    tracker.log_metrics(tracker.run_id, {**flat, "select_compute_seconds": compute})
    return compute, flat, np.where(coreset.selected, 1, -1) if joined is None else joined


def proxy_check(params: Params) -> tuple[float, float] | None:
    """The proxy's noisy-label share from features.parquet and the share from which it counts as noisy, where the run
    cuts label issues (`select.hard_cutoff` auto or oversampled) and the proxy's check ran."""
    share = recorded_noisy_label_share(params.output("features.parquet")) if params.select.cutoff in LABEL_ISSUE_CUTS else None
    return None if share is None else (share, params.features.proxy_noisy_share)


def write_coreset(params: Params, dataset: ImageDataset, tracker: Tracker, columns: dict[str, np.ndarray], report: dict) -> dict[str, float]:
    """coreset.parquet, its diff, the select report and the class budgets, written and logged; returns the report's
    numbers, as the stage's metrics."""
    path = write_table(
        CORESET, columns, params.output("coreset.parquet"),
        params_hash=params.stage_hash("select"), data_fingerprint=dataset.fingerprint, score_column=params.select.score,
        recipe=params.recipe_hash("select"),
    )
    report.update(write_diff(params, dataset.fingerprint, tracker, columns))
    write_json(params.output("select_report.json"), report)
    write_csv(params.output("plots", "class_budgets.csv"), class_budget_rows(report, list(dataset.classes), columns["label"]))
    flat = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    flat.update({f"coreset_class_{c}": n for c, n in enumerate(report["coreset_per_class"])})
    tracker.log_artifact(tracker.run_id, path, "tables")
    tracker.log_artifact(tracker.run_id, params.output("select_report.json"))
    return flat


def write_diff(params: Params, fingerprint: str, tracker: Tracker, columns: dict[str, np.ndarray]) -> dict[str, int]:
    """coreset_diff.parquet against the coreset selected before in this outputs folder (kept in its cache), then this
    coreset kept as the next run's `before`; returns the counts, which the run logs and shows."""
    last = last_coreset(params)
    before = read_table(CORESET, last) if last.is_file() else None
    before_ids = before.column("sample_id").to_numpy() if before is not None else np.empty(0, dtype=np.int64)
    before_selected = before.column("selected").to_numpy(zero_copy_only=False) if before is not None else np.empty(0, dtype=bool)
    diff, counts = coreset_diff(before_ids, before_selected, columns["sample_id"], columns["selected"], columns["cut_as_hardest"])
    path = write_table(CORESET_DIFF, diff, params.output("coreset_diff.parquet"), params_hash=params.stage_hash("select"), data_fingerprint=fingerprint)
    keep_copy(params.output("coreset.parquet"), last)
    if before is not None:
        get_run_logger().info(
            f"[select] against the coreset before: {counts['coreset_added']} added, {counts['coreset_dropped']} dropped, "
            f"{counts['coreset_kept']} kept; {counts['new_samples']} new samples, {counts['new_samples_selected']} of them selected"
        )
    tracker.log_artifact(tracker.run_id, path, "tables")
    return counts


TaskCall = Callable[..., Any]
"""(task, *args) -> the task's return value: how a caller runs a task (as a task of its flow, or its function inline)."""


def select_steps(params: Params, tracker: Tracker, run: TaskCall) -> tuple[float, dict[str, float], SelectionPlan]:
    """The whole select stage: one selection, or `select.steps` selections (UNSEEN) alternating with step scoring models;
    on a grown collection whose earlier coreset may stay (`tasks.increment.selection_plan`), one selection of the new
    samples.

    `run(task, *args)` runs one task: the prune flow runs them as tasks (step models on GPU workers), a benchmark
    cell, itself a task, runs their functions in place. Returns (compute seconds, the final step's metrics, the plan)."""
    plan = selection_plan(params, *scores_input(params, dataset_for(params)))
    get_run_logger().info(f"[select] {plan.describe()}")
    if plan.keeps:
        compute, metrics, _ = run(select_task, params, tracker, 1, None, (), plan)
        return compute, metrics, plan
    joined, records, compute, metrics = None, [], 0.0, {}
    for step in range(1, params.select.selection_steps + 1):
        if step > 1:
            path, seconds = run(scoring_model_task_for(params), params, tracker, ScoringModel("step", step - 1), joined >= 1)
            records.append(path)
            compute += seconds
        seconds, metrics, joined = run(select_task, params, tracker, step, joined, records)
        compute += seconds
    return compute, metrics, plan
