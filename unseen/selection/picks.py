"""How samples are picked inside the UNSEEN cells (region, or region x difficulty stratum, with a quota each).

With an alignment or diversity weight, the greedy picks one sample at a time by the UNSEEN gain. With both at 0 the
gain is the importance alone and needs no greedy: each cell keeps its hardest samples (importance_weight > 0) or a
seeded random draw of them, at a small fraction of the greedy's cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TERMS = ("importance_term", "alignment_term", "diversity_term", "class_mmd_after")
"""The gain terms recorded at pick time, as Coreset fields."""


@dataclass(frozen=True)
class GainWeights:
    """The weights of the UNSEEN gain: importance_weight * rank - alignment_weight * MMD increase - diversity_weight * nearest."""

    importance_weight: float
    alignment_weight: float
    diversity_weight: float


def pick_in_cells(
    z: np.ndarray, target_rows: np.ndarray, rank: np.ndarray, cell: np.ndarray, quotas: np.ndarray, available: np.ndarray,
    weights: GainWeights, preselected: np.ndarray, seed: int,
) -> dict[str, np.ndarray]:
    """Pick sum(quotas) rows inside the cell quotas, after any preselected rows, toward the mean of `target_rows`:
    the pick order and the recorded terms."""
    target_sum = target_rows.sum(axis=0, dtype=np.float64)  # exact: grid values (unseen.selection.kernels)
    if weights.alignment_weight or weights.diversity_weight:
        return _greedy(z, target_sum, len(target_rows), rank, cell, quotas, available, weights, preselected)
    target = target_sum / len(target_rows)
    return _draw(z, target, rank, cell, quotas, available & ~preselected, weights.importance_weight, preselected, seed)


def _draw(
    z: np.ndarray, target: np.ndarray, rank: np.ndarray, cell: np.ndarray, quotas: np.ndarray, available: np.ndarray,
    importance_weight: float, preselected: np.ndarray, seed: int,
) -> dict[str, np.ndarray]:
    """Each cell's quota from its available rows, in a seeded random order, hardest first when importance counts;
    the alignment and diversity terms are off, so they are not recorded (NaN)."""
    queue = np.random.default_rng(seed).permutation(np.flatnonzero(available))
    if importance_weight > 0:
        queue = queue[np.argsort(-rank[queue], kind="stable")]
    by_cell = queue[np.argsort(cell[queue], kind="stable")]
    place = np.arange(len(by_cell)) - np.searchsorted(cell[by_cell], cell[by_cell])
    kept = np.zeros(len(z), dtype=bool)
    kept[by_cell[place < quotas[cell[by_cell]]]] = True
    picks = queue[kept[queue]]
    if len(picks) != quotas.sum():
        raise ValueError(f"the cells hold {len(picks)} available rows for quotas of {int(quotas.sum())}")
    order = np.full(len(z), -1, dtype=np.int32)
    order[picks] = np.arange(len(picks))
    out = {name: np.full(len(z), np.nan, dtype=np.float32) for name in TERMS}
    out["importance_term"][picks] = rank[picks]
    out["class_mmd_after"][picks] = _mmd_after(z, target, preselected, picks)
    return {"order": order, **out}


BLOCK = 64
"""Rows per similarity matvec in the greedy: few enough that OpenBLAS keeps each matvec on one thread (no thread
start-up per pick). The products are exact on the kernel features' grid, so no blocking or order changes a bit."""

PILE_UP = 64
"""Picks the greedy leaves, masked, among its open rows before it compacts them."""


def _greedy(
    z: np.ndarray, target_sum: np.ndarray, target_count: int, rank: np.ndarray, region: np.ndarray, quotas: np.ndarray,
    available: np.ndarray, weights: GainWeights, preselected: np.ndarray,
) -> dict[str, np.ndarray]:
    """Pick sum(quotas) rows one by one by the UNSEEN gain, within region quotas, after any preselected rows. Every
    product is of grid values (unseen.selection.kernels) and exact, and the target enters as its exact sum, divided
    after the product: each gain, and so each pick, is the same on every machine."""
    n, steps, count = len(z), int(quotas.sum()), int(preselected.sum())
    picked_dot = z @ z[preselected].sum(axis=0, dtype=np.float64) if preselected.any() else np.zeros(n)
    nearest = (z @ z[preselected].T).max(axis=1) if preselected.any() else np.zeros(n)
    norms = (z**2).sum(axis=1).astype(picked_dot.dtype)  # the dtype the gain's sum casts them to
    remaining = quotas.copy()
    picks, alignment_at, diversity_at = np.empty(steps, dtype=np.intp), np.empty(steps), np.empty(steps)
    # the open rows' index, norm, target dot, picked-sum dot, nearest similarity, importance and region, in index order: a
    # step is one matvec and a few passes over them, each row's arithmetic the same as over all rows; compacted again
    # when a region closes or PILE_UP picks pile up
    columns = [np.arange(n), norms, (z @ target_sum) / target_count, picked_dot, nearest, weights.importance_weight * rank, region]
    buffer = np.zeros((-(-n // BLOCK) * BLOCK, z.shape[1]), dtype=z.dtype)
    columns, blocks = _compact(z, columns, available & ~preselected & (remaining[region] > 0), buffer)
    dead, piled = np.empty(PILE_UP, dtype=np.intp), 0  # positions among the open rows picked since the last compaction
    for step in range(steps):
        rows, norms, toward_target, picked_dot, nearest, importance, regions = columns
        alignment, gain = _gain(norms, picked_dot, toward_target, nearest, importance, 2 * (count + step + 1), dead[:piled], weights)
        best = int(np.argmax(gain))
        picks[step] = pick = rows[best]
        alignment_at[step], diversity_at[step] = alignment[best], min(max(float(nearest[best]), 0.0), 1.0)
        similarity = (blocks @ z[pick]).reshape(-1)[: len(rows)]
        picked_dot += similarity
        np.maximum(nearest, similarity, out=nearest)
        dead[piled], piled = best, piled + 1
        remaining[region[pick]] -= 1
        if remaining[region[pick]] == 0 or piled == min(PILE_UP, len(rows)):  # (all rows picked: none left open)
            keep = regions != region[pick] if remaining[region[pick]] == 0 else np.ones(len(rows), dtype=bool)
            keep[dead[:piled]] = False
            columns, blocks = _compact(z, columns, keep, buffer)
            piled = 0
    order = np.full(n, -1, dtype=np.int32)
    order[picks] = np.arange(steps)
    out = {name: np.full(n, np.nan, dtype=np.float32) for name in TERMS}
    out["importance_term"][picks], out["alignment_term"][picks], out["diversity_term"][picks] = rank[picks], alignment_at, diversity_at
    out["class_mmd_after"][picks] = _mmd_after(z, target_sum / target_count, preselected, picks)
    return {"order": order, **out}


def _compact(z: np.ndarray, columns: list[np.ndarray], keep: np.ndarray, buffer: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The kept entries of the greedy's columns, and their rows of z copied into `buffer` as a (blocks, BLOCK, dim) stack."""
    kept = np.flatnonzero(keep)
    columns = [column[kept] for column in columns]
    np.take(z, columns[0], axis=0, out=buffer[: len(kept)], mode="clip")  # "clip": the rows are valid, and out is not copied
    return columns, buffer[: -(-len(kept) // BLOCK) * BLOCK].reshape(-1, BLOCK, z.shape[1])


def _gain(
    norms: np.ndarray, picked_dot: np.ndarray, toward_target: np.ndarray, nearest: np.ndarray, importance: np.ndarray, scale: int,
    dead: np.ndarray, weights: GainWeights,
) -> tuple[np.ndarray, np.ndarray]:
    """The alignment term and the gain of every open row; dead rows (picked, not yet compacted away) stay out of min, max and argmax."""
    # (n+1)^2 * |(S + z_i)/(n+1) - mu|^2 = |z_i|^2 + 2 z_i.S - 2(n+1) z_i.mu + const
    mmd_growth = norms + 2 * picked_dot - scale * toward_target
    mmd_growth[dead] = np.inf
    low = mmd_growth.min()
    mmd_growth[dead] = -np.inf
    high = mmd_growth.max()
    alignment = (mmd_growth - low) / (high - low) if high > low else np.zeros(len(mmd_growth))
    alignment[dead] = 0.0
    gain = importance - weights.alignment_weight * alignment - weights.diversity_weight * nearest.clip(0.0, 1.0)
    gain[dead] = -np.inf
    return alignment, gain


def _mmd_after(z: np.ndarray, target: np.ndarray, preselected: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """The MMD between the class coreset and its target after each pick, from the running sum in float64 (as picked)."""
    sums = np.cumsum(np.concatenate([z[preselected].sum(axis=0, keepdims=True).astype(np.float64), z[picks]]), axis=0)[1:]
    gap = sums / (np.arange(len(picks)) + int(preselected.sum()) + 1)[:, None] - target
    return np.sqrt(np.maximum(np.vecdot(gap, gap), 0.0))  # vecdot: the same BLAS dot as gap @ gap, row by row
