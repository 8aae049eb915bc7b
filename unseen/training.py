"""One training loop and one batched inference loop, on CUDA when there is one and on the CPU otherwise."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_info

from unseen.config import ProbeRecipe, TrainRecipe
from unseen.data import ImageDataset, Split
from unseen.images import Images, batches_in_order, image_batches
from unseen.models import Classifier, build_model


class Stopped(KeyboardInterrupt):
    """Raised inside training and inference once `request_stop()` was called (Ctrl-C, SIGTERM): the model is abandoned
    at the next batch, in every thread of the process, so a stopped run ends in seconds, not when its epochs are done."""


_STOP = threading.Event()


def request_stop() -> None:
    """Ask every training and inference loop of this process to stop at its next batch."""
    _STOP.set()


def check_stop() -> None:
    if _STOP.is_set():
        raise Stopped("stop requested")


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_kernels() -> dict[str, str | None]:
    """The CPU kernels torch and numpy's OpenBLAS picked for this machine: a run is bit-identical run after run, and
    across machines only where these match (docs/operations.md, "Determinism")."""
    blas = next((f"OpenBLAS {info['architecture']}" for info in threadpool_info() if info["internal_api"] == "openblas"), None)
    return {"cpu_kernels": torch.backends.cpu.get_cpu_capability(), "blas_kernels": blas}


def _autocast(device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@dataclass(frozen=True)
class Normalizer:
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def for_dataset(cls, dataset: ImageDataset, device: torch.device) -> "Normalizer":
        shape = (1, -1, 1, 1)
        return cls(torch.tensor(dataset.mean, device=device).view(shape), torch.tensor(dataset.std, device=device).view(shape))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float images in channels-last layout, which convolutions run fastest on (CPU and CUDA)."""
        return ((images.float() / 255.0 - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


def crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Per-sample random crop (zero padding) and horizontal flip, the standard CIFAR augmentation."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator).to(images.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device).view(n, 1, 1)
    rows = (torch.arange(h, device=images.device).view(1, h, 1) + dy).expand(n, h, w)
    cols = torch.arange(w, device=images.device).view(1, 1, w).expand(n, h, w)
    cols = torch.where(flip, w - 1 - cols, cols) + dx
    batch = torch.arange(n, device=images.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


EpochCallback = Callable[[int, Classifier, dict[str, float]], None]
BatchCallback = Callable[[int, torch.Tensor], None]


def lr_scheduler(optimizer: torch.optim.Optimizer, recipe: TrainRecipe | ProbeRecipe, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per batch. one_cycle: short warm-up to `lr`, linear decay (converges in few epochs on a CPU);
    cosine: from `lr` to 0 over the run, the standard ResNet-18 recipe of CCS and UNSEEN."""
    if recipe.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total_steps, pct_start=0.15, anneal_strategy="linear")


def train_model(
    dataset: ImageDataset,
    split: Split,
    recipe: TrainRecipe,
    *,
    seed: int,
    device: torch.device | None = None,
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
) -> Classifier:
    """Train `recipe.model` from scratch on `split`; `on_epoch(epoch, model, stats)` runs after every epoch (1-based),
    `on_batch(epoch, label_probability)` after each batch's forward pass, in training order, before the model learns it."""
    device = device or pick_device()
    model = build_model(recipe.model, dataset.num_classes, dataset.image_shape, seed).to(device, memory_format=torch.channels_last)
    normalize = Normalizer.for_dataset(dataset, device)
    images = split.images.to(device) if isinstance(split.images, torch.Tensor) else split.images
    labels = split.labels.to(device)
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(recipe.batch_size, len(split))
    steps_per_epoch = math.ceil(len(split) / batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.momentum > 0
    )
    scheduler = lr_scheduler(optimizer, recipe, recipe.epochs * steps_per_epoch)
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        started, loss_sum, correct = time.perf_counter(), torch.zeros((), device=device), torch.zeros((), device=device)
        order = torch.randperm(len(split), generator=generator).to(device)
        batches = [order[step * batch_size : (step + 1) * batch_size] for step in range(steps_per_epoch)]
        for x, batch in zip(image_batches(images, batches), batches):
            check_stop()
            x = x.to(device, non_blocking=True)
            if recipe.augment == "crop_flip":
                x = crop_flip(x, generator)
            with _autocast(device):
                logits = model(normalize(x))
                loss = F.cross_entropy(logits, labels[batch])
            if on_batch is not None:
                on_batch(epoch, torch.softmax(logits.detach().float(), 1).gather(1, labels[batch, None])[:, 0])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(batch)
            correct += (logits.argmax(1) == labels[batch]).sum()
        if on_epoch is not None:
            stats = {"train_loss": float(loss_sum) / len(split), "train_accuracy": float(correct) / len(split)}
            on_epoch(epoch, model, {**stats, "epoch_seconds": time.perf_counter() - started})
    return model.eval()


@torch.inference_mode()
def predict(
    model: Classifier, dataset: ImageDataset, images: Images, *, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, embeddings) for uint8 images (in memory or streamed) in one batched pass, float32 on the CPU; the model
    is left as it was."""
    device = next(model.parameters()).device
    normalize = Normalizer.for_dataset(dataset, device)
    was_training = model.training
    model.eval()
    logits = embeddings = torch.empty(0)
    start = 0
    for batch in batches_in_order(images, batch_size):
        check_stop()
        x = normalize(batch.to(device, non_blocking=True))
        with _autocast(device):
            embedding = model.embed(x)
            batch_logits = model.head(embedding)
        if start == 0:  # filled in place: no list of chunks and concatenated copy (large streamed collections)
            logits, embeddings = torch.empty(len(images), batch_logits.shape[1]), torch.empty(len(images), embedding.shape[1])
        logits[start : start + len(batch)] = batch_logits.float().cpu()
        embeddings[start : start + len(batch)] = embedding.float().cpu()
        start += len(batch)
    model.train(was_training)
    return logits, embeddings


def predict_logits(model: Classifier, dataset: ImageDataset, images: Images, *, batch_size: int = 1024) -> torch.Tensor:
    return predict(model, dataset, images, batch_size=batch_size)[0]


def predict_embeddings(model: Classifier, dataset: ImageDataset, images: Images, *, batch_size: int = 1024) -> torch.Tensor:
    return predict(model, dataset, images, batch_size=batch_size)[1]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels.to(logits.device)).float().mean())
