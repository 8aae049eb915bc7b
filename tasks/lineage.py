"""DVC lineage for runs made outside `dvc repro`: record the outputs in dvc.lock so `dvc status` is clean."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path


def record_lineage(params_file: str, overrides: list[str], stages: tuple[str, ...]) -> str:
    """`dvc commit` the stages this run ran when it used the committed params.yaml; say why not otherwise."""
    if not Path("dvc.yaml").is_file() or not Path(".dvc").is_dir():
        return "not recorded: no DVC project in the working directory"
    if Path(params_file).resolve() != Path("params.yaml").resolve() or overrides:
        return "not recorded: run used another params file or --set overrides, which dvc.yaml does not describe"
    beside_python = Path(sys.executable).with_name("dvc")
    dvc = str(beside_python) if beside_python.is_file() else shutil.which("dvc")
    if dvc is None:
        return "not recorded: the dvc command is not installed"
    result = subprocess.run([dvc, "commit", "--force", "--quiet", *stages], capture_output=True, text=True)
    if result.returncode != 0:
        return f"not recorded: dvc commit failed: {(result.stderr or result.stdout).strip()}"
    return "recorded in dvc.lock (dvc commit): `dvc status` has nothing to do"


def file_md5(path: str | Path) -> str:
    """The MD5 of a file's bytes: the hash DVC 3 records for a file output."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str:
    """The commit checked out where this code lies (whatever the working directory), or "unknown" outside a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
