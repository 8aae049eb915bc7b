"""Schedules: serve the prune flow as a deployment with a cron schedule on a Prefect server."""

from __future__ import annotations

import os

from prefect.settings import get_current_settings

from flows.prune import prune


def serve_prune(*, name: str, cron: str, params_file: str, overrides: list[str], until: str = "retrain") -> None:
    """Register the deployment `prune/<name>` and execute its runs here until interrupted.

    Runs execute in this working directory (relative paths in params resolve here) with the flow's
    default task runner; the cron schedule is in UTC. A run whose outputs are all current does nothing; one on a
    grown collection scores only the new samples.
    """
    if not get_current_settings().api.url:
        raise SystemExit(
            "PREFECT_API_URL is not set: start a server with `prefect server start --host 127.0.0.1` "
            "and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    prune.serve(name=name, cron=cron, parameters={"params_file": os.path.abspath(params_file), "overrides": overrides, "only_if_changed": True, "until": until})
