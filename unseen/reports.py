"""Numbers and figures that describe a score distribution: how spread out it is, and what it looks like."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unseen.io import atomic_path


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


def score_histogram(values: np.ndarray, title: str, path: str | Path, bins: int = 50) -> Path:
    """A PNG histogram of one score column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    axis.hist(values, bins=bins, color="#3b6ea8")
    axis.set(title=title, xlabel="score", ylabel="samples")
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path
