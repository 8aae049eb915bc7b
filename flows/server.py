"""A temporary Prefect API server started before the heavy imports, so that its start-up overlaps them.

Without PREFECT_API_URL, Prefect starts the same server (uvicorn on `prefect.server.api.server:create_app`, UI off)
when the first flow runs, i.e. after torch, torchvision, MLflow and Prefect are imported: about 6 s of server
start-up in series with about 5 s of imports on a 2-core CPU. Started first, in its own process, it is ready by the
time the flow needs it. This module imports nothing from Prefect, so starting the server costs the caller nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


class ServerError(RuntimeError):
    """The temporary Prefect server did not come up."""


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the server process: receive SIGTERM when the pipeline process dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class TemporaryServer:
    """A Prefect API server process on 127.0.0.1 for the lifetime of one command."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent
        command = [
            sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "error", "--lifespan", "on",
        ]
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "0"}  # no telemetry calls to the network
        # its own session: Ctrl-C in a terminal (SIGINT to the foreground process group), `timeout` and service managers
        # signal the run, which stops its tasks and then this server; it still dies with the run if the run is killed
        self.process = subprocess.Popen(
            command, env=env, start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None
        )

    def wait_ready(self) -> None:
        """Block until the server answers its health check; a clear error if it exits or never answers."""
        timeout = float(os.environ.get(STARTUP_TIMEOUT, 60))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"the temporary Prefect server exited with code {self.process.returncode} before it was ready")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.1)
        raise ServerError(f"the temporary Prefect server at {self.api_url} did not answer within {timeout:.0f} s; raise {STARTUP_TIMEOUT}")

    def stop(self, drain_seconds: float = 5) -> None:
        """Send the flow's last log lines (Prefect batches them in the background), then end the server."""
        handlers = sys.modules.get("prefect.logging.handlers")
        if handlers is not None:
            handlers.APILogWorker.drain_all(timeout=drain_seconds)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _NoServer:
    def wait_ready(self) -> None:
        """Prefect's own configuration applies: a server at PREFECT_API_URL, or the one Prefect starts itself."""


@contextlib.contextmanager
def temporary_api_server() -> Iterator[TemporaryServer | _NoServer]:
    """Start a temporary server now and point PREFECT_API_URL at it until the block ends; call `wait_ready()` before the flow.

    Does nothing where PREFECT_API_URL is already set (a real server) or Prefect is already imported in this process
    (its settings are fixed at import, e.g. under pytest), so Prefect's own behaviour applies there.
    """
    if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        yield _NoServer()
        return
    server = TemporaryServer()
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ["PREFECT_UI_URL"] = ""  # the server runs without its UI: print no links to it
    stopped = False
    try:
        yield server
    except KeyboardInterrupt:
        stopped = True
        raise
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.pop("PREFECT_UI_URL", None)
        server.stop(drain_seconds=1 if stopped else 5)
