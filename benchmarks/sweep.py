"""The benchmark sweep: methods x prune ratios x seeds, read from `benchmarks/<name>.yaml` into one typed object.

A sweep names a base params file (plus dotted overrides, as `unseen run --set`), the seeds, the prune ratios and
the methods. A method is data, not code: a named override of the `select` section (optionally different per prune
ratio, such as CCS's beta), so adding one is a YAML entry. Each seed's features and scores are computed once (the
pipeline's own stages, in `<work_dir>/<name>/seed-<s>/`) and shared by every method; each (method, ratio, seed) cell
then selects its coreset and retrains the target model, and writes one result file, so an interrupted sweep
resumes with the cells that are missing. The full-data cell of each seed trains on the whole pool.

Training budget (`budget_rule`): `fixed_iterations`, the CCS convention (Zheng et al. 2023), trains every coreset
for the same number of SGD steps as one full-data training (`retrain.recipe.epochs` epochs over the pool), rounded
to whole epochs over the coreset; a 10% coreset thus gets 10x the epochs. Without it, small coresets are also
under-trained, and that under-training, not the choice of samples, dominates their accuracy. `fixed_epochs` trains
every coreset for `retrain.recipe.epochs` epochs, to measure the effect of the rule itself.

The results are one Parquet table (schema `RESULTS`, one row per cell), written atomically
with the sweep's hash, the command and the machine in its metadata.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from unseen.budgets import budget_for
from unseen.config import Params, ParamsError, TrainRecipe, format_validation_error, load_params, read_yaml_mapping, validate_params
from unseen.tables import TableError, table_meta, write_parquet

RESULTS = pa.schema(
    [
        ("method", pa.string()),  # a sweep method name, or "full" (the whole pool, no selection)
        ("group", pa.string()),  # baseline | unseen | ablation | full: the report table the row belongs to
        ("prune_ratio", pa.float64()),  # fraction of the pool removed (0 for full)
        ("seed", pa.int64()),
        ("test_accuracy", pa.float64()),
        ("coreset_size", pa.int64()),
        ("pool_size", pa.int64()),
        ("epochs", pa.int64()),  # epochs over the coreset under the sweep's budget rule
        ("train_seconds", pa.float64()),  # retraining, evaluation excluded
        ("selection_seconds", pa.float64()),  # the select stage's compute (multi-step: its scoring models too)
        ("features_seconds", pa.float64()),  # the seed's feature extraction, shared by its cells
        ("scoring_seconds", pa.float64()),  # the seed's scoring models (seen and held out), shared by its cells
        ("params_hash", pa.string()),  # Params.run_hash() of the cell
        ("mlflow_run_id", pa.string()),
        ("code_commit", pa.string()),  # the git commit of the code that ran the cell; null in tables from before it was kept
    ]
)
"""The results table: one row per (method, prune ratio, seed) cell, not keyed by sample."""

UNRECORDED = ("code_commit",)
"""Results columns that cells and tables from earlier versions lack: read as null, never refused."""

FULL = "full"
"""The method name of the full-data cell (no selection, prune ratio 0)."""
FULL_LONG = "full_long"
"""The full-data cell trained twice as long (`convergence_check`): how far the full-data recipe is from convergence."""

GROUPS = ("baseline", "unseen", "ablation")


class MethodSpec(BaseModel):
    """One compared method: which group it is reported in, and its overrides of the `select` section; optionally of
    the `features` and `scores` sections too (another scorer or extractor), whose tables are then made once per seed
    for every method that shares them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: Literal["baseline", "unseen", "ablation"]
    label: str
    select: dict[str, Any] = Field(default_factory=dict)
    by_ratio: dict[float, dict[str, Any]] = Field(default_factory=dict)  # prune ratio -> further select overrides
    features: dict[str, Any] = Field(default_factory=dict)
    scores: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ratio_is_the_sweeps(self) -> "MethodSpec":
        if any("prune_ratio" in overrides for overrides in (self.select, *self.by_ratio.values())):
            raise ValueError("prune_ratio comes from the sweep's prune_ratios, not from a method")
        return self


class BenchmarkConfig(BaseModel):
    """A sweep: base params, seeds, prune ratios, methods, the training-budget rule and where results go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    params: str = "params.yaml"
    overrides: tuple[str, ...] = ()
    work_dir: str = "outputs/bench"
    results_dir: str = "benchmarks/results"
    report: str = "docs/benchmarks.md"
    anchors: str = "benchmarks/anchors.yaml"  # published numbers the report quotes, apart from the measurements
    experiment: str = "unseen-benchmark"
    seeds: tuple[int, ...] = Field(min_length=1)
    prune_ratios: tuple[float, ...] = Field(min_length=1)
    budget_rule: Literal["fixed_iterations", "fixed_epochs"] = "fixed_iterations"
    methods: dict[str, MethodSpec] = Field(min_length=1)
    reported: str | None = None  # the one UNSEEN method the report compares, fixed before the sweep (on pilot seeds)
    convergence_check: bool = False  # also train the full data for twice the recipe's epochs, per seed
    baselines_from: str | None = None  # another sweep file on the same data, seeds and ratios: its report rows for the
    #   baselines and the full data join this sweep's (a new default's row compared with every baseline, not rerun)

    @field_validator("prune_ratios")
    @classmethod
    def _ratios_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < r < 1 for r in value) or len(set(value)) != len(value):
            raise ValueError("prune ratios must be distinct and strictly between 0 and 1, e.g. [0.3, 0.5, 0.7, 0.9]")
        return value

    @field_validator("methods")
    @classmethod
    def _names(cls, value: dict[str, MethodSpec]) -> dict[str, MethodSpec]:
        for name in value:
            if name in (FULL, FULL_LONG) or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"method name {name!r}: use letters, digits, '_' or '-', and not {FULL!r} or {FULL_LONG!r} (full-data cells)")
        return value

    @model_validator(mode="after")
    def _reported_is_an_unseen_method(self) -> "BenchmarkConfig":
        if self.reported is not None and (self.reported not in self.methods or self.methods[self.reported].group != "unseen"):
            raise ValueError(f"reported: {self.reported!r} must name a method of group unseen")
        return self

    @property
    def seed_folder(self) -> Path:
        return Path(self.work_dir, self.name)

    @property
    def results_table(self) -> Path:
        return Path(self.results_dir, f"{self.name}.parquet")

    def results_file(self, suffix: str) -> Path:
        """A file next to the results table that the report needs too (e.g. the score-distribution figure)."""
        return Path(self.results_dir, f"{self.name}_{suffix}")

    def sweep_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One (method, prune ratio, seed) of the sweep; the full-data cell has method `full` and ratio 0."""

    method: str
    prune_ratio: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}/p{round(self.prune_ratio * 100):02d}/s{self.seed}"


def load_sweep(path: str | Path) -> BenchmarkConfig:
    """Read and validate a sweep file; every method is also checked against the params schema at every ratio."""
    tree = read_yaml_mapping(path, "sweep", "e.g. --config benchmarks/cpu.yaml")
    try:
        sweep = BenchmarkConfig.model_validate(tree)
    except ValidationError as exc:
        raise ParamsError(format_validation_error(str(path), exc, "sweep")) from None
    base = seed_params(sweep, sweep.seeds[0])
    for cell in sweep_cells(sweep)[: 1 + len(sweep.methods) * len(sweep.prune_ratios)]:
        try:
            cell_params(sweep, base, cell, pool_size=1000)
        except ParamsError as exc:
            raise ParamsError(f"{path}: method {cell.method!r} at prune ratio {cell.prune_ratio}: {exc}") from None
    return sweep


def seed_params(sweep: BenchmarkConfig, seed: int) -> Params:
    """The base params for one seed: features, scores and their caches go to the seed's own folder."""
    return load_params(
        sweep.params,
        [*sweep.overrides, f"seed={seed}", f"outputs={sweep.seed_folder / f'seed-{seed}'}", f"tracking.experiment={sweep.experiment}"],
    )


def sweep_cells(sweep: BenchmarkConfig) -> list[Cell]:
    """Every cell, seed by seed (each seed's data stays loaded on a worker): full data first, then methods x ratios."""
    cells = []
    for seed in sweep.seeds:
        cells.append(Cell(FULL, 0.0, seed))
        cells += [Cell(FULL_LONG, 0.0, seed)] if sweep.convergence_check else []
        cells += [Cell(method, ratio, seed) for method in sweep.methods for ratio in sweep.prune_ratios]
    return cells


def retrain_epochs(recipe: TrainRecipe, pool_size: int, coreset_size: int, rule: str) -> int:
    """Epochs over the coreset under the budget rule: as many SGD steps as the full-data training (fixed_iterations)."""
    if rule == "fixed_epochs":
        return recipe.epochs
    steps = recipe.epochs * math.ceil(pool_size / min(recipe.batch_size, pool_size))
    return max(1, round(steps / math.ceil(coreset_size / min(recipe.batch_size, coreset_size))))


def _merged(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`tree` with `overrides` applied key by key, into nested sections (`probe: {model: mlp}` keeps the other keys)."""
    merged = dict(tree)
    for key, value in overrides.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def cell_params(sweep: BenchmarkConfig, base: Params, cell: Cell, *, pool_size: int) -> Params:
    """The params of one cell: the seed's params with the method's overrides, its own outputs folder, and the
    retraining epochs of the budget rule. Raises ParamsError naming the key for an invalid override."""
    tree = base.model_dump(mode="json")
    tree["outputs"] = str(Path(base.outputs, "cells", cell.method, f"p{round(cell.prune_ratio * 100):02d}"))
    coreset_size = pool_size
    if cell.method not in (FULL, FULL_LONG):
        spec = sweep.methods[cell.method]
        tree["features"], tree["scores"] = _merged(tree["features"], spec.features), _merged(tree["scores"], spec.scores)
        tree["select"] = {**tree["select"], **spec.select, **spec.by_ratio.get(cell.prune_ratio, {}), "prune_ratio": cell.prune_ratio}
        coreset_size = budget_for(pool_size, cell.prune_ratio)
    recipe = base.retrain.recipe
    tree["retrain"]["recipe"]["epochs"] = retrain_epochs(recipe, pool_size, coreset_size, sweep.budget_rule) * (2 if cell.method == FULL_LONG else 1)
    return validate_params(tree, f"cell {cell.name}")


def prep_params(base: Params, cell: Params) -> Params:
    """Where a cell's features and scores tables are made, once per seed for every cell that shares them: the seed's
    folder for the sweep's own sections, a folder named by the scores hash for a method that overrides them."""
    if cell.stage_hash("scores") == base.stage_hash("scores"):
        return base
    outputs = Path(base.outputs, f"prep-{cell.stage_hash('scores')[:8]}")
    return base.model_copy(update={"features": cell.features, "scores": cell.scores, "outputs": str(outputs)})


def cell_result_path(sweep: BenchmarkConfig, cell: Cell) -> Path:
    return sweep.seed_folder / "results" / cell.method / f"p{round(cell.prune_ratio * 100):02d}-s{cell.seed}.json"


def cached_cell_result(path: str | Path, params_hash: str) -> dict[str, Any] | None:
    """A finished cell's row, if its result file exists and was made with these params; else None (train it)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        row = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return row if row.get("params_hash") == params_hash else None


def write_results(sweep: BenchmarkConfig, rows: list[dict[str, Any]], **meta: str) -> Path:
    """The results table (one row per finished cell, sorted), atomically, with the sweep hash and `meta` in its metadata."""
    rows = sorted(rows, key=lambda r: (r["method"] not in (FULL, FULL_LONG), r["method"], r["prune_ratio"], r["seed"]))
    keys = [(r["method"], r["prune_ratio"], r["seed"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise TableError(f"{sweep.results_table}: a (method, prune_ratio, seed) cell occurs twice")
    rows = [{**dict.fromkeys(UNRECORDED), **row} for row in rows]
    table = pa.Table.from_pylist([{name: row[name] for name in RESULTS.names} for row in rows], schema=RESULTS)
    metadata = {"table": "benchmark_results", "sweep": sweep.name, "sweep_hash": sweep.sweep_hash(), **meta}
    return write_parquet(table, sweep.results_table, {f"unseen.{key}": value for key, value in metadata.items()})


def read_results(path: str | Path) -> tuple[pa.Table, dict[str, str]]:
    """The results table and its metadata (without the `unseen.` prefix); refuses another kind of table."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: results table not found; run `unseen bench --config <sweep>` first")
    table = pq.read_table(path)
    meta = table_meta(table)
    if meta.get("table") != "benchmark_results":
        raise TableError(f"{path}: not a benchmark results table")
    missing = [f.name for f in RESULTS if f.name not in table.column_names and f.name not in UNRECORDED]
    if missing:
        raise TableError(f"{path}: columns {missing} missing; rerun `unseen bench`")
    for name in UNRECORDED:
        if name not in table.column_names:
            table = table.append_column(RESULTS.field(name), pa.nulls(len(table), RESULTS.field(name).type))
    return table, meta
