"""The command line refuses bad input with a clear message, a non-zero exit, and nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_params, write_params

UNSEEN = str(Path(sys.executable).with_name("unseen"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"select": {"prune_ratio": 1.5}}, "select.prune_ratio"),
        ({"scoring": {"folds": 1}}, "scoring.folds"),
        ({"typo_section": {}}, "typo_section: unknown key"),
        ({"data": {"name": "mnist-digits"}}, "data.name"),
    ],
)
def test_bad_params_exit_non_zero_and_write_nothing(tmp_path, fashion_root, change, message):
    params = tiny_params(tmp_path, fashion_root)
    for section, values in change.items():
        params[section] = {**params.get(section, {}), **values}
    path = write_params(tmp_path / "params.yaml", params)
    result = subprocess.run([UNSEEN, "run", "--params", str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and str(path) in result.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()


def test_missing_data_names_the_folder(tmp_path):
    params = tiny_params(tmp_path, tmp_path / "nowhere")
    params["data"]["name"] = "cifar10"
    path = write_params(tmp_path / "params.yaml", params)
    result = subprocess.run([UNSEEN, "stage", "features", "--params", str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "nowhere" in result.stderr and "data.download=true" in result.stderr
    assert not (tmp_path / "outputs" / "features.parquet").exists()


def test_unknown_stage_is_refused(tmp_path):
    result = subprocess.run([UNSEEN, "stage", "train"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "features, scores, select, retrain" in result.stderr


def test_overrides_reach_the_params(tmp_path):
    from unseen.config import load_params

    path = write_params(tmp_path / "params.yaml", yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text()))
    params = load_params(path, ["select.prune_ratio=0.7", "data.name=imagefolder", "data.root=/srv/images"])
    assert params.select.prune_ratio == 0.7 and params.data.name == "imagefolder" and params.data.root == "/srv/images"
