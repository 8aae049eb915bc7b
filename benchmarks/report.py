"""docs/benchmarks.md, generated from a sweep's results table (never typed by hand): accuracy and ablation tables,
accuracy against prune ratio, the seen-vs-held-out score distributions, the cost table, the issue's targets checked
on the numbers, and, clearly apart, published anchors read from the sweep's `anchors` file.

Everything here reads the results table and the files the sweep put next to it, so the report can be regenerated
on any machine from what is committed (`unseen bench-report --config benchmarks/<name>.yaml`).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import yaml

from benchmarks.sweep import FULL, FULL_LONG, BenchmarkConfig, load_sweep, read_results, seed_params, sweep_cells
from benchmarks.tables import _mean, _pct, accuracy_rows, accuracy_table, comparison_lines, cost_lines, noise_lines, pair_lines, score_lines, scorer_lines, summarize
from unseen.config import ParamsError
from unseen.io import atomic_path, write_csv


def _pool_text(sweep: BenchmarkConfig) -> str:
    """Where each seed's pool comes from, so the reader knows what the seed std includes."""
    if seed_params(sweep, sweep.seeds[0]).data.train_subset is None:
        return "the whole train split for every seed (the seed std is that of the folds, the selection and the training)"
    return "a stratified subset of the train split drawn per seed (so the seed std includes the pool draw)"


def accuracy_plot(sweep: BenchmarkConfig, summary: dict, methods: list[str], path: Path) -> Path:
    """Accuracy against prune ratio, one line per method with seed-std error bars, full data as a band; the right
    panel zooms in on the methods within 10 points of random (keep-hardest collapses would flatten the rest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(15, 6), dpi=100)
    colors = plt.get_cmap("tab20").colors
    floor = min((summary[("random", r)][0] for r in sweep.prune_ratios if ("random", r) in summary), default=0.0) - 10
    for axis, zoom in zip(axes, (False, True)):
        lowest = []
        for index, method in enumerate(methods):
            points = [(r, *summary[(method, r)][:2]) for r in sweep.prune_ratios if (method, r) in summary]
            if not points or (zoom and min(m for _, m, _ in points) < floor):
                continue
            ratios, means, stds = zip(*points)
            lowest.append(min(means) - max(stds))
            style = "-" if sweep.methods[method].group == "unseen" else "--"
            axis.errorbar([100 * r for r in ratios], means, yerr=stds, fmt=style + "o", capsize=3, markersize=4,
                          color=colors[index % len(colors)], label=sweep.methods[method].label)
        if (FULL, 0.0) in summary:
            mean, std, _ = summary[(FULL, 0.0)]
            axis.axhspan(mean - std, mean + std, color="grey", alpha=0.3, label=f"full data {mean:.2f} ± {std:.2f}")
        if zoom and lowest:
            axis.set_ylim(bottom=min(lowest) - 0.5)
        title = "methods within 10 points of random (zoom)" if zoom else f"{sweep.name}: all methods, mean ± std over seeds"
        axis.set(xlabel="prune ratio (% of the pool removed)", ylabel="test accuracy (%)", title=title)
        axis.legend(fontsize=7, loc="lower left", ncol=2)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def _anchor_lines(path: Path) -> list[str]:
    if not path.is_file():
        return [f"({path} not found)"]
    lines = []
    for anchor in yaml.safe_load(path.read_text())["anchors"]:
        lines += [f"### {anchor['source']}", "", anchor["setting"], ""]
        lines += [f"- {claim}" for claim in anchor["claims"]]
        lines += ["", f"Not found verbatim: {anchor['not_found']}", ""] if anchor.get("not_found") else [""]
    return lines


def _missing(cells: list[tuple[str, float, int]]) -> str:
    if not cells:
        return ""
    shown = ", ".join(f"{m}/{_pct(r)}/s{s}" for m, r, s in cells[:20])
    return f" (missing: {shown}{' ...' if len(cells) > 20 else ''})"


def code_commits(rows: list[dict]) -> str:
    """The commits of the code that ran the cells, most cells first: a report whose cells span a code change says so."""
    counts = Counter(row.get("code_commit") for row in rows)
    return ", ".join(f"{commit[:10] if commit else 'not recorded'} ({n} cell{'s' * (n != 1)})" for commit, n in counts.most_common())


def with_borrowed_baselines(sweep: BenchmarkConfig, rows: list[dict]) -> tuple[BenchmarkConfig, list[dict], str]:
    """With `baselines_from`: that sweep's baseline and full-data rows that this one lacks join it, and their methods
    its methods, so one report compares the reported method with every baseline; returns the results table they came
    from ("" without). Refused where the two sweeps differ in seeds, prune ratios, budget rule or pool size."""
    if sweep.baselines_from is None:
        return sweep, rows, ""
    other = load_sweep(sweep.baselines_from)
    theirs = read_results(other.results_table)[0].to_pylist()
    pools = {r["pool_size"] for r in rows + theirs if r["method"] == FULL}
    if (other.seeds, other.prune_ratios, other.budget_rule) != (sweep.seeds, sweep.prune_ratios, sweep.budget_rule) or len(pools) > 1:
        raise ParamsError(
            f"{sweep.name}: baselines_from {sweep.baselines_from} has other seeds, prune ratios, budget rule or pool size; "
            "borrow only from a sweep of the same design"
        )
    baselines = {m: spec for m, spec in other.methods.items() if spec.group == "baseline" and m not in sweep.methods}
    own = {r["method"] for r in rows}
    their_full = _mean(r["train_seconds"] for r in theirs if r["method"] == FULL)  # what their costs are charged against
    joined = [{**r, "full_train_seconds": their_full} for r in theirs
              if r["method"] not in own and (r["method"] in baselines or r["method"] in (FULL, FULL_LONG))]
    return sweep.model_copy(update={"methods": {**baselines, **sweep.methods}}), rows + joined, str(other.results_table)


def write_report(sweep: BenchmarkConfig, config_file: str) -> Path:
    """Generate the report and its figures (in `<report folder>/benchmarks/`) from the sweep's results table.

    Longer than 50 lines because it is the report's template: one list of Markdown lines, read top to bottom."""
    table, meta = read_results(sweep.results_table)
    rows = table.to_pylist()
    expected = {(c.method, c.prune_ratio, c.seed) for c in sweep_cells(sweep)}
    finished = {(r["method"], r["prune_ratio"], r["seed"]) for r in rows}
    missing = sorted(expected - finished, key=str)
    code = code_commits(rows)
    sweep, rows, borrowed = with_borrowed_baselines(sweep, rows)
    summary = summarize(rows)
    report = Path(sweep.report)
    figures = report.parent / "benchmarks"
    main = [m for m, spec in sweep.methods.items() if spec.group == "baseline" or m == sweep.reported or not sweep.reported and spec.group == "unseen"]
    ablation = [m for m, spec in sweep.methods.items() if spec.group in ("unseen", "ablation")]
    plot = accuracy_plot(sweep, summary, main, figures / f"{sweep.name}_accuracy_vs_prune_ratio.png")
    write_csv(sweep.results_file("accuracy.csv"), accuracy_rows(sweep, summary, main))
    scores_png = figures / f"{sweep.name}_scores_distributions.png"
    if sweep.results_file("scores_distributions.png").is_file():
        with atomic_path(scores_png) as tmp:
            shutil.copyfile(sweep.results_file("scores_distributions.png"), tmp)
    base = next(r for r in rows if r["method"] == FULL) if any(r["method"] == FULL for r in rows) else rows[0]
    full = summary.get((FULL, 0.0))
    text = [
        f"# Benchmark: {sweep.name}",
        "",
        f"<!-- generated by `unseen bench-report --config {config_file}` from {sweep.results_table}; do not edit by hand -->",
        "",
        "## Our measurements",
        "",
        f"- command: `.venv/bin/{meta.get('command', 'unseen bench --config ' + config_file)}`, "
        f"then `.venv/bin/unseen bench-report --config {config_file}`",
        f"- machine: {meta.get('machine', 'unknown')}",
        f"- code: commit {code}",
        f"- sweep wall time: {float(meta.get('wall_seconds', 'nan')) / 60:.1f} min, summed over the invocations that wrote this table "
        "(start-up included)",
        f"- base params: `{sweep.params}` with {', '.join(f'`{o}`' for o in sweep.overrides) or 'no overrides'}",
        f"- pool: {base['pool_size']} training samples, " + _pool_text(sweep) + "; test accuracy on the test split",
        f"- seeds: {', '.join(map(str, sweep.seeds))}; prune ratio = fraction of the pool removed; "
        f"cells finished: {len(finished & expected)} of {len(expected)}{_missing(missing)}",
        *([f"- baselines and full data: the rows of `{sweep.baselines_from}` ({borrowed}), the same data, seeds, prune ratios "
           "and budget rule, run before this sweep"] if borrowed else []),
        f"- training budget: `{sweep.budget_rule}`: "
        + (
            f"every coreset is trained for as many SGD steps as one full-data training ({base['epochs']} epochs over the pool), "
            "rounded to whole epochs over the coreset (the CCS convention, Zheng et al. 2023): otherwise small coresets would also be "
            "under-trained, and that, not the samples chosen, would decide their accuracy"
            if sweep.budget_rule == "fixed_iterations"
            else "every coreset is trained for the same number of epochs as the full data"
        ),
        "",
        "### Accuracy (test accuracy %: mean ± std over seeds (number of seeds); best mean per column in bold)",
        "",
        f"Full data: **{full[0]:.2f} ± {full[1]:.2f}** ({full[2]} seeds)" if full else "Full data: not run",
        *([f"Full data trained twice as long (convergence check): {long[0]:.2f} ± {long[1]:.2f} ({long[0] - full[0]:+.2f} points)"]
          if full and (long := summary.get((FULL_LONG, 0.0))) else []),
        "",
        *accuracy_table(sweep, summary, main),
        "",
        "### Ablations of the UNSEEN objective",
        "",
        *accuracy_table(sweep, summary, ablation),
        "",
        *pair_lines(sweep, summary),
        "",
        "### Accuracy against prune ratio",
        "",
        f"![accuracy vs prune ratio](benchmarks/{plot.name})",
        "",
        "### Seen vs held-out score distributions (seed " + str(sweep.seeds[0]) + ")",
        "",
        f"![score distributions](benchmarks/{scores_png.name})",
        "",
        *score_lines(sweep.results_file("scores_report.json")),
        "",
        *noise_lines([sweep.results_file(f"scores_report_s{seed}.json") for seed in sweep.seeds]),
        "",
        *scorer_lines(sweep),
        "",
        "### Cost",
        "",
        *cost_lines(sweep, rows, list(dict.fromkeys(main + ablation))),
        "",
        "Selection time is the select stage's compute, its alignment diagnostics included; for multi-step UNSEEN it includes "
        "the scoring models trained at each step. Retraining time varies with the machine's other load: other work "
        "shared these cores during the sweep.",
        "",
        "### UNSEEN against the baselines, random and the full data, per prune ratio",
        "",
        *comparison_lines(sweep, summary),
        "",
        "## Published anchors (from the papers, not measured here)",
        "",
        "Different data (CIFAR, ImageNet), models (ResNet-18 and larger) and budgets: they calibrate what to expect from "
        "the GPU tier (`benchmarks/gpu.yaml`), they are not comparable with the table above.",
        "",
        *_anchor_lines(Path(sweep.anchors)),
    ]
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(text) + "\n")
    return report
