"""What a finished run shows its users, in one wording everywhere: printed in the terminal, written as the MLflow
run's description, and published as Prefect artifacts on the flow run page (also for scheduled runs); and
outputs/run_report.json, the same times for scripts."""

from __future__ import annotations

import csv
from dataclasses import asdict

from unseen.config import Params
from unseen.io import write_json

SEED_NOISE_TIERS = ("full", "scorers", "cpu", "noise")
"""Benchmark tiers whose results tables the run summary reads for the seed std, first found first."""


def seed_noise_line(prune_ratio: float) -> str:
    """How much one seed's margin can move by chance: the benchmark's seed std of random at the nearest prune ratio."""
    from benchmarks.sweep import read_results
    from benchmarks.tables import summarize
    from unseen.tables import TableError

    for tier in SEED_NOISE_TIERS:
        try:
            table, _ = read_results(f"benchmarks/results/{tier}.parquet")
        except (TableError, OSError):
            continue
        summary = {key: value for key, value in summarize(table.to_pylist()).items() if key[0] == "random"}
        if summary:
            (_, ratio), (_, std, seeds) = min(summary.items(), key=lambda item: abs(item[0][1] - prune_ratio))
            return (f"the seed std of random at {round(100 * ratio)}% pruning in the benchmark (tier {tier}, {seeds} seeds) is {std:.2f} points: "
                    "a margin within about twice that can be chance")
    return "no benchmark results here to compare with one seed's noise (see docs/benchmarks.md)"


def change_lines(reports: list) -> list[str]:
    """How the scores were made (incrementally or from scratch) and how the coreset changed against the one before."""
    metrics = {k: v for report in reports for k, v in report.metrics.items()}
    lines = [note for report in reports for note in report.notes]
    if metrics.get("coreset_kept", 0) + metrics.get("coreset_dropped", 0) > 0:
        lines.append(
            f"coreset against the one before: {int(metrics['coreset_added'])} added, {int(metrics['coreset_dropped'])} dropped, "
            f"{int(metrics['coreset_kept'])} kept; {int(metrics['new_samples'])} new samples, {int(metrics['new_samples_selected'])} "
            "of them selected (coreset_diff.parquet)"
        )
    return lines


def result_lines(params: Params, metrics: dict[str, float]) -> list[str]:
    """The coreset, both test accuracies, the margin next to the seed noise, and the registered model."""
    if "test_accuracy_coreset" not in metrics:
        return []
    cutoff = params.select.cutoff
    found, setting = (
        ("samples the held-out models misclassify", "select.hard_cutoff: misclassified at this prune ratio") if cutoff == "misclassified"
        else ("label issues the held-out models find", f"select.label_issues: {params.select.label_issues}, label_issues_by: {params.select.label_issues_by}")
    )
    flagged = [] if "label_issues_flagged" not in metrics else [
        f"{found}: {int(metrics['label_issues_flagged'])} ({metrics['label_issues_flagged_fraction']:.1%} of the "
        f"train split), {'one more coverage stratum' if metrics['label_issues_as_stratum'] else 'cut'}: {int(metrics['label_issues_kept'])} of "
        f"them kept ({setting}; select_report.json)"
    ]
    oversampled = [] if "misclassified_kept" not in metrics else [
        f"samples the held-out models misclassify: {int(metrics['misclassified'])} ({metrics['misclassified'] / metrics['train_size']:.1%} of the "
        f"train split), {int(metrics['misclassified_kept'])} kept ({metrics['misclassified_kept'] / metrics['coreset_size']:.1%} of the coreset; "
        "select.hard_cutoff: oversampled cuts them where auto's coreset would keep a larger share than its cut left)"
    ]
    hardest = [] if isinstance(cutoff, str) or not cutoff else [
        f"each class's hardest {cutoff:.0%} by {params.select.score} never kept (select.hard_cutoff at this prune ratio; "
        "cut_per_class in select_report.json)"
    ]
    return [
        f"coreset: {metrics['coreset_size']} of {metrics['train_size']} train samples (prune ratio {params.select.prune_ratio})",
        *flagged,
        *label_noise_lines(params, metrics),
        *oversampled,
        *hardest,
        f"test accuracy, coreset model: {metrics['test_accuracy_coreset']:.4f}",
        f"test accuracy, random subset of the same size, same recipe and seed: {metrics['test_accuracy_random']:.4f}",
        f"margin over random: {100 * (metrics['test_accuracy_coreset'] - metrics['test_accuracy_random']):+.2f} points; "
        f"{seed_noise_line(params.select.prune_ratio)}",
        f"registered model: {params.tracking.registered_model} version {int(metrics['model_version'])} (alias @current)",
    ]


def label_noise_lines(params: Params, metrics: dict[str, float]) -> list[str]:
    """Where the fold models' label issues and the proxy's first epoch disagree on whether the labels are noisy: both
    verdicts, which one the run followed, and the setting that decides instead (docs/method.md, label issues)."""
    decided = params.select.label_issues != "auto"  # the user's setting, not a verdict, handles them
    if decided or "labels_noisy_by_proxy" not in metrics or metrics["labels_noisy_by_proxy"] == metrics["labels_noisy_by_fold_models"]:
        return []
    verdict = {0: "clean", 1: "noisy"}
    return [
        f"the held-out estimates disagree on whether the labels are noisy: the fold models flag "
        f"{metrics['label_issues_flagged_fraction']:.1%} of the train split ({verdict[int(metrics['labels_noisy_by_fold_models'])]} from "
        f"select.label_issue_rate {params.select.label_issue_rate:.0%}), the proxy's first epoch {metrics['proxy_noisy_label_share']:.1%} "
        f"({verdict[int(metrics['labels_noisy_by_proxy'])]} from features.proxy_noisy_share {params.features.proxy_noisy_share:.0%}); "
        "the run followed the fold models. Neither is sure on a small pool or under light noise: if you know your labels, "
        "set select.label_issues to cut (noisy) or stratum (curated)"
    ]


def run_markdown(params: Params, reports: list, run_link: str) -> str:
    """The run summary as Markdown: results, each stage's wall and compute time, and where the run is tracked."""
    metrics = {k: v for report in reports for k, v in report.metrics.items()}
    lines = ["## UNSEEN prune run", "", *[f"- {line}" for line in result_lines(params, metrics) + change_lines(reports)], "",
             "| stage | wall s | compute s |", "|---|---|---|"]
    lines += [f"| {r.name} | {r.wall_seconds:.1f} | {r.compute_seconds:.1f} |" for r in reports]
    return "\n".join([*lines, "", f"MLflow run: {run_link}", f"params hash: `{params.run_hash()}`"])


TRAINING_VIEW = "workflowType=machine_learning"
"""MLflow 3.17's UI opens an experiment on its GenAI overview unless the link asks for the training-runs view (the
experiment's kind tag does not decide it: benchmarks/mlflow_ui_check.py)."""
LOCAL_UI = "http://127.0.0.1:5000"


def ui_page(server: str, experiment_id: str, run_id: str | None = None) -> str:
    """An MLflow UI page in the training-runs view: the experiment's runs, or one run."""
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{server.rstrip('/')}/{page}?{TRAINING_VIEW}"


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page on the MLflow server, or, for a local store, the command that serves it and the page."""
    if tracking_uri.startswith(("http://", "https://")):
        return ui_page(tracking_uri, experiment_id, run_id)
    return f"{ui_page(LOCAL_UI, experiment_id, run_id)} after `.venv/bin/mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000`"


def publish_run(params: Params, tracker, reports: list) -> str:
    """The summary as the MLflow run's description and, on the flow run page, a Markdown artifact and a table
    artifact of the per-class budgets (the select stage's class_budgets.csv). Returns the Markdown."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    markdown = run_markdown(params, reports, run_link(tracker.uri, tracker.experiment_id, tracker.run_id))
    tracker.describe(tracker.run_id, markdown)
    create_markdown_artifact(markdown, key="prune-summary", description="coreset, accuracies against random, stage times")
    with open(params.output("plots", "class_budgets.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    create_table_artifact(rows, key="class-budgets", description="per class: pool, kept, label issues cut")
    return markdown


def time_outside_compute(result: dict, wall: float) -> dict[str, float]:
    """Where a run's seconds outside the stages' own compute went: what the summary prints and run_report.json keeps."""
    compute = sum(report.compute_seconds for report in result["stages"])
    in_stages = sum(report.wall_seconds for report in result["stages"])
    lineage = result.get("lineage_seconds", 0.0)
    return {
        "startup_and_shutdown": wall - result["flow_seconds"],
        "tracking_setup_and_flow": result["flow_seconds"] - in_stages - lineage,
        "tasks_tracking_and_io": in_stages - compute,
        "dvc_lineage": lineage,
    }


def write_run_report(result: dict, wall: float) -> None:
    """outputs/run_report.json: the stage times and metrics of this run, for benchmarks and users' scripts."""
    params = result["params"]
    report = {
        "run_id": result["run_id"],
        "process_seconds": wall,
        "flow_seconds": result["flow_seconds"],
        "lineage_seconds": result.get("lineage_seconds", 0.0),
        "outside_compute_seconds": time_outside_compute(result, wall),
        "stages": [asdict(stage) for stage in result["stages"]],
        "lineage": result.get("lineage"),
        "params_hash": params.run_hash(),
    }
    write_json(params.output("run_report.json"), report)
