"""MLflow tracking: one parent run per pipeline run, a child run per scoring fold and per trained model.

Every call names its run id explicitly (MlflowClient), because MLflow's active run is thread-local
and tasks run on worker threads or other processes.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from tasks.lineage import git_commit
from unseen.config import Params

PROBE_TIMEOUT_SECONDS = 5


class TrackingError(RuntimeError):
    """The MLflow tracking store named in params cannot be used; raised before a run does any work."""


def check_tracking(uri: str) -> None:
    """Refuse a tracking store that is not there, in seconds and without writing anything.

    MLflow's own client retries an unreachable server for minutes and creates a SQLite file on first use, so a run
    would either hang or leave a store behind before failing. An http(s) server must answer its /health endpoint;
    a SQLite file's folder must exist and be writable. Other stores are left to MLflow.
    """
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_SECONDS) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(
                f"tracking.uri={uri}: the MLflow tracking server does not answer ({getattr(exc, 'reason', exc)}); "
                "start it (mlflow server ...) or set tracking.uri to another store, e.g. sqlite:///mlflow.db. Nothing was run"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).expanduser().absolute().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(
                f"tracking.uri={uri}: folder {folder} does not exist or is not writable; create it or set tracking.uri "
                "to another store. Nothing was run"
            )


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        flat.update(_flatten(value, f"{name}.") if isinstance(value, dict) else {name: str(value)})
    return flat


@dataclass(frozen=True)
class Tracker:
    """Where a pipeline run is tracked; small and picklable, so it can travel to any task runner."""

    uri: str
    experiment_id: str
    run_id: str

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def child(self, name: str, **tags: str) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags={MLFLOW_PARENT_RUN_ID: self.run_id, **tags})
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()])

    def log_params(self, run_id: str, params: dict[str, object]) -> None:
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_artifact(self, run_id: str, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def finish(self, run_id: str, failed: bool = False) -> None:
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    @contextlib.contextmanager
    def child_run(self, name: str, **tags: str) -> Iterator[str]:
        """A child run that ends FINISHED, or FAILED if the block raises (a task attempt that Prefect will retry)."""
        run_id = self.child(name, **tags)
        try:
            yield run_id
        except BaseException:
            self.finish(run_id, failed=True)
            raise
        self.finish(run_id)

    @contextlib.contextmanager
    def active(self, run_id: str) -> Iterator[None]:
        """Make `run_id` the active run on this thread, for fluent APIs such as mlflow.pytorch.log_model."""
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=run_id):
            yield


@contextlib.contextmanager
def pipeline_run(params: Params, name: str) -> Iterator[Tracker]:
    """Open the parent run of one pipeline (or single-stage) run; marks it FAILED if the block raises."""
    client = MlflowClient(params.tracking.uri)
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(params.tracking.experiment)
    run = client.create_run(experiment_id, run_name=name, tags={"git_commit": git_commit(), "stage": name})
    tracker = Tracker(params.tracking.uri, experiment_id, run.info.run_id)
    tracker.log_params(run.info.run_id, _flatten(params.model_dump(mode="json")))
    try:
        yield tracker
    except BaseException:
        tracker.finish(tracker.run_id, failed=True)
        raise
    tracker.finish(tracker.run_id)
