"""Time and peak memory of UNSEEN selection and every baseline on synthetic ImageNet-shaped inputs.

N samples in C classes with D-dimensional float32 features (Gaussian class clusters) and gamma-distributed
scores; a 70% prune (keep 30%). Sizes: 10k and 100k (100 classes) and the ImageNet train split's shape,
1,281,167 samples in 1,000 classes, 512-d. Each (method, size) runs in a fresh subprocess so its peak RSS
is its own. k-center greedy, herding, Moderate-DS and D2 run per class (they are quadratic or graph-based
over the whole set otherwise). Writes benchmarks/results/selection_scale.json.
Usage: .venv/bin/python benchmarks/selection_scale.py [--sizes 10000,100000,1281167] [--methods unseen,ccs,...]
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

REPO = Path(__file__).resolve().parents[1]
SHAPES = {10_000: (100, 512), 100_000: (100, 512), 1_281_167: (1000, 512)}


def class_clusters(n: int, classes: int, dim: int, centre_scale: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels): unit Gaussian clusters around random class centres, the shape of a backbone's embeddings."""
    labels = rng.integers(0, classes, n)
    centres = rng.normal(scale=centre_scale, size=(classes, dim)).astype(np.float32)
    features = rng.standard_normal((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):  # in chunks: no second N x D temporary
        features[start : start + 65536] += centres[labels[start : start + 65536]]
    return features, labels


def synthetic(n: int, classes: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    features, labels = class_clusters(n, classes, dim, 2.0, rng)
    scores = rng.gamma(2.0, 0.2, n).astype(np.float32)
    return scores, features, labels


def run_one(method: str, n: int) -> None:
    """Child process: one selection, printed as JSON (time excludes generating the data)."""
    from unseen.budgets import budget_for
    from unseen.selection import BASELINES, select_coreset

    classes, dim = SHAPES.get(n, (100, 512))
    scores, features, labels = synthetic(n, classes, dim)
    budget = budget_for(n, 0.7)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if method == "unseen":
        selected = select_coreset(scores, features, labels, budget, num_classes=classes).selected
    else:
        selected = BASELINES[method](scores, features, labels, budget)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert selected.sum() == budget
    print(json.dumps({"method": method, "n": n, "classes": classes, "dim": dim, "seconds": round(seconds, 2),
                      "peak_rss_gib": round(peak / 2**20, 2), "inputs_gib": round(features.nbytes / 2**30, 2),
                      "rss_before_select_gib": round(before / 2**20, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1281167")
    parser.add_argument("--methods", default="unseen,random,random_class_balanced,topk_hardest,ccs,moderate_ds,kcenter_greedy,herding,d2_pruning")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "N"))
    args = parser.parse_args()
    if args.child:
        run_one(args.child[0], int(args.child[1]))
        return
    from benchmarks.machine import machine
    from unseen.io import write_json

    rows = []
    for n in map(int, args.sizes.split(",")):
        for method in args.methods.split(","):
            result = subprocess.run([sys.executable, __file__, "--child", method, str(n)], capture_output=True, text=True, timeout=3600)
            row = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else {"method": method, "n": n, "error": result.stderr[-500:]}
            rows.append(row)
            print(row, flush=True)
    out = REPO / "benchmarks" / "results" / "selection_scale.json"
    write_json(out, {"command": " ".join(["python benchmarks/selection_scale.py", *sys.argv[1:]]), "machine": machine(), "prune_ratio": 0.7, "rows": rows})


if __name__ == "__main__":
    main()
