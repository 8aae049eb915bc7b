"""What a rerun of a sweep moved: its results table now against the one committed at an earlier commit, cell by cell.
A code change that should move one method (say, the UNSEEN selection's arithmetic) shows every other method's cells
coming out the same to the last digit, and how far the moved method's means went at each prune ratio.
Usage: .venv/bin/python benchmarks/rerun_diff.py --config benchmarks/full_steps.yaml --before 9cda013
Writes benchmarks/results/<sweep>_rerun_diff.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

from benchmarks.sweep import load_sweep, read_results
from benchmarks.tables import summarize
from unseen.io import write_json


def rerun_diff(before: list[dict], after: list[dict]) -> dict[str, dict]:
    """Per method: the cells both tables hold, how many came out identical, and the mean accuracy % per prune ratio
    before and after (over those cells)."""
    old = {(r["method"], r["prune_ratio"], r["seed"]): r for r in before}
    shared = [r for r in after if (r["method"], r["prune_ratio"], r["seed"]) in old]
    by_method: dict[str, list[dict]] = defaultdict(list)
    for row in shared:
        by_method[row["method"]].append(row)
    result = {}
    for method, rows in sorted(by_method.items()):
        earlier = [old[(r["method"], r["prune_ratio"], r["seed"])] for r in rows]
        now, then = summarize(rows), summarize(earlier)
        result[method] = {
            "cells": len(rows),
            "identical": sum(a["test_accuracy"] == b["test_accuracy"] for a, b in zip(rows, earlier)),
            "by_prune_ratio": {str(key[1]): {"before": round(then[key][0], 2), "after": round(now[key][0], 2)} for key in sorted(now)},
        }
    return result


def committed_rows(path: Path, commit: str) -> list[dict]:
    """The rows of the results table at `path` as committed at `commit`."""
    shown = subprocess.run(["git", "show", f"{commit}:{path.as_posix()}"], capture_output=True, check=True)
    with tempfile.TemporaryDirectory() as folder:
        table = Path(folder, path.name)
        table.write_bytes(shown.stdout)
        return read_results(table)[0].to_pylist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the sweep file whose results table was rerun")
    parser.add_argument("--before", required=True, help="the commit holding the earlier results table")
    parser.add_argument("--out", help="the results file (default benchmarks/results/<sweep>_rerun_diff.json)")
    args = parser.parse_args()
    sweep = load_sweep(args.config)
    result = {
        "command": f"python benchmarks/rerun_diff.py --config {args.config} --before {args.before}",
        "before": subprocess.run(["git", "rev-parse", args.before], capture_output=True, text=True, check=True).stdout.strip(),
        "methods": rerun_diff(committed_rows(Path(sweep.results_table), args.before), read_results(sweep.results_table)[0].to_pylist()),
    }
    out = write_json(args.out or sweep.results_file("rerun_diff.json"), result)
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
