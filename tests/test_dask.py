"""The prune flow on a real Dask cluster (distributed.LocalCluster, 2 worker processes of 1 thread) gives the same
coreset and scores as the local runner; the workers report to the flow's Prefect API and log to its MLflow store;
GPU tasks take one `GPU` unit each; torch uses each worker's thread count."""

from __future__ import annotations

import time

import distributed
import numpy as np
import pytest
import torch

from tests.conftest import tiny_params, write_params
from unseen.config import OrchestrationParams, load_params
from unseen.tables import CORESET, SCORES, read_table


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        yield local


@pytest.fixture(scope="module")
def torch_threads_restored():
    """The runs pin torch's threads in this process (torch_threads: 1); later tests get torch's own setting back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _run_like_the_cli(tmp, fashion_root, orchestration: dict):
    """`unseen run --params FILE`: the runner chosen from params by the CLI's own helper; returns (result, flow run id)."""
    from flows.prune import prune
    from flows.cli import _flow_with_runner

    tmp.mkdir()
    params = tiny_params(tmp, fashion_root, orchestration=orchestration, select={"steps": 2})
    params["scores"]["seen"] = True  # the seen model runs on a worker too
    params_file = write_params(tmp / "params.yaml", params)
    state = _flow_with_runner(prune, load_params(params_file))(params_file=str(params_file), return_state=True)
    return state.result(), state.state_details.flow_run_id


@pytest.fixture(scope="module")
def local_and_dask(tmp_path_factory, fashion_root, prefect_api, cluster, torch_threads_restored):
    """The same params (torch_threads: 1 everywhere, so CPU reductions split alike; 2-step UNSEEN) run locally and on the cluster."""
    tmp = tmp_path_factory.mktemp("dask")
    base = {"retries": 0, "retry_delay_seconds": 0, "max_workers": 2, "torch_threads": 1}
    started = time.perf_counter()
    local = _run_like_the_cli(tmp / "local", fashion_root, {**base, "task_runner": "local"})
    local_seconds = time.perf_counter() - started
    on_dask = _run_like_the_cli(tmp / "dask", fashion_root, {**base, "task_runner": "dask", "dask": {"address": cluster.scheduler_address}})
    print(f"local run {local_seconds:.1f} s, Dask run {time.perf_counter() - started - local_seconds:.1f} s")
    return tmp, local, on_dask


def test_dask_run_gives_the_local_coreset_and_scores(local_and_dask):
    tmp, _, _ = local_and_dask
    coresets = [read_table(CORESET, tmp / name / "outputs" / "coreset.parquet") for name in ("local", "dask")]
    selected = [t.column("sample_id").to_numpy()[t.column("selected").to_numpy(zero_copy_only=False)] for t in coresets]
    assert len(selected[0]) == 1000 and np.array_equal(selected[0], selected[1])

    local, on_dask = (read_table(SCORES, tmp / name / "outputs" / "scores.parquet") for name in ("local", "dask"))
    assert np.array_equal(local.column("sample_id").to_numpy(), on_dask.column("sample_id").to_numpy())
    columns = [name for name in local.column_names if name.endswith(("_unseen", "_seen", "_std"))]
    assert len(columns) >= 14
    for name in columns:
        assert np.allclose(local.column(name).to_numpy(), on_dask.column(name).to_numpy(), atol=1e-5, equal_nan=True), name


def test_workers_report_to_the_flows_prefect_api(local_and_dask, cluster):
    """Task runs made on the worker processes are in the flow's API (no worker started a temporary server of its own)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    _, _, (_, flow_run_id) = local_and_dask
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    names = sorted(run.name.rsplit("-", 1)[0] for run in runs if run.state.is_completed())
    assert names.count("scoring-model") == 4 and names.count("retrain") == 2, names  # 2 folds, 1 seen, 1 step model

    # the mapped tasks ran in the workers: each loaded the data set there (by path), and torch has 1 thread per worker
    with distributed.Client(cluster) as client:
        loaded = client.run(lambda: __import__("tasks.common").common._cached_dataset.cache_info().currsize)
        threads = client.run(torch.get_num_threads)
    assert sum(loaded.values()) >= 1 and set(threads.values()) == {1}


def test_workers_log_every_child_run_to_the_sqlite_store(local_and_dask):
    from mlflow import MlflowClient

    tmp, _, (result, _) = local_and_dask
    client = MlflowClient(f"sqlite:///{tmp / 'dask' / 'mlflow.db'}")
    parent = client.get_run(result["run_id"])
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'")
    assert sorted(run.info.run_name for run in children) == [
        "features", "retrain/coreset", "retrain/random", "scores/seen_r0", "scores/unseen_r0_f0", "scores/unseen_r0_f1", "select/step-2"
    ]
    assert {run.info.status for run in children} == {"FINISHED"}
    for run in children:
        if run.info.run_name.startswith(("scores/", "retrain/", "select/")):
            assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2, run.info.run_name
    assert client.get_model_version_by_alias("tiny-coreset-model", "current").run_id in {run.info.run_id for run in children}


# --------------------------------------------------------------------------- the runner itself, on trivial tasks


def test_params_choose_the_runner():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from tasks.runners import local_cluster, task_runner

    local = task_runner(OrchestrationParams(max_workers=3))
    assert isinstance(local, ThreadPoolTaskRunner) and local._max_workers == 3
    remote = task_runner(OrchestrationParams(task_runner="dask", dask={"address": "tcp://10.0.0.5:8786"}))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    spec = task_runner(OrchestrationParams(task_runner="dask", dask={"workers": 3, "threads_per_worker": 2, "resources": {"GPU": 1}}))
    assert spec.address is None and spec.cluster_class is local_cluster
    assert spec.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 2, "processes": True, "resources": {"GPU": 1.0}}


def test_gpu_tasks_take_one_gpu_unit_each_and_torch_uses_the_workers_threads(prefect_api):
    """One worker of 2 threads declaring GPU: 1 (the local cluster spec of params): mapped GPU tasks never overlap
    on it, while the same tasks mapped plainly do; torch inside them uses the worker's 2 threads."""
    from prefect import flow, task, unmapped

    from tasks.runners import map_on_workers, set_torch_threads, task_runner

    orchestration = OrchestrationParams(task_runner="dask", dask={"workers": 1, "threads_per_worker": 2, "resources": {"GPU": 1}})

    @task
    def hold(i: int, orchestration: OrchestrationParams) -> tuple[float, float, int]:
        threads = set_torch_threads(orchestration)
        started = time.time()
        time.sleep(0.6)
        return started, time.time(), threads

    @flow(task_runner=task_runner(orchestration))
    def both(orchestration: OrchestrationParams):
        hold.map(range(2), unmapped(orchestration)).result()  # warm the worker (imports) so the timings below are the tasks'
        return map_on_workers(hold, range(3), unmapped(orchestration)).result(), hold.map(range(2), unmapped(orchestration)).result()

    def overlaps(spans):
        spans = sorted(spans)
        return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))

    gpu, plain = both(orchestration)
    assert not overlaps([(s, e) for s, e, _ in gpu]) and overlaps([(s, e) for s, e, _ in plain])
    assert {threads for *_, threads in gpu + plain} == {2}


def test_without_an_api_url_workers_use_the_flows_temporary_server(prefect_api, cluster):
    """As `unseen run` without PREFECT_API_URL: the flow talks to Prefect's temporary server; tasks on the workers
    get its URL and start no temporary server of their own."""
    from prefect import flow, get_client, task
    from prefect.context import FlowRunContext
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.runners import task_runner, workers_reach_this_api

    @task
    def api_seen_here(i: int) -> str | None:
        return PREFECT_API_URL.value()

    @flow(task_runner=task_runner(OrchestrationParams(task_runner="dask", dask={"address": cluster.scheduler_address})))
    def probe():
        flow_api = str(FlowRunContext.get().client.api_url).rstrip("/")
        with workers_reach_this_api():
            return flow_api, api_seen_here.map(range(2)).result()

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not PREFECT_API_URL.value()
        state = probe(return_state=True)
    flow_api, seen = state.result()
    assert seen == [flow_api, flow_api]
    with distributed.Client(cluster) as client:
        servers = client.run(lambda: [s.running for s in SubprocessASGIServer._instances.values()])
    assert not any(any(running) for running in servers.values())
    with get_client(sync_client=True) as client:
        runs = [run for run in client.read_task_runs() if run.flow_run_id == state.state_details.flow_run_id]
    assert [run.state.is_completed() for run in runs] == [True, True]


def test_outside_dask_gpu_tasks_map_as_usual(prefect_api):
    from prefect import flow, task

    from tasks.runners import gpu_resource, map_on_workers

    @task
    def double(i: int) -> int:
        return 2 * i

    @flow
    def plain():
        with gpu_resource() as annotated:
            assert not annotated
        return map_on_workers(double, range(3)).result()

    assert plain() == [0, 2, 4]
