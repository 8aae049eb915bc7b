"""Whether the select stage gives the same coreset under other OpenBLAS kernels (numpy's matrix products: the UNSEEN
objective's kernel features and gains) on the same features and scores tables: `unseen stage features` and `scores`
once, then `unseen stage select` once per `OPENBLAS_CORETYPE`, each in a fresh process and folder. A machine whose CPU
makes OpenBLAS pick other kernels (AVX2 against AVX512) sums in another order; the kernel features' grid makes the
greedy's products exact, so no sample should be swapped (unseen.selection.kernels).
Usage: .venv/bin/python benchmarks/blas_kernels.py [--core-types "" Haswell Sandybridge] [--set KEY=VALUE ...] [--out F]
Writes benchmarks/results/blas_kernels.json (or F).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.machine import machine
from unseen.io import write_json
from unseen.tables import CORESET, read_table

REPO = Path(__file__).resolve().parents[1]
UNSEEN = str(Path(sys.executable).with_name("unseen"))
KERNELS = "from unseen.training import compute_kernels; print(compute_kernels()['blas_kernels'].removeprefix('OpenBLAS '))"


def _environment(core_type: str) -> dict[str, str]:
    """This process's environment with `OPENBLAS_CORETYPE` set to `core_type` ("" = OpenBLAS picks for the CPU)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    return {**env, "OPENBLAS_CORETYPE": core_type} if core_type else env


def _stage(name: str, outputs: Path, overrides: list[str], core_type: str = "") -> None:
    settings = [arg for override in (f"outputs={outputs}", *overrides) for arg in ("--set", override)]
    subprocess.run([UNSEEN, "stage", name, *settings], cwd=REPO, env=_environment(core_type), check=True, stdout=subprocess.DEVNULL)


def selected_under(core_type: str, tables: Path, work: Path, overrides: list[str]) -> tuple[str, np.ndarray]:
    """(the OpenBLAS kernels a process gets under `core_type`, the select stage's `selected` column on `tables`)."""
    outputs = work / (core_type or "cpu-default")
    outputs.mkdir()
    for name in ("features.parquet", "scores.parquet", "skipped_images.parquet"):
        shutil.copyfile(tables / name, outputs / name)
    _stage("select", outputs, overrides, core_type)
    kernels = subprocess.run([sys.executable, "-c", KERNELS], cwd=REPO, env=_environment(core_type), check=True, capture_output=True, text=True)
    selected = read_table(CORESET, outputs / "coreset.parquet").column("selected").to_numpy(zero_copy_only=False)
    return kernels.stdout.strip(), selected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core-types", nargs="+", default=["", "Haswell", "Sandybridge"],
                        help='OPENBLAS_CORETYPE values, the first the reference ("": what OpenBLAS picks for this CPU)')
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params override, as for `unseen run`")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "blas_kernels.json"), help="the results file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        tables = work / "tables"
        for stage in ("features", "scores"):
            _stage(stage, tables, args.set)
        runs = {core_type: selected_under(core_type, tables, work, args.set) for core_type in args.core_types}
    reference = runs[args.core_types[0]][1]
    result = {
        "command": "python benchmarks/blas_kernels.py " + " ".join(
            ["--core-types", *(repr(c) if not c else c for c in args.core_types), *(f"--set {s}" for s in args.set)]
        ),
        "machine": machine(),
        "train_samples": len(reference),
        "coreset_size": int(reference.sum()),
        "runs": {
            core_type or "cpu default": {"openblas_kernels": kernels, "samples_swapped": int((selected & ~reference).sum())}
            for core_type, (kernels, selected) in runs.items()
        },
    }
    out = write_json(args.out, result)
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
