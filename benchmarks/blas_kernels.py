"""Whether the select stage gives the same coreset under other OpenBLAS kernels (numpy's matrix products: the UNSEEN
objective's kernel features and gains) on the same features and scores tables: `unseen stage features` and `scores`
once, then `unseen stage select` once per `OPENBLAS_CORETYPE`, each in a fresh process and folder. A machine whose CPU
makes OpenBLAS pick other kernels (AVX2 against AVX512) sums in another order; the kernel features' grid makes the
greedy's products exact, so no sample should be swapped (unseen.selection.kernels).
With `--torch-kernels avx2`, it also makes the features and scores tables anew with torch held to those kernels
(ATen, oneDNN and MKL alike: what a machine without AVX512 runs), selects from them, and says whether each table and
the coreset came out the same: the scoring chain trains networks, whose sums follow the kernels too.
Usage: .venv/bin/python benchmarks/blas_kernels.py [--core-types "" Haswell Sandybridge] [--torch-kernels avx2]
       [--set KEY=VALUE ...] [--out F]
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
import pyarrow.parquet as pq

from benchmarks.machine import machine
from unseen.io import write_json
from unseen.tables import CORESET, read_table

REPO = Path(__file__).resolve().parents[1]
UNSEEN = str(Path(sys.executable).with_name("unseen"))
KERNELS = "from unseen.training import compute_kernels; print(compute_kernels()['{}'].removeprefix('OpenBLAS '))"


TORCH_KERNEL_VARIABLES = {"ATEN_CPU_CAPABILITY": str.lower, "ONEDNN_MAX_CPU_ISA": str.upper, "MKL_ENABLE_INSTRUCTIONS": str.upper}
"""What holds torch's own kernels (ATen), its convolutions' (oneDNN) and its matrix products' (MKL) to one ISA."""


def _environment(core_type: str, torch_kernels: str = "") -> dict[str, str]:
    """This process's environment with `OPENBLAS_CORETYPE` set to `core_type` and torch held to `torch_kernels` ("" for
    either: picked for the CPU)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE" and k not in TORCH_KERNEL_VARIABLES}
    if torch_kernels:
        env.update({name: spell(torch_kernels) for name, spell in TORCH_KERNEL_VARIABLES.items()})
    return {**env, "OPENBLAS_CORETYPE": core_type} if core_type else env


def _stage(name: str, outputs: Path, overrides: list[str], core_type: str = "", torch_kernels: str = "") -> None:
    settings = [arg for override in (f"outputs={outputs}", *overrides) for arg in ("--set", override)]
    env = _environment(core_type, torch_kernels)
    subprocess.run([UNSEEN, "stage", name, *settings], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)


def _tables(outputs: Path, overrides: list[str], torch_kernels: str = "") -> Path:
    """The features and scores tables, made in `outputs` by fresh processes with torch held to `torch_kernels`."""
    for stage in ("features", "scores"):
        _stage(stage, outputs, overrides, torch_kernels=torch_kernels)
    return outputs


def _same_table(a: Path, b: Path) -> bool:
    """Whether two Parquet tables hold the same rows, bit for bit (their metadata aside)."""
    return pq.read_table(a).replace_schema_metadata(None).equals(pq.read_table(b).replace_schema_metadata(None))


def torch_run(torch_kernels: str, reference_tables: Path, reference: np.ndarray, work: Path, overrides: list[str]) -> dict:
    """Features and scores anew with torch held to `torch_kernels`, then the selection: what came out the same."""
    tables = _tables(work / f"tables-{torch_kernels}", overrides, torch_kernels)
    kernels = _kernels("cpu_kernels", _environment("", torch_kernels))
    _, selected = selected_under("", tables, work / f"select-{torch_kernels}", overrides)
    return {
        "torch_cpu_kernels": kernels,
        "same_features_table": _same_table(tables / "features.parquet", reference_tables / "features.parquet"),
        "same_scores_table": _same_table(tables / "scores.parquet", reference_tables / "scores.parquet"),
        "samples_swapped": int((selected & ~reference).sum()),
    }


def _kernels(kind: str, env: dict[str, str]) -> str:
    """The kernels (`compute_kernels`' `kind`: cpu_kernels or blas_kernels) a fresh process gets under `env`."""
    done = subprocess.run([sys.executable, "-c", KERNELS.format(kind)], cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def selected_under(core_type: str, tables: Path, work: Path, overrides: list[str]) -> tuple[str, np.ndarray]:
    """(the OpenBLAS kernels a process gets under `core_type`, the select stage's `selected` column on `tables`)."""
    outputs = work / (core_type or "cpu-default")
    outputs.mkdir(parents=True)
    for name in ("features.parquet", "scores.parquet", "skipped_images.parquet"):
        shutil.copyfile(tables / name, outputs / name)
    _stage("select", outputs, overrides, core_type)
    kernels = _kernels("blas_kernels", _environment(core_type))
    selected = read_table(CORESET, outputs / "coreset.parquet").column("selected").to_numpy(zero_copy_only=False)
    return kernels, selected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core-types", nargs="+", default=["", "Haswell", "Sandybridge"],
                        help='OPENBLAS_CORETYPE values, the first the reference ("": what OpenBLAS picks for this CPU)')
    parser.add_argument("--torch-kernels", nargs="*", default=[], help="torch CPU kernels to make the tables under too, e.g. avx2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params override, as for `unseen run`")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "blas_kernels.json"), help="the results file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        tables = _tables(work / "tables", args.set)
        runs = {core_type: selected_under(core_type, tables, work, args.set) for core_type in args.core_types}
        reference = runs[args.core_types[0]][1]
        torch_runs = {isa: torch_run(isa, tables, reference, work, args.set) for isa in args.torch_kernels}
    result = {
        "command": "python benchmarks/blas_kernels.py " + " ".join(
            ["--core-types", *(repr(c) if not c else c for c in args.core_types),
             *(["--torch-kernels", *args.torch_kernels] if args.torch_kernels else []), *(f"--set {s}" for s in args.set)]
        ),
        "machine": machine(),
        "train_samples": len(reference),
        "coreset_size": int(reference.sum()),
        "runs": {
            core_type or "cpu default": {"openblas_kernels": kernels, "samples_swapped": int((selected & ~reference).sum())}
            for core_type, (kernels, selected) in runs.items()
        },
        "torch_runs": torch_runs,
    }
    out = write_json(args.out, result)
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
