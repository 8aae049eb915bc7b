"""The benchmark sweep as one Prefect flow: per seed, features and scores once, then every (method, ratio) cell as a
mapped task (on Dask workers when the sweep's params choose the Dask runner), then the results table.

The table is rewritten after each seed, so the finished cells are in it even if a later seed is interrupted;
finished cells are read from their result files and not mapped again.
"""

from __future__ import annotations

import shutil
import time

from prefect import flow, get_run_logger, unmapped

from flows.prune import DEFAULT_RUNNER
from tasks.benchmark import cell_task, prepare_seed
from tasks.runners import map_on_workers, set_torch_threads, workers_reach_this_api
from tasks.stages import dataset_for
from tasks.tracking import pipeline_run
from unseen.io import atomic_path
from unseen.benchmark import (
    FULL,
    cached_cell_result,
    cell_hash,
    cell_params,
    cell_result_path,
    load_sweep,
    machine,
    read_results,
    seed_params,
    sweep_cells,
    write_results,
)


def _previous_wall_seconds(sweep) -> float:
    """Wall time of earlier invocations of this sweep (an interrupted sweep's resumed runs add up)."""
    try:
        _, meta = read_results(sweep.results_table)
    except Exception:
        return 0.0
    return float(meta.get("wall_seconds", 0.0)) if meta.get("sweep_hash") == sweep.sweep_hash() else 0.0


@flow(name="benchmark", task_runner=DEFAULT_RUNNER)
def benchmark(config_file: str) -> dict:
    """Run (or resume) the sweep in `config_file`; returns the rows, how many cells trained now and how many were cached."""
    started = time.perf_counter()
    sweep = load_sweep(config_file)
    logger = get_run_logger()
    earlier = _previous_wall_seconds(sweep)
    first = seed_params(sweep, sweep.seeds[0])
    set_torch_threads(first.orchestration)
    rows, trained, failed = [], 0, []
    with workers_reach_this_api(), pipeline_run(first, f"bench/{sweep.name}") as tracker:
        for seed in sweep.seeds:
            params = seed_params(sweep, seed)
            costs = prepare_seed(params, tracker)
            if seed == sweep.seeds[0]:  # the report's seen-vs-held-out figure and numbers travel with the results table
                for source in (params.output("plots", "score_distributions.png"), params.output("score_report.json")):
                    with atomic_path(sweep.results_file(source.name)) as tmp:
                        shutil.copyfile(source, tmp)
            pool_size = len(dataset_for(params).train)
            todo = []
            for cell in (c for c in sweep_cells(sweep) if c.seed == seed):
                cp = cell_params(sweep, params, cell, pool_size=pool_size)
                done = cached_cell_result(cell_result_path(sweep, cell), cell_hash(cp))
                if done is not None:
                    rows.append({**done, **costs})
                else:
                    todo.append((cell, cp))
            logger.info(f"[bench] seed {seed}: {len(todo)} cells to train, {sum(r['seed'] == seed for r in rows)} already done")
            futures = map_on_workers(
                cell_task.with_options(retries=params.orchestration.retries, retry_delay_seconds=params.orchestration.retry_delay_seconds),
                [cp for _, cp in todo],
                [cell for cell, _ in todo],
                ["full" if cell.method == FULL else sweep.methods[cell.method].group for cell, _ in todo],
                [str(cell_result_path(sweep, cell)) for cell, _ in todo],
                unmapped(str(params.outputs)),
                unmapped(tracker),
            )
            futures.wait()
            for (cell, _), future in zip(todo, futures):
                if future.state.is_completed():
                    rows.append({**future.result(), **costs})
                    trained += 1
                else:
                    failed.append(cell.name)
            wall = earlier + time.perf_counter() - started
            write_results(sweep, rows, command=f"unseen bench --config {config_file}", machine=machine(), wall_seconds=f"{wall:.1f}")
    if failed:
        raise RuntimeError(f"{len(failed)} cells failed ({', '.join(failed[:5])}...); rerun `unseen bench` to retry only them")
    return {"rows": rows, "trained": trained, "cached": len(rows) - trained, "wall_seconds": time.perf_counter() - started}
