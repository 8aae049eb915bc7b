"""Select knobs that may change with the prune ratio: a value, or a schedule {prune ratio: value}."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

Ratio = Annotated[float, Field(ge=0, lt=1)]
Tilt = Annotated[float, Field(ge=0, le=1)]
"""`select.coverage_tilt`: stratum quotas in proportion to stratum size**tilt (0: equal shares, 1: as the data)."""
Power = Annotated[float, Field(ge=0)]
FlagCut = Literal["auto", "misclassified", "oversampled", "oversampled_noisy"]
"""`select.hard_cutoff` kinds that never keep flagged samples: auto (the label issues), misclassified (every sample the
held-out models misclassify: as many of each class as its held-out error rate), oversampled (auto, unless auto's
UNSEEN coreset keeps a larger share of misclassified samples than the samples its cut left hold: then they are cut
too), or oversampled_noisy (oversampled where auto cut label issues, as it does with noisy labels; auto elsewhere)."""
LABEL_ISSUE_CUTS = ("auto", "oversampled", "oversampled_noisy")
"""The FlagCut kinds that cut the label issues."""
OVERSAMPLED_CUTS = ("oversampled", "oversampled_noisy")
"""The FlagCut kinds that may cut the misclassified samples too."""
Cutoff = Annotated[float, Field(ge=0, lt=1)] | FlagCut
"""`select.hard_cutoff`: the fraction of each class's hardest samples never kept, or a FlagCut."""


def at_prune_ratio(value: Any, prune_ratio: float, below: Any) -> Any:
    """A knob's value at `prune_ratio`: the value itself, or a schedule's entry with the largest prune ratio not above
    it (`below` under all of them)."""
    if not isinstance(value, dict):
        return value
    return next((value[r] for r in sorted(value, reverse=True) if r <= prune_ratio), below)
