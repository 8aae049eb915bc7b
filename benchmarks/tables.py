"""The numbers of a benchmark report, as Markdown lines: accuracy tables, cost, how the reported UNSEEN configuration
compares with the baselines, random and the full data, and how well each score finds flipped labels."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.sweep import FULL, BenchmarkConfig, Cell, MethodSpec, cell_params, prep_params, seed_params


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


def accuracy_rows(sweep: BenchmarkConfig, summary: dict, methods: list[str]) -> list[dict]:
    """One row per prune ratio, one column per method (mean test accuracy %), the full data as a constant column:
    the data of the accuracy-against-prune-ratio plot that `dvc plots` draws."""
    full = summary.get((FULL, 0.0))
    return [
        {"prune_ratio": r, **({"full_data": round(full[0], 3)} if full else {}),
         **{m: round(summary[(m, r)][0], 3) for m in methods if (m, r) in summary}}
        for r in sweep.prune_ratios
    ]


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


FEATURE_ONLY = ("moderate_ds", "kcenter_greedy", "herding")
"""Methods that select from the features alone (no difficulty score)."""


def _mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else float("nan")


def cost_lines(sweep: BenchmarkConfig, rows: list[dict], methods: list[str]) -> list[str]:
    """Scoring, selection and retraining seconds per method (means over cells), and their sum as a multiple of one
    full-data training: what producing (and using) each coreset costs."""
    full_train = _mean(r["train_seconds"] for r in rows if r["method"] == FULL)
    full_rows = [r for r in rows if r["method"] == FULL]
    features, scoring = _mean(r["features_seconds"] for r in full_rows), _mean(r["scoring_seconds"] for r in full_rows)
    lines = [
        f"One full-data training: **{full_train:.1f} s** (mean over seeds). Per seed, shared by all methods: feature "
        f"extraction {features:.1f} s and the scoring models {scoring:.1f} s ({scoring / full_train:.2f}x one full-data training; "
        "all scoring models of the sweep's scores section). The table charges each method what it uses, from the tables it "
        "used (a method with its own scorer or extractor pays its own): scores for score-based methods, features for "
        "geometric methods, D2 and the UNSEEN objective."
        + (" Rows borrowed from another sweep (`baselines_from`) are charged against that sweep's full-data training, timed "
           "under the same load as they were." if any("full_train_seconds" in r for r in rows) else ""),
        "",
        "| method | scoring and features s | selection s (mean over ratios) | retraining s (mean over ratios) "
        "| coreset cost / full training |",
        "|---|---|---|---|---|",
    ]
    default_method = seed_params(sweep, sweep.seeds[0]).select.method  # a method that does not name one selects with it
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        name = sweep.methods[method].select.get("method") or default_method
        uses_score = name not in ("random", "random_class_balanced", *FEATURE_ONLY)
        uses_features = name in (*FEATURE_ONLY, "d2_pruning", "unseen")
        charged = _mean((r["scoring_seconds"] if uses_score else 0.0) + (r["features_seconds"] if uses_features else 0.0) for r in mine)
        selection, retrain = _mean(r["selection_seconds"] for r in mine), _mean(r["train_seconds"] for r in mine)
        multiple = (charged + selection) / _mean(r.get("full_train_seconds", full_train) for r in mine)  # borrowed rows: their sweep's
        lines.append(f"| {sweep.methods[method].label} | {charged:.1f} | {selection:.1f} | {retrain:.1f} | {multiple:.2f}x |")
    return lines


def _standard_error(a: tuple[float, float, int], b: tuple[float, float, int]) -> float:
    """Standard error of the difference of two means over independent seeds."""
    return math.sqrt(a[1] ** 2 / a[2] + b[1] ** 2 / b[2])


def comparison_lines(sweep: BenchmarkConfig, summary: dict) -> list[str]:
    """Per prune ratio: the reported UNSEEN configuration (fixed in the sweep file before the sweep) against the best
    baseline and random (each difference with its standard error) and the full data. Without one, every UNSEEN form is shown,
    and the report says that picking among them after the fact flatters UNSEEN."""
    subjects = [sweep.reported] if sweep.reported else [m for m, spec in sweep.methods.items() if spec.group == "unseen"]
    others = [m for m, spec in sweep.methods.items() if spec.group == "baseline"]
    full = summary.get((FULL, 0.0))
    lines = [] if sweep.reported else [
        "No UNSEEN configuration was fixed in the sweep file (`reported`): each form is shown; the best of them per ratio "
        "is picked after the fact and flatters UNSEEN by the maximum over noisy means.",
        "",
    ]
    for r in sweep.prune_ratios:
        rivals = [(summary[(m, r)], m) for m in others if (m, r) in summary]
        for method in (m for m in subjects if (m, r) in summary):
            mine = summary[(method, r)]
            text = f"- prune {_pct(r)}: {sweep.methods[method].label} {mine[0]:.2f} ± {mine[1]:.2f}"
            if rivals:
                (rival, rival_name) = max(rivals)
                text += (f"; best baseline {sweep.methods[rival_name].label} {rival[0]:.2f} ± {rival[1]:.2f} "
                         f"({mine[0] - rival[0]:+.2f}, standard error {_standard_error(mine, rival):.2f})")
            if ("random", r) in summary:
                rand = summary[("random", r)]
                text += f"; random {rand[0]:.2f} ({mine[0] - rand[0]:+.2f}, standard error {_standard_error(mine, rand):.2f})"
            if full is not None:
                text += f"; full data {full[0]:.2f} ± {full[1]:.2f} ({mine[0] - full[0]:+.2f})"
            lines.append(text)
    return lines


def _held_out_twin(spec: MethodSpec) -> MethodSpec | None:
    """The same method on the held-out variant of its seen score; None unless its score is a seen one."""
    score = spec.select.get("score", "")
    if not score.endswith("_seen"):
        return None
    return spec.model_copy(update={"select": {**spec.select, "score": score.removesuffix("_seen") + "_unseen"}})


def pair_lines(sweep: BenchmarkConfig, summary: dict) -> list[str]:
    """Clean pairs: each method on seen scores against the same method, all else equal, on held-out scores; per prune
    ratio the difference held-out minus seen, and at how many ratios held-out is at least as good."""
    pairs = [(seen, held) for seen, spec in sweep.methods.items() if (twin := _held_out_twin(spec)) is not None
             for held, other in sweep.methods.items() if (other.select, other.by_ratio, other.features, other.scores)
             == (twin.select, twin.by_ratio, twin.features, twin.scores)]
    if not pairs:
        return []
    lines = ["### Held-out against seen scores, all else equal (held-out minus seen, points)", "",
             "| held-out method | " + " | ".join(f"prune {_pct(r)}" for r in sweep.prune_ratios) + " | held-out >= seen |",
             "|---|" + "---|" * (len(sweep.prune_ratios) + 1)]
    for seen, held in pairs:
        gaps = [summary[(held, r)][0] - summary[(seen, r)][0] if (held, r) in summary and (seen, r) in summary else None
                for r in sweep.prune_ratios]
        known = [g for g in gaps if g is not None]
        cells = " | ".join("-" if g is None else f"{g:+.2f}" for g in gaps)
        lines.append(f"| {sweep.methods[held].label} | {cells} | {sum(g >= 0 for g in known)} of {len(known)} |")
    return lines


SCORE_NAMES = ("el2n", "grand", "loss", "entropy", "margin", "forgetting", "aum", "label_issue")


def score_lines(report_path: Path) -> list[str]:
    if not report_path.is_file():
        return ["(no score report next to the results table)"]
    report = json.loads(report_path.read_text())
    lines = [
        "| score | std seen | std held-out | fraction within 5% of the easy end, seen | held-out | Spearman seen vs held-out |",
        "|---|---|---|---|---|---|",
    ]
    for name in SCORE_NAMES:
        stems = (f"{name}_seen_std", f"{name}_unseen_std", f"{name}_seen_frac_near_low_end", f"{name}_unseen_frac_near_low_end")
        keys = [*stems, f"{name}_spearman_seen_unseen"]
        if all(k in report for k in keys):
            lines.append(f"| {name} | " + " | ".join(f"{report[k]:.3f}" for k in keys) + " |")
    return lines if len(lines) > 2 else ["(no seen scores in this sweep: `scores.seen` is off)"]


def noise_lines(report_paths: list[Path]) -> list[str]:
    """How well each score ranks the flipped labels as hardest (ROC AUC, mean over the seeds' score reports)."""
    reports = [json.loads(path.read_text()) for path in report_paths if path.is_file()]
    aucs = defaultdict(list)
    for report in reports:
        for key, value in report.items():
            if key.endswith("_noise_auc") and not key.endswith("_std_noise_auc"):
                aucs[key.removesuffix("_noise_auc")].append(value)
    if not aucs:
        return []
    fit = {kind: [r[f"{kind}_label_accuracy"] for r in reports if f"{kind}_label_accuracy" in r] for kind in ("unseen", "seen")}
    lines = []
    if fit["seen"] and fit["unseen"]:
        lines += [f"Agreement with the given labels at the end of the score window: seen models on their own training samples "
                  f"{100 * statistics.fmean(fit['seen']):.1f}%, held-out models {100 * statistics.fmean(fit['unseen']):.1f}%.", ""]
    lines += [f"ROC AUC of each score for the flipped labels (higher = harder ranks them first), mean over {len(reports)} seeds:", ""]
    lines += ["| score | held-out | seen |", "|---|---|---|"]
    for name in SCORE_NAMES:
        cells = [f"{statistics.fmean(aucs[f'{name}_{v}']):.3f}" if aucs.get(f"{name}_{v}") else "-" for v in ("unseen", "seen")]
        if cells != ["-", "-"]:
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def scorer_lines(sweep: BenchmarkConfig) -> list[str]:
    """For methods with a scorer or extractor of their own: how their held-out difficulty ranks the samples against
    the reported method's scores (or the sweep's own, without one): Spearman of `select.score`, mean over seeds."""
    from scipy.stats import spearmanr

    own = [m for m, spec in sweep.methods.items() if (spec.scores or spec.features) and m != sweep.reported]
    rhos = defaultdict(list)
    for seed in sweep.seeds:
        base = seed_params(sweep, seed)

        def scores_of(method: str):
            cell = cell_params(sweep, base, Cell(method, sweep.prune_ratios[0], seed), pool_size=1000)  # the scores, not the budget, matter
            path = prep_params(base, cell).output("scores.parquet")
            return pq.read_table(path, columns=[cell.select.score]).column(0).to_numpy() if path.is_file() else None

        reference = scores_of(sweep.reported) if sweep.reported else None
        if reference is None and base.output("scores.parquet").is_file():
            reference = pq.read_table(base.output("scores.parquet"), columns=[base.select.score]).column(0).to_numpy()
        for method in own if reference is not None else []:
            values = scores_of(method)
            if values is not None:
                rhos[method].append(float(spearmanr(reference, values).statistic))
    if not rhos:
        return []
    against = f"the reported method's ({sweep.methods[sweep.reported].label})" if sweep.reported else "the sweep's own"
    lines = [f"Spearman correlation of each scorer's held-out difficulty (`{base.select.score}`) with {against} scores "
             "(mean over seeds): how much the scorer changes the ranking.", "", "| method | Spearman | seeds |", "|---|---|---|"]
    return lines + [f"| {sweep.methods[m].label} | {statistics.fmean(v):.3f} | {len(v)} |" for m, v in rhos.items()]
