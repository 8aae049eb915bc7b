"""The task runner that params choose (local threads or a Dask cluster), and what every mapped GPU task needs there.

- `task_runner(orchestration)`: Prefect's ThreadPoolTaskRunner, or prefect-dask's DaskTaskRunner on an existing
  scheduler (`dask.address`) or on a LocalCluster it starts from the spec (`workers`, `threads_per_worker`, `resources`).
- `workers_reach_this_api()`: around a flow's body, so that tasks on Dask worker processes report to the flow's
  Prefect API, the temporary (ephemeral) server included, instead of starting servers of their own.
- `map_on_workers(task, ...)` (and `submit_on_workers` for one task): `task.map(...)` that asks the Dask scheduler for one unit of the `GPU` resource per task
  when the cluster's workers declare it, so a worker never runs two GPU tasks at once. Every mapped GPU task
  (fold scoring, multi-step scoring, retraining, benchmark cells) goes through it.
- `set_torch_threads(orchestration)`: first line of every such task: sets torch's intra-op threads; `torch_work`
  moves torch work off a process's main thread, whose thread team would slow every task thread.

`distributed` is imported only when the Dask runner is chosen, so local runs do not pay for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlparse

import torch
from prefect import Task
from prefect.context import FlowRunContext
from prefect.logging import get_logger
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from unseen.config import OrchestrationParams

GPU = "GPU"
logger = get_logger("unseen.runners")
Result = TypeVar("Result")


def task_runner(orchestration: OrchestrationParams) -> TaskRunner:
    """The Prefect task runner for `orchestration.task_runner`: `local` (threads) or `dask`."""
    if orchestration.task_runner == "local":
        return ThreadPoolTaskRunner(max_workers=orchestration.max_workers)
    from prefect_dask import DaskTaskRunner

    dask = orchestration.dask
    if dask.address:
        return DaskTaskRunner(address=dask.address)
    # the scheduler of a local cluster lives in this process: keep its INFO chatter out of the progress lines
    logging.getLogger("distributed").setLevel(logging.WARNING)
    return DaskTaskRunner(
        cluster_class=local_cluster,
        cluster_kwargs={
            "n_workers": dask.workers,
            "threads_per_worker": dask.threads_per_worker,
            "processes": True,
            "resources": dict(dask.resources),
        },
    )


def local_cluster(**kwargs):
    """A `distributed.LocalCluster` whose worker processes keep glibc's default malloc tuning.

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (to hand freed memory back to the OS). Setting it
    also freezes glibc's mmap threshold at 128 KiB, so every activation and gradient buffer of a training step is
    mmap-ed and unmapped again: a fold model trains 1.7 times slower on the CPU (25.6 s instead of 14.8 s for the
    benchmark's fold, 1 thread, same process otherwise). Workers of an existing cluster need the same setting in
    their Dask config (README, "Running on a Dask cluster").
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(**kwargs)


def _dask_runner(runner: TaskRunner | None):
    """The flow's DaskTaskRunner, or None for any other runner (without importing prefect_dask for them)."""
    module = sys.modules.get("prefect_dask.task_runners")
    return runner if module is not None and isinstance(runner, module.DaskTaskRunner) else None


def _is_loopback(url: str) -> bool:
    return (urlparse(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


@contextlib.contextmanager
def workers_reach_this_api() -> Iterator[None]:
    """Inside a flow run on the Dask runner: make the Prefect API URL travel with every task to the workers.

    Prefect sends each task's settings along with it. Without PREFECT_API_URL (Prefect's temporary server), those
    settings name no server, and each worker process would start a temporary server of its own, so the task runs
    would not reach this flow run's API. Here the URL of the server this flow run talks to is set for the flow's
    body; a temporary server listens on 127.0.0.1, which workers on this machine reach. Workers on other machines
    need a real server (`prefect server start --host 0.0.0.0`, PREFECT_API_URL set where the flow runs).
    """
    context = FlowRunContext.get()
    if context is None or _dask_runner(context.task_runner) is None or PREFECT_API_URL.value():
        yield
        return
    url = str(context.client.api_url).rstrip("/")
    address = context.task_runner.address
    if address and _is_loopback(url) and not _is_loopback(address if "://" in address else f"tcp://{address}"):
        logger.warning(
            f"tasks run on the Dask cluster at {address}, but this flow's Prefect API is a temporary server at {url}: "
            "workers on other machines cannot reach it; start `prefect server start --host 0.0.0.0` and set PREFECT_API_URL"
        )
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def _cluster_declares(runner, resource: str) -> bool:
    """Whether any worker of the runner's cluster declares `resource` (asking for one nobody has would wait forever)."""
    workers = runner.client.scheduler_info(n_workers=-1).get("workers", {})
    return any(info.get("resources", {}).get(resource, 0) >= 1 for info in workers.values())


@contextlib.contextmanager
def gpu_resource() -> Iterator[bool]:
    """Tasks submitted or mapped inside ask the Dask scheduler for one `GPU` unit each, when the cluster declares it.

    With the local runner, or a cluster without the resource, nothing changes (yields False). With workers started
    with `resources: {GPU: 1}` (or `dask cuda worker --resources GPU=1`), each worker runs one such task at a time
    whatever its thread count, while the flow's other tasks keep using its threads.
    """
    context = FlowRunContext.get()
    runner = _dask_runner(context.task_runner if context else None)
    if runner is None or not _cluster_declares(runner, GPU):
        yield False
        return
    import dask

    with dask.annotate(resources={GPU: 1}):
        yield True


def map_on_workers(task: Task, *args, **kwargs):
    """`task.map(*args, **kwargs)` for a task that uses the GPU (or trains on the CPU): one GPU unit per task on Dask.

    Its inputs should be small (params, paths, model names): heavy data reaches workers by path, read there.
    """
    with gpu_resource():
        return task.map(*args, **kwargs)


def submit_on_workers(task: Task, *args, **kwargs):
    """`task.submit(...)` with the same GPU request as `map_on_workers`: one task that trains, on any runner."""
    with gpu_resource():
        return task.submit(*args, **kwargs)


def _dask_worker():
    """The Dask worker this code runs on, or None (not imported means not on a worker)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:
        return None


def torch_threads_for(orchestration: OrchestrationParams) -> int | None:
    """torch's intra-op threads here: `torch_threads`, else a Dask worker's own thread count, else None (torch's default)."""
    if orchestration.torch_threads is not None:
        return orchestration.torch_threads
    worker = _dask_worker()
    return worker.state.nthreads if worker is not None else None


TORCH_THREADS = torch.get_num_threads()
"""torch's own intra-op thread count in this process (one per core, or OMP_NUM_THREADS), read at import."""


def torch_work(orchestration: OrchestrationParams, work: Callable[[], Result]) -> Result:
    """`work()` with the tasks' torch threads: in this thread, or, on a process's main thread, in a short-lived thread
    of its own (with the caller's context, so Prefect's logger works there), whose OpenMP team goes with it.

    A thread that has run a parallel torch operation keeps a thread team, and while it exists, the parallel regions
    of every other thread run slower: on 2 CPU cores the default run's retrain took 50-58 s instead of 37-40 s because
    its main thread had trained the proxy and the step probes (`benchmarks/thread_penalty.py`). The main thread keeps
    one torch thread (`set_torch_threads`), and its torch work (loading the data set, whose normalisation statistics
    are reductions, and the step probes a select stage trains in place) runs here, with the same thread count as in
    a task, so its results are the same to the bit."""
    if threading.current_thread() is not threading.main_thread():
        set_torch_threads(orchestration)
        return work()
    context = contextvars.copy_context()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            set_torch_threads(orchestration)
            outcome["result"] = context.run(work)
        except BaseException as exc:  # raised again in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="unseen-torch")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def set_torch_threads(orchestration: OrchestrationParams) -> int:
    """Call first in every task that trains or infers (and once in the flow process); returns torch's thread count:
    one on a process's main thread, whose torch work goes through `torch_work`.

    torch's intra-op pool is per process and sized at start-up: one thread per core, or OMP_NUM_THREADS, which Dask's
    nanny sets to 1 in the worker processes it spawns. Neither fits every worker: two 1-thread workers must not
    start 2 torch threads each on 2 cores, and a 4-thread CPU worker should not train on 1. On a Dask worker torch
    therefore uses the worker's thread count (`threads_per_worker`, `dask worker --nthreads`), unless
    `orchestration.torch_threads` sets a number, which then applies everywhere (flow process, local threads,
    workers). CPU results depend on it (reductions are split per thread): runs compare bit for bit only at equal
    thread counts, which `torch_threads` pins. Setting it per task (not per worker at start-up) also covers workers
    this code did not start, such as an existing cluster's.
    """
    wanted = 1 if threading.current_thread() is threading.main_thread() else torch_threads_for(orchestration) or TORCH_THREADS
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return torch.get_num_threads()
