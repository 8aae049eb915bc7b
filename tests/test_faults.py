"""Faults a long run meets, survived: a transient task failure, out of memory, a killed process, an unreachable
tracking store, and two runs started at once in one folder. docs/reliability.md lists these tests.

One small scoring set-up (1,000 Fashion-MNIST samples, 3 fold models of 2 epochs, torch on 1 thread so that runs
compare bit for bit) serves every test; `reference` is its uninterrupted scores stage.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient

import tasks.scores
from tests.conftest import tiny_params, write_params
from unseen.config import load_params
from unseen.tables import MODEL_OUTPUTS, read_table

UNSEEN = str(Path(sys.executable).with_name("unseen"))
FOLD_MODELS = ["unseen_r0_f0", "unseen_r0_f1", "unseen_r0_f2"]


def fault_params(folder: Path, fashion_root: Path, **sections) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    own = {
        "data": {"train_subset": 1000, "test_subset": 200},
        "features": {"extractor": "pixels", "pca_components": 8},
        "scores": {"scorer": "cnn", "folds": 3, "seen": False, "scores": ["el2n", "loss", "forgetting", "label_issue"], "recipe": {"epochs": 2}, "score_epochs": [1, 2]},
        "retrain": {"recipe": {"epochs": 1}},
        "orchestration": {"retries": 1, "retry_delay_seconds": 0, "max_workers": 1, "torch_threads": 1},
    }
    merged = {name: {**own.get(name, {}), **sections.get(name, {})} for name in own.keys() | sections.keys()}
    return write_params(folder / "params.yaml", tiny_params(folder, fashion_root, **merged))


def child_runs(folder: Path, parent_run_id: str) -> list:
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


@pytest.fixture(scope="module", autouse=True)
def keep_torch_threads():
    """The runs here pin torch to 1 thread in this process; later test modules get the count they started with."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fashion_root, prefect_api) -> Path:
    """scores.parquet of an uninterrupted scores stage."""
    from flows.prune import stage

    folder = tmp_path_factory.mktemp("reference")
    stage(name="scores", params_file=str(fault_params(folder, fashion_root)))
    return folder / "outputs" / "scores.parquet"


def test_transient_task_failure_is_retried_and_the_table_is_the_same(reference, tmp_path, fashion_root, monkeypatch):
    """A fold model's first attempt raises; Prefect retries it (orchestration.retries), the failed attempt's MLflow
    child run is marked FAILED, and scores.parquet holds the same data as the run without the fault."""
    from flows.prune import stage

    real, calls = tasks.scores.train_scoring_model, []

    def fails_once(dataset, model, *args, **kwargs):
        calls.append(model.name)
        if model.name == "unseen_r0_f1" and calls.count(model.name) == 1:
            raise ConnectionResetError("injected transient fault")
        return real(dataset, model, *args, **kwargs)

    monkeypatch.setattr(tasks.scores, "train_scoring_model", fails_once)
    result = stage(name="scores", params_file=str(fault_params(tmp_path, fashion_root)))

    assert sorted(calls) == sorted([*FOLD_MODELS, "unseen_r0_f1"])
    assert pq.read_table(tmp_path / "outputs" / "scores.parquet").equals(pq.read_table(reference))
    runs = [(run.info.run_name, run.info.status) for run in child_runs(tmp_path, result["run_id"])]
    assert sorted(runs) == sorted([(f"scores/{name}", "FINISHED") for name in FOLD_MODELS] + [("scores/unseen_r0_f1", "FAILED")])


def test_out_of_memory_retries_with_half_the_batch_down_to_the_floor(tmp_path, fashion_root, prefect_api, monkeypatch):
    """torch.OutOfMemoryError (what CUDA raises) while a batch is above 32: the task retries at 64, then 32
    (orchestration.min_batch_size), records it on the model's MLflow run and in its cached records, and finishes."""
    from flows.prune import stage

    real, batches = tasks.scores.train_scoring_model, []

    def oom_above_32(dataset, model, scoring, *args, **kwargs):
        batches.append(scoring.recipe.batch_size)
        if scoring.recipe.batch_size > 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(dataset, model, scoring, *args, **kwargs)

    monkeypatch.setattr(tasks.scores, "train_scoring_model", oom_above_32)
    params_file = fault_params(tmp_path, fashion_root, orchestration={"retries": 0, "torch_threads": 1, "min_batch_size": 32})
    result = stage(name="scores", params_file=str(params_file))

    assert batches == [128, 64, 32] * 3
    for run in child_runs(tmp_path, result["run_id"]):
        assert run.info.status == "FINISHED"
        assert (run.data.tags["oom_retries"], run.data.tags["batch_size"]) == ("2", "32")
    for record in (tmp_path / "outputs" / "cache" / "scores").glob("*/*.parquet"):
        assert read_table(MODEL_OUTPUTS, record).schema.metadata[b"unseen.batch_size"] == b"32"
    assert np.isfinite(pq.read_table(tmp_path / "outputs" / "scores.parquet").column("el2n_unseen").to_numpy()).all()


def test_out_of_memory_at_the_floor_gives_up_and_says_so(tmp_path, fashion_root):
    """Every batch size already at the floor: nothing smaller to try, so the error is raised with a note naming it."""
    from tasks.common import halved_batches, shrinking_on_oom

    params = load_params(fault_params(tmp_path, fashion_root, orchestration={"min_batch_size": 4096}))
    assert halved_batches(params) is None
    halved = halved_batches(load_params(fault_params(tmp_path, fashion_root, orchestration={"min_batch_size": 50})))
    assert (halved.scores.recipe.batch_size, halved.scores.batch_size, halved.features.batch_size) == (64, 512, 64)

    def always_oom(_params):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    with pytest.raises(torch.OutOfMemoryError) as info:
        shrinking_on_oom(params, None, "run", "scores unseen_r0_f0", lambda p: p.scores.recipe.batch_size, always_oom)
    assert "still out of memory at batch size 128 (orchestration.min_batch_size)" in "\n".join(info.value.__notes__)


def test_killed_mid_scores_leaves_no_table_and_the_rerun_trains_only_what_is_missing(reference, tmp_path, fashion_root):
    """SIGKILL to a real `unseen stage scores` as soon as its first fold model is cached: no scores.parquet exists,
    every cached record is whole; the rerun trains only the missing fold models and writes the reference table."""
    from prefect.settings import PREFECT_API_URL

    from flows.prune import stage

    params_file = fault_params(tmp_path, fashion_root)
    cache = tmp_path / "outputs" / "cache" / "scores"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    process = subprocess.Popen([UNSEEN, "stage", "scores", "--params", str(params_file)], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(cache.glob("*/*.parquet")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "outputs" / "scores.parquet").exists()
    cached = sorted(path.stem for path in cache.glob("*/*.parquet"))
    assert 1 <= len(cached) < len(FOLD_MODELS), cached
    for path in cache.glob("*/*.parquet"):
        read_table(MODEL_OUTPUTS, path)  # whole: atomic writes leave no partial table under a final name

    result = stage(name="scores", params_file=str(params_file))
    trained = sorted(run.info.run_name.removeprefix("scores/") for run in child_runs(tmp_path, result["run_id"]))
    assert trained == sorted(set(FOLD_MODELS) - set(cached))
    assert pq.read_table(tmp_path / "outputs" / "scores.parquet").equals(pq.read_table(reference))


def test_a_truncated_cache_entry_is_trained_again(reference, tmp_path, fashion_root, prefect_api):
    """A cached scoring-model record cut short (a full disk, a copy interrupted): the model is trained again, with a
    warning, and the table is the reference one; the other cached models are reused."""
    from flows.prune import stage

    params_file = fault_params(tmp_path, fashion_root)
    shutil.copytree(reference.parent / "cache", tmp_path / "outputs" / "cache")
    damaged = next((tmp_path / "outputs" / "cache" / "scores").glob("*/unseen_r0_f1.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:100])
    result = stage(name="scores", params_file=str(params_file))
    assert [run.info.run_name for run in child_runs(tmp_path, result["run_id"])] == ["scores/unseen_r0_f1"]
    assert pq.read_table(tmp_path / "outputs" / "scores.parquet").equals(pq.read_table(reference))


def test_runs_abandoned_by_a_killed_process_are_marked_killed_by_the_next_run(tmp_path):
    """A parent run (and its child) left RUNNING by a process that no longer exists becomes KILLED when the next run
    opens its parent run; a run of a live process is left alone."""
    import socket

    from tasks.tracking import mark_abandoned_runs_killed

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("abandoned")
    gone = subprocess.Popen(["true"])
    gone.wait()
    owner = {"unseen.host": socket.gethostname()}
    dead = client.create_run(experiment, tags={**owner, "unseen.pid": str(gone.pid)}).info.run_id
    child = client.create_run(experiment, tags={"mlflow.parentRunId": dead}).info.run_id
    alive = client.create_run(experiment, tags={**owner, "unseen.pid": str(os.getpid())}).info.run_id
    assert sorted(mark_abandoned_runs_killed(client, experiment)) == sorted([dead, child])
    assert [client.get_run(r).info.status for r in (dead, child, alive)] == ["KILLED", "KILLED", "RUNNING"]


def test_unreachable_tracking_store_stops_a_scheduled_run_before_any_work(tmp_path, fashion_root, prefect_api):
    """The flow itself (what a schedule runs) refuses a tracking server that does not answer, before loading data."""
    from flows.prune import prune
    from tasks.tracking import TrackingError

    params_file = fault_params(tmp_path, fashion_root, tracking={"uri": "http://127.0.0.1:9"})
    with pytest.raises(TrackingError, match=r"tracking.uri=http://127.0.0.1:9: the MLflow tracking server does not answer"):
        prune(params_file=str(params_file))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]


def test_two_runs_at_once_in_one_folder_take_turns(tmp_path, fashion_root, prefect_api):
    """Two real `unseen run` processes on one outputs folder whose lock is held (as by a run in progress): both wait,
    and once it is free they take turns, so their MLflow parent runs do not overlap in time (no table written by both
    at once), and both runs are complete."""
    from filelock import FileLock
    from prefect.settings import PREFECT_API_URL

    params_file = fault_params(tmp_path, fashion_root, data={"train_subset": 500, "test_subset": 100}, scores={"folds": 2})
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    lock_path = load_params(params_file).output(".lock")
    lock_path.parent.mkdir(parents=True)
    logs = [tmp_path / f"run-{number}.log" for number in range(2)]
    with FileLock(lock_path):
        processes = [
            subprocess.Popen([UNSEEN, "run", "--params", str(params_file)], cwd=tmp_path, env=env,
                             stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
            for log in logs
        ]
        deadline = time.monotonic() + 300
        while not all("waiting for it to finish" in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(process.poll() is None for process in processes), \
                [log.read_text() for log in logs]
            time.sleep(0.2)
    outputs = [(process.wait(timeout=600), log.read_text())[1] for process, log in zip(processes, logs)]
    assert [process.returncode for process in processes] == [0, 0], outputs

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parents = client.search_runs([client.get_experiment_by_name("tests").experiment_id], filter_string="tags.stage = 'prune'")
    assert len(parents) == 2 and {run.info.status for run in parents} == {"FINISHED"}
    first, second = sorted(parents, key=lambda run: run.info.start_time)
    assert first.info.end_time <= second.info.start_time
    for parent in parents:
        names = sorted(run.info.run_name for run in child_runs(tmp_path, parent.info.run_id))
        assert {"features", "retrain/coreset", "retrain/random"} <= set(names)
        assert {run.info.status for run in child_runs(tmp_path, parent.info.run_id)} == {"FINISHED"}
    assert len(client.search_model_versions("name = 'tiny-coreset-model'")) == 2
    report = json.loads((tmp_path / load_params(params_file).outputs / "run_report.json").read_text())
    outside, compute = report["outside_compute_seconds"], sum(stage["compute_seconds"] for stage in report["stages"])
    assert min(outside.values()) >= 0 and sum(outside.values()) + compute == pytest.approx(report["process_seconds"])


def test_every_task_that_uses_the_device_carries_the_gpu_tag():
    """`prefect concurrency-limit create gpu 1` then caps them on a shared Prefect server (README, Devices)."""
    from tasks.features import features_task
    from tasks.retrain import retrain_task
    from tasks.scores import combine_scores_task, scoring_model_task, scoring_model_task_for
    from tasks.select import select_task

    assert all("gpu" in task.tags for task in (features_task, scoring_model_task, retrain_task))
    from unseen.config import Params

    cnn, probe = (scoring_model_task_for(Params(scores={"scorer": scorer})) for scorer in ("cnn", "probe"))
    assert "gpu" in cnn.tags and not probe.tags and probe.fn is scoring_model_task.fn  # probes: under a second, no slot
    # CPU only; select waits on its step tasks, so holding a gpu slot there would deadlock a limit of 1
    assert "gpu" not in combine_scores_task.tags and "gpu" not in select_task.tags


def test_tasks_ask_for_a_gpu_slot_only_where_a_gpu_limit_exists(prefect_api):
    """Each run of a gpu-tagged task asks the server for a slot; with no `gpu` limit there, the tag is dropped."""
    from prefect import flow
    from prefect.client.orchestration import get_client

    from tasks.common import gpu_limit_exists, with_retries
    from tasks.features import features_task
    from unseen.config import Params

    @flow
    def tags_in_a_flow() -> set[str]:
        return set(with_retries(Params(), features_task).tags)

    gpu_limit_exists.cache_clear()
    assert tags_in_a_flow() == set()
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
        try:
            gpu_limit_exists.cache_clear()
            assert tags_in_a_flow() == {"gpu"}
        finally:
            client.delete_concurrency_limit_by_tag("gpu")
            gpu_limit_exists.cache_clear()
    assert set(with_retries(Params(), features_task).tags) == {"gpu"}  # outside a flow run: as declared
