"""Fold scoring on a Dask cluster: wall time of K=4 unseen fold models on 1 worker vs 2 workers (one thread each),
and the scheduling overhead per task.

Runs the scores stage (`unseen stage scores`'s flow, runner chosen from params by the CLI's helper) on a stratified
train subset with only the unseen models (`scores.seen: false`), once per configuration, each in a fresh outputs
folder (no cached fold), each on a fresh LocalCluster started by the runner (so cluster start-up and the workers'
imports are in the wall time, as in a real run). The default local runner (threads, torch on every core) is run too,
as the reference. Then, per configuration, N trivial tasks go through the same runner after a warm-up: their wall
time divided by N is the cost of one task to Prefect (task run and state calls to the API) plus Dask (scheduling,
pickling, the result's trip back). Prefect's temporary server is used (no PREFECT_API_URL needed).

Writes benchmarks/results/dask_scoring.json. Usage:
  .venv/bin/python benchmarks/dask_scoring.py [--set KEY=VALUE ...]   (overrides of the benchmark's params)
Check first that the machine is quiet (ps aux --sort=-%cpu | head): the timings share its 2 cores.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml
from benchmarks.machine import machine
from unseen.io import write_json

REPO = Path(__file__).resolve().parents[1]
TRIVIAL_TASKS = 40

CONFIGS = {
    "dask_1_worker_1_thread": {"task_runner": "dask", "dask": {"workers": 1, "threads_per_worker": 1}},
    "dask_2_workers_1_thread": {"task_runner": "dask", "dask": {"workers": 2, "threads_per_worker": 1}},
    "local_threads_max_workers_1": {"task_runner": "local", "max_workers": 1},
}


def benchmark_params(folder: Path, orchestration: dict) -> dict:
    return {
        "seed": 0,
        "outputs": str(folder / "outputs"),
        "data": {"name": "fashion-mnist", "root": str(REPO / "data"), "train_subset": 12000, "test_subset": 1000},
        "scores": {"folds": 4, "repeats": 1, "seen": False, "recipe": {"epochs": 8}, "score_epochs": [4, 8]},
        "orchestration": {"retries": 0, "retry_delay_seconds": 0, **orchestration},
        "tracking": {"uri": f"sqlite:///{folder.parent / 'mlflow.db'}", "experiment": "dask-scoring-benchmark"},
    }


def score_once(folder: Path, orchestration: dict, overrides: list[str]) -> dict:
    from mlflow import MlflowClient

    from flows.prune import stage
    from flows.cli import _flow_with_runner
    from unseen.config import load_params

    folder.mkdir(parents=True)
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(benchmark_params(folder, orchestration), sort_keys=False))
    params = load_params(params_file, overrides)
    started = time.perf_counter()
    result = _flow_with_runner(stage, params)(name="scores", params_file=str(params_file), overrides=overrides)
    flow_wall = time.perf_counter() - started
    report = result["stages"][0]
    client = MlflowClient(params.tracking.uri)
    children = client.search_runs(
        [client.get_run(result["run_id"]).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'"
    )
    per_model = {run.info.run_name: round(run.data.metrics["compute_seconds"], 2) for run in children}
    compute = sum(per_model.values())
    workers = orchestration["dask"]["workers"] if orchestration["task_runner"] == "dask" else orchestration["max_workers"]
    return {
        "orchestration": params.orchestration.model_dump(mode="json"),
        "flow_wall_seconds": round(flow_wall, 2),
        "scores_stage_wall_seconds": round(report.wall_seconds, 2),
        "fold_models_compute_seconds": per_model,
        "fold_models_compute_total_seconds": round(compute, 2),
        "stage_wall_minus_compute_per_worker_seconds": round(report.wall_seconds - compute / workers, 2),
        "train_split": params.data.train_subset,
        "folds": params.scores.folds,
        "epochs": params.scores.recipe.epochs,
    }


def trivial_task_overhead(orchestration: dict) -> dict:
    """Seconds per task of N tasks that do nothing, through the runner of `orchestration`, after a warm-up."""
    from prefect import flow, task

    from tasks.runners import task_runner, workers_reach_this_api
    from unseen.config import OrchestrationParams

    params = OrchestrationParams(**{"retries": 0, **orchestration})

    @task(name="noop")
    def noop(i: int) -> int:
        return i

    @flow(name="trivial-tasks", task_runner=task_runner(params))
    def trivial(n: int) -> float:
        with workers_reach_this_api():
            noop.map(range(4)).result()
            started = time.perf_counter()
            noop.map(range(n)).result()
            return time.perf_counter() - started

    wall = trivial(TRIVIAL_TASKS)
    return {"tasks": TRIVIAL_TASKS, "wall_seconds": round(wall, 2), "seconds_per_task": round(wall / TRIVIAL_TASKS, 3)}


def main() -> None:
    overrides = [arg for arg in sys.argv[1:] if arg != "--set"]
    sys.path.insert(0, str(REPO))
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="dask-scoring-") as tmp:
        # Prefect's temporary server on a database of its own (not ~/.prefect, which other runs may be writing)
        os.environ.update({"PREFECT_HOME": str(Path(tmp) / "prefect"), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        for name, orchestration in CONFIGS.items():
            results[name] = score_once(Path(tmp) / name, orchestration, overrides)
            print(name, json.dumps(results[name]), flush=True)
        for name, orchestration in CONFIGS.items():
            results[name]["trivial_tasks"] = trivial_task_overhead(orchestration)
            print(name, json.dumps(results[name]["trivial_tasks"]), flush=True)
    one, two = results["dask_1_worker_1_thread"], results["dask_2_workers_1_thread"]
    result = {
        "command": " ".join(["python benchmarks/dask_scoring.py", *sys.argv[1:]]),
        "machine": machine(),
        "load_average_1_5_15_min_before": [round(x, 2) for x in load_before],
        "what": "scores stage, unseen fold models only (scores.seen: false), K folds on a stratified train subset; "
        "each configuration on a fresh cluster and a fresh outputs folder",
        "speedup_2_workers_vs_1_scores_stage": round(one["scores_stage_wall_seconds"] / two["scores_stage_wall_seconds"], 3),
        "speedup_2_workers_vs_local_default_scores_stage": round(
            results["local_threads_max_workers_1"]["scores_stage_wall_seconds"] / two["scores_stage_wall_seconds"], 3
        ),
        "runs": results,
    }
    out = REPO / "benchmarks" / "results" / "dask_scoring.json"
    write_json(out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
