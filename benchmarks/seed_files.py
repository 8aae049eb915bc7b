"""What the scripts that inspect one seed of a finished sweep share (benchmarks/label_issues.py,
benchmarks/kept_difficulty.py): their command line, the seed's scores and the coresets of its cells."""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa

from benchmarks.sweep import BenchmarkConfig, Cell, cell_params, load_sweep, seed_params
from unseen.config import Params
from unseen.data import ImageDataset, load_dataset
from unseen.tables import SCORES, read_table


def seed_scores(description: str, example: str) -> tuple[argparse.Namespace, BenchmarkConfig, Params, ImageDataset, pa.Table]:
    """For the scripts that inspect one seed of a finished sweep: their --config and --seed, the sweep, the seed's params,
    data set and scores.parquet; exits naming the command to run when the scores are not there yet."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help=f"the sweep file, e.g. {example}")
    parser.add_argument("--seed", type=int, required=True, help="one of the sweep's seeds")
    args = parser.parse_args()
    sweep = load_sweep(args.config)
    params = seed_params(sweep, args.seed)
    path = params.output("scores.parquet")
    if not Path(path).is_file():
        raise SystemExit(f"{path}: no scores for seed {args.seed}; run `unseen bench --config {args.config}` first")
    dataset = load_dataset(params.data, params.seed)
    return args, sweep, params, dataset, read_table(SCORES, path, data_fingerprint=dataset.fingerprint)


def cell_coresets(sweep: BenchmarkConfig, base: Params, seed: int, *, pool_size: int) -> dict[str, Path]:
    """`method/pXX` -> coreset.parquet of every cell of `seed` that has one (after `unseen bench` ran it)."""
    found = {}
    for method in sweep.methods:
        for ratio in sweep.prune_ratios:
            path = Path(cell_params(sweep, base, Cell(method, ratio, seed), pool_size=pool_size).output("coreset.parquet"))
            if path.is_file():
                found[f"{method}/p{round(ratio * 100):02d}"] = path
    return found
