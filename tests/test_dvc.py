"""DVC lineage in a temporary git copy of the repo: `unseen run` leaving nothing to repro, a partial repro by an experiment, code deps."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import yaml

from tests.conftest import REPO, tiny_params

BIN = Path(sys.executable).parent
DVC = ".venv/bin/dvc"  # the README's command, from the repository root
STAGES = ("features", "scores", "select", "retrain")
ORCHESTRATION = {"tasks.tracking", "tasks.runners", "tasks.lineage"}  # where a run is tracked and run, not what it computes


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
    (copy / ".venv").symlink_to(REPO / ".venv")  # as after `make install`: dvc.yaml's stages call .venv/bin/unseen
    params = tiny_params(copy, fashion_root)
    params["outputs"] = "outputs"  # the paths dvc.yaml declares
    params["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN)  # no venv on PATH, as in a fresh shell
    env = {**os.environ, "PATH": path, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "copy"]):
        _run(command, copy, env)
    if not (copy / ".dvc").is_dir():
        _run([DVC, "init", "-q"], copy, env)
    return copy, env


def _ran_stages(output: str) -> set[str]:
    return {name for name in ("features", "scores", "select", "retrain") if f"Running stage '{name}'" in output}


def test_run_is_in_sync_then_repro_has_nothing_to_do_then_an_experiment_then_a_code_change(repo_copy):
    """One pipeline run serves every lineage check (each stage process costs CI about 20 s of start-up): `unseen run`
    records its outputs in dvc.lock, so `dvc repro` has nothing to do; the experiment runs dvc.yaml's own stage
    commands (`unseen stage NAME`) for the stages its change affects."""
    copy, env = repo_copy
    output = _run([".venv/bin/unseen", "run"], copy, env)
    assert "recorded in dvc.lock" in output and (copy / "dvc.lock").is_file()
    assert json.loads(_run([DVC, "status", "--json"], copy, env)) == {}
    assert _ran_stages(_run([DVC, "repro"], copy, env)) == set()

    # `dvc plots show` renders the score distribution and the per-class budgets the stages wrote
    _run([DVC, "plots", "show", "-o", "plots_html"], copy, env)
    html = (copy / "plots_html" / "index.html").read_text()
    assert "Selection score held out" in html and "Samples kept per class" in html and "scores_distributions.png" in html
    assert '"held_out"' in html and '"kept"' in html

    # an experiment reruns only the stages downstream of its change, and `dvc exp show` lists its metrics: they are
    # git-tracked (outputs/*.json are not ignored), so the experiment's commit holds them
    assert _ran_stages(_run([DVC, "exp", "run", "-S", "select.prune_ratio=0.7"], copy, env)) == {"select", "retrain"}
    shown = _run([DVC, "exp", "show", "--json"], copy, env)
    assert '"test_accuracy_coreset"' in shown and '"coreset_size": 600' in shown, shown[-3000:]

    # touching a selection module reruns select and retrain only
    with open(copy / "unseen" / "selection" / "objective.py", "a") as handle:
        handle.write("\n# touched\n")
    changed = json.loads(_run([DVC, "status", "--json"], copy, env))
    assert set(changed) == {"select", "retrain"}, changed


def _stage_modules(graph, stage: str) -> set[str]:
    """The project modules whose code the stage's outputs depend on: everything its task module imports, transitively."""
    modules = graph.find_upstream_modules(f"tasks.{stage}") | {f"tasks.{stage}"}
    return {m for m in modules if m.split(".")[0] in ("unseen", "tasks") and m not in ORCHESTRATION and m != "unseen"}


def _covers(dep: str, module: str) -> bool:
    path = REPO / (module.replace(".", "/") + ".py")
    path = path if path.is_file() else path.with_suffix("") / "__init__.py"
    return path == REPO / dep or (REPO / dep).is_dir() and REPO / dep in path.parents


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_depends_on_exactly_the_modules_it_imports(stage):
    """dvc.yaml's code deps are the stage's import closure: a code change reruns the stages it affects and no others."""
    graph = grimp.build_graph("unseen", "tasks", cache_dir=None)
    modules = _stage_modules(graph, stage)
    deps = [d for d in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"] if not d.startswith("outputs/")]
    assert not [m for m in sorted(modules) if not any(_covers(d, m) for d in deps)], "modules missing from deps"
    assert not [d for d in deps if not any(_covers(d, m) for m in modules)], "deps the stage does not import"
