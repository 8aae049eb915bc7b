"""Probe scoring models: a linear layer or a small MLP trained on the embeddings of features.parquet.

A probe sees the same folds as a CNN fold model and records the same per-epoch outputs (logits and embedding
norms), so every score, seen and held out, comes out of it in the same table, for a small fraction of a CNN's cost.
Its inputs are standardised with the mean and spread of the samples it trains on, so nothing of a held-out sample
reaches it (beyond what the embedding extractor itself saw: see docs/method.md on leakage).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unseen.config import ProbeRecipe
from unseen.models import seeded_init
from unseen.training import EpochCallback, check_stop, lr_scheduler


class Probe(nn.Module):
    """`linear`: one layer on the embedding; `mlp`: one hidden ReLU layer. `embed` is what the head sees. The inputs are
    standardised with the moments of the rows it trains on, kept as buffers, so a saved probe scores new rows as it
    scored its own."""

    def __init__(self, recipe: ProbeRecipe, in_dim: int, num_classes: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim) if mean is None else mean)
        self.register_buffer("std", torch.ones(in_dim) if std is None else std)
        self.hidden = nn.Sequential(nn.Linear(in_dim, recipe.hidden), nn.ReLU()) if recipe.model == "mlp" else nn.Identity()
        self.head = nn.Linear(recipe.hidden if recipe.model == "mlp" else in_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _moments(x: torch.Tensor, rows: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of `x[rows]`, accumulated in float64 over chunks: no copy of the rows."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, len(rows), chunk):
        part = x[rows[start : start + chunk]].double()
        total += part.sum(0)
        squares += (part * part).sum(0)
    mean = total / len(rows)
    std = (squares / len(rows) - mean * mean).clamp_min(0).sqrt()
    return mean.float(), std.float().clamp_min(1e-6)


@torch.inference_mode()
def probe_outputs(probe: Probe, x: torch.Tensor, rows: torch.Tensor, logits: np.ndarray, norms: np.ndarray) -> None:
    """The probe's logits and embedding norms of `x[rows]`, written into `logits` (n, C) and `norms` (n,)."""
    device = next(probe.parameters()).device
    for start in range(0, len(rows), 8192):
        embedding = probe.embed(x[rows[start : start + 8192]].to(device))
        logits[start : start + 8192] = probe.head(embedding).float().cpu().numpy()
        norms[start : start + 8192] = embedding.norm(dim=1).float().cpu().numpy()


def train_probe(
    embeddings: np.ndarray, labels: np.ndarray, trained_on: np.ndarray, scored: np.ndarray, recipe: ProbeRecipe, *,
    num_classes: int, seed: int, device: torch.device, on_epoch: EpochCallback | None = None, window: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Train a probe on the `trained_on` rows and record, after each epoch of `window` (default `recipe.score_epochs`), the logits
    (E, n, C) and embedding norms (E, n) of the `scored` rows. Returns them with the train and record seconds.
    Batches are gathered and standardised one at a time, so the embeddings are never copied whole."""
    x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    train_rows, scored_rows = torch.from_numpy(np.flatnonzero(trained_on)), torch.from_numpy(np.flatnonzero(scored))
    mean, std = _moments(x, train_rows)
    y = torch.as_tensor(labels, dtype=torch.int64)
    with seeded_init(seed):
        probe = Probe(recipe, x.shape[1], num_classes, mean, std).to(device)
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(recipe.batch_size, len(train_rows))
    steps = math.ceil(len(train_rows) / batch_size)
    optimizer = torch.optim.SGD(probe.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=True)
    scheduler = lr_scheduler(optimizer, recipe, recipe.epochs * steps)
    first, last = window or recipe.score_epochs
    logits = np.empty((last - first + 1, len(scored_rows), num_classes), dtype=np.float32)
    norms = np.empty((last - first + 1, len(scored_rows)), dtype=np.float32)
    seconds = {"train": 0.0, "record": 0.0}
    for epoch in range(1, recipe.epochs + 1):
        started, loss_sum, correct = time.perf_counter(), torch.zeros(()), torch.zeros((), dtype=torch.int64)
        order = train_rows[torch.randperm(len(train_rows), generator=generator)]
        for step in range(steps):
            check_stop()
            batch = order[step * batch_size : (step + 1) * batch_size]
            out = probe(x[batch].to(device))
            target = y[batch].to(device)
            loss = F.cross_entropy(out, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach().cpu() * len(batch)
            correct += (out.argmax(1) == target).sum().cpu()
        stats = {"train_loss": float(loss_sum) / len(train_rows), "train_accuracy": int(correct) / len(train_rows), "epoch_seconds": time.perf_counter() - started}
        seconds["train"] += stats["epoch_seconds"]
        if first <= epoch <= last:
            started = time.perf_counter()
            probe_outputs(probe, x, scored_rows, logits[epoch - first], norms[epoch - first])
            seconds["record"] += time.perf_counter() - started
            stats["scored_accuracy"] = float((logits[epoch - first].argmax(1) == labels[scored]).mean())
        if on_epoch is not None:
            on_epoch(epoch, probe, stats)
    return logits, norms, seconds["train"], seconds["record"]
