"""A selection's result, the same for every method: which samples were kept, and the facts that decided it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Coreset:
    """One entry per input row; terms a method has no notion of are NaN (floats) or -1 / 0 (integers)."""

    selected: np.ndarray  # bool
    cut_as_hardest: np.ndarray  # bool: in the hardest `hard_cutoff` fraction of its class, never eligible
    region: np.ndarray  # int: k-means region within the class
    region_budget: np.ndarray  # int: how many the sample's region keeps
    class_budget: np.ndarray  # int: how many the sample's class keeps
    selection_rank: np.ndarray  # int: order of the pick within its class (-1 when not picked)
    importance_term: np.ndarray  # float: difficulty rank in [0, 1] at pick time (NaN when not picked)
    alignment_term: np.ndarray  # float: normalised MMD increase in [0, 1] at pick time
    diversity_term: np.ndarray  # float: kernel similarity to the nearest sample already kept
    class_mmd_after: np.ndarray  # float: MMD between class coreset and class target after the pick

    @classmethod
    def from_mask(cls, selected: np.ndarray, labels: np.ndarray) -> "Coreset":
        """A kept mask (a baseline's result) described like an UNSEEN coreset: only the class budgets are known."""
        n = len(labels)
        nan = np.full(n, np.nan, dtype=np.float32)
        per_class = np.bincount(labels[selected], minlength=int(labels.max()) + 1)
        return cls(
            selected=selected,
            cut_as_hardest=np.zeros(n, dtype=bool),
            region=np.full(n, -1, dtype=np.int16),
            region_budget=np.zeros(n, dtype=np.int32),
            class_budget=per_class[labels].astype(np.int32),
            selection_rank=np.full(n, -1, dtype=np.int32),
            importance_term=nan,
            alignment_term=nan,
            diversity_term=nan,
            class_mmd_after=nan,
        )

    def table_columns(self, *, sample_ids: np.ndarray, labels: np.ndarray, random_selected: np.ndarray, method: str,
                      joined_step: np.ndarray | None, score: np.ndarray) -> dict[str, np.ndarray]:
        """The columns of coreset.parquet (`unseen.tables.CORESET`); gain terms of unpicked samples become nulls."""
        masked = np.ma.masked_invalid
        return {
            "sample_id": sample_ids,
            "label": labels,
            "selected": self.selected,
            "random_selected": random_selected,
            "method": np.full(len(labels), method),
            "step": joined_step if joined_step is not None else np.where(self.selected, 1, -1),
            "score": score,
            "cut_as_hardest": self.cut_as_hardest,
            "region": self.region,
            "region_budget": self.region_budget,
            "class_budget": self.class_budget,
            "selection_rank": self.selection_rank,
            "importance_term": masked(self.importance_term),
            "alignment_term": masked(self.alignment_term),
            "diversity_term": masked(self.diversity_term),
            "class_mmd_after": masked(self.class_mmd_after),
        }
