"""Shared fixtures: real Fashion-MNIST (from the Debian package) cut to tiny subsets, isolated Prefect and MLflow stores."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from unseen.data import place_system_fashion_mnist

REPO = Path(__file__).resolve().parents[1]
EMPTY_TRACKING_STORE: list[Path] = []  # set once per session by `empty_tracking_store`


@pytest.fixture(scope="session", autouse=True)
def isolated_prefect_home(tmp_path_factory) -> Path:
    """Every Prefect process of the session (in-process or a subprocess) uses a temporary home, never ~/.prefect."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))  # image-collection scans, never ~/.cache
    return home


@pytest.fixture(scope="session", autouse=True)
def empty_tracking_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, made once: `tiny_params` starts each test's store as a copy of it, because MLflow
    takes seconds to create the schema of every new store (the DVC test keeps a store MLflow creates itself)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_registered_models()  # tracking and model registry tables
    EMPTY_TRACKING_STORE.append(path)
    return path


@pytest.fixture(scope="session")
def prefect_api(isolated_prefect_home):
    """One temporary Prefect API server shared by every test that runs a flow in this process."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    """torchvision's root with the official Fashion-MNIST idx files (from apt's dataset-fashion-mnist)."""
    root = tmp_path_factory.mktemp("fashion")
    if not place_system_fashion_mnist(root):
        pytest.fail("Fashion-MNIST is missing: apt-get install -y dataset-fashion-mnist (.ci/run does this)")
    return root


def tiny_params(tmp_path: Path, fashion_root: Path, **sections) -> dict:
    """Params for a run that takes seconds: 2,000 train and 500 test samples, 1-2 epochs everywhere."""
    params = {
        "seed": 0,
        "outputs": str(tmp_path / "outputs"),
        "data": {"name": "fashion-mnist", "root": str(fashion_root), "download": False, "train_subset": 2000, "test_subset": 500},
        "features": {"extractor": "proxy", "proxy": {"epochs": 1}},
        "scores": {"folds": 2, "recipe": {"epochs": 2}, "score_epochs": [1, 2], "probe": {"epochs": 2, "score_epochs": [1, 2]}},
        "increment": {"enabled": True, "max_growth": 0.25},  # dvc.yaml tracks the section: params.yaml must name it
        "select": {"prune_ratio": 0.5},
        "retrain": {"recipe": {"epochs": 2}},
        "orchestration": {"retries": 0, "retry_delay_seconds": 0, "max_workers": 2},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "tests", "registered_model": "tiny-coreset-model"},
    }
    for name, values in sections.items():
        params[name] = {**params[name], **values} if isinstance(values, dict) else values
    store = tmp_path / "mlflow.db"
    if EMPTY_TRACKING_STORE and params["tracking"]["uri"] == f"sqlite:///{store}" and not store.exists():
        tmp_path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EMPTY_TRACKING_STORE[0], store)
    return params


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def tiny_params_file(tmp_path, fashion_root) -> Path:
    return write_params(tmp_path / "params.yaml", tiny_params(tmp_path, fashion_root))
