"""The proxy's first-epoch noisy-label share (the check behind `features.proxy_noisy_epochs`: the share of its first
epoch's second half whose label it gave under `proxy_noisy_probability` just before training on them) at a sweep's
params, for any seeds, without running the sweep: the features stage's proxy trained once per seed, its logged share
read back. It shows where the check tells clean from noisy labels and where it is borderline (small pools, whose first
epoch is a few steps). With --fold-models the held-out scoring models train too, and each seed gets both verdicts on
the labels as the select report records them (`unseen.selection.label_noise_verdicts`): where they disagree, a run's
summary asks the user to set `select.label_issues`.
Usage: .venv/bin/python benchmarks/noisy_share.py --config benchmarks/memorize_clean.yaml --seeds 150 151 152 [--fold-models]
[--set KEY=VALUE ... --out FILE], e.g. --set data.label_noise=0.05 for lighter noise than the sweep's.
Writes benchmarks/results/<sweep>_noisy_share.json (with --fold-models, <sweep>_label_noise_verdicts.json), or --out.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.machine import machine
from benchmarks.sweep import BenchmarkConfig, load_sweep, seed_params
from unseen.data import load_dataset
from unseen.features import extract_features
from unseen.scores import unseen_scores
from unseen.selection import label_noise_verdicts
from unseen.io import write_json


def seed_check(sweep: BenchmarkConfig, seed: int, fold_models: bool) -> tuple[dict[str, float], int]:
    """(the noisy-label share the features stage's proxy logs for `seed` of `sweep`, with `fold_models` also the fold
    models' label-issue share and both verdicts; train samples). Exits where the proxy logs none (the check is off: no
    proxy, or `proxy_noisy_epochs` no longer than its recipe) or where the sweep's hard cutoff cuts no label issues."""
    params = seed_params(sweep, seed)
    if params.orchestration.torch_threads:  # the sweep's pinned thread count: its features and scores stages' numbers
        torch.set_num_threads(params.orchestration.torch_threads)
    dataset = load_dataset(params.data, params.seed)
    logged: list[float] = []
    train, _ = extract_features(dataset, params.features, seed=params.seed, device=torch.device("cpu"),
                                on_epoch=lambda epoch, model, stats: logged.append(stats["noisy_label_share"]) if "noisy_label_share" in stats else None)
    if not logged:
        raise SystemExit(f"{sweep.name}: the noisy-label check is off (features.extractor proxy and proxy_noisy_epochs > proxy.epochs turn it on)")
    check = {"noisy_label_share": round(logged[0], 4)}
    if fold_models:
        held_out_only = params.scores.model_copy(update={"seen": False})
        flagged = unseen_scores(dataset, held_out_only, seed=params.seed, device=torch.device("cpu"), embeddings=train).cut_flags(params.select)
        if flagged is None:
            raise SystemExit(f"{sweep.name}: select.hard_cutoff {params.select.cutoff!r} cuts no label issues at prune ratio {params.select.prune_ratio}")
        check.update(label_issues_flagged_fraction=round(float(flagged.mean()), 4),
                     **label_noise_verdicts(flagged, params.select.label_issue_rate, logged[0], params.features.proxy_noisy_share))
    return check, len(dataset.train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the sweep file whose params (pool, label noise) to use")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds to train the proxy with")
    parser.add_argument("--fold-models", action="store_true", help="train the held-out scoring models too: both verdicts per seed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params override after the sweep's own")
    parser.add_argument("--out", help="the results file (default benchmarks/results/<sweep>_<what>.json)")
    args = parser.parse_args()
    sweep = load_sweep(args.config)
    sweep = sweep.model_copy(update={"overrides": (*sweep.overrides, *args.set)})
    checks = {seed: seed_check(sweep, seed, args.fold_models) for seed in args.seeds}
    first = seed_params(sweep, args.seeds[0])
    result = {
        "command": f"python benchmarks/noisy_share.py --config {args.config} --seeds {' '.join(map(str, args.seeds))}"
                   + (" --fold-models" if args.fold_models else "") + "".join(f" --set {value}" for value in args.set),
        "machine": machine(),
        "train_samples": checks[args.seeds[0]][1],
        "label_noise": first.data.label_noise,
        "noisy_at_or_above": first.features.proxy_noisy_share,
        "noisy_label_share": {str(seed): check["noisy_label_share"] for seed, (check, _) in checks.items()},
    }
    if args.fold_models:
        result["label_issue_rate"] = first.select.label_issue_rate
        result["by_seed"] = {str(seed): check for seed, (check, _) in checks.items()}
    out = write_json(args.out or sweep.results_file("label_noise_verdicts.json" if args.fold_models else "noisy_share.json"), result)
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
