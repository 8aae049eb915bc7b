"""`unseen schedule` against a real Prefect server on loopback: serve, trigger one run, see it complete.

The server and the serving process are subprocesses with their own PREFECT_HOME; this test talks to them
over HTTP on 127.0.0.1 only and never through the prefect_test_harness of tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import tiny_params, write_params

BIN = Path(sys.executable).parent
CRON = "0 3 * * *"
DEPLOYMENT = "test-nightly"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _base_env(home: Path) -> dict[str, str]:
    """This process's environment without any Prefect settings, plus an own home and no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _api(base: str, method: str, path: str, body: dict | None = None, timeout: float = 10, attempts: int = 6) -> tuple[int, object]:
    """One API call; a 503 (the server's SQLite store busy under load, as on a loaded 2-core CI box) is retried."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(attempts):
        request = urllib.request.Request(f"{base}{path}", data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == attempts - 1:
                return exc.code, exc.read().decode(errors="replace")
        time.sleep(2 * (attempt + 1))
    raise AssertionError("unreachable")


def _tail(path: Path, lines: int = 60) -> str:
    if not path.is_file():
        return f"({path} was not written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(proc: subprocess.Popen | None, timeout: float = 20) -> int | None:
    """SIGTERM the process group, wait, then SIGKILL; returns the exit code of the group leader."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # children (uvicorn, flow-run subprocesses) that outlived the leader
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)
    return proc.returncode


def _flow_run_children(pid: int) -> list[str]:
    """Command lines of pid's child processes that run a flow, via Linux /proc.

    Prefect 3.9's runner starts each flow run as a multiprocessing spawn child; multiprocessing's resource
    tracker, also a child, lives as long as the serving process and is left out.
    """
    found: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmdline and "resource_tracker" not in cmdline:
                found.append(cmdline)
    return found


def _wait_for(what: str, check, timeout: float, every: float = 1.0, procs: tuple[subprocess.Popen, ...] = ()):
    """Call check() until it returns something truthy; fail if time runs out or a watched process exits."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"waiting for {what}: {proc.args[0]} exited early with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(every)


def test_schedule_serves_a_cron_deployment_on_a_local_server(tmp_path, fashion_root):
    started = time.monotonic()
    port = _free_port()
    base = f"http://127.0.0.1:{port}/api"
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"

    server_env = _base_env(tmp_path / "server-home")
    server_env.update(PREFECT_SERVER_UI_ENABLED="false", PREFECT_UI_ENABLED="false")
    client_env = _base_env(tmp_path / "client-home")
    client_env.update(
        PREFECT_API_URL=base,
        PREFECT_RUNNER_POLL_FREQUENCY="2",  # the runner's default is 10 s between looks for due runs
        PREFECT_LOGGING_TO_API_ENABLED="false",
    )

    # Relative outputs on purpose: the served run must resolve them against `unseen schedule`'s working directory.
    params_file = write_params(tmp_path / "params.yaml", tiny_params(tmp_path, fashion_root, outputs="outputs"))

    server = serve = None
    serve_exit = None
    marks: dict[str, object] = {}
    try:
        with open(server_log, "wb") as log:
            server = subprocess.Popen(
                [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env=server_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

        def healthy():
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    return response.status == 200
            except (OSError, urllib.error.URLError):
                return False

        _wait_for("the Prefect server's /api/health", healthy, timeout=120, every=0.5, procs=(server,))
        marks["server healthy"] = time.monotonic()

        with open(serve_log, "wb") as log:
            serve = subprocess.Popen(
                [str(BIN / "unseen"), "schedule", "--cron", CRON, "--name", DEPLOYMENT, "--params", params_file.name],
                env=client_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

        def deployment():
            status, body = _api(base, "GET", f"/deployments/name/prune/{DEPLOYMENT}")
            return body if status == 200 else None

        found = _wait_for(f"deployment prune/{DEPLOYMENT}", deployment, timeout=90, procs=(server, serve))
        marks["deployment registered"] = time.monotonic()
        crons = [item["schedule"].get("cron") for item in found["schedules"]]
        assert crons == [CRON], found["schedules"]
        assert all(item["active"] for item in found["schedules"]), found["schedules"]
        assert found["parameters"]["params_file"] == str(params_file), found["parameters"]

        status, run = _api(base, "POST", f"/deployments/{found['id']}/create_flow_run", {})
        assert status == 201, run

        def finished():
            status, body = _api(base, "GET", f"/flow_runs/{run['id']}")
            assert status == 200, body
            return body if body["state_type"] in TERMINAL else None

        final = _wait_for(f"flow run {run['id']} to finish", finished, timeout=240, every=2, procs=(server, serve))
        assert final["state_type"] == "COMPLETED", final["state"]
        assert (tmp_path / "outputs" / "metrics.json").is_file()
        assert (tmp_path / "outputs" / "model.pt").is_file()
        metrics = json.loads((tmp_path / "outputs" / "metrics.json").read_text())
        assert metrics, "metrics.json is empty"
        marks["run completed"] = time.monotonic()

        # Stop the serving process the way `kill PID` does, but only once the flow-run process has exited: the API says
        # COMPLETED a few seconds before that process ends, and a SIGTERM to `serve` in that window makes Prefect's
        # runner cancel the "in-flight" run and overwrite COMPLETED with CANCELLED (seen with Prefect 3.9.1).
        _wait_for("the flow-run subprocess to exit", lambda: not _flow_run_children(serve.pid), timeout=60, every=0.5, procs=(serve,))
        serve.send_signal(signal.SIGTERM)
        try:
            serve_exit = serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve_exit = "still running 30 s after SIGTERM"
        marks["serve stopped"] = time.monotonic()
        assert serve_exit == 0, f"unseen schedule on SIGTERM: {serve_exit}"
        status, after = _api(base, "GET", f"/flow_runs/{run['id']}")
        assert status == 200 and after["state_type"] == "COMPLETED", f"after stopping serve the run is {after}"
        status, paused = _api(base, "GET", f"/deployments/{found['id']}")
        marks["deployment paused after stop"] = paused.get("paused") if status == 200 else status
    except Exception as exc:
        raise AssertionError(
            f"{exc}\n\n--- serve log ({serve_log}) ---\n{_tail(serve_log)}\n\n--- server log ({server_log}) ---\n{_tail(server_log)}"
        ) from exc
    finally:
        _stop(serve)
        _stop(server)
        timings = ", ".join(f"{k} {v - started:.1f} s" if isinstance(v, float) else f"{k}: {v}" for k, v in marks.items())
        print(f"\ntest_schedule: {time.monotonic() - started:.1f} s in all ({timings}); serve exit on SIGTERM: {serve_exit}")
