"""What a user sees in the MLflow UI, checked in a real browser: the pages the run links to (flows.summary.ui_page) must
open on the training runs and show the run's datasets, summary and model; the MLflow API cannot tell what the UI
renders. Renders a tiny run's pages in headless Chromium (`apt-get install -y chromium`) and checks their DOM.
Writes benchmarks/results/mlflow_ui_check.json and two screenshots; exits 1 if a check fails.
Usage: .venv/bin/python benchmarks/mlflow_ui_check.py
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow

from benchmarks.machine import machine
from flows.summary import ui_page
from unseen.io import atomic_path, write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TINY_RUN = ["data.train_subset=2000", "data.test_subset=500", "features.proxy.epochs=1", "retrain.recipe.epochs=1"]
SERVER_START_SECONDS = 180  # about 50 s on 2 CPU cores: the server migrates the store and starts its job workers
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", "--virtual-time-budget=15000"]


def tiny_run(tmp: Path, uri: str) -> str:
    """Run the pipeline on a small subset into `tmp`, tracked in `uri`; returns the parent run's id."""
    overrides = [*TINY_RUN, f"outputs={tmp / 'outputs'}", f"tracking.uri={uri}"]
    sets = [arg for override in overrides for arg in ("--set", override)]
    subprocess.run([str(Path(sys.executable).with_name("unseen")), "run", *sets], cwd=REPO, check=True)
    return json.loads((tmp / "outputs" / "run_report.json").read_text())["run_id"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(uri: str, log: Path) -> Iterator[str]:
    """An MLflow server on `uri`, in its own process group, stopped (with its workers) when the block ends."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"mlflow server did not answer {url}/health within {SERVER_START_SECONDS} s")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def render(url: str, screenshot: Path, profile: Path) -> str:
    """Render `url` in a fresh browser profile (no workflow choice remembered), save its screenshot; returns the DOM."""
    args = [*CHROMIUM, f"--user-data-dir={profile}", f"--screenshot={screenshot}", "--dump-dom", url]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout


def visible_text(dom: str) -> str:
    """The DOM's text, one space between elements (and at both ends), so `f" {word} "` matches a whole cell."""
    body = re.sub(r"<script.*?</script>|<style.*?</style>|<[^>]+>", " ", dom, flags=re.S)
    return f" {' '.join(html.unescape(body).split())} "


def experiment_checks(dom: str, run_name: str) -> dict[str, bool]:
    title = html.unescape(m.group(1)) if (m := re.search(r"<title>(.*?)</title>", dom, re.S)) else ""
    text = visible_text(dom)
    return {
        f"opens on the training runs view (title {title!r} starts with 'Runs')": title.startswith("Runs"),
        f"runs table lists the parent run {run_name!r}": "Run Name" in text and f" {run_name} " in text,
        "not the GenAI overview (no 'Token Usage' panel)": "Token Usage" not in text,
    }


def run_checks(dom: str, run: mlflow.entities.Run, experiment_id: str) -> dict[str, bool]:
    text = visible_text(dom)
    datasets = [(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs]
    named = [name for name, digest in datasets if f"{name} ({digest})" in text]
    hidden = len(datasets) - len(named)
    note = run.data.tags.get("mlflow.note.content", "")
    summary = next((line[2:] for line in note.splitlines() if line.startswith("- ")), note.strip() or "<no description>")
    model, _, version = run.data.tags.get("unseen.registered_model", "<untagged>/").rpartition("/")
    model_ids = [output.model_id for output in (run.outputs.model_outputs if run.outputs else [])]
    datasets_shown = bool(datasets) and (hidden == 0 or f" +{hidden} " in text)  # the UI names the first, counts the rest
    models_linked = bool(model_ids) and all(f'href="#/experiments/{experiment_id}/models/{m}"' in dom for m in model_ids)
    return {
        f"lists the {len(datasets)} logged datasets ({', '.join(named)} by name, {hidden} in a '+{hidden}' chip)": datasets_shown,
        f"description shows the summary line {summary!r}": " ".join(summary.split()) in text,
        f"links the registered model {model} v{version}": f'href="#/models/{model}/versions/{version}"' in dom,
        f"links the logged model(s) {model_ids}": models_linked,
    }


def chromium_version() -> str:
    return subprocess.run(["chromium", "--version"], capture_output=True, text=True, check=True).stdout.strip()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mlflow_ui_check.") as folder:
        tmp = Path(folder)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        run_id = tiny_run(tmp, uri)
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment_id = client.get_experiment_by_name("unseen").experiment_id
        run = client.get_run(run_id)
        pages = {}
        with mlflow_server(uri, tmp / "server.log") as server:
            for page, url in [("experiment", ui_page(server, experiment_id)), ("run", ui_page(server, experiment_id, run_id))]:
                shot = tmp / f"{page}.png"
                dom = render(url, shot, tmp / f"profile-{page}")
                checks = experiment_checks(dom, run.info.run_name) if page == "experiment" else run_checks(dom, run, experiment_id)
                saved = RESULTS / f"mlflow_ui_{page}.png"
                with atomic_path(saved) as target:
                    shutil.copyfile(shot, target)
                pages[page] = {"url": url, "checks": [{"name": n, "passed": ok} for n, ok in checks.items()], "screenshot": str(saved.relative_to(REPO))}
    failed = [f"{page}: {c['name']}" for page, result in pages.items() for c in result["checks"] if not c["passed"]]
    write_json(RESULTS / "mlflow_ui_check.json", {
        "command": "python benchmarks/mlflow_ui_check.py", "machine": machine(), "chromium": chromium_version(),
        "mlflow": mlflow.__version__, "run_id": run_id, "experiment_id": experiment_id, "pages": pages, "passed": not failed,
    })
    print("\n".join(f"FAILED {line}" for line in failed) or "all MLflow UI checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
