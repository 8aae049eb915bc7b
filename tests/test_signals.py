"""Stopping a run: Ctrl-C (SIGINT to the process group, as a terminal sends it, or to the main process alone) and
SIGTERM (as `timeout` and service managers send it) stop a real `unseen run` within 10 s, with exit status 130 or 143,
MLflow runs marked KILLED, the outputs lock released and no partial table; the rerun resumes from the cache."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock
from mlflow import MlflowClient

from tests.conftest import tiny_params, write_params

UNSEEN = str(Path(sys.executable).with_name("unseen"))


def _start(tmp_path: Path, fashion_root: Path) -> tuple[subprocess.Popen, Path]:
    params = tiny_params(tmp_path, fashion_root, data={"train_subset": 1000, "test_subset": 200},
                         scores={"scorer": "cnn", "folds": 2, "recipe": {"epochs": 12}, "score_epochs": [11, 12]}, orchestration={"retries": 0, "max_workers": 1})
    params_file = write_params(tmp_path / "params.yaml", params)
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}  # its own temporary Prefect server
    log = tmp_path / "run.log"
    process = subprocess.Popen([UNSEEN, "run", "--params", str(params_file)], cwd=tmp_path, env=env, start_new_session=True,
                               stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while "[scores]" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, log.read_text()[-3000:]
    return process, params_file


def _stop_and_check(tmp_path: Path, process: subprocess.Popen, signum: int, to_group: bool) -> None:
    """Send the signal; the run must end within 10 s with 128 + signum, leave no partial table, release the lock and
    mark its MLflow runs KILLED."""
    sent = time.monotonic()
    (os.killpg if to_group else os.kill)(process.pid, signum)
    process.wait(timeout=60)
    took = time.monotonic() - sent
    output = (tmp_path / "run.log").read_text()

    assert process.returncode == 128 + signum, output[-3000:]
    assert took <= 10, f"stopped after {took:.1f} s"
    assert f"stopped by {signal.Signals(signum).name}" in output and "Traceback" not in output
    assert not (tmp_path / "outputs" / "scores.parquet").exists()
    assert not list((tmp_path / "outputs").rglob("*.tmp"))  # no half-written file under any name
    FileLock(tmp_path / "outputs" / ".lock").acquire(timeout=0)  # released
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert {run.info.run_name: run.info.status for run in runs}["prune"] == "KILLED"
    assert not [run.info.run_name for run in runs if run.info.status == "RUNNING"]


@pytest.mark.parametrize(("signum", "to_group"), [(signal.SIGTERM, True), (signal.SIGINT, False)],
                         ids=["SIGTERM to the group", "SIGINT to the main process"])
def test_a_signal_stops_the_run_in_seconds_and_leaves_nothing_partial(tmp_path, fashion_root, signum, to_group):
    process, _ = _start(tmp_path, fashion_root)
    _stop_and_check(tmp_path, process, signum, to_group)


def test_ctrl_c_stops_the_run_and_the_rerun_resumes_and_completes(tmp_path, fashion_root):
    process, params_file = _start(tmp_path, fashion_root)
    _stop_and_check(tmp_path, process, signal.SIGINT, to_group=True)
    rerun = subprocess.run([UNSEEN, "run", "--params", str(params_file)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                           env={key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"})
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert (tmp_path / "outputs" / "metrics.json").is_file()
    assert re.search(r"^MLflow run: http://127\.0\.0\.1:5000/#/experiments/\w+/runs/\w+\?workflowType=machine_learning ", rerun.stdout, re.M), rerun.stdout[-1000:]
