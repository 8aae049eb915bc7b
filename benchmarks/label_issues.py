"""How well the label-issue cut tells flipped labels from ambiguous true ones, on one seed of a sweep whose scores exist
(`unseen bench` has run it): how many samples `label_issue` flags, how many of them are flipped (label-noise sweeps
keep the flipped ids), the held-out probability of the given label (exp(-loss)) among the flagged flipped and the
flagged true ones, what each `select.label_issue_max_probability` would still cut of both (of the flagged samples, and
of all samples as `select.label_issues_by: probability` cuts them where the labels are noisy), and, where the sweep
computes `label_rank`, how many of the default's cut have their label ranked second by the held-out models, and, for
every cell of the seed that has a coreset, how many flipped labels escaped its cut and how many of those it keeps.
Usage: .venv/bin/python benchmarks/label_issues.py --config benchmarks/pilot_power_noise.yaml --seed 100
Writes benchmarks/results/<sweep>_label_issues_s<seed>.json.
"""

from __future__ import annotations

import json

import numpy as np

from benchmarks.machine import machine
from benchmarks.seed_files import cell_coresets, seed_scores
from unseen.io import write_json
from unseen.scores import label_issue_flags
from unseen.tables import CORESET, positions_of, read_table

LIMITS = (0.02, 0.05, 0.1, 0.2, 0.3)
QUANTILES = (0.1, 0.5, 0.9)


def _quantiles(values: np.ndarray) -> list[float] | None:
    """QUANTILES of `values`, rounded for the results file; None when there are none."""
    return np.quantile(values, QUANTILES).round(3).tolist() if len(values) else None


def _cut(cut: np.ndarray, flipped: np.ndarray) -> dict[str, int]:
    """How many samples a cut removes, and how many of them are flipped and true."""
    return {"all": int(cut.sum()), "flipped": int((cut & flipped).sum()), "true": int((cut & ~flipped).sum())}


def _coresets(sweep, params, seed: int, sample_ids: np.ndarray, flipped: np.ndarray) -> dict[str, dict[str, int]]:
    """Per cell with a coreset.parquet: its size, the flipped labels its cut left, and how many of those it keeps."""
    found = {}
    for key, path in cell_coresets(sweep, params, seed, pool_size=len(sample_ids)).items():
        table = read_table(CORESET, path)
        rows = flipped[positions_of(sample_ids, table.column("sample_id").to_numpy(), str(path))]
        selected, cut = (table.column(name).to_numpy(zero_copy_only=False) for name in ("selected", "cut_as_hardest"))
        found[key] = {"kept": int(selected.sum()), "flipped_left_by_cut": int((rows & ~cut).sum()), "flipped_kept": int((rows & selected).sum())}
    return found


def main() -> None:
    args, sweep, params, dataset, table = seed_scores(__doc__.splitlines()[0], "benchmarks/pilot_power_noise.yaml")
    path = params.output("scores.parquet")
    variant = params.select.score.rpartition("_")[2]
    names = (f"label_issue_{variant}", f"loss_{variant}")
    if missing := [name for name in names if name not in table.column_names]:
        raise SystemExit(f"{path}: no column {missing[0]!r}; the sweep's scores.scores must hold label_issue and loss")
    rank_column = f"label_rank_{variant}"
    columns = {name: table.column(name).to_numpy() for name in (*names, *([rank_column] if rank_column in table.column_names else []))}
    flagged = label_issue_flags(columns, params.select.score)
    probability = np.exp(-columns[f"loss_{variant}"])
    order = positions_of(dataset.train.sample_ids, table.column("sample_id").to_numpy(), str(path))
    flipped = np.zeros(len(flagged), dtype=bool) if dataset.noisy_train is None else np.asarray(dataset.noisy_train)[order]
    result = {
        "command": f"python benchmarks/label_issues.py --config {args.config} --seed {args.seed}",
        "machine": machine(),
        "samples": len(flagged),
        "flipped": int(flipped.sum()),
        "flagged": int(flagged.sum()),
        "flagged_flipped": int((flagged & flipped).sum()),
        "flagged_true": int((flagged & ~flipped).sum()),
        f"label_probability_quantiles_{'_'.join(str(q) for q in QUANTILES)}": {
            "flagged_flipped": _quantiles(probability[flagged & flipped]), "flagged_true": _quantiles(probability[flagged & ~flipped]),
        },
        "cut_by_max_probability": {str(limit): _cut(label_issue_flags(columns, params.select.score, limit), flipped) for limit in LIMITS},
        "cut_by_max_probability_flagged_or_not": {
            str(limit): _cut(label_issue_flags(columns, params.select.score, limit, flagged_only=False), flipped) for limit in LIMITS
        },
    }
    if rank_column in columns:
        cut = label_issue_flags(columns, params.select.score, params.select.label_issue_max_probability)
        result["cut_by_label_rank"] = {"2": _cut(cut & (columns[rank_column] < 3), flipped), "3 or lower": _cut(cut & (columns[rank_column] >= 3), flipped)}
    result["coresets"] = _coresets(sweep, params, args.seed, table.column("sample_id").to_numpy(), flipped)
    out = sweep.results_file(f"label_issues_s{args.seed}.json")
    write_json(out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
