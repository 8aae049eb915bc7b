"""Time and peak memory of held-out probe scores plus UNSEEN selection on ImageNet-shaped embeddings.

N samples in 1,000 classes with 512-d float32 embeddings (Gaussian class clusters, 10% of labels flipped to another
class), as precomputed embeddings of a backbone would be. K = 5 fold probes (`scores.probe` of params.yaml with the
batch, epochs and window below) score every sample held out, all default scores included; then UNSEEN selects a 30%
coreset (70% pruning) in one pass with params.yaml's select section, the label issues the probes flag cut first.
Each size runs in a fresh subprocess, so its peak RSS is its own; the time excludes generating the data.
Usage: .venv/bin/python benchmarks/probe_scale.py [--sizes 100000,1281167] [--threads 2]
Writes benchmarks/results/probe_scale.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.selection_scale import class_clusters

REPO = Path(__file__).resolve().parents[1]
CLASSES, DIM, NOISE, FOLDS = 1000, 512, 0.1, 5
PROBE = {"batch_size": 4096, "epochs": 1, "score_epochs": (1, 1), "lr": 0.5}
"""The probe recipe at this scale: large batches and one epoch (a linear probe sees a million samples in one pass;
a second epoch doubles the time: 2 epochs took 50.4 s at 100k, against 10 minutes for the whole job at 1.28M)."""


def embeddings(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, observed labels, flipped mask): class clusters that overlap, so samples differ in difficulty."""
    rng = np.random.default_rng(seed)
    x, labels = class_clusters(n, CLASSES, DIM, 0.15, rng)
    flipped = rng.random(n) < NOISE
    observed = labels.copy()
    observed[flipped] = (labels[flipped] + rng.integers(1, CLASSES, int(flipped.sum()))) % CLASSES
    return x, observed, flipped


def run_one(n: int, threads: int) -> None:
    """Child process: scores and selection, printed as one JSON line."""
    import torch
    from sklearn.metrics import roc_auc_score

    from unseen.config import load_params
    from unseen.scores import embedding_scores
    from unseen.selection import select

    torch.set_num_threads(threads)
    params = load_params(REPO / "params.yaml")
    scores_params = params.scores.model_copy(
        update={"scorer": "probe", "folds": FOLDS, "seen": False, "probe": params.scores.probe.model_copy(update=PROBE)}
    )
    select_params = params.select.model_copy(update={"prune_ratio": 0.7, "steps": 1})  # one selection pass: no images to train step models on
    x, labels, flipped = embeddings(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    table = embedding_scores(x, labels, scores_params, seed=0, num_classes=CLASSES)
    scored = time.perf_counter()
    coreset = select(
        select_params, table.difficulty(select_params.score), x, labels, num_classes=CLASSES, flagged=table.cut_flags(select_params),
        misclassified=table.oversampled_candidates(select_params),
    )
    done = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kept = coreset.selected
    print(json.dumps({
        "n": n, "classes": CLASSES, "dim": DIM, "folds": FOLDS, "threads": threads, "probe": {k: list(v) if isinstance(v, tuple) else v for k, v in PROBE.items()},
        "scores_seconds": round(scored - started, 1), "select_seconds": round(done - scored, 1), "total_seconds": round(done - started, 1),
        "peak_rss_gib": round(peak / 2**20, 2), "rss_before_gib": round(before / 2**20, 2), "embeddings_gib": round(x.nbytes / 2**30, 2),
        "coreset_size": int(kept.sum()), "flipped_auc_el2n": round(float(roc_auc_score(flipped, table.columns["el2n_unseen"])), 3),
        "flipped_kept_fraction": round(float(flipped[kept].mean()), 4), "flipped_pool_fraction": round(float(flipped.mean()), 4),
    }))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1281167")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=int)
    args = parser.parse_args()
    if args.child:
        run_one(args.child, args.threads)
        return
    from benchmarks.machine import machine
    from unseen.io import write_json

    rows = []
    for n in map(int, args.sizes.split(",")):
        command = [sys.executable, __file__, "--child", str(n), "--threads", str(args.threads)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        row = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else {"n": n, "error": result.stderr[-800:]}
        rows.append(row)
        print(row, flush=True)
    write_json(REPO / "benchmarks" / "results" / "probe_scale.json", {
        "command": " ".join(["python benchmarks/probe_scale.py", *sys.argv[1:]]), "machine": machine(), "prune_ratio": 0.7, "rows": rows,
        "targets": {"total_seconds_max": 600, "peak_rss_gib_max": 8},
    })


if __name__ == "__main__":
    main()
