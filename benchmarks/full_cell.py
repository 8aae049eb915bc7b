"""Does this machine reproduce a committed sweep? Retrains one seed's full-data cell of a sweep file (no selection, so
nothing but the data, the recipe and the machine decides it) with torch on 1 thread, as the sweeps' Dask workers run,
and sets it next to the accuracy the committed results table holds, with the machine that wrote each.
Usage: .venv/bin/python benchmarks/full_cell.py --config benchmarks/memorize.yaml [--seed 0]
Writes benchmarks/results/<sweep>_full_cell_s<seed>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.machine import describe, machine
from benchmarks.sweep import FULL, cell_params, load_sweep, read_results, seed_params, sweep_cells
from unseen.data import load_dataset
from unseen.io import write_json
from unseen.retrain import train_and_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a sweep file, e.g. benchmarks/memorize.yaml")
    parser.add_argument("--seed", type=int, default=0, help="one of the sweep's seeds")
    args = parser.parse_args()
    sweep = load_sweep(args.config)
    if args.seed not in sweep.seeds:
        raise SystemExit(f"{args.config}: seed {args.seed} is not one of the sweep's seeds {list(sweep.seeds)}")
    table, meta = read_results(sweep.results_table)
    committed = [r for r in table.to_pylist() if r["method"] == FULL and r["seed"] == args.seed]
    if not committed:
        raise SystemExit(f"{sweep.results_table}: no full-data cell of seed {args.seed}; run `unseen bench --config {args.config}` first")
    torch.set_num_threads(1)
    params = seed_params(sweep, args.seed)
    dataset = load_dataset(params.data, params.seed)
    cell = next(c for c in sweep_cells(sweep) if c.seed == args.seed and c.method == FULL)
    params = cell_params(sweep, params, cell, pool_size=len(dataset.train))
    accuracy = train_and_test(dataset, dataset.train.sample_ids, params.retrain, seed=params.seed).test_accuracy
    result = {
        "command": f"python benchmarks/full_cell.py --config {args.config} --seed {args.seed}",
        "machine": machine(),
        "test_accuracy_here": round(accuracy, 4),
        "test_accuracy_committed": round(committed[0]["test_accuracy"], 4),
        "committed_on": meta.get("machine", "not recorded"),
        "same": round(accuracy, 4) == round(committed[0]["test_accuracy"], 4),
        "params_hash_here": params.run_hash(),
        "params_hash_committed": committed[0]["params_hash"],
        "here": describe(machine()),
    }
    path = write_json(Path(sweep.results_dir, f"{sweep.name}_full_cell_s{args.seed}.json"), result)
    print(f"{path}: {result['test_accuracy_here']} here, {result['test_accuracy_committed']} committed ({'the same' if result['same'] else 'different'})")


if __name__ == "__main__":
    main()
