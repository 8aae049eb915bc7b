"""What every stage task shares: the data set loaded once per process, retries from params, an epoch logger for
Prefect and MLflow, and the out-of-memory retry with smaller batches."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

import torch
from prefect import Task, get_run_logger
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL

from tasks.runners import torch_work
from tasks.tracking import Tracker
from unseen.config import DataParams, InputError, Params
from unseen.data import ImageDataset, load_dataset
from unseen.models import Classifier
from unseen.training import EpochCallback

GPU_TAG = "gpu"
"""The tag of the tasks that train or infer on the device: `prefect concurrency-limit create gpu 1` caps them."""
_DATA_LOCK = threading.Lock()
Result = TypeVar("Result")


@functools.lru_cache(maxsize=2)
def _cached_dataset(data: DataParams, seed: int) -> ImageDataset:
    return load_dataset(data, seed)


def dataset_for(params: Params) -> ImageDataset:
    """Load the data set once per process, whichever task asks first, with the tasks' torch threads (off the main
    thread, which asks first: `tasks.runners.torch_work`)."""
    with _DATA_LOCK:
        return torch_work(params.orchestration, lambda: _cached_dataset(params.data, params.seed))


def _retry_unless_input_error(task: Task, task_run, state) -> bool:
    return not isinstance(state.data, InputError)


def with_retries(params: Params, task: Task) -> Task:
    """The task with `orchestration.retries` and `retry_delay_seconds` from params; input errors fail at once. Inside
    a flow run on a Prefect server without a `gpu` concurrency limit, the task also drops its `gpu` tag: every tagged
    task run asks the server for a slot, which stalled tasks by 2-4 s on the temporary server, for nothing."""
    tags = task.tags
    context = FlowRunContext.get()
    if GPU_TAG in tags and context is not None and not gpu_limit_exists(PREFECT_API_URL.value(), str(context.flow_run.id)):
        tags = tags - {GPU_TAG}
    return task.with_options(
        retries=params.orchestration.retries, retry_delay_seconds=params.orchestration.retry_delay_seconds,
        retry_condition_fn=_retry_unless_input_error, tags=tags,
    )


@functools.lru_cache(maxsize=16)
def gpu_limit_exists(api_url: str | None, flow_run_id: str) -> bool:
    """Whether the Prefect server at `api_url` holds a concurrency limit on the `gpu` tag: asked once per flow run, so
    a long-lived process (a served schedule) sees a limit created between its runs."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_concurrency_limit_by_tag(GPU_TAG)
        except ObjectNotFound:
            return False
    return True


def epoch_logger(tracker: Tracker, run_id: str, label: str, total: int) -> EpochCallback:
    """An epoch callback that logs each epoch's statistics to the MLflow run and one progress line to Prefect."""
    logger = get_run_logger()

    def on_epoch(epoch: int, model: Classifier, stats: dict[str, float]) -> None:
        tracker.log_metrics(run_id, stats, step=epoch)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in stats.items() if k != "epoch_seconds")
        logger.info(f"{label} epoch {epoch}/{total}  {shown}  ({stats['epoch_seconds']:.1f} s)")

    return on_epoch


def halved_batches(params: Params) -> Params | None:
    """Every training and inference batch size halved, none below `orchestration.min_batch_size`: the retry after an
    out-of-memory error. None when all of them are already at the floor (nothing smaller to try)."""
    floor = params.orchestration.min_batch_size
    tree = params.model_dump()
    recipes = [tree["features"]["proxy"], tree["scores"]["recipe"], tree["scores"]["probe"], tree["retrain"]["recipe"]]
    fields = [(r, "batch_size") for r in recipes] + [(tree["features"], "batch_size"), (tree["scores"], "batch_size"), (tree["retrain"], "batch_size_eval")]
    changed = False
    for section, key in fields:
        smaller = max(floor, section[key] // 2)
        changed |= smaller < section[key]
        section[key] = min(section[key], smaller)
    return Params.model_validate(tree) if changed else None


def shrinking_on_oom(
    params: Params, tracker: Tracker, run_id: str, what: str, batch_of: Callable[[Params], int], work: Callable[[Params], Result]
) -> tuple[Result, Params]:
    """(`work(params)`, the params it finally ran with): after each out-of-memory error, `work` runs again with every
    batch size halved, down to `orchestration.min_batch_size`; each retry is logged and tagged on the MLflow run.

    Outputs keep the original params' hash: the smaller batch is how this stage fitted on this device, recorded, not
    another configuration (a rerun reuses them).
    """
    current, retries = params, 0
    while True:
        try:
            return work(current), current
        except torch.OutOfMemoryError as exc:
            smaller = halved_batches(current)
            if smaller is None:
                exc.add_note(f"[{what}] still out of memory at batch size {batch_of(current)} (orchestration.min_batch_size); "
                             "lower orchestration.min_batch_size or use a device with more memory")
                raise
        # outside the except block, so the failed attempt's tensors (held by the traceback) are freed first
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        retries += 1
        get_run_logger().warning(f"[{what}] out of memory at batch size {batch_of(current)}; retrying with {batch_of(smaller)}")
        tracker.client.set_tag(run_id, "oom_retries", str(retries))
        tracker.client.set_tag(run_id, "batch_size", str(batch_of(smaller)))
        current = smaller
