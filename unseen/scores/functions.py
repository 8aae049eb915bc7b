"""The score registry: every score is a function of what a scoring model recorded, registered under a name.

A score takes `(probs_per_epoch, logits_per_epoch, labels[, embedding_norms])` (arrays are epochs x samples x
classes) and returns one value per sample. The seven built-in scores register here exactly as a user's own does.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from unseen.config import LABEL_ISSUE_CUTS, OVERSAMPLED_CUTS, InputError, SelectParams

ScoreFn = Callable[..., np.ndarray]


class ScoreError(InputError):
    """A score that cannot be used (not finite, wrong shape); the message names the score and the sample."""


@dataclass(frozen=True)
class ScoreSpec:
    """A named score: `fn(probs_per_epoch, logits_per_epoch, labels[, embedding_norms]) -> (N,)`."""

    name: str
    fn: ScoreFn
    higher_is_harder: bool = True
    reference: str = ""
    per_sample: bool = True  # False: it needs every scored sample at once, and sees the window's mean probabilities

    @property
    def wants_embedding_norms(self) -> bool:
        return "embedding_norms" in inspect.signature(self.fn).parameters

    def __call__(self, probs: np.ndarray, logits: np.ndarray, labels: np.ndarray, embedding_norms: np.ndarray) -> np.ndarray:
        extra = {"embedding_norms": embedding_norms} if self.wants_embedding_norms else {}
        values = np.asarray(self.fn(probs, logits, labels, **extra), dtype=np.float64)
        if values.shape != labels.shape:
            raise ScoreError(f"score {self.name!r} returned shape {values.shape}, expected one value per sample {labels.shape}")
        return values


SCORES: dict[str, ScoreSpec] = {}


def register_score(name: str, fn: ScoreFn, *, higher_is_harder: bool = True, reference: str = "", per_sample: bool = True) -> ScoreSpec:
    """Make `fn` available by `name` in `scores.scores`; its seen and unseen columns then appear in scores.parquet.

    A per-sample score is computed on chunks of samples (bounded memory at any size); one that is not (it compares
    samples, as confident learning does) gets all of a record's samples at once: the window's mean probabilities
    `(1, N, C)`, no logits (None: a second N x C array would double its memory), the labels and mean norms."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"score name {name!r} must be lower-case letters, digits and underscores")
    spec = ScoreSpec(name, fn, higher_is_harder, reference, per_sample)
    SCORES[name] = spec
    return spec


def resolve_score(entry: str) -> ScoreSpec:
    """A registered name, or `package.module:function` (imported; registered under the function's name).

    An imported function may set `higher_is_harder = False` as an attribute to say that high means easy, and
    `per_sample = False` to get every sample of a record at once.
    """
    if entry in SCORES:
        return SCORES[entry]
    if ":" in entry:
        module_name, _, attribute = entry.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import {entry!r} ({exc})") from None
        return register_score(
            attribute.lower(), fn, higher_is_harder=getattr(fn, "higher_is_harder", True), reference=entry, per_sample=getattr(fn, "per_sample", True)
        )
    raise ValueError(f"unknown score {entry!r}; use one of {', '.join(SCORES)} or 'package.module:function'")


def _true_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """values[..., n, labels[n]] for (E, N, C) arrays."""
    return np.take_along_axis(values, labels[None, :, None], axis=-1)[..., 0]


def _errors(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(E, N): ||p - onehot(y)||, from sum(p^2) - 2 p_y + 1 (one pass over the classes, no one-hot array)."""
    squares = np.einsum("enc,enc->en", probs, probs, dtype=np.float64)
    return np.sqrt(np.clip(squares - 2.0 * _true_class(probs, labels) + 1.0, 0.0, None))


def _margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(E, N): true-class logit minus the largest other logit."""
    top2 = np.partition(logits, -2, axis=-1)[..., -2:].astype(np.float64)
    true = _true_class(logits, labels).astype(np.float64)
    largest_other = np.where(true >= top2[..., 1], top2[..., 0], top2[..., 1])
    return true - largest_other


def el2n(probs, logits, labels):
    """EL2N (Paul et al. 2021): L2 distance of the softmax from the one-hot label, averaged over epochs."""
    return _errors(probs, labels).mean(axis=0)


def grand(probs, logits, labels, embedding_norms):
    """GraNd (Paul et al. 2021) w.r.t. the last layer's weights and bias: ||p - y|| * sqrt(||h||^2 + 1), averaged."""
    return (_errors(probs, labels) * np.sqrt(embedding_norms.astype(np.float64) ** 2 + 1.0)).mean(axis=0)


def loss(probs, logits, labels):
    """Cross-entropy of the true class, averaged over epochs (from logits, numerically stable)."""
    peak = logits.max(axis=-1, keepdims=True)
    log_normalizer = peak[..., 0].astype(np.float64) + np.log(np.exp(logits - peak).sum(axis=-1, dtype=np.float64))
    return (log_normalizer - _true_class(logits, labels)).mean(axis=0)


def entropy(probs, logits, labels):
    """Entropy of the softmax, averaged over epochs: high = the model is unsure."""
    return -np.einsum("enc,enc->en", probs, np.log(np.clip(probs, 1e-12, None)), dtype=np.float64).mean(axis=0)


def margin(probs, logits, labels):
    """True-class logit minus the largest other logit at the last epoch of the window: high = easy."""
    return _margins(logits[-1:], labels)[0]


def aum(probs, logits, labels):
    """AUM (Pleiss et al. 2020): the margin averaged over the epochs of the window; negative for likely mislabels."""
    return _margins(logits, labels).mean(axis=0)


def forgetting(probs, logits, labels):
    """Forgetting events (Toneva et al. 2019): correct-to-incorrect transitions between consecutive epochs.

    A sample never classified correctly in the window counts as most forgettable: the window's length,
    which no learned sample can reach.
    """
    correct = logits.argmax(axis=-1) == labels[None, :]
    events = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.float64)
    return np.where(correct.any(axis=0), events, float(len(correct)))


def label_rank(probs, logits, labels):
    """The rank of the label among the classes by the window's mean probability: 1 = the model's choice, 2 = its runner-up.
    A flipped label is mostly a class the image does not resemble; an ambiguous image's true label is mostly second."""
    mean_probs = probs.mean(axis=0)
    return 1.0 + (mean_probs > _true_class(mean_probs[None], labels)[0][:, None]).sum(axis=1)


def label_issue(probs, logits, labels):
    """1 where confident learning (Northcutt et al. 2021; cleanlab's `find_label_issues`) finds the label likely wrong
    from the window's mean probabilities, else 0. Out-of-sample probabilities (held-out records) are what it needs;
    a seen model that fitted its labels flags almost nothing."""
    from cleanlab.filter import find_label_issues

    mean_probs = probs[0] if len(probs) == 1 else probs.mean(axis=0)  # no N x C copy for one epoch (whole-set records)
    present = np.bincount(labels, minlength=mean_probs.shape[1]) > 0
    if present.sum() < 2:
        return np.zeros(len(labels))
    if not present.all():  # cleanlab wants every class it is given to occur in the labels
        columns = np.flatnonzero(present)
        labels = np.searchsorted(columns, labels)
        mean_probs = mean_probs[:, columns]
        mean_probs /= mean_probs.sum(axis=1, keepdims=True)
    return find_label_issues(labels, mean_probs, filter_by="prune_by_noise_rate", n_jobs=1).astype(np.float64)


for _fn, _harder, _ref in (
    (el2n, True, "Paul et al. 2021"),
    (grand, True, "Paul et al. 2021"),
    (loss, True, ""),
    (entropy, True, ""),
    (margin, False, ""),
    (forgetting, True, "Toneva et al. 2019"),
    (aum, False, "Pleiss et al. 2020"),
    (label_rank, True, ""),
):
    register_score(_fn.__name__, _fn, higher_is_harder=_harder, reference=_ref)
register_score("label_issue", label_issue, reference="Northcutt et al. 2021 (cleanlab)", per_sample=False)


def label_issue_flags(
    columns: dict[str, np.ndarray], score_column: str, max_probability: float | None = None, min_rank: float | None = None,
    *, flagged_only: bool = True,
) -> np.ndarray:
    """The samples most repeats flag as label issues, in the variant (held out or seen) of `score_column`; with
    `max_probability`, only those whose label the models give less than that probability (exp(-loss), the geometric
    mean over the score window): a flipped label gets almost none, an ambiguous true one a fair share; with `min_rank`,
    only those whose label the models rank at least that low (`label_rank`; 3: not even their runner-up).
    flagged_only=False: every sample under those limits, flagged or not."""
    variant = score_column.rpartition("_")[2]
    flags = columns[f"label_issue_{variant}"] >= 0.5 if flagged_only else np.ones(len(columns[f"loss_{variant}"]), dtype=bool)
    if max_probability is not None:
        flags &= np.exp(-columns[f"loss_{variant}"]) < max_probability
    if min_rank is not None:
        flags &= columns[f"label_rank_{variant}"] >= min_rank
    return flags


def misclassified_flags(columns: dict[str, np.ndarray], score_column: str) -> np.ndarray:
    """The samples the models of `score_column`'s variant misclassify: a negative margin (another class's logit above
    the label's at the window's last epoch, averaged over repeats). Held out, each class loses as many as its held-out
    error rate: few where the classes are told apart, more where they overlap."""
    return columns[f"margin_{score_column.rpartition('_')[2]}"] < 0


def cut_flags_of(columns: dict[str, np.ndarray], select: SelectParams) -> np.ndarray | None:
    """The samples `select.hard_cutoff` never keeps when it is auto or oversampled (the label issues, under their
    probability and rank limits; also oversampled_noisy) or misclassified; None for a fraction. With
    `label_issues_by: probability`, where the label issues reach `label_issue_rate` of the samples (noisy labels), every
    sample under those limits (with no probability limit, the flagged ones): cleanlab flags as many per class as it
    estimates are wrong, and under noise the flipped labels beyond that count are what a coreset's hardest strata keep
    (benchmarks/pilot_label_probability.yaml)."""
    if select.cutoff == "misclassified":
        return misclassified_flags(columns, select.score)
    if select.cutoff not in LABEL_ISSUE_CUTS:
        return None
    limits = (columns, select.score, select.label_issue_max_probability, select.label_issue_min_rank)
    flags = label_issue_flags(*limits)
    by_probability = select.label_issues_by == "probability" and select.label_issue_max_probability is not None
    if by_probability and len(flags) and flags.mean() >= select.label_issue_rate:
        return label_issue_flags(*limits, flagged_only=False)
    return flags


def oversampled_candidates_of(columns: dict[str, np.ndarray], select: SelectParams) -> np.ndarray | None:
    """With `select.hard_cutoff` oversampled (or oversampled_noisy): the samples the held-out models misclassify, which
    UNSEEN cuts too where auto's coreset keeps more than their share of them; None otherwise."""
    return misclassified_flags(columns, select.score) if select.cutoff in OVERSAMPLED_CUTS else None


def cut_flag_columns(select: SelectParams) -> list[str]:
    """The scores.parquet columns `cut_flags_of` and `oversampled_candidates_of` read for `select`."""
    variant = select.score.rpartition("_")[2]
    if select.cutoff == "misclassified":
        return [f"margin_{variant}"]
    if select.cutoff not in LABEL_ISSUE_CUTS:
        return []
    limit, rank = select.label_issue_max_probability, select.label_issue_min_rank
    return [
        f"label_issue_{variant}", *([f"loss_{variant}"] if limit is not None else []), *([f"label_rank_{variant}"] if rank is not None else []),
        *([f"margin_{variant}"] if select.cutoff in OVERSAMPLED_CUTS else []),
    ]


def difficulty(table_column: np.ndarray, column_name: str) -> np.ndarray:
    """A score column oriented so that higher = harder, whatever the score's own direction."""
    spec = resolve_score(re.sub(r"_(unseen|seen)$", "", column_name))
    return table_column if spec.higher_is_harder else -table_column
