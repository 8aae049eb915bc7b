"""The benchmark sweep through the real flow on 1,000 Fashion-MNIST samples: results table, resume cache, report."""

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from tests.conftest import REPO, tiny_params, write_params
from benchmarks.sweep import FULL, Cell, cell_params, load_sweep, read_results, retrain_epochs, seed_params
from unseen.config import ParamsError, TrainRecipe

UNSEEN = str(Path(sys.executable).with_name("unseen"))


def _sweep(tmp, fashion_root, **changes) -> dict:
    scoring = {"recipe": {"epochs": 1}, "score_epochs": [1, 1]}
    params = tiny_params(tmp, fashion_root, data={"train_subset": 1000, "test_subset": 300}, scores=scoring)
    params["retrain"] = {"recipe": {"epochs": 1}}
    params["features"] = {"extractor": "pixels", "pca_components": 16}
    sweep = {
        "name": "tiny",
        "params": str(write_params(tmp / "params.yaml", params)),
        "work_dir": str(tmp / "work"),
        "results_dir": str(tmp / "results"),
        "report": str(tmp / "docs" / "benchmarks.md"),
        "anchors": str(REPO / "benchmarks" / "anchors.yaml"),
        "experiment": "bench-tests",
        "seeds": [0, 1],
        "prune_ratios": [0.5, 0.9],
        "methods": {
            "random": {"group": "baseline", "label": "Random", "select": {"method": "random"}},
            "unseen": {  # multi-step: each step's scoring model trains inside the cell's task (a nested mapped task could deadlock)
                "group": "unseen", "label": "UNSEEN", "select": {"method": "unseen", "steps": 2}, "by_ratio": {0.9: {"hard_cutoff": 0.1}},
            },
            "cnn": {  # its own scorer: its features and scores are made once per seed in a folder of their own
                "group": "ablation", "label": "UNSEEN, CNN fold scores", "scores": {"scorer": "cnn"},
            },
        },
    }
    sweep.update(changes)
    return sweep


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory, fashion_root, prefect_api):
    from flows.bench import benchmark

    tmp = tmp_path_factory.mktemp("bench")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(_sweep(tmp, fashion_root)))
    return tmp, config, benchmark(config_file=str(config))


def test_table_has_one_row_per_cell_with_the_budget_rule(sweep_run):
    tmp, config, result = sweep_run
    assert result["trained"] == 14 and result["cached"] == 0
    table, meta = read_results(tmp / "results" / "tiny.parquet")
    rows = table.to_pylist()
    assert sorted((r["method"], r["prune_ratio"], r["seed"]) for r in rows) == sorted(
        [(FULL, 0.0, s) for s in (0, 1)] + [(m, r, s) for m in ("random", "unseen", "cnn") for r in (0.5, 0.9) for s in (0, 1)]
    )
    for row in rows:
        assert 0.1 < row["test_accuracy"] <= 1 and row["train_seconds"] > 0 and row["scoring_seconds"] > 0
        assert row["coreset_size"] == round((1 - row["prune_ratio"]) * 1000) and row["pool_size"] == 1000
        assert row["epochs"] == {0.0: 1, 0.5: 2, 0.9: 8}[row["prune_ratio"]]  # 8 steps of 128 over the pool, as many over each coreset
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert {row["code_commit"] for row in rows} == {head}  # the commit the sweep's code was loaded from
    assert {"command", "machine", "wall_seconds", "sweep_hash"} <= set(meta)
    assert (tmp / "results" / "tiny_scores_distributions.png").stat().st_size > 0
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bench-tests")
    cells = client.search_runs([experiment.experiment_id], "tags.stage = 'bench-cell'")
    assert len(cells) == 14 and all(run.data.metrics["test_accuracy"] > 0.1 for run in cells)
    from prefect.artifacts import Artifact

    published = json.loads(Artifact.get("bench-tiny").data)  # the accuracy table on the flow run page
    assert published[0]["method"] == "full data" and {row["method"] for row in published[1:]} == {"random", "unseen", "cnn"}
    assert all("prune 50%" in row and "prune 90%" in row for row in published[1:])
    own_prep = [p for p in (tmp / "work" / "tiny" / "seed-0").iterdir() if p.name.startswith("prep-")]
    assert len(own_prep) == 1 and (own_prep[0] / "scores.parquet").is_file()  # the CNN method's own scores, made once for its cells
    by_method = {r["method"]: r["scoring_seconds"] for r in rows if r["seed"] == 0}
    assert by_method["cnn"] != by_method["unseen"]  # each method is charged the scores it used


def test_second_call_trains_nothing_and_a_changed_method_retrains_only_its_cells(sweep_run, fashion_root):
    from flows.bench import benchmark

    tmp, config, first = sweep_run
    earlier = float(read_results(tmp / "results" / "tiny.parquet")[1]["wall_seconds"])
    again = subprocess.run([UNSEEN, "bench", "--config", str(config)], cwd=tmp, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "14 cells: 0 trained now, 14 from earlier runs" in again.stdout
    table, meta = read_results(tmp / "results" / "tiny.parquet")
    assert float(meta["wall_seconds"]) > earlier  # its cells were reused: the time that made them still counts
    assert sorted(table.column("test_accuracy").to_pylist()) == sorted(r["test_accuracy"] for r in first["rows"])
    changed = _sweep(tmp, fashion_root)
    changed["methods"]["unseen"]["select"]["diversity_weight"] = 0.0
    config.write_text(yaml.safe_dump(changed))
    assert benchmark(config_file=str(config))["trained"] == 4


def test_report_is_generated_from_the_table_by_the_command(sweep_run):
    tmp, config, _ = sweep_run
    result = subprocess.run([UNSEEN, "bench-report", "--config", str(config)], cwd=tmp, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    path = tmp / "docs" / "benchmarks.md"
    text = path.read_text()
    assert "unseen bench-report --config" in text and "| Random |" in text and "**" in text and "cells finished: 14 of 14" in text
    assert text.index("## Published anchors") > text.index("## Our measurements") and "2210.15809" in text
    assert re.search(r"best baseline Random [0-9.]+ ± [0-9.]+ \([+-][0-9.]+, standard error [0-9.]+\)", text)  # a gain or a gap, next to its noise
    assert (path.parent / "benchmarks" / "tiny_accuracy_vs_prune_ratio.png").stat().st_size > 0
    assert (path.parent / "benchmarks" / "tiny_scores_distributions.png").stat().st_size > 0
    assert re.search(r"^- code: commit [0-9a-f]{10} \(14 cells\)$", text, re.MULTILINE)


def test_results_from_before_the_code_commit_was_kept_read_as_not_recorded(tmp_path):
    """A committed results table without `code_commit` still loads; the report counts its cells as not recorded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.report import code_commits
    from benchmarks.sweep import RESULTS

    old = pa.schema([field for field in RESULTS if field.name != "code_commit"], metadata={b"unseen.table": b"benchmark_results"})
    row = {"method": "random", "group": "baseline", "prune_ratio": 0.5, "seed": 0, "test_accuracy": 0.9, "coreset_size": 5,
           "pool_size": 10, "epochs": 2, "train_seconds": 1.0, "selection_seconds": 0.0, "features_seconds": 1.0,
           "scoring_seconds": 1.0, "params_hash": "h", "mlflow_run_id": "r"}
    pq.write_table(pa.Table.from_pylist([row, {**row, "seed": 1}], schema=old), tmp_path / "old.parquet")
    table, _ = read_results(tmp_path / "old.parquet")
    assert table.column("code_commit").to_pylist() == [None, None]
    rows = table.to_pylist() + [{**row, "code_commit": "0123456789abcdef"}]
    assert code_commits(rows) == "not recorded (2 cells), 0123456789 (1 cell)"


def test_kept_difficulty_reads_every_coreset_of_a_seed(sweep_run, monkeypatch):
    """benchmarks/kept_difficulty.py on a finished sweep's seed: one entry per cell, bands that add up to the coreset."""
    from benchmarks.kept_difficulty import class_percentiles, main

    assert class_percentiles(np.array([3.0, 1.0, 2.0, 5.0, 5.0]), np.array([0, 0, 0, 1, 1])).tolist() == [1.0, 0.0, 0.5, 0.0, 1.0]
    tmp, config, _ = sweep_run
    monkeypatch.setattr(sys, "argv", ["kept_difficulty.py", "--config", str(config), "--seed", "0"])
    main()
    result = json.loads((tmp / "results" / "tiny_kept_difficulty_s0.json").read_text())
    assert set(result["coresets"]) == {f"{method}/p{ratio}" for method in ("random", "unseen", "cnn") for ratio in ("50", "90")}
    assert 0 < result["misclassified"] < result["samples"] == 1000 and len(result["held_out_error_per_class"]) == 10
    for key, cell in result["coresets"].items():
        assert sum(cell["kept_per_band"]) == cell["kept"] == (500 if key.endswith("p50") else 100)
        assert 0 <= cell["misclassified_kept"] <= min(cell["kept"], result["misclassified"])
        assert cell["misclassified_left_by_cut"] <= min(cell["left_by_cut"], result["misclassified"]) and cell["left_by_cut"] >= cell["kept"]


def test_fixed_iterations_and_invalid_methods(tmp_path, fashion_root):
    recipe = TrainRecipe(epochs=10, batch_size=100)
    assert retrain_epochs(recipe, 1000, 1000, "fixed_iterations") == 10
    assert retrain_epochs(recipe, 1000, 100, "fixed_iterations") == 100
    assert retrain_epochs(recipe, 1000, 100, "fixed_epochs") == 10
    bad = _sweep(tmp_path, fashion_root)
    bad["methods"]["unseen"]["select"]["alignment_wieght"] = 1.0
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ParamsError, match="alignment_wieght"):
        load_sweep(tmp_path / "bad.yaml")
    command = [UNSEEN, "bench", "--config", str(tmp_path / "bad.yaml")]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "alignment_wieght" in result.stderr and "Traceback" not in result.stderr
    good = load_sweep(_write(tmp_path, _sweep(tmp_path, fashion_root)))
    params = cell_params(good, seed_params(good, 3), Cell("unseen", 0.9, 3), pool_size=1000)
    assert (params.seed, params.select.prune_ratio, params.select.hard_cutoff, params.retrain.recipe.epochs) == (3, 0.9, 0.1, 8)


@pytest.mark.parametrize("path", sorted(p.name for p in (REPO / "benchmarks").glob("*.yaml") if p.name != "anchors.yaml"))
def test_every_committed_sweep_file_still_loads_against_params_yaml(path, monkeypatch):
    """Each report names the sweep file that reruns it: a renamed or removed params key must not strand one."""
    monkeypatch.chdir(REPO)
    sweep = load_sweep(Path("benchmarks") / path)
    assert sweep.name and sweep.methods and Path(sweep.params).is_file()


def _write(tmp_path, sweep):
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_clean_pairs_compare_each_method_with_its_held_out_twin_only():
    from benchmarks.sweep import BenchmarkConfig
    from benchmarks.tables import pair_lines

    methods = {
        "ccs_seen": {"group": "baseline", "label": "CCS seen", "select": {"method": "ccs", "score": "el2n_seen"}},
        "ccs_unseen": {"group": "baseline", "label": "CCS held-out", "select": {"method": "ccs", "score": "el2n_unseen"}},
        "ccs_unseen_cut": {"group": "baseline", "label": "CCS held-out, cut", "select": {"method": "ccs", "score": "el2n_unseen", "hard_cutoff": 0.1}},
    }
    sweep = BenchmarkConfig(name="pairs", seeds=[0], prune_ratios=[0.5, 0.7], methods=methods)
    summary = {("ccs_seen", 0.5): (90.0, 0.1, 3), ("ccs_unseen", 0.5): (90.5, 0.1, 3), ("ccs_seen", 0.7): (88.0, 0.1, 3),
               ("ccs_unseen", 0.7): (87.75, 0.1, 3), ("ccs_unseen_cut", 0.5): (99.0, 0.1, 3)}
    rows = [line for line in pair_lines(sweep, summary) if line.startswith("| CCS")]
    assert rows == ["| CCS held-out | +0.50 | -0.25 | 1 of 2 |"]  # the cut variant differs in more than the score: no pair


def test_a_report_borrows_the_baselines_of_a_sweep_of_the_same_design(sweep_run, fashion_root):
    from benchmarks.report import with_borrowed_baselines

    tmp, config, _ = sweep_run
    own = [r for r in read_results(tmp / "results" / "tiny.parquet")[0].to_pylist() if r["method"] == "unseen"]
    spec = _sweep(tmp, fashion_root, name="tiny_new", baselines_from=str(config))
    spec["methods"] = {"unseen": spec["methods"]["unseen"]}
    merged, rows, source = with_borrowed_baselines(load_sweep(_write(tmp, spec)), own)
    assert list(merged.methods) == ["random", "unseen"] and source.endswith("tiny.parquet")  # the ablation stays out
    assert sorted(r["method"] for r in rows).count("random") == 4 and len(rows) == len(own) + 4 + 2  # random and full data
    from benchmarks.tables import cost_lines

    theirs = read_results(tmp / "results" / "tiny.parquet")[0].to_pylist()
    slower_full = [{**r, "train_seconds": 10 * r["train_seconds"]} for r in theirs if r["method"] == "full"]  # this sweep's own, 10x slower
    merged, rows, _ = with_borrowed_baselines(load_sweep(_write(tmp, spec)), own + slower_full)
    borrowed = [r for r in rows if r["method"] == "random"]
    their_full = statistics.fmean(r["train_seconds"] for r in theirs if r["method"] == "full")
    multiple = statistics.fmean(r["selection_seconds"] for r in borrowed) / their_full  # random: selection only
    assert next(line for line in cost_lines(merged, rows, ["random"]) if line.startswith("| Random")).endswith(f"| {multiple:.2f}x |")
    other = _sweep(tmp, fashion_root, name="tiny_other", baselines_from=str(config), seeds=[0, 1, 2])
    with pytest.raises(ParamsError, match="same design"):
        with_borrowed_baselines(load_sweep(_write(tmp, other)), own)


def test_digits_tree_loads_through_the_image_folder_path_with_the_digits_own_pixels(tmp_path):
    from sklearn.datasets import load_digits

    from benchmarks.digits import export_digits
    from unseen.config import DataParams
    from unseen.data import load_dataset

    tree = export_digits(tmp_path / "digits")
    first = sorted(p.relative_to(tree) for p in tree.rglob("*.png"))
    assert export_digits(tree) == tree and sorted(p.relative_to(tree) for p in tree.rglob("*.png")) == first
    data = load_dataset(DataParams(name="imagefolder", root=str(tree), image_mode="L", download=False))
    digits = load_digits()
    assert (len(data.train.labels), len(data.test.labels)) == (1437, 360) and data.classes == [str(d) for d in range(10)]
    assert np.bincount(data.test.labels).min() >= 35  # stratified: every digit in the test split
    split = data.train if (tree / "train" / str(digits.target[5]) / "0005.png").exists() else data.test
    expected = torch.from_numpy(np.rint(digits.images[5] * 255 / 16).astype(np.uint8))
    rows = [i for i in range(len(split.labels)) if torch.equal(split.images[i, 0], expected)]
    assert rows and all(split.labels[i] == digits.target[5] for i in rows)


def test_a_seed_whose_kept_extractor_embeds_it_keeps_the_cost_of_the_extraction(tmp_path, fashion_root, prefect_api):
    """After a params change that keeps the recipe (here increment.max_growth), the features stage embeds the split
    with the kept extractor in a fraction of the time; the cost table must still charge the extraction."""
    from prefect import flow

    from flows.bench import prepare_seed
    from tasks.tracking import pipeline_run
    from unseen.config import Params

    tree = tiny_params(tmp_path, fashion_root)
    first_params = Params.model_validate(tree)
    changed = Params.model_validate({**tree, "increment": {"enabled": True, "max_growth": 0.3}})
    assert changed.stage_hash("features") != first_params.stage_hash("features")

    @flow
    def twice() -> tuple[dict, dict]:
        with pipeline_run(first_params, "bench-test") as tracker:
            return prepare_seed(first_params, tracker), prepare_seed(changed, tracker)

    first, again = twice()
    assert again["features_seconds"] == first["features_seconds"] > 0
    assert json.loads(changed.output("seed_costs.json").read_text())["hashes"]["features"] == changed.stage_hash("features")


def test_noisy_share_writes_the_proxy_checks_share_per_seed_and_refuses_a_sweep_without_the_check(tmp_path, fashion_root, monkeypatch):
    """benchmarks/noisy_share.py: the share the proxy's first epoch logged, per seed, at the sweep's params; a sweep whose
    extractor trains no proxy (pixels) is refused by name."""
    from benchmarks.noisy_share import main

    sweep = _sweep(tmp_path, fashion_root)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(sweep))
    monkeypatch.setattr(sys, "argv", ["noisy_share.py", "--config", str(config), "--seeds", "0", "1"])
    with pytest.raises(SystemExit, match="noisy-label check is off"):
        main()
    params = yaml.safe_load(Path(sweep["params"]).read_text())
    params["features"] = {"extractor": "proxy", "proxy": {"epochs": 1}, "proxy_noisy_epochs": 2}
    params["data"]["label_noise"] = 0.2
    write_params(Path(sweep["params"]), params)
    main()
    result = json.loads((tmp_path / "results" / "tiny_noisy_share.json").read_text())
    assert set(result["noisy_label_share"]) == {"0", "1"} and all(0 <= share <= 1 for share in result["noisy_label_share"].values())
    assert result["train_samples"] == 1000 and result["label_noise"] == 0.2 and result["noisy_at_or_above"] == 0.1
    assert result["command"].endswith("--seeds 0 1")
    verdicts = tmp_path / "verdicts.json"  # both verdicts, the proxy's the same as above, at lighter noise than the sweep's too
    for noise in ("0.2", "0.05"):
        monkeypatch.setattr(sys, "argv", ["noisy_share.py", "--config", str(config), "--seeds", "0", "--fold-models",
                                          "--set", f"data.label_noise={noise}", "--out", str(verdicts)])
        main()
        check = json.loads(verdicts.read_text())["by_seed"]["0"]
        assert check["labels_noisy_by_proxy"] == int(check["noisy_label_share"] >= 0.1)
        assert check["labels_noisy_by_fold_models"] == int(check["label_issues_flagged_fraction"] >= 0.05)
        assert noise != "0.2" or check["noisy_label_share"] == result["noisy_label_share"]["0"]
    assert json.loads(verdicts.read_text())["label_noise"] == 0.05


def test_blas_kernels_reselects_on_the_same_tables_under_each_openblas_core_type(tmp_path, fashion_root):
    """benchmarks/blas_kernels.py: features and scores once, the select stage once per OPENBLAS_CORETYPE in a fresh
    process; each run names the kernels OpenBLAS took, and none swaps a sample: the greedy's products are exact. With
    torch held to AVX2 kernels it makes the tables anew and says what came out the same."""
    out = tmp_path / "blas.json"
    settings = [f"data.root={fashion_root}", "data.download=false", "data.train_subset=1000", "data.test_subset=300",
                "features.extractor=pixels", "features.pca_components=16", "select.steps=1", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    command = [sys.executable, "-m", "benchmarks.blas_kernels", "--core-types", "", "Haswell", "--torch-kernels", "avx2", "--out", str(out),
               *(arg for s in settings for arg in ("--set", s))]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["train_samples"] == 1000 and result["coreset_size"] == 500 and set(result["runs"]) == {"cpu default", "Haswell"}
    assert result["runs"]["cpu default"]["samples_swapped"] == 0 and result["runs"]["Haswell"]["openblas_kernels"] == "Haswell"
    assert result["runs"]["Haswell"]["samples_swapped"] == 0 and result["runs"]["cpu default"]["openblas_kernels"]
    avx2 = result["torch_runs"]["avx2"]
    assert avx2["torch_cpu_kernels"] == "AVX2" and 0 <= avx2["samples_swapped"] <= 500
    assert result["command"].endswith("--torch-kernels avx2 " + " ".join(f"--set {s}" for s in settings))
    assert isinstance(avx2["same_features_table"], bool) and isinstance(avx2["same_scores_table"], bool)


def test_rerun_diff_counts_identical_cells_and_compares_means_per_ratio():
    """benchmarks/rerun_diff.py: a method whose cells came out the same shows every cell identical; a moved one, its means."""
    from benchmarks.rerun_diff import rerun_diff

    def rows(unseen_accuracy):
        return [{"method": "random", "prune_ratio": 0.5, "seed": s, "test_accuracy": 0.8 + s / 100} for s in (0, 1)] + [
            {"method": "unseen", "prune_ratio": 0.5, "seed": s, "test_accuracy": a} for s, a in enumerate(unseen_accuracy)]

    after = rows([0.90, 0.92]) + [{"method": "unseen", "prune_ratio": 0.5, "seed": 2, "test_accuracy": 0.5}]  # not in before: left out
    diff = rerun_diff(rows([0.90, 0.88]), after)
    assert diff["random"] == {"cells": 2, "identical": 2, "by_prune_ratio": {"0.5": {"before": 80.5, "after": 80.5}}}
    assert diff["unseen"] == {"cells": 2, "identical": 1, "by_prune_ratio": {"0.5": {"before": 89.0, "after": 91.0}}}
