"""Re-pruning a collection that grew: whether the scoring models of an earlier run may score the new samples (they
never saw them, so each of them scores them as held out), or whether the run must start from scratch, and why.

A finished scores stage leaves a `ScoringState` in its cache folder: the fold models' records and weights, the
folder of the embeddings they scored, and the recipe they were made with. `plan_increment` compares the collection
of this run with it; the tasks follow the plan and say which they did.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from unseen.config import IncrementParams
from unseen.io import write_json
from unseen.tables import positions_of

STATE_FILE = "state.json"


@dataclass(frozen=True)
class ScoringState:
    """What a finished scores stage left in `folder` for later runs."""

    folder: Path
    recipe: str  # `Params.recipe_hash()` of the run that trained the fold models
    features_folder: Path  # the embeddings and extractor those models scored with (stored relative to `folder`)
    trained_on: int  # train samples of the collection the fold models were partitioned from
    train_size: int  # train samples of the collection the records cover (their training masks' length)
    weights: bool  # the fold models kept their weights (`increment.enabled`)
    incremental: bool = False  # its records were extended from an earlier run's, not made by models trained here

    def write(self) -> Path:
        payload = {
            "recipe": self.recipe, "features_folder": os.path.relpath(self.features_folder, self.folder), "trained_on": self.trained_on,
            "train_size": self.train_size, "weights": self.weights, "incremental": self.incremental,
        }
        return write_json(self.folder / STATE_FILE, payload)

    @classmethod
    def read(cls, folder: str | Path) -> "ScoringState | None":
        """The state in `folder`, or None when there is none (a scores stage that never finished there)."""
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            return None
        payload = json.loads(path.read_text())
        return cls(Path(folder), payload["recipe"], Path(os.path.normpath(Path(folder) / payload["features_folder"])), int(payload["trained_on"]),
                   int(payload["train_size"]), bool(payload["weights"]), bool(payload["incremental"]))


@dataclass(frozen=True)
class IncrementPlan:
    """`incremental`: the state's fold models score the `new_ids` (none when the collection is unchanged) and every other
    sample keeps its scores; `from_scratch`: every model is trained again, for `reason`."""

    mode: Literal["incremental", "from_scratch"]
    reason: str
    state: ScoringState | None = None
    new_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def incremental(self) -> bool:
        return self.mode == "incremental"

    def describe(self) -> str:
        if not self.incremental:
            return f"scoring from scratch: {self.reason}"
        if len(self.new_ids) == 0:
            return "collection unchanged since the scoring models were trained: every sample keeps its scores"
        return f"incremental: {len(self.new_ids)} new samples scored by the cached fold models, which never saw them ({self.reason})"


def _first(ids: np.ndarray) -> int:
    return int(np.sort(ids)[0])


def plan_increment(
    state: ScoringState | None, *, recipe: str, policy: IncrementParams, extractor: str, sample_ids: np.ndarray, labels: np.ndarray,
    state_ids: np.ndarray | None = None, state_labels: np.ndarray | None = None,
) -> IncrementPlan:
    """Whether this run's collection (`sample_ids`, `labels`: the train split) may be scored incrementally from `state`
    (whose train split was `state_ids`, `state_labels`), and why not when it may not."""
    if not policy.enabled:
        return IncrementPlan("from_scratch", "increment.enabled is false")
    if state is None or state_ids is None or state_labels is None:
        return IncrementPlan("from_scratch", "no earlier scoring models in this outputs folder")
    if state.recipe != recipe:
        return IncrementPlan("from_scratch", "params other than the data's size changed since the scoring models were trained")
    if not state.weights:
        return IncrementPlan("from_scratch", "the scoring models kept no weights (they ran with increment.enabled false)")
    gone = np.setdiff1d(state_ids, sample_ids)
    if len(gone):
        return IncrementPlan("from_scratch", f"{len(gone)} samples left the collection (first sample_id {_first(gone)})")
    shared = np.isin(sample_ids, state_ids)
    relabelled = sample_ids[shared][labels[shared] != state_labels[positions_of(state_ids, sample_ids[shared], 'the earlier collection')]]
    if len(relabelled):
        return IncrementPlan("from_scratch", f"{len(relabelled)} labels changed (first sample_id {_first(relabelled)})")
    new_ids = sample_ids[~shared]
    if len(new_ids) and extractor == "pixels":
        return IncrementPlan("from_scratch", "features.extractor=pixels fits its PCA on the whole collection")
    growth = (len(sample_ids) - state.trained_on) / state.trained_on
    if growth > policy.max_growth:
        return IncrementPlan(
            "from_scratch",
            f"the collection grew by {growth:.0%} since the fold models were trained on {state.trained_on} samples "
            f"(increment.max_growth {policy.max_growth:.0%})",
        )
    return IncrementPlan("incremental", f"{growth:.0%} growth since the fold models trained, within increment.max_growth {policy.max_growth:.0%}",
                         state, new_ids)


@dataclass(frozen=True)
class SelectionPlan:
    """`keep`: the earlier coreset's picks (`kept`, over this run's rows) stay and only the `added` samples are selected;
    `reselect`: the whole grown collection is selected again, for `reason`."""

    mode: Literal["keep", "reselect"]
    reason: str
    kept: np.ndarray | None = None
    added: np.ndarray | None = None

    @property
    def keeps(self) -> bool:
        return self.mode == "keep"

    def describe(self) -> str:
        if not self.keeps:
            return f"selecting the whole collection: {self.reason}"
        return f"the earlier coreset's {int(self.kept.sum())} samples kept, the {int(self.added.sum())} new samples selected among themselves ({self.reason})"


def plan_selection(
    policy: IncrementParams, *, recipe: str, sample_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray, budget: int,
    before_recipe: str | None = None, before_ids: np.ndarray | None = None, before_selected: np.ndarray | None = None,
    before_scores: np.ndarray | None = None,
) -> SelectionPlan:
    """Whether this run (`sample_ids`, `labels`, their `select.score` values `scores`, coreset size `budget`) may keep the coreset
    selected before in its outputs folder (`before_*`, made under `before_recipe`) and select only the samples added
    since. Only while the earlier samples keep the very scores that coreset was selected by: a collection scored from
    scratch again is selected again."""
    if policy.selection == "reselect":
        return SelectionPlan("reselect", "increment.selection is reselect")
    if before_ids is None or before_selected is None or before_scores is None:
        return SelectionPlan("reselect", "no earlier coreset in this outputs folder")
    if before_recipe is None:
        return SelectionPlan("reselect", "the earlier coreset records no params recipe (an older version selected it)")
    if before_recipe != recipe:
        return SelectionPlan("reselect", "params other than the data's size changed since the earlier coreset was selected")
    present = np.isin(before_ids, sample_ids)
    if not present.all():
        return SelectionPlan("reselect", f"{int((~present).sum())} samples left the collection (first sample_id {_first(before_ids[~present])})")
    added = ~np.isin(sample_ids, before_ids)
    if not added.any():
        return SelectionPlan("reselect", "no samples were added since the earlier coreset")
    earlier_scores = scores[positions_of(sample_ids, before_ids, 'this collection')].astype(np.float32)  # as coreset.parquet stores them
    if not np.array_equal(earlier_scores, before_scores.astype(np.float32), equal_nan=True):
        return SelectionPlan("reselect", "the earlier samples were scored again since their coreset was selected")
    kept = np.isin(sample_ids, before_ids[before_selected])
    places, classes = budget - int(kept.sum()), len(np.unique(labels[added]))
    if not classes <= places <= int(added.sum()):
        return SelectionPlan("reselect", f"a coreset of {budget} leaves {places} places beside the earlier {int(kept.sum())} picks; selecting "
                             f"among the {int(added.sum())} new samples needs between {classes} (one per class among them) and {int(added.sum())}")
    return SelectionPlan("keep", "the earlier samples kept the scores it was selected by; increment.selection keep", kept, added)
