"""docs/benchmarks.md, generated from a sweep's results table (never typed by hand): accuracy and ablation tables,
accuracy against prune ratio, the seen-vs-held-out score distributions, the cost table, the issue's targets checked
on the numbers, and, clearly apart, published anchors read from the sweep's `anchors` file.

Everything here reads the results table and the files the sweep put next to it, so the report can be regenerated
on any machine from what is committed (`unseen bench-report --config benchmarks/<name>.yaml`).
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from benchmarks.sweep import FULL, BenchmarkConfig, read_results, sweep_cells
from unseen.io import atomic_path


def _stats(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std, n) in percent; std is 0 for a single value."""
    pct = [100 * v for v in values]
    return statistics.fmean(pct), statistics.stdev(pct) if len(pct) > 1 else 0.0, len(pct)


def summarize(rows: list[dict]) -> dict[tuple[str, float], tuple[float, float, int]]:
    """(method, prune ratio) -> (mean accuracy %, std over seeds, seeds)."""
    grouped: dict[tuple[str, float], list[float]] = defaultdict(list)
    for row in rows:
        grouped[(row["method"], row["prune_ratio"])].append(row["test_accuracy"])
    return {key: _stats(values) for key, values in grouped.items()}


def _pct(ratio: float) -> str:
    return f"{round(100 * ratio)}%"


def accuracy_table(sweep: BenchmarkConfig, summary: dict, methods: list[str]) -> list[str]:
    """Markdown rows: one per method, one column per prune ratio, mean +- std (n), best mean per column in bold."""
    ratios = sweep.prune_ratios
    best = {r: max((summary[(m, r)][0] for m in methods if (m, r) in summary), default=None) for r in ratios}
    lines = ["| method | " + " | ".join(f"prune {_pct(r)}" for r in ratios) + " |", "|---|" + "---|" * len(ratios)]
    for method in methods:
        cells = []
        for r in ratios:
            if (method, r) not in summary:
                cells.append("not run")
                continue
            mean, std, n = summary[(method, r)]
            text = f"{mean:.2f} ± {std:.2f} ({n})"
            cells.append(f"**{text}**" if mean == best[r] else text)
        lines.append(f"| {sweep.methods[method].label} | " + " | ".join(cells) + " |")
    return lines


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


FEATURE_ONLY = ("moderate_ds", "kcenter_greedy", "herding")
"""Methods that select from the features alone (no difficulty score)."""


def _mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else float("nan")


def cost_lines(sweep: BenchmarkConfig, rows: list[dict], methods: list[str]) -> list[str]:
    """Scoring, selection and retraining seconds per method (means over cells), and their sum as a multiple of one
    full-data training: what producing (and using) each coreset costs."""
    full_train = _mean(r["train_seconds"] for r in rows if r["method"] == FULL)
    per_seed = {r["seed"]: (r["features_seconds"], r["scoring_seconds"]) for r in rows}
    features, scoring = _mean(f for f, _ in per_seed.values()), _mean(s for _, s in per_seed.values())
    lines = [
        f"One full-data training: **{full_train:.1f} s** (mean over seeds). Per seed, shared by all methods: feature "
        f"extraction {features:.1f} s and the scoring models {scoring:.1f} s ({scoring / full_train:.2f}x one full-data training; "
        "all of them: the K held-out fold models and the seen model, about half each at K = 2). The table charges each method "
        "what it uses: scores for score-based methods, features for geometric methods, D2 and the UNSEEN objective.",
        "",
        "| method | scoring and features s | selection s (mean over ratios) | retraining s (mean over ratios) "
        "| coreset cost / full training |",
        "|---|---|---|---|---|",
    ]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        select = sweep.methods[method].select
        uses_score = select.get("method") not in ("random", "random_class_balanced", *FEATURE_ONLY)
        uses_features = select.get("method") in (*FEATURE_ONLY, "d2_pruning", "unseen")
        charged = (scoring if uses_score else 0.0) + (features if uses_features else 0.0)
        selection, retrain = _mean(r["selection_seconds"] for r in mine), _mean(r["train_seconds"] for r in mine)
        multiple = (charged + selection) / full_train
        lines.append(f"| {sweep.methods[method].label} | {charged:.1f} | {selection:.1f} | {retrain:.1f} | {multiple:.2f}x |")
    return lines


def target_lines(sweep: BenchmarkConfig, summary: dict) -> list[str]:
    """Per prune ratio: the best UNSEEN form against the best baseline, random and the full data."""
    unseen = [m for m, spec in sweep.methods.items() if spec.group == "unseen"]
    others = [m for m, spec in sweep.methods.items() if spec.group == "baseline"]
    full = summary.get((FULL, 0.0))
    lines = []
    if full is not None and any(summary[k][0] > full[0] for k in summary if k[0] != FULL):
        lines += [
            "Some coresets beat the full data: the budget rule gives a coreset the full-data training's SGD steps spread over "
            "fewer samples, so it sees each sample more often; where the full-data recipe is short, that can outweigh the "
            "samples removed.",
            "",
        ]
    for r in sweep.prune_ratios:
        forms = [(summary[(m, r)], m) for m in unseen if (m, r) in summary]
        rivals = [(summary[(m, r)], m) for m in others if (m, r) in summary]
        if not forms or not rivals:
            continue
        (best, best_name), (rival, rival_name) = max(forms), max(rivals)
        verdict = "highest" if best[0] > rival[0] else "NOT highest"
        text = (
            f"- prune {_pct(r)}: best UNSEEN form {sweep.methods[best_name].label} {best[0]:.2f} ± {best[1]:.2f}; best baseline "
            f"{sweep.methods[rival_name].label} {rival[0]:.2f} ± {rival[1]:.2f} -> UNSEEN {verdict} ({best[0] - rival[0]:+.2f} points)"
        )
        if ("random", r) in summary:
            rand = summary[("random", r)]
            text += f"; margin over random {best[0] - rand[0]:+.2f} points vs seed std {max(best[1], rand[1]):.2f}"
        if full is not None:
            text += f"; {best[0] - full[0]:+.2f} points vs full data ({full[0]:.2f} ± {full[1]:.2f})"
        lines.append(text)
    return lines


def _score_lines(report_path: Path) -> list[str]:
    if not report_path.is_file():
        return ["(no score report next to the results table)"]
    report = json.loads(report_path.read_text())
    lines = [
        "| score | std seen | std held-out | fraction within 5% of the easy end, seen | held-out | Spearman seen vs held-out |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("el2n", "grand", "loss", "entropy", "margin", "forgetting", "aum"):
        stems = (f"{name}_seen_std", f"{name}_unseen_std", f"{name}_seen_frac_near_low_end", f"{name}_unseen_frac_near_low_end")
        keys = [*stems, f"{name}_spearman_seen_unseen"]
        if all(k in report for k in keys):
            lines.append(f"| {name} | " + " | ".join(f"{report[k]:.3f}" for k in keys) + " |")
    return lines


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


def write_report(sweep: BenchmarkConfig, config_file: str) -> Path:
    """Generate the report and its figures (in `<report folder>/benchmarks/`) from the sweep's results table.

    Longer than 50 lines because it is the report's template: one list of Markdown lines, read top to bottom."""
    table, meta = read_results(sweep.results_table)
    rows = table.to_pylist()
    summary = summarize(rows)
    report = Path(sweep.report)
    figures = report.parent / "benchmarks"
    main = [m for m, spec in sweep.methods.items() if spec.group in ("baseline", "unseen")]
    ablation = [m for m, spec in sweep.methods.items() if spec.group in ("unseen", "ablation")]
    plot = accuracy_plot(sweep, summary, main, figures / f"{sweep.name}_accuracy_vs_prune_ratio.png")
    scores_png = figures / f"{sweep.name}_scores_distributions.png"
    if sweep.results_file("scores_distributions.png").is_file():
        with atomic_path(scores_png) as tmp:
            shutil.copyfile(sweep.results_file("scores_distributions.png"), tmp)
    expected = {(c.method, c.prune_ratio, c.seed) for c in sweep_cells(sweep)}
    finished = {(r["method"], r["prune_ratio"], r["seed"]) for r in rows}
    missing = sorted(expected - finished, key=str)
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
        f"- sweep wall time: {float(meta.get('wall_seconds', 'nan')) / 60:.1f} min, summed over the invocations that wrote this table "
        "(start-up included)",
        f"- base params: `{sweep.params}` with {', '.join(f'`{o}`' for o in sweep.overrides) or 'no overrides'}",
        f"- pool: {base['pool_size']} training samples, a stratified subset of the train split drawn per seed (so the seed std "
        "includes the pool draw); test accuracy on the test split",
        f"- seeds: {', '.join(map(str, sweep.seeds))}; prune ratio = fraction of the pool removed; "
        f"cells finished: {len(finished & expected)} of {len(expected)}{_missing(missing)}",
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
        "",
        *accuracy_table(sweep, summary, main),
        "",
        "### Ablations of the UNSEEN objective",
        "",
        *accuracy_table(sweep, summary, ablation),
        "",
        "### Accuracy against prune ratio",
        "",
        f"![accuracy vs prune ratio](benchmarks/{plot.name})",
        "",
        "### Seen vs held-out score distributions (seed " + str(sweep.seeds[0]) + ")",
        "",
        f"![score distributions](benchmarks/{scores_png.name})",
        "",
        *_score_lines(sweep.results_file("scores_report.json")),
        "",
        "### Cost",
        "",
        *cost_lines(sweep, rows, main),
        "",
        "Selection time is the select stage's compute, its alignment diagnostics included; for multi-step UNSEEN it includes "
        "the scoring models trained at each step. Retraining time varies with the machine's other load: other work "
        "shared these cores during the sweep.",
        "",
        "### UNSEEN against the best baseline, per prune ratio",
        "",
        "The best UNSEEN form is picked per prune ratio after the fact (held-out scores in CCS, single-step or multi-step "
        "objective), which flatters UNSEEN by the maximum over three noisy means; the seed std says how much that can be.",
        "",
        *target_lines(sweep, summary),
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
