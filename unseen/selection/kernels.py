"""The Gaussian kernel behind alignment and diversity, approximated by random Fourier features (nothing N x N).

The features are computed in float64 and rounded onto a power-of-two grid coarse enough that any dot product of two
of them is an exact float32 sum: the greedy's matrix products then give the same bits under every BLAS kernel and
thread count (AVX2 or AVX512, any CPU), so a coreset does not depend on the machine that selected it.
"""

from __future__ import annotations

import math

import numpy as np

EXACT_UNITS = 2**24
"""float32 holds every integer up to 2**24: sums of products of grid values stay exact while they total fewer grid
units than this, whatever order a BLAS kernel adds them in."""


def median_bandwidth(x: np.ndarray, rng: np.random.Generator, sample: int = 1000) -> float:
    """The median pairwise distance on a random sample: the usual Gaussian-kernel bandwidth rule."""
    picked = x[rng.choice(len(x), size=min(sample, len(x)), replace=False)].astype(np.float64)
    sq = (picked**2).sum(1)
    distances = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * picked @ picked.T, 0))
    median = float(np.median(distances[np.triu_indices(len(picked), k=1)])) if len(picked) > 1 else 0.0
    return median if median > 0 else 1.0


def standardize(features: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std, computed in chunks (no second copy of a large feature matrix)."""
    total = np.zeros(features.shape[1], dtype=np.float64)
    squares = np.zeros(features.shape[1], dtype=np.float64)
    for start in range(0, len(features), chunk):
        block = features[start : start + chunk].astype(np.float64)
        total += block.sum(0)
        squares += (block**2).sum(0)
    mean = total / len(features)
    std = np.sqrt(np.maximum(squares / len(features) - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def fourier_features(
    x: np.ndarray,
    dim: int,
    bandwidth: float,
    rng: np.random.Generator,
    *,
    mean: np.ndarray | float = 0.0,
    std: np.ndarray | float = 1.0,
    chunk: int = 65536,
) -> np.ndarray:
    """Random Fourier features (Rahimi & Recht 2007) of (x - mean) / std, built chunk by chunk:
    z(a).z(b) approximates exp(-|a-b|^2 / (2 bandwidth^2))."""
    feature_map = _fourier_map(x.shape[1], dim, bandwidth, rng)
    out = np.empty((len(x), dim), dtype=np.float32)
    for start in range(0, len(x), chunk):
        out[start : start + chunk] = feature_map((x[start : start + chunk] - mean) / std)
    return out


def fourier_means(
    x: np.ndarray, groups: dict[str, np.ndarray], dim: int, bandwidth: float, rng: np.random.Generator, chunk: int = 8192
) -> dict[str, np.ndarray]:
    """The mean random Fourier feature vector of each group (a mask over x's rows): all an MMD needs, summed chunk by
    chunk, so the (N, dim) matrix is never built."""
    feature_map = _fourier_map(x.shape[1], dim, bandwidth, rng)
    sums = {name: np.zeros(dim, dtype=np.float64) for name in groups}
    for start in range(0, len(x), chunk):
        z = feature_map(x[start : start + chunk])
        for name, mask in groups.items():
            sums[name] += z[mask[start : start + chunk]].sum(0, dtype=np.float64)
    return {name: sums[name] / max(int(mask.sum()), 1) for name, mask in groups.items()}


def grid_step(dim: int) -> float:
    """The finest power of two on which `dim` Fourier features (each within sqrt(2/dim) of 0) have exact float32 dot
    products: at most sqrt(EXACT_UNITS / dim) steps from 0 each, so a dot product totals at most EXACT_UNITS units."""
    mantissa, exponent = math.frexp(math.sqrt(2.0 / dim) / math.isqrt(EXACT_UNITS // dim))
    return math.ldexp(1.0, exponent if mantissa > 0.5 else exponent - 1)


def _fourier_map(in_dim: int, dim: int, bandwidth: float, rng: np.random.Generator):
    """The random map behind the Fourier features: weights, then phases, drawn from `rng` in that order; computed in
    float64, returned on the exact grid (float32)."""
    weights = rng.normal(scale=1.0 / bandwidth, size=(in_dim, dim))
    phase = rng.uniform(0, 2 * np.pi, size=dim)
    step = grid_step(dim)
    units_per_amplitude = np.sqrt(2.0 / dim) / step

    def feature_map(block: np.ndarray) -> np.ndarray:
        units = np.asarray(block, np.float64) @ weights
        units += phase
        np.cos(units, out=units)
        units *= units_per_amplitude
        np.rint(units, out=units)
        return units.astype(np.float32) * np.float32(step)  # whole grid units times a power of two: exact

    return feature_map


def kernel_features(features: np.ndarray, dim: int, rng: np.random.Generator, chunk: int = 65536) -> np.ndarray:
    """Random Fourier features of the standardized features, with the median bandwidth of a 2,000-sample draw."""
    mean, std = standardize(features, chunk)
    sample = (features[rng.choice(len(features), size=min(2000, len(features)), replace=False)] - mean) / std
    bandwidth = median_bandwidth(sample, rng)
    return fourier_features(features, dim, bandwidth, rng, mean=mean, std=std, chunk=chunk)


def mmd(a: np.ndarray, b: np.ndarray, *, fourier_dim: int = 512, seed: int = 0) -> float:
    """MMD between two feature sets (Gaussian kernel, median bandwidth of their union, random Fourier features)."""
    rng = np.random.default_rng(seed)
    both = np.concatenate([a, b]).astype(np.float32)
    first = np.arange(len(both)) < len(a)
    means = fourier_means(both, {"a": first, "b": ~first}, fourier_dim, median_bandwidth(both, rng), rng)
    return float(np.linalg.norm(means["a"] - means["b"]))
