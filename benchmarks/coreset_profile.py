"""Where the default coreset's cost goes, in one process and without orchestration: the proxy features, the fold
probes' scores and UNSEEN selection (its step probes included) on the default data and params, each part timed, and
the functions that take the most time inside scoring and selection (cProfile, own time). benchmarks/default_run.py
measures the same stages inside a whole run; this script says which code to make cheaper.
Usage: .venv/bin/python benchmarks/coreset_profile.py [KEY=VALUE ...], e.g. select.fourier_features=128
Writes benchmarks/results/coreset_profile.json.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import torch

from benchmarks.machine import machine
from unseen.config import load_params
from unseen.data import load_dataset
from unseen.features import extract_features
from unseen.io import write_json
from unseen.scores import embedding_scores, step_scorer
from unseen.selection import select_multistep

REPO = Path(__file__).resolve().parents[1]


def profiled(call):
    """(result, seconds, the ten functions with the most own time as {name: seconds}) of `call()`."""
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    result = call()
    profile.disable()
    seconds = time.perf_counter() - started
    stats = pstats.Stats(profile).stats
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:10]
    top = {f"{Path(file).name}:{line}({name})": round(own, 2) for (file, line, name), (_, _, own, _, _) in ranked}
    return result, seconds, top


def main() -> None:
    overrides = sys.argv[1:]
    params = load_params(REPO / "params.yaml", overrides)
    torch.manual_seed(params.seed)
    started = time.perf_counter()
    dataset = load_dataset(params.data, params.seed)
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    train, test = extract_features(dataset, params.features, seed=params.seed, device=torch.device("cpu"))
    features_seconds = time.perf_counter() - started
    labels = dataset.train.labels.numpy()
    table, scores_seconds, scores_top = profiled(lambda: embedding_scores(
        train, labels, params.scores, seed=params.seed, sample_ids=dataset.train.sample_ids, num_classes=dataset.num_classes
    ))
    pool = test if params.select.target_pool == "test" else None
    scorer = step_scorer(dataset, params.scores, params.select.score_name, seed=params.seed, embeddings=train)
    (coreset, _), select_seconds, select_top = profiled(lambda: select_multistep(
        params.select, table.difficulty(params.select.score), train, labels, scorer, num_classes=dataset.num_classes,
        pool_features=pool, flagged=table.cut_flags(params.select), misclassified=table.oversampled_candidates(params.select), seed=params.seed,
    ))
    result = {
        "command": " ".join(["python benchmarks/coreset_profile.py", *overrides]),
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "train_size": len(labels),
        "coreset_size": int(coreset.selected.sum()),
        "seconds": {
            "load": round(load_seconds, 2), "features": round(features_seconds, 2),
            "scores": round(scores_seconds, 2), "select": round(select_seconds, 2),
        },
        "scores_own_time_top10": scores_top,
        "select_own_time_top10": select_top,
    }
    write_json(REPO / "benchmarks" / "results" / "coreset_profile.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
