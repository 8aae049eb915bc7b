"""Re-pruning a grown collection against pruning it from scratch: Fashion-MNIST grows from its first 50,000 train
samples to all 60,000 (`data.train_first`).

Per seed, in two fresh outputs folders: the first 50,000 samples go through features, scores and select; then the
60,000 run incrementally in that folder (the 10,000 new samples scored by the cached fold models) and from scratch in
the other. Records the scores and select stages' compute of both (the issue's cost ratio), the features stage's,
and, unless --until-select, both coresets' test accuracy after the default retraining, with the random baseline's.
Writes benchmarks/results/increment[_<name>].json with the machine that produced it.
Usage: .venv/bin/python benchmarks/increment.py [--seeds 0 1 2] [--name cnn] [--until-select] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.machine import machine
from unseen.io import write_json

REPO = Path(__file__).resolve().parents[1]
UNSEEN = [sys.executable, "-m", "flows.cli"]  # `unseen`, importing this checkout's code (a worktree too)
BEFORE, AFTER = 50_000, 60_000
SCORING = ("scores", "select")


def stages(outputs: Path, names: list[str], overrides: list[str]) -> dict[str, dict]:
    """Run each stage as its own process (what `dvc repro` runs) and return each one's report: compute seconds, metrics."""
    reports = {}
    for name in names:
        subprocess.run([*UNSEEN, "stage", name, *overrides], cwd=REPO, check=True)
        [reports[name]] = json.loads((outputs / "run_report.json").read_text())["stages"]
    return reports


def one_seed(seed: int, work: Path, overrides: list[str], until_select: bool) -> dict:
    names = ["features", "scores", "select"] + ([] if until_select else ["retrain"])
    runs = {}
    for mode in ("incremental", "scratch"):
        outputs = work / f"seed-{seed}" / mode
        shutil.rmtree(outputs, ignore_errors=True)
        common = ["--set", f"outputs={outputs}", "--set", f"seed={seed}", "--set", f"tracking.uri=sqlite:///{work / 'mlflow.db'}", *overrides]
        if mode == "incremental":
            stages(outputs, names[:3], [*common, "--set", f"data.train_first={BEFORE}"])
        runs[mode] = stages(outputs, names, [*common, "--set", f"data.train_first={AFTER}"])
    if runs["incremental"]["scores"]["metrics"].get("scored_incrementally") != 1.0:
        raise SystemExit(f"seed {seed}: the grown run did not score incrementally: {runs['incremental']['scores']['notes']}")
    result = {"seed": seed}
    for mode, reports in runs.items():
        result[mode] = {
            "features_seconds": round(reports["features"]["compute_seconds"], 2),
            "scores_seconds": round(reports["scores"]["compute_seconds"], 2),
            "select_seconds": round(reports["select"]["compute_seconds"], 2),
            "coreset_size": reports["select"]["metrics"]["coreset_size"],
            "selected_incrementally": bool(reports["select"]["metrics"]["selected_incrementally"]),
        }
        if "retrain" in reports:
            result[mode].update({k: reports["retrain"]["metrics"][k] for k in ("test_accuracy_coreset", "test_accuracy_random")})
    scoring = {mode: sum(result[mode][f"{stage}_seconds"] for stage in SCORING) for mode in runs}
    result["scores_and_select_ratio"] = round(scoring["incremental"] / scoring["scratch"], 3)
    result["diff"] = {k: runs["incremental"]["select"]["metrics"][k] for k in ("coreset_added", "coreset_dropped", "coreset_kept", "new_samples_selected")}
    return result


def summary(rows: list[dict]) -> dict:
    """Mean (and std over seeds) of the cost ratio and, where retrained, of both coresets' accuracy."""
    def mean_std(values: list[float]) -> dict:
        return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}

    out = {"scores_and_select_ratio": mean_std([r["scores_and_select_ratio"] for r in rows])}
    for mode in ("incremental", "scratch"):
        out[f"{mode}_scores_and_select_seconds"] = mean_std([sum(r[mode][f"{s}_seconds"] for s in SCORING) for r in rows])
        if "test_accuracy_coreset" in rows[0][mode]:
            out[f"{mode}_test_accuracy_coreset"] = mean_std([r[mode]["test_accuracy_coreset"] for r in rows])
            out[f"{mode}_test_accuracy_random"] = mean_std([r[mode]["test_accuracy_random"] for r in rows])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--name", default="")
    parser.add_argument("--until-select", action="store_true", help="costs only: no retraining of the two coresets")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = [part for value in args.overrides for part in ("--set", value)]
    work = REPO / "outputs" / "bench" / ("increment" + (f"_{args.name}" if args.name else ""))
    work.mkdir(parents=True, exist_ok=True)
    rows = [one_seed(seed, work, overrides, args.until_select) for seed in args.seeds]
    result = {"command": " ".join(["python benchmarks/increment.py", *sys.argv[1:]]), "machine": machine(), "grown_from": BEFORE,
              "grown_to": AFTER, "seeds": rows, "summary": summary(rows)}
    out = REPO / "benchmarks" / "results" / f"increment{'_' + args.name if args.name else ''}.json"
    write_json(out, result)
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
