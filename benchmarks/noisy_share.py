"""The proxy's first-epoch noisy-label share (the check behind `features.proxy_noisy_epochs`: the share of its first
epoch's second half whose label it gave under `proxy_noisy_probability` just before training on them) at a sweep's
params, for any seeds, without running the sweep: the features stage's proxy trained once per seed, its logged share
read back. It shows where the check tells clean from noisy labels and where it is borderline (small pools, whose first
epoch is a few steps).
Usage: .venv/bin/python benchmarks/noisy_share.py --config benchmarks/memorize_clean.yaml --seeds 150 151 152
Writes benchmarks/results/<sweep>_noisy_share.json.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.machine import machine
from benchmarks.sweep import BenchmarkConfig, load_sweep, seed_params
from unseen.data import load_dataset
from unseen.features import extract_features
from unseen.io import write_json


def first_epoch_share(sweep: BenchmarkConfig, seed: int) -> tuple[float, int]:
    """(the noisy-label share the features stage's proxy logs for `seed` of `sweep`, train samples); exits where it
    logs none (the check is off: no proxy, or `proxy_noisy_epochs` no longer than its recipe)."""
    params = seed_params(sweep, seed)
    dataset = load_dataset(params.data, params.seed)
    logged: list[float] = []
    extract_features(dataset, params.features, seed=params.seed, device=torch.device("cpu"),
                     on_epoch=lambda epoch, model, stats: logged.append(stats["noisy_label_share"]) if "noisy_label_share" in stats else None)
    if not logged:
        raise SystemExit(f"{sweep.name}: the noisy-label check is off (features.extractor proxy and proxy_noisy_epochs > proxy.epochs turn it on)")
    return logged[0], len(dataset.train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the sweep file whose params (pool, label noise) to use")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds to train the proxy with")
    args = parser.parse_args()
    sweep = load_sweep(args.config)
    shares = {seed: first_epoch_share(sweep, seed) for seed in args.seeds}
    first = seed_params(sweep, args.seeds[0])
    result = {
        "command": f"python benchmarks/noisy_share.py --config {args.config} --seeds {' '.join(map(str, args.seeds))}",
        "machine": machine(),
        "train_samples": shares[args.seeds[0]][1],
        "label_noise": first.data.label_noise,
        "noisy_at_or_above": first.features.proxy_noisy_share,
        "noisy_label_share": {str(seed): round(share, 4) for seed, (share, _) in shares.items()},
    }
    out = write_json(sweep.results_file("noisy_share.json"), result)
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
