"""MLflow tracking: one parent run per pipeline run, a child run per scoring fold and per trained model.

Every call names its run id explicitly (MlflowClient), because MLflow's active run is thread-local
and tasks run on worker threads or other processes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow sends usage reports unless told not to: runs stay offline
import mlflow  # noqa: E402
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from prefect.exceptions import TerminationSignal

from tasks.lineage import file_md5, git_commit
from unseen.config import Params
from unseen.tables import file_meta
from unseen.training import compute_kernels, request_stop

PROBE_TIMEOUT_SECONDS = 5
EXPERIMENT_KIND, TRAINING_RUNS = "mlflow.experimentKind", "custom_model_development"
"""MLflow's record that the experiment holds model-training runs; the UI's view itself follows the link
(flows.summary.ui_page)."""


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
        path = Path(uri.removeprefix("sqlite:///")).expanduser().absolute()
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise TrackingError(
                f"tracking.uri={uri}: folder {path.parent} does not exist or is not writable; create it or set tracking.uri "
                "to another store. Nothing was run"
            )
        if path.is_file() and path.stat().st_size and path.read_bytes()[:16] != b"SQLite format 3\x00":
            raise TrackingError(
                f"tracking.uri={uri}: {path} is not an SQLite database; move it away (MLflow creates a new store) or set "
                "tracking.uri to another store. Nothing was run"
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

    def log_tables(self, run_id: str, tables: dict[str, str]) -> None:
        """Log Parquet tables (path -> context: `read` or `written`) as the run's MLflow datasets: the DVC md5 of the
        file as digest, the table's params hash and data fingerprint as tags, so the UI shows each run's lineage.
        MLflow keeps a table once per run: in a whole-pipeline run, under the stage that wrote it."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        inputs = []
        for path, context in tables.items():
            meta = file_meta(path)
            with warnings.catch_warnings():  # MLflow registers its local-file source twice and warns that both match
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(Path(path).absolute().as_uri())
            dataset = MetaDataset(source, name=Path(path).stem, digest=file_md5(path))
            tags = [InputTag("mlflow.data.context", context)]
            tags += [InputTag(f"unseen.{key}", meta[key]) for key in ("params_hash", "data_fingerprint") if key in meta]
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=tags))
        self.client.log_inputs(run_id, datasets=inputs)

    def describe(self, run_id: str, markdown: str) -> None:
        """The run's description in the MLflow UI (its note), e.g. the summary a user reads in the terminal."""
        self.client.set_tag(run_id, "mlflow.note.content", markdown)

    @contextlib.contextmanager
    def ended(self, run_id: str) -> Iterator[str]:
        """The block's run ends FINISHED; FAILED if the block raises (a task attempt Prefect may retry); KILLED if the run
        was stopped (Ctrl-C, SIGTERM), which also asks every training loop of the process to stop."""
        try:
            yield run_id
        except (KeyboardInterrupt, TerminationSignal):
            request_stop()  # the other threads' training loops stop too, at their next batch
            self.client.set_terminated(run_id, "KILLED")
            raise
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    @contextlib.contextmanager
    def child_run(self, name: str, **tags: str) -> Iterator[str]:
        """A child run of the pipeline run, ended as `ended` says."""
        with self.ended(self.child(name, **tags)) as run_id:
            yield run_id

    @contextlib.contextmanager
    def active(self, run_id: str) -> Iterator[None]:
        """Make `run_id` the active run on this thread, for fluent APIs such as mlflow.pytorch.log_model."""
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=run_id):
            yield


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_abandoned_runs_killed(client: MlflowClient, experiment_id: str) -> list[str]:
    """Parent runs left RUNNING by a process of this machine that no longer exists (SIGKILL, power loss), and their
    RUNNING children, are marked KILLED, so the MLflow UI does not show them running for good. Returns their ids."""
    killed = []
    here = f"attributes.status = 'RUNNING' and tags.`unseen.host` = '{socket.gethostname()}'"
    for run in client.search_runs([experiment_id], filter_string=here):
        if _alive(int(run.data.tags.get("unseen.pid", "0") or 0)):
            continue
        children = f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{run.info.run_id}'"
        for child in client.search_runs([experiment_id], filter_string=children):
            client.set_terminated(child.info.run_id, "KILLED")
            killed.append(child.info.run_id)
        client.set_terminated(run.info.run_id, "KILLED")
        killed.append(run.info.run_id)
    return killed


@contextlib.contextmanager
def pipeline_run(params: Params, name: str) -> Iterator[Tracker]:
    """Open the parent run of one pipeline (or single-stage) run, ended FINISHED, FAILED or KILLED (`Tracker.ended`)."""
    client = MlflowClient(params.tracking.uri)
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(params.tracking.experiment)
    if (experiment.tags if experiment else {}).get(EXPERIMENT_KIND) != TRAINING_RUNS:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, TRAINING_RUNS)
    mark_abandoned_runs_killed(client, experiment_id)
    owner = {"unseen.host": socket.gethostname(), "unseen.pid": str(os.getpid())}
    kernels = {f"unseen.{key}": str(value) for key, value in compute_kernels().items()}  # what a coreset's bits depend on
    run = client.create_run(experiment_id, run_name=name, tags={"git_commit": git_commit(), "stage": name, **owner, **kernels})
    tracker = Tracker(params.tracking.uri, experiment_id, run.info.run_id)
    tracker.log_params(run.info.run_id, _flatten(params.model_dump(mode="json")))
    with tracker.ended(tracker.run_id):
        yield tracker
