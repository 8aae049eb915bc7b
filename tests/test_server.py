"""The temporary Prefect API server that `unseen run` starts before its imports: it answers, and it goes away."""

import json
import os
import urllib.request

from flows.server import TemporaryServer, temporary_api_server


def test_the_temporary_server_answers_and_stops():
    server = TemporaryServer()
    try:
        server.wait_ready()
        with urllib.request.urlopen(f"{server.api_url}/health", timeout=5) as response:
            assert response.status == 200 and json.loads(response.read()) is True
    finally:
        server.stop()
    assert server.process.poll() is not None


def test_no_server_once_prefect_is_imported(monkeypatch):
    """Prefect fixes its settings at import (as under pytest): Prefect's own behaviour applies there."""
    import prefect  # noqa: F401

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_api_server() as server:
        assert not isinstance(server, TemporaryServer) and "PREFECT_API_URL" not in os.environ
