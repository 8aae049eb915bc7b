"""Why `features.batch_size` is the proxy's training batch: in a fresh process, after the proxy's training, the first
embedding pass over the train and test images at each inference batch size, timed, and whether the embeddings are
bit-identical across sizes. Each size runs in its own process, as each run of the features stage does.
Usage: .venv/bin/python benchmarks/inference_batch.py [--sizes 128,512]
Writes benchmarks/results/inference_batch.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_size(batch_size: int) -> dict:
    """Train the default proxy, then time its first embedding pass at `batch_size`; the embeddings' digest."""
    import torch

    from unseen.config import load_params
    from unseen.data import load_dataset
    from unseen.training import predict_embeddings, train_model

    params = load_params(REPO / "params.yaml")
    torch.manual_seed(params.seed)
    dataset = load_dataset(params.data, params.seed)
    model = train_model(dataset, dataset.train, params.features.proxy, seed=params.seed, device=torch.device("cpu"), on_epoch=None)
    started = time.perf_counter()
    embeddings = [predict_embeddings(model, dataset, split.images, batch_size=batch_size).numpy() for split in (dataset.train, dataset.test)]
    seconds = time.perf_counter() - started
    digest = hashlib.sha256(b"".join(e.tobytes() for e in embeddings)).hexdigest()
    return {"batch_size": batch_size, "first_pass_seconds": round(seconds, 2), "embeddings_sha256": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,512", help="inference batch sizes, comma-separated")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a single size, in the child process
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.one)))
        return
    from benchmarks.machine import machine
    from unseen.io import write_json

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        child = subprocess.run([sys.executable, "-m", "benchmarks.inference_batch", "--one", str(size)], cwd=REPO, check=True,
                               capture_output=True, text=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    result = {
        "command": f"python benchmarks/inference_batch.py --sizes {args.sizes}",
        "machine": machine(),
        "rows": rows,
        "identical_embeddings": len({row["embeddings_sha256"] for row in rows}) == 1,
    }
    write_json(REPO / "benchmarks" / "results" / "inference_batch.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
