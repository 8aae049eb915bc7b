"""benchmarks/gpu_check.py, the check a bare GPU machine runs: the library's chain from the idx files alone, without
Prefect, MLflow, Dask or DVC; here on the CPU (--allow-cpu) and a small subset, so that it is still whole when a GPU
comes."""

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from unseen.data import SYSTEM_FASHION_MNIST

RUN_AND_LIST_IMPORTS = (
    "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path('benchmarks/gpu_check.py', run_name='__main__'); "
    "print('imported:', sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'mlflow', 'dask', 'distributed', 'dvc', 'tasks', 'flows'}))"
)


def _command(tmp_path, *extra: str) -> list[str]:
    return [
        sys.executable, "-c", RUN_AND_LIST_IMPORTS, "gpu_check.py", "--fashion-mnist", str(SYSTEM_FASHION_MNIST),
        "--out", str(tmp_path / "gpu_check.json"), "--set", f"data.root={tmp_path / 'data'}", "--set", "data.train_subset=1000",
        "--set", "data.test_subset=300", "--set", "scores.recipe.epochs=1", "--set", "scores.score_epochs=[1, 1]",
        "--set", "retrain.recipe.epochs=1", *extra,
    ]


def test_gpu_check_runs_the_chain_from_the_idx_files_without_the_orchestration_stack(tmp_path):
    result = subprocess.run(_command(tmp_path, "--allow-cpu"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "imported: []" in result.stdout
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    measured = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (measured["device"], measured["train_size"], measured["coreset_size"]) == ("cpu", 1000, 500)
    assert set(measured["seconds"]) == {"load", "features", "scores", "select", "retrain_coreset", "retrain_random", "scores_cnn_folds"}
    assert 0.1 < measured["test_accuracy_coreset"] <= 1 and 0.1 < measured["test_accuracy_random"] <= 1
    assert measured["coreset_cost_vs_one_full_training"] > 0 and -1 <= measured["spearman_el2n_probe_vs_cnn_folds"] <= 1


def test_gpu_check_refuses_a_machine_without_cuda_unless_told(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("on a CUDA machine the check runs")
    result = subprocess.run(_command(tmp_path), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "CUDA is not available" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "gpu_check.json").exists()
