"""What the noisy-label check (`features.proxy_noisy_epochs`) costs where the labels are clean: the features stage's
extraction on params.yaml's data, with the check on (its first epoch's label probabilities recorded) and off,
alternated in one process, and whether the embeddings are bit-identical (the proxy trains once either way).
Usage: .venv/bin/python benchmarks/noisy_check.py [--repeats 6] [--set KEY=VALUE ...]
Writes benchmarks/results/noisy_check.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.machine import machine
from unseen.config import load_params
from unseen.data import load_dataset
from unseen.features import extract_features
from unseen.io import write_json

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6, help="timed extractions per setting, alternated")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params override, as for `unseen run`")
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml", args.set)
    dataset = load_dataset(params.data, params.seed)
    settings = {"check_on": params.features.proxy_noisy_epochs or 3, "check_off": 0}
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    digests: dict[str, set[str]] = {name: set() for name in settings}
    for _ in range(args.repeats):
        for name, epochs in settings.items():
            features = params.features.model_copy(update={"proxy_noisy_epochs": epochs})
            started = time.perf_counter()
            train, test = extract_features(dataset, features, seed=params.seed, device=torch.device("cpu"))
            seconds[name].append(round(time.perf_counter() - started, 3))
            digests[name].add(hashlib.sha256(train.tobytes() + test.tobytes()).hexdigest())
    result = {
        "command": "python benchmarks/noisy_check.py " + " ".join([f"--repeats {args.repeats}", *(f"--set {s}" for s in args.set)]),
        "machine": machine(),
        "train_samples": len(dataset.train),
        "seconds": seconds,
        "median_seconds": {name: round(statistics.median(values), 3) for name, values in seconds.items()},
        "identical_embeddings": len(digests["check_on"] | digests["check_off"]) == 1,
    }
    out = write_json(REPO / "benchmarks/results/noisy_check.json", result)
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
