"""The select report: how well a coreset's features align with the train and test data, next to random."""

from __future__ import annotations

import numpy as np

from unseen.config import SelectParams
from unseen.selection.coreset import Coreset
from unseen.selection.kernels import fourier_means, median_bandwidth
from unseen.selection.objective import UnseenObjective, label_issue_handling


def mmd_to_train_and_test(
    features: np.ndarray, test_features: np.ndarray, subsets: dict[str, np.ndarray], *, fourier_dim: int = 512, seed: int = 0
) -> dict[str, float]:
    """MMD of each subset (a mask over the train rows) to the train and to the test features, all under one kernel
    (Gaussian, median bandwidth of train and test, one draw of random Fourier features), so that the coreset and the
    random subset are compared like for like."""
    rng = np.random.default_rng(seed)
    both = np.concatenate([features, test_features]).astype(np.float32)
    train = np.arange(len(both)) < len(features)
    after_train = np.zeros(len(test_features), dtype=bool)
    groups = {"train": train, "test": ~train, **{name: np.concatenate([mask, after_train]) for name, mask in subsets.items()}}
    means = fourier_means(both, groups, fourier_dim, median_bandwidth(both, rng), rng)
    return {f"mmd_to_{target}_{name}": float(np.linalg.norm(means[name] - means[target])) for target in ("train", "test") for name in subsets}


def selection_report(
    coreset: Coreset, random_selected: np.ndarray, features: np.ndarray, test_features: np.ndarray, labels: np.ndarray, *, seed: int = 0,
    flagged: np.ndarray | None = None, select: SelectParams | None = None, misclassified: np.ndarray | None = None,
    proxy_check: tuple[float, float] | None = None,
) -> dict:
    """Alignment diagnostics of a coreset next to the same-size random subset: MMD to the train and test
    features, per-class counts, the histogram of region keep ratios (how unevenly regions were pruned), and the
    `flagged` label issues: how many, what the `select` settings did with them (cut or stratum) and how many were kept;
    with `proxy_check` (the proxy's noisy-label share, the share from which it counts as noisy), both verdicts on the labels."""
    report: dict = {
        "coreset_size": int(coreset.selected.sum()),
        **mmd_to_train_and_test(features, test_features, {"coreset": coreset.selected, "random": random_selected}, seed=seed),
        "coreset_per_class": np.bincount(labels[coreset.selected], minlength=int(labels.max()) + 1).tolist(),
        "cut_per_class": np.bincount(labels[coreset.cut_as_hardest], minlength=int(labels.max()) + 1).tolist(),
    }
    if flagged is not None:
        unseen = select is not None and select.method == "unseen"  # the baselines cut them
        label_issues = label_issue_handling(UnseenObjective.from_params(select), flagged) if unseen else "cut"
        if (flagged & coreset.cut_as_hardest).any():  # a stratum is never cut: hard_cutoff oversampled selected again, cutting them
            label_issues = "cut"
        report.update(label_issues_flagged=int(flagged.sum()), label_issues_flagged_fraction=round(float(flagged.mean()), 4),
                      label_issues_handled_as=label_issues, label_issues_as_stratum=int(label_issues == "stratum"),
                      label_issues_kept=int((flagged & coreset.selected).sum()))
        if proxy_check is not None and select is not None:
            report.update(label_noise_verdicts(flagged, select.label_issue_rate, *proxy_check))
    if misclassified is not None:  # hard_cutoff oversampled: cut where the coverage would over-sample them
        report.update(misclassified=int(misclassified.sum()), misclassified_cut=int((misclassified & coreset.cut_as_hardest).sum()),
                      misclassified_kept=int((misclassified & coreset.selected).sum()))
    regions = coreset.region >= 0
    if regions.any():
        keys = labels[regions].astype(np.int64) * 65536 + coreset.region[regions]
        unique, first, size = np.unique(keys, return_index=True, return_counts=True)
        budget = coreset.region_budget[regions][first]
        ratio = budget / size
        counts, edges = np.histogram(ratio, bins=10, range=(0.0, 1.0))
        report["region_keep_ratio_histogram"] = {"edges": edges.round(2).tolist(), "regions": counts.tolist()}
        report["region_keep_ratio_min"] = float(ratio.min())
        report["region_keep_ratio_max"] = float(ratio.max())
    return report


def label_noise_verdicts(flagged: np.ndarray, label_issue_rate: float, proxy_share: float, proxy_noisy_share: float) -> dict[str, float]:
    """Whether the labels look noisy to each held-out estimate: the fold models' label issues (at `label_issue_rate`
    of the samples, what `label_issues: auto` and `label_issues_by: probability` act on) and the proxy's first-epoch
    check (`features.proxy_noisy_share`). Where they disagree, neither is sure (a small pool, or light noise), and the
    run summary says to set `select.label_issues` by hand."""
    return {
        "proxy_noisy_label_share": round(proxy_share, 4),
        "labels_noisy_by_fold_models": int(len(flagged) > 0 and float(np.mean(flagged)) >= label_issue_rate),
        "labels_noisy_by_proxy": int(proxy_share >= proxy_noisy_share),
    }


def class_budget_rows(report: dict, class_names: list[str], labels: np.ndarray) -> list[dict]:
    """Per class: pool, kept and label issues cut, from a select report: the budgets a user checks first."""
    pool = np.bincount(labels, minlength=len(class_names))
    return [
        {"class": name, "pool": int(pool[c]), "kept": int(report["coreset_per_class"][c]) if c < len(report["coreset_per_class"]) else 0,
         "label_issues_cut": int(report["cut_per_class"][c]) if c < len(report["cut_per_class"]) else 0}
        for c, name in enumerate(class_names)
    ]


def coreset_diff(
    before_ids: np.ndarray, before_selected: np.ndarray, sample_ids: np.ndarray, selected: np.ndarray, cut_as_hardest: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The columns of coreset_diff.parquet (`unseen.tables.CORESET_DIFF`): every sample of the earlier or the current
    collection, whether the earlier coreset (`before_*`) and the current one keep it, and why it changed; and the
    counts of samples added, dropped and kept, and of new samples (selected or not)."""
    ids = np.union1d(before_ids, sample_ids)
    before = np.isin(ids, before_ids[before_selected])
    after = np.isin(ids, sample_ids[selected])
    new, gone = ~np.isin(ids, before_ids), ~np.isin(ids, sample_ids)
    cut = np.isin(ids, sample_ids[cut_as_hardest])
    reason = np.select(
        [before & after, after & new, after, before & gone, before & cut, before, new, cut],
        ["kept", "new sample, selected", "selected by the re-selection", "left the collection", "cut as a label issue",
         "displaced by the re-selection", "new sample, not selected", "cut as a label issue"],
        "not selected",
    ).astype(object)
    counts = {
        "coreset_added": int((after & ~before).sum()), "coreset_dropped": int((before & ~after).sum()), "coreset_kept": int((before & after).sum()),
        "new_samples": int(new.sum()), "new_samples_selected": int((new & after).sum()),
    }
    return {"sample_id": ids, "before": before, "after": after, "reason": reason}, counts
