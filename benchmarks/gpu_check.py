"""The GPU check: the library's whole chain on CUDA in a few minutes, with torch and the library's own dependencies
alone (no Prefect, MLflow, Dask or DVC), so that it runs on a bare GPU machine. On params.yaml's default and data
(Fashion-MNIST, 60,000 train images): features, held-out probe scores, three-step UNSEEN selection, the target model
retrained on the coreset and on a random subset of the same size; then CNN fold models (`scores.scorer=cnn`, the
paper's setting) on the same images, and how their held-out EL2N ranks against the probes'.
Usage: python benchmarks/gpu_check.py [--fashion-mnist DIR] [--out FILE] [--allow-cpu] [--set KEY=VALUE ...]
--fashion-mnist: a folder with the four official idx .gz files, unpacked into data.root first (a machine that cannot
download them). Writes --out (outputs/gpu_check.json); benchmarks/gpu_check.sh runs it on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from unseen.config import Params, load_params
from unseen.data import load_dataset, place_system_fashion_mnist
from unseen.features import extract_features
from unseen.io import write_json
from unseen.retrain import train_and_test
from unseen.scores import step_scorer, unseen_scores
from unseen.selection import random_baseline, select_multistep
from unseen.training import pick_device

REPO = Path(__file__).resolve().parents[1]


def timed(seconds: dict[str, float], name: str, work):
    """`work()`, its wall seconds under `name` (CUDA synchronised, so queued kernels count where they ran)."""
    started = time.perf_counter()
    result = work()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds[name] = round(time.perf_counter() - started, 2)
    print(f"[gpu_check] {name}: {seconds[name]} s", flush=True)
    return result


def chain(params: Params, device: torch.device) -> dict[str, object]:
    """params' pipeline as `make run` runs it, then CNN fold models on the same images: accuracies and seconds."""
    seconds: dict[str, float] = {}
    dataset = timed(seconds, "load", lambda: load_dataset(params.data, params.seed))
    train_features, _ = timed(seconds, "features", lambda: extract_features(dataset, params.features, seed=params.seed, device=device))
    scores = timed(seconds, "scores", lambda: unseen_scores(dataset, params.scores, seed=params.seed, device=device, embeddings=train_features))
    scorer = step_scorer(dataset, params.scores, params.select.score_name, seed=params.seed, device=device, embeddings=train_features)
    coreset, _ = timed(seconds, "select", lambda: select_multistep(
        params.select, scores.difficulty(params.select.score), train_features, scores.labels, scorer,
        flagged=scores.cut_flags(params.select), misclassified=scores.oversampled_candidates(params.select),
        num_classes=dataset.num_classes, seed=params.seed,
    ))
    ids = dataset.train.sample_ids
    random_ids = ids[random_baseline(scores.labels, coreset, dataset.num_classes, params.seed)]
    on_coreset = timed(seconds, "retrain_coreset", lambda: train_and_test(dataset, ids[coreset.selected], params.retrain, seed=params.seed, device=device))
    on_random = timed(seconds, "retrain_random", lambda: train_and_test(dataset, random_ids, params.retrain, seed=params.seed, device=device))
    cnn = params.scores.model_copy(update={"scorer": "cnn"})
    cnn_scores = timed(seconds, "scores_cnn_folds", lambda: unseen_scores(dataset, cnn, seed=params.seed, device=device))
    one_training = seconds["retrain_coreset"] + seconds["retrain_random"]  # two models on half the data: one full training
    return {
        "train_size": len(ids),
        "coreset_size": int(coreset.selected.sum()),
        "test_accuracy_coreset": round(on_coreset.test_accuracy, 4),
        "test_accuracy_random": round(on_random.test_accuracy, 4),
        "seconds": seconds,
        "coreset_cost_vs_one_full_training": round((seconds["features"] + seconds["scores"] + seconds["select"]) / one_training, 3),
        "cnn_folds_vs_one_full_training": round(seconds["scores_cnn_folds"] / one_training, 3),
        "spearman_el2n_probe_vs_cnn_folds": round(float(spearmanr(scores.difficulty("el2n_unseen"), cnn_scores.difficulty("el2n_unseen"))[0]), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion-mnist", type=Path, help="folder holding the four official Fashion-MNIST idx .gz files")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "gpu_check.json", help="the result file to write")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA too (to try the script, not to measure)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params override, as for `unseen run`")
    args = parser.parse_args()
    device = pick_device()
    if device.type != "cuda" and not args.allow_cpu:
        raise SystemExit("gpu_check: CUDA is not available to torch; this check is for a GPU machine (--allow-cpu to try it anyway)")
    params = load_params(REPO / "params.yaml", args.set)
    if args.fashion_mnist is not None and not place_system_fashion_mnist(Path(params.data.root), args.fashion_mnist):
        raise SystemExit(f"gpu_check: {args.fashion_mnist} lacks one of the four Fashion-MNIST idx .gz files")
    result = {
        "command": " ".join(["python benchmarks/gpu_check.py", *(f"--set {s}" for s in args.set)]),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
        **chain(params, device),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
    }
    path = write_json(args.out, result)
    print(f"[gpu_check] {path}: coreset {result['test_accuracy_coreset']} against random {result['test_accuracy_random']}, "
          f"coreset cost {result['coreset_cost_vs_one_full_training']}x one full training", flush=True)


if __name__ == "__main__":
    main()
