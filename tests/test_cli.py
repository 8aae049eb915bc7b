"""The installed `unseen` script: exit status 2 and one clean line on bad input (every case: tests/test_bad_input.py)."""

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import tiny_params, write_params

UNSEEN = str(Path(sys.executable).with_name("unseen"))


def test_the_installed_script_exits_2_with_one_line_and_writes_nothing(tmp_path, fashion_root):
    params = tiny_params(tmp_path, fashion_root)
    params["select"]["prune_ratio"] = 1.5
    path = write_params(tmp_path / "params.yaml", params)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run([UNSEEN, "run", "--params", str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}: invalid params\n  select.prune_ratio: Input should be less than 1")
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_overrides_reach_the_params(tmp_path):
    from unseen.config import load_params

    path = write_params(tmp_path / "params.yaml", yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text()))
    params = load_params(path, ["select.prune_ratio=0.7", "data.name=imagefolder", "data.root=/srv/images"])
    assert params.select.prune_ratio == 0.7 and params.data.name == "imagefolder" and params.data.root == "/srv/images"


def test_bad_params_are_refused_before_torch_mlflow_or_prefect_load(tmp_path):
    """A typo in params costs a second, not the ten that the pipeline's imports take."""
    path = write_params(tmp_path / "params.yaml", yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text()))
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flows.cli", "run", "--params", str(path), "--set", "select.prune_ratio=1.5"],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "select.prune_ratio" in result.stderr and imported, result.stderr[-500:]
    assert not imported & {"torch", "mlflow", "prefect", "sklearn"}


def test_an_unknown_last_stage_is_refused_naming_the_stages(tmp_path):
    result = subprocess.run([UNSEEN, "run", "--until", "deploy"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --until 'deploy': use one of: features, scores, select, retrain")
