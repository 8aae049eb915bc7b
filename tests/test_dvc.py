"""DVC lineage in a temporary git copy of the repo: repro, no-op repro, partial repro, and `unseen run` leaving nothing to do."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, tiny_params

BIN = Path(sys.executable).parent


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture
def repo_copy(tmp_path, fashion_root):
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    copy = tmp_path / "repo"
    for name in files:
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    params = tiny_params(copy, fashion_root)
    params["outputs"] = "outputs"  # the paths dvc.yaml declares
    params["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "copy"]):
        _run(command, copy, env)
    if not (copy / ".dvc").is_dir():
        _run(["dvc", "init", "-q"], copy, env)
    return copy, env


def _ran_stages(output: str) -> set[str]:
    return {name for name in ("features", "scores", "select", "retrain") if f"Running stage '{name}'" in output}


def test_repro_then_nothing_then_only_downstream_then_run_is_in_sync(repo_copy):
    copy, env = repo_copy
    assert _ran_stages(_run(["dvc", "repro"], copy, env)) == {"features", "scores", "select", "retrain"}
    assert (copy / "dvc.lock").is_file()
    assert _ran_stages(_run(["dvc", "repro"], copy, env)) == set()

    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["select"]["prune_ratio"] = 0.7
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _ran_stages(_run(["dvc", "repro"], copy, env)) == {"select", "retrain"}
    shown = _run(["dvc", "metrics", "show", "--json"], copy, env)
    metrics = json.loads(shown)
    values = next(iter(metrics.values()))["data"]["outputs/metrics.json"]["data"]
    assert values["coreset_size"] == 600 and "test_accuracy_coreset" in values and "test_accuracy_random" in values

    params["select"]["prune_ratio"] = 0.6
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = _run(["unseen", "run"], copy, env)
    assert "recorded in dvc.lock" in output
    status = _run(["dvc", "status", "--json"], copy, env)
    assert json.loads(status) == {}, status
