"""The scores report: how spread out each score is, seen vs held out, and a figure of the two distributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from unseen.io import atomic_path
from unseen.scores.records import ModelRecord
from unseen.scores.table import ScoreTable


def spread(values: np.ndarray, *, prefix: str = "", bins: int = 50) -> dict[str, float]:
    """Standard deviation, fraction within 5% of the range's low end, and bins (of 50) holding 90% of samples."""
    low, high = float(values.min()), float(values.max())
    width = high - low or 1.0
    counts = np.sort(np.histogram(values, bins=bins, range=(low, low + width))[0])[::-1]
    bins_for_90 = int(np.searchsorted(np.cumsum(counts), 0.9 * len(values)) + 1)
    return {
        f"{prefix}std": float(values.std()),
        f"{prefix}frac_near_low_end": float((values <= low + 0.05 * width).mean()),
        f"{prefix}bins_holding_90pct": float(bins_for_90),
    }


def compare_seen_unseen(columns: dict[str, np.ndarray], score_names: list[str]) -> dict[str, float]:
    """Spread of every score's seen and unseen distribution, and the Spearman agreement of their rankings.

    Pass columns oriented so that higher = harder: the "low end" is then the easy end, where scores from
    models that fitted the samples crowd.
    """
    metrics: dict[str, float] = {}
    for name in score_names:
        for variant in ("seen", "unseen"):
            if f"{name}_{variant}" in columns:
                metrics.update(spread(columns[f"{name}_{variant}"], prefix=f"{name}_{variant}_"))
        if f"{name}_seen" in columns and f"{name}_unseen" in columns:
            metrics[f"{name}_spearman_seen_unseen"] = float(spearmanr(columns[f"{name}_seen"], columns[f"{name}_unseen"]).statistic)
    return metrics


def histogram_rows(columns: dict[str, np.ndarray], name: str, bins: int = 50) -> list[dict]:
    """One score's held-out (and, when computed, seen) histogram on a shared range, one row per bin: the data of the
    score-distribution plot that `dvc plots` draws."""
    present = {variant: columns[f"{name}_{variant}"] for variant in ("unseen", "seen") if f"{name}_{variant}" in columns}
    low = min(float(values.min()) for values in present.values())
    high = max(float(values.max()) for values in present.values())
    edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    counts = {variant: np.histogram(values, bins=edges)[0] for variant, values in present.items()}
    names = {"unseen": "held_out", "seen": "seen"}
    return [
        {"difficulty": round(float((edges[i] + edges[i + 1]) / 2), 6), **{names[v]: int(c[i]) for v, c in counts.items()}}
        for i in range(bins)
    ]


def seen_unseen_histograms(columns: dict[str, np.ndarray], score_names: list[str], path: str | Path, bins: int = 50) -> Path:
    """One PNG: a panel per score, the seen and unseen histograms overlaid on a shared range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(score_names))
    rows = -(-len(score_names) // cols)
    figure, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), dpi=90, squeeze=False)
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.17 / rows, top=1 - 0.1 / rows, wspace=0.3, hspace=0.5)
    for axis, name in zip(axes.flat, score_names):
        present = [(variant, columns[f"{name}_{variant}"]) for variant in ("seen", "unseen") if f"{name}_{variant}" in columns]
        low = min(float(values.min()) for _, values in present)
        high = max(float(values.max()) for _, values in present)
        for (variant, values), color in zip(present, ("#c0504d", "#3b6ea8")):
            axis.hist(values, bins=bins, range=(low, high if high > low else low + 1), histtype="stepfilled", alpha=0.55, color=color, label=variant)
        axis.set(title=name, xlabel="difficulty (higher = harder)", ylabel="samples")
        axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(score_names) :]:
        axis.set_visible(False)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def scores_report(table: ScoreTable, records: list[ModelRecord], score_names: list[str], noisy: np.ndarray | None = None) -> dict[str, float]:
    """scores_report.json: every score's seen and held-out spread and agreement, how often the models agree with the
    given labels at the end of the window (seen: on their own training samples), the cost of recording the held-out
    models' outputs as a fraction of their training time and, when the labels were flipped on purpose (`noisy`), how
    well each score ranks the flipped samples as hardest (ROC AUC)."""
    report = compare_seen_unseen(table.oriented(), score_names)
    if noisy is not None and 0 < noisy.sum() < len(noisy):
        report.update({f"{name}_noise_auc": float(roc_auc_score(noisy, values)) for name, values in table.oriented().items()})
    for kind in ("unseen", "seen"):  # seen: how well the models fit their own (possibly wrong) labels
        mine = [r for r in records if r.model.kind == kind]
        if mine:
            correct = sum(int((r.logits[-1].argmax(axis=-1) == r.labels).sum()) for r in mine)
            report[f"{kind}_label_accuracy"] = correct / sum(len(r.labels) for r in mine)
    unseen = [r for r in records if r.model.kind == "unseen"]
    report["recording_overhead_unseen"] = sum(r.record_seconds for r in unseen) / max(sum(r.train_seconds for r in unseen), 1e-9)
    return {key: round(value, 6) for key, value in report.items()}
