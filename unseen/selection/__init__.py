"""Coreset selection: the UNSEEN objective, its multi-step variant, and the baselines, behind one entry point.

`select(params.select, difficulty, features, labels, ...)` returns a `Coreset` for any `select.method`;
`random_baseline` draws the same-size, same-per-class random subset a coreset is compared against.
Selection never trains a model: multi-step scoring is handed in (`select_multistep`) or driven by a flow.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from unseen.budgets import budget_for, random_subset
from unseen.config import SelectParams
from unseen.selection.baselines import BASELINES, CLASS_BALANCED
from unseen.selection.coreset import Coreset
from unseen.selection.kernels import mmd, standardize
from unseen.selection.multistep import StepScorer, select_multistep, select_step, step_budgets, step_difficulty
from unseen.selection.objective import UnseenObjective, cut_flags, cut_if_oversampled, label_issue_handling, select_coreset
from unseen.selection.report import class_budget_rows, coreset_diff, label_noise_verdicts, selection_report

METHODS = ("unseen", *BASELINES)
"""Every `select.method`."""

__all__ = [
    "BASELINES",
    "CLASS_BALANCED",
    "METHODS",
    "Coreset",
    "StepScorer",
    "UnseenObjective",
    "mmd",
    "random_baseline",
    "cut_flags",
    "label_issue_handling",
    "label_noise_verdicts",
    "select",
    "select_coreset",
    "cut_if_oversampled",
    "select_added",
    "select_multistep",
    "select_step",
    "selection_report",
    "class_budget_rows",
    "coreset_diff",
    "step_budgets",
    "step_difficulty",
]


def select(
    params: SelectParams,
    difficulty: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    pool_features: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    seed: int = 0,
    budget: int | None = None,
    misclassified: np.ndarray | None = None,
) -> Coreset:
    """The single-step coreset of `params.method` at `params.prune_ratio`, or of `budget` samples when given (UNSEEN
    with `steps > 1`: `select_multistep`).

    difficulty: (N,) the `params.score` column oriented higher = harder. features: (N, D) embeddings; baselines see
    them standardized per dimension. pool_features: unlabeled features for `target_pool: test` (UNSEEN only).
    flagged: (N,) bool, never kept when `params.hard_cutoff` is auto (likely label errors, the `label_issue` score) or
    misclassified (a negative held-out margin): `unseen.scores.cut_flags_of`. misclassified: with `hard_cutoff`
    oversampled, the samples UNSEEN cuts too where it would over-sample them (`unseen.scores.oversampled_candidates_of`;
    the baselines cut the label issues only).
    """
    if params.selection_steps > 1:
        raise ValueError(
            f"select.steps={params.steps}: multi-step UNSEEN trains a scoring model at each step; call select_multistep with a "
            "step scorer (e.g. unseen.scores.score_step), or set select.steps to 1 for one pass"
        )
    budget = budget_for(len(labels), params.prune_ratio) if budget is None else budget
    flagged = cut_flags(params, flagged)
    if params.method == "unseen":
        objective = UnseenObjective.from_params(params)
        return cut_if_oversampled(
            difficulty, features, labels, budget, objective=objective, pool_features=pool_features, flagged=flagged, num_classes=num_classes, seed=seed,
            misclassified=misclassified,
        )
    if params.method not in BASELINES:
        raise ValueError(f"select.method: unknown method {params.method!r}; use one of: {', '.join(METHODS)}")
    mean, std = standardize(features)
    method = BASELINES[params.method]
    options = {"hard_cutoff": UnseenObjective.from_params(params).hard_cutoff, "bins": params.score_bins, "flagged": flagged}
    accepted = {key: value for key, value in options.items() if key in inspect.signature(method).parameters}
    return Coreset.from_mask(method(difficulty, (features - mean) / std, labels, budget, seed=seed, **accepted), labels)


def select_added(
    params: SelectParams,
    kept: np.ndarray,
    added: np.ndarray,
    difficulty: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    pool_features: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    seed: int = 0,
    misclassified: np.ndarray | None = None,
) -> Coreset:
    """Re-pruning a grown collection without selecting it all again: the earlier coreset (`kept`, (N,) bool) stays, and
    the samples added since (`added`) are selected among themselves by `params.method`, in one step, up to the grown
    collection's budget. What UNSEEN does with label issues is decided on the whole collection's `flagged` share.
    Kept rows carry no pick facts (their earlier coreset.parquet has them)."""
    if params.method == "unseen" and params.label_issues == "auto" and flagged is not None:
        params = params.model_copy(update={"label_issues": label_issue_handling(UnseenObjective.from_params(params), flagged)})
    budget = budget_for(len(labels), params.prune_ratio) - int(kept.sum())
    picked = select(
        params.model_copy(update={"steps": 1}), difficulty[added], features[added], labels[added], num_classes=num_classes,
        pool_features=pool_features, flagged=None if flagged is None else flagged[added], seed=seed, budget=budget,
        misclassified=None if misclassified is None else misclassified[added],
    )
    selected = kept.copy()
    selected[added] = picked.selected
    grown = Coreset.from_mask(selected, labels)
    columns = {name.name: getattr(grown, name.name).copy() for name in dataclasses.fields(Coreset)}
    for name in columns.keys() - {"selected", "class_budget"}:
        columns[name][added] = getattr(picked, name)
    return Coreset(**columns)


def random_baseline(labels: np.ndarray, coreset: Coreset, num_classes: int, seed: int) -> np.ndarray:
    """The random subset a coreset is compared against: as many samples per class, drawn uniformly."""
    return random_subset(labels, np.bincount(labels[coreset.selected], minlength=num_classes), seed)
