"""The benchmark sweep as one Prefect flow: per seed, features and scores once (and once more for each other scorer or
extractor a method asks for), then every (method, ratio) cell as a mapped task (on Dask workers when the sweep's params choose the Dask runner), then the results table.

The table is rewritten after each seed, so the finished cells are in it even if a later seed is interrupted;
finished cells are read from their result files and not mapped again.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from prefect import flow, get_run_logger, unmapped

from benchmarks.machine import describe, machine
from benchmarks.tables import summarize
from benchmarks.sweep import (
    FULL,
    FULL_LONG,
    cached_cell_result,
    cell_params,
    cell_result_path,
    load_sweep,
    prep_params,
    read_results,
    seed_params,
    sweep_cells,
    write_results,
)
from flows.prune import DEFAULT_RUNNER
from flows.stages import features_stage, scores_stage
from tasks.bench import SHARED_TABLES, cell_task
from tasks.common import dataset_for
from tasks.increment import increment_plan
from tasks.lineage import git_commit
from tasks.runners import map_on_workers, set_torch_threads, workers_reach_this_api
from tasks.scores import model_cache_path, read_record
from tasks.tracking import Tracker, pipeline_run
from unseen.config import Params
from unseen.io import atomic_path, write_json
from unseen.scores import scoring_models


def prepare_seed(params: Params, tracker: Tracker) -> dict[str, float]:
    """Features and scores of one seed (the pipeline's own stages), computed once and shared by all its cells;
    skipped when already done.

    Returns the seconds they cost (scoring: every scoring model's training and recording, read back from the
    per-model cache, so a resumed seed reports its full cost, not only what this run trained). When a kept extractor
    embeds the unchanged split (`increment`, after a params change), the features keep the cost of the extraction
    that made that extractor, or the cost table would charge a fraction of a second.
    """
    costs_path = params.output("seed_costs.json")
    hashes = {stage: params.stage_hash(stage) for stage in ("features", "scores")}
    saved = json.loads(costs_path.read_text()) if costs_path.is_file() else None
    if saved is not None and saved["hashes"] == hashes and all(params.output(name).is_file() for name in SHARED_TABLES):
        return saved["seconds"]
    kept_extractor = increment_plan(params, dataset_for(params)).incremental
    with tracker.child_run(f"seed-{params.seed}", stage="bench-seed", seed=str(params.seed)) as seed_run:
        seed_tracker = dataclasses.replace(tracker, run_id=seed_run)
        features = features_stage(params, seed_tracker)
        scores_stage(params, seed_tracker)
        dataset = dataset_for(params)
        records = [read_record(params, dataset, model_cache_path(params, dataset, m)) for m in scoring_models(params.scores)]
        extraction = saved["seconds"]["features_seconds"] if kept_extractor and saved is not None else features.compute_seconds
        seconds = {"features_seconds": extraction, "scoring_seconds": sum(r.train_seconds + r.record_seconds for r in records)}
        tracker.log_metrics(seed_run, seconds)
    write_json(costs_path, {"hashes": hashes, "seconds": seconds})
    return seconds


def _previous_wall_seconds(sweep) -> float:
    """Wall time of earlier invocations of this sweep, for an interrupted sweep's resumed runs to add up (the flow adds
    it only while it reuses some of their cells)."""
    try:
        _, meta = read_results(sweep.results_table)
    except Exception:
        return 0.0
    return float(meta.get("wall_seconds", 0.0)) if meta.get("sweep_hash") == sweep.sweep_hash() else 0.0


def _copy_score_reports(sweep, params: Params, first: bool) -> None:
    """Every seed's score report, and the first seed's seen-vs-held-out figure, travel with the results table."""
    copies = [(params.output("scores_report.json"), sweep.results_file(f"scores_report_s{params.seed}.json"))]
    if first:
        copies += [(params.output(name), sweep.results_file(Path(name).name)) for name in ("plots/scores_distributions.png", "scores_report.json")]
    for source, target in copies:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)


def _publish_accuracy(sweep, rows: list[dict]) -> None:
    """The sweep's accuracy table (mean test accuracy % per method and prune ratio) on the flow run page."""
    from prefect.artifacts import create_table_artifact

    summary = summarize(rows)
    table = [
        {"method": method, **{f"prune {round(100 * r)}%": f"{summary[(method, r)][0]:.2f} ± {summary[(method, r)][1]:.2f} ({summary[(method, r)][2]})"
                              for r in sweep.prune_ratios if (method, r) in summary}}
        for method in sweep.methods
    ]
    full = summary.get((FULL, 0.0))
    table.insert(0, {"method": "full data", **({"prune 0%": f"{full[0]:.2f} ± {full[1]:.2f} ({full[2]})"} if full else {})})
    create_table_artifact(table, key=f"bench-{sweep.name.replace('_', '-')}", description=f"test accuracy % (mean ± std (seeds)) of sweep {sweep.name}")


@flow(name="benchmark", task_runner=DEFAULT_RUNNER)
def benchmark(config_file: str) -> dict:
    """Run (or resume) the sweep in `config_file`; returns the rows, how many cells trained now and how many were cached."""
    started = time.perf_counter()
    sweep = load_sweep(config_file)
    earlier = _previous_wall_seconds(sweep)
    code_commit = git_commit()  # the code this process and its workers loaded, whatever is checked out while they run
    first = seed_params(sweep, sweep.seeds[0])
    set_torch_threads(first.orchestration)
    rows, trained, failed = [], 0, []
    with workers_reach_this_api(), pipeline_run(first, f"bench/{sweep.name}") as tracker:
        for seed in sweep.seeds:
            params = seed_params(sweep, seed)
            prepare_seed(params, tracker)
            _copy_score_reports(sweep, params, first=seed == sweep.seeds[0])
            pool_size = len(dataset_for(params).train)
            todo, preps, costs = [], {}, {}
            for cell in (c for c in sweep_cells(sweep) if c.seed == seed):
                cp = cell_params(sweep, params, cell, pool_size=pool_size)
                prep = preps.setdefault(cp.stage_hash("scores"), prep_params(params, cp))
                if prep.outputs not in costs:
                    costs[prep.outputs] = prepare_seed(prep, tracker)
                done = cached_cell_result(cell_result_path(sweep, cell), cp.run_hash())
                if done is not None:
                    rows.append({**done, **costs[prep.outputs]})
                else:
                    todo.append((cell, cp, prep.outputs))
            get_run_logger().info(f"[bench] seed {seed}: {len(todo)} cells to train, {sum(r['seed'] == seed for r in rows)} already done")
            futures = map_on_workers(
                cell_task.with_options(retries=params.orchestration.retries, retry_delay_seconds=params.orchestration.retry_delay_seconds),
                [cp for _, cp, _ in todo],
                [cell for cell, _, _ in todo],
                ["full" if cell.method in (FULL, FULL_LONG) else sweep.methods[cell.method].group for cell, _, _ in todo],
                [str(cell_result_path(sweep, cell)) for cell, _, _ in todo],
                [str(outputs) for _, _, outputs in todo],
                unmapped(tracker),
                unmapped(code_commit),
            )
            futures.wait()
            for (cell, _, outputs), future in zip(todo, futures):
                if future.state.is_completed():
                    rows.append({**future.result(), **costs[outputs]})
                    trained += 1
                else:
                    failed.append(cell.name)
            wall = (earlier if len(rows) > trained else 0.0) + time.perf_counter() - started
            write_results(sweep, rows, command=f"unseen bench --config {config_file}", machine=describe(machine()), wall_seconds=f"{wall:.1f}")
    _publish_accuracy(sweep, rows)
    if failed:
        raise RuntimeError(f"{len(failed)} cells failed ({', '.join(failed[:5])}...); rerun `unseen bench` to retry only them")
    return {"rows": rows, "trained": trained, "cached": len(rows) - trained, "wall_seconds": time.perf_counter() - started}
