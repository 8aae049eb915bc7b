"""Time the default pipeline run (`unseen run` with params.yaml as committed) and record where the time goes.

Writes benchmarks/results/default_run.json: process wall time, each stage's wall and compute seconds,
the orchestration + tracking overhead (wall minus the stages' own compute), the start-up (and shut-down) outside the
flow, the coreset's cost (features + scores + select compute) as a multiple of one full-data training (the retrain
stage's compute: two models on half the data each), both test accuracies, and the machine that produced them. It first deletes outputs/cache/ (the scoring models of earlier runs), so that every
model trains. It also times a fresh interpreter importing what every run needs (torch, torchvision, Prefect, MLflow):
the part of start-up that no change in this repository can remove.
Usage: .venv/bin/python benchmarks/default_run.py [--set KEY=VALUE ...]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import machine
from unseen.io import write_json

REPO = Path(__file__).resolve().parents[1]


IMPORT_FLOOR = "import torch, torchvision, prefect, mlflow"


def import_floor_seconds(tries: int = 3) -> float:
    """The fastest of `tries` fresh interpreters importing the run's four big dependencies."""
    times = []
    for _ in range(tries):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORT_FLOOR], check=True)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    overrides = sys.argv[1:]
    shutil.rmtree(REPO / "outputs" / "cache", ignore_errors=True)  # every model trains: no scoring model from an earlier run
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("unseen")), "run", *overrides], cwd=REPO, check=True)
    wall = time.perf_counter() - started
    report = json.loads((REPO / "outputs" / "run_report.json").read_text())
    metrics = json.loads((REPO / "outputs" / "metrics.json").read_text())
    compute = sum(stage["compute_seconds"] for stage in report["stages"])
    stage_compute = {s["name"]: s["compute_seconds"] for s in report["stages"]}
    one_training = stage_compute["retrain"]  # two models on half the data each: the samples x epochs of one full-data training
    result = {
        "command": " ".join(["python benchmarks/default_run.py", *overrides]),
        "machine": machine(),
        "wall_seconds": round(wall, 1),
        "stage_compute_seconds": round(compute, 1),
        "overhead_seconds": round(wall - compute, 1),
        "overhead_fraction": round((wall - compute) / wall, 4),
        "startup_seconds": round(wall - report["flow_seconds"], 1),  # process start to flow start, and shut-down
        "import_floor_seconds": round(import_floor_seconds(), 1),  # python -c IMPORT_FLOOR: inside startup_seconds
        "coreset_cost_vs_one_full_training": round((stage_compute["features"] + stage_compute["scores"] + stage_compute["select"]) / one_training, 3),
        "outside_compute_seconds": {name: round(seconds, 1) for name, seconds in report["outside_compute_seconds"].items()},
        "stages": {s["name"]: {"wall_seconds": round(s["wall_seconds"], 1), "compute_seconds": round(s["compute_seconds"], 1)} for s in report["stages"]},
        "metrics": metrics,
        "mlflow_run_id": report["run_id"],
    }
    out = REPO / "benchmarks" / "results" / "default_run.json"
    write_json(out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
