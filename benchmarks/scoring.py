"""Cost of held-out scoring: recording overhead as a fraction of the scoring models' training time, and samples/s.

Trains the scoring models that params.yaml asks for (K fold models per repeat, and the seen models) on the
configured data, exactly as the scores stage does, and writes benchmarks/results/scoring.json. The probe scorer reads
the embeddings of outputs/features.parquet (run the features stage first).
Usage: .venv/bin/python benchmarks/scoring.py --set scores.scorer=cnn --set scores.seen=true [--set KEY=VALUE ...]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from benchmarks.machine import machine
from unseen.io import write_json

from unseen.config import load_params
from unseen.data import load_dataset
from unseen.features import read_features
from unseen.scores import scoring_models, train_scoring_model
from unseen.training import pick_device

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    os.chdir(REPO)  # relative paths in params.yaml (data.root, outputs) mean the project folder
    overrides = [arg for arg in sys.argv[1:] if arg != "--set"]
    params = load_params(REPO / "params.yaml", overrides)
    dataset = load_dataset(params.data, params.seed)
    embeddings = read_features(params, dataset)[1] if params.scores.scorer == "probe" else None
    rows = []
    for model in scoring_models(params.scores):
        started = time.perf_counter()
        record = train_scoring_model(dataset, model, params.scores, seed=params.seed, device=pick_device(), embeddings=embeddings)
        wall = time.perf_counter() - started
        recorded = len(record.sample_ids) * len(record.epochs)
        rows.append(
            {
                "model": model.name,
                "trained_on": int(record.trained_on.sum()),
                "scored": len(record.sample_ids),
                "recorded_epochs": len(record.epochs),
                "train_seconds": round(record.train_seconds, 2),
                "record_seconds": round(record.record_seconds, 2),
                "recording_overhead": round(record.record_seconds / record.train_seconds, 4),
                "recorded_samples_per_second": round(recorded / record.record_seconds),
                "wall_seconds": round(wall, 2),
            }
        )
        print(rows[-1], flush=True)
    train = sum(r["train_seconds"] for r in rows)
    record = sum(r["record_seconds"] for r in rows)
    result = {
        "command": " ".join(["python benchmarks/scoring.py", *sys.argv[1:]]),
        "machine": machine(),
        "train_split": len(dataset.train),
        "scorer": params.scores.scorer,
        "batch_size": params.scores.batch_size,
        "folds": params.scores.folds,
        "repeats": params.scores.repeats,
        "epochs": params.scores.recipe.epochs,
        "score_epochs": list(params.scores.score_epochs),
        "recording_overhead": round(record / train, 4),
        "scoring_samples_per_second": round(len(dataset.train) / sum(r["wall_seconds"] for r in rows), 1),
        "models": rows,
    }
    out = REPO / "benchmarks" / "results" / "scoring.json"
    write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "models"}, indent=2))


if __name__ == "__main__":
    main()
