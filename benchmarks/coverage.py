"""Where a coreset sits in the held-out difficulty range: per decile of `select.score` and per class, how many samples
`make run`'s UNSEEN coreset keeps (outputs/coreset.parquet), next to CCS (its beta 0, global strata) at the same
budget on the same scores. Run after `make run`: .venv/bin/python benchmarks/coverage.py
Writes benchmarks/results/coverage.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.machine import machine
from unseen.config import load_params
from unseen.io import write_json
from unseen.scores import label_issue_flags
from unseen.selection import select
from unseen.tables import CORESET, SCORES, read_table

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    params = load_params(REPO / "params.yaml")
    scores = read_table(SCORES, REPO / params.output("scores.parquet"))
    coreset = read_table(CORESET, REPO / params.output("coreset.parquet"))
    if scores.column("sample_id").to_pylist() != coreset.column("sample_id").to_pylist():
        raise SystemExit("outputs/scores.parquet and outputs/coreset.parquet hold different samples: run `make run` again")
    labels = scores.column("label").to_numpy().astype(np.int64)
    columns = {name: scores.column(name).to_numpy() for name in scores.column_names if name.startswith(("el2n", "label_issue", "label_rank", "loss"))}
    difficulty = scores.column(params.select.score).to_numpy()
    unseen = coreset.column("selected").to_numpy(zero_copy_only=False)
    ccs = select(
        params.select.model_copy(update={"method": "ccs", "hard_cutoff": 0.0}), difficulty, np.zeros((len(labels), 1)), labels,
        num_classes=int(labels.max()) + 1, seed=params.seed,
    ).selected
    decile = np.searchsorted(np.quantile(difficulty, np.linspace(0, 1, 11)[1:-1]), difficulty, side="right")
    flagged = label_issue_flags(columns, params.select.score, params.select.label_issue_max_probability, params.select.label_issue_min_rank)
    result = {
        "command": "python benchmarks/coverage.py",
        "machine": machine(),
        "score": params.select.score,
        "budget": int(unseen.sum()),
        "per_decile_easiest_first": {
            "samples": np.bincount(decile, minlength=10).tolist(),
            "unseen": np.bincount(decile[unseen], minlength=10).tolist(),
            "ccs_beta_0": np.bincount(decile[ccs], minlength=10).tolist(),
        },
        "per_class": {"unseen": np.bincount(labels[unseen]).tolist(), "ccs_beta_0": np.bincount(labels[ccs]).tolist()},
        "label_issues_kept": {"flagged": int(flagged.sum()), "unseen": int((flagged & unseen).sum()), "ccs_beta_0": int((flagged & ccs).sum())},
    }
    write_json(REPO / "benchmarks" / "results" / "coverage.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
