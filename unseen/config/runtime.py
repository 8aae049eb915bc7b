"""The params of how a run executes and where it is tracked (in no stage's params hash, so changing them reruns
nothing), of how a grown collection is re-pruned, and the base every section shares."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class InputError(ValueError):
    """Unusable input (params, data, a table, a score function): the message names it and the fix; never retried."""


class ParamsError(InputError):
    """A params file or override that cannot be used; the message names the key and the fix."""


class Section(BaseModel):
    """A params section: unknown keys are errors, values are frozen and finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DaskParams(Section):
    """Where `task_runner: dask` runs the mapped tasks: an existing scheduler, or a local cluster it starts and stops."""

    address: str | None = None
    workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    resources: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)  # e.g. {GPU: 1}

    @field_validator("address")
    @classmethod
    def _scheduler_address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z]+://\S+|[^\s/]+:\d+", value):
            raise ValueError(f"{value!r} is not a scheduler address; use e.g. tcp://10.0.0.5:8786 (null starts a local cluster)")
        return value

    def __hash__(self) -> int:  # frozen sections stay hashable despite the mapping
        return hash((self.address, self.workers, self.threads_per_worker, tuple(sorted(self.resources.items()))))


class OrchestrationParams(Section):
    retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(5, ge=0)
    max_workers: int = Field(1, ge=1)
    task_runner: Literal["local", "dask"] = "local"
    torch_threads: int | None = Field(None, ge=1)
    min_batch_size: int = Field(8, ge=1)
    dask: DaskParams = DaskParams()


class TrackingParams(Section):
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "unseen"
    registered_model: str = "unseen-coreset-model"


class IncrementParams(Section):
    """When a run on a grown collection scores only the new samples with the scoring models of an earlier run."""

    enabled: bool = True  # fold models keep their weights at each recorded epoch, and score samples added later
    max_growth: float = Field(0.25, gt=0)  # from scratch once the collection outgrew the one the fold models trained on by this
    selection: Literal["keep", "reselect"] = "keep"  # keep: the earlier coreset stays, the new samples fill the rest | reselect: all again
