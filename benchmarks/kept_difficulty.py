"""Where each coreset of one sweep seed sits in its classes' held-out difficulty, and how many of the samples the
held-out models misclassify (a negative held-out margin, what `select.hard_cutoff: misclassified` cuts) it keeps and
its cut left (`hard_cutoff: oversampled` compares the two shares):
per cell, the kept samples in each band of within-class difficulty rank by `select.score` (0-25, 25-50, 50-75, 75-90
and 90-100%; a uniform draw keeps 25/25/25/15/10% of its samples in them), and the held-out error rate of every class.
Usage: .venv/bin/python benchmarks/kept_difficulty.py --config benchmarks/pilot_misclassified_digits.yaml --seed 118
Writes benchmarks/results/<sweep>_kept_difficulty_s<seed>.json.
"""

from __future__ import annotations

import json

import numpy as np

from benchmarks.machine import machine
from benchmarks.seed_files import cell_coresets, seed_scores
from unseen.io import write_json
from unseen.scores import difficulty, misclassified_flags
from unseen.selection.common import rank_within_class
from unseen.tables import CORESET, positions_of, read_table

BANDS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)


def class_percentiles(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each sample's difficulty rank within its class, from 0 (easiest) to 1 (hardest); ties by index."""
    sizes = np.bincount(labels)[labels]
    return rank_within_class(labels, values) / np.maximum(sizes - 1, 1)


def main() -> None:
    args, sweep, params, _, table = seed_scores(__doc__.splitlines()[0], "benchmarks/pilot_misclassified.yaml")
    variant = params.select.score.rpartition("_")[2]
    if f"margin_{variant}" not in table.column_names:
        raise SystemExit(f"{params.output('scores.parquet')}: no column 'margin_{variant}'; the sweep's scores.scores must hold margin")
    sample_ids, labels = table.column("sample_id").to_numpy(), table.column("label").to_numpy().astype(np.int64)
    misclassified = misclassified_flags({f"margin_{variant}": table.column(f"margin_{variant}").to_numpy()}, params.select.score)
    percentile = class_percentiles(difficulty(table.column(params.select.score).to_numpy(), params.select.score), labels)
    cells = {}
    for key, path in cell_coresets(sweep, params, args.seed, pool_size=len(sample_ids)).items():
        coreset = read_table(CORESET, path)
        kept, cut = np.zeros(len(sample_ids), dtype=bool), np.zeros(len(sample_ids), dtype=bool)
        rows = positions_of(sample_ids, coreset.column("sample_id").to_numpy(), str(path))
        kept[rows], cut[rows] = (coreset.column(name).to_numpy(zero_copy_only=False) for name in ("selected", "cut_as_hardest"))
        cells[key] = {
            "kept": int(kept.sum()), "misclassified_kept": int((kept & misclassified).sum()),
            "left_by_cut": int((~cut).sum()), "misclassified_left_by_cut": int((misclassified & ~cut).sum()),
            "kept_per_band": np.histogram(percentile[kept], bins=BANDS)[0].tolist(),
        }
    result = {
        "command": f"python benchmarks/kept_difficulty.py --config {args.config} --seed {args.seed}",
        "machine": machine(),
        "samples": len(sample_ids),
        "misclassified": int(misclassified.sum()),
        "held_out_error_per_class": [round(float(misclassified[labels == c].mean()), 3) for c in np.unique(labels)],
        "bands": [f"{round(100 * low)}-{round(100 * high)}%" for low, high in zip(BANDS, BANDS[1:])],
        "coresets": cells,
    }
    write_json(sweep.results_file(f"kept_difficulty_s{args.seed}.json"), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
