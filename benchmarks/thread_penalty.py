"""Why a run keeps torch work off its main thread (`tasks.runners.torch_work`): the retrain recipe's small CNN trained
on 10,000 Fashion-MNIST images for 2 epochs with torch's default threads, each case in a fresh process, alternated:
all on the main thread; loaded on the main thread (the data set's statistics are parallel reductions, so the main
thread then keeps an OpenMP thread team) and trained on another thread, as a run's tasks trained before; and with the
main thread on one torch thread, loaded and trained on another thread, as they train now. Same weights in each case.
Usage: .venv/bin/python benchmarks/thread_penalty.py [--repeats 3]
Writes benchmarks/results/thread_penalty.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from benchmarks.machine import machine
from unseen.io import write_json

REPO = Path(__file__).resolve().parents[1]
CASES = ("main_thread", "other_thread_main_team", "other_thread_no_main_team")


def train_once(case: str) -> dict[str, float]:
    """Load and train in `case`'s way in this process: the training's seconds and a checksum of the weights."""
    from unseen.config import load_params
    from unseen.data import load_dataset
    from unseen.training import train_model

    params = load_params(REPO / "params.yaml", ["data.train_subset=10000", "data.test_subset=1000"])
    recipe = params.retrain.recipe.model_copy(update={"epochs": 2})
    outcome: dict[str, float] = {}
    threads = torch.get_num_threads()

    def train(dataset) -> None:
        torch.set_num_threads(threads)
        dataset = dataset or load_dataset(params.data, params.seed)
        started = time.perf_counter()
        model = train_model(dataset, dataset.train, recipe, seed=0)
        outcome["seconds"] = time.perf_counter() - started
        outcome["weights"] = float(sum(p.double().sum() for p in model.parameters()))

    if case == "main_thread":
        train(None)
        return outcome
    if case == "other_thread_no_main_team":
        torch.set_num_threads(1)
    loaded = load_dataset(params.data, params.seed) if case == "other_thread_main_team" else None
    thread = threading.Thread(target=train, args=(loaded,))
    thread.start()
    thread.join()
    return outcome


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(json.dumps(train_once(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per case, alternated")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {case: [] for case in CASES}
    for _ in range(args.repeats):
        for case in CASES:
            done = subprocess.run([sys.executable, __file__, "--case", case], cwd=REPO, check=True, capture_output=True, text=True)
            runs[case].append(json.loads(done.stdout.strip().splitlines()[-1]))
    result = {
        "command": f"python benchmarks/thread_penalty.py --repeats {args.repeats}",
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "median_seconds": {case: round(statistics.median(r["seconds"] for r in runs[case]), 2) for case in CASES},
        "seconds": {case: [round(r["seconds"], 2) for r in runs[case]] for case in CASES},
        "same_weights": len({r["weights"] for case in CASES for r in runs[case]}) == 1,
    }
    path = write_json(REPO / "benchmarks" / "results" / "thread_penalty.json", result)
    print(f"{path}: {result['median_seconds']}, same weights: {result['same_weights']}")


if __name__ == "__main__":
    main()
