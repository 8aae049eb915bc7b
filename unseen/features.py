"""Embeddings of every train and test sample, from the extractor named in params."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import nn
from torchvision import models as tv_models

from unseen.config import FeaturesParams, InputError, Params, TrainRecipe
from unseen.data import ImageDataset, Split, stratified_subset
from unseen.images import batches_in_order
from unseen.models import load_model, save_model
from unseen.tables import FEATURES, file_meta, finite_or_raise, list_column, positions_of, read_table, same_ids_or_raise
from unseen.training import EpochCallback, pick_device, predict_embeddings, train_model


class FeatureError(InputError):
    """A feature extractor that cannot be built here; the message says how to make it available."""


PCA_FIT_VALUES = 10**8
"""The pixel PCA fits on at most this many train pixel values (400 MB as float32): all of Fashion-MNIST, a seeded
sample of a large image collection."""


def _flat_pixels(images: torch.Tensor) -> np.ndarray:
    return images.flatten(1).numpy().astype(np.float32) / 255.0


def pixel_features(dataset: ImageDataset, components: int, seed: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flattened pixels in [0, 1], reduced by a PCA fitted on the train split (or a seeded sample of it), batch by batch."""
    train = dataset.train
    fit_count = min(len(train), max(components, PCA_FIT_VALUES // int(np.prod(dataset.image_shape))))
    fitted = train if fit_count == len(train) else train.take(np.sort(np.random.default_rng(seed).choice(len(train), fit_count, replace=False)))
    sample = np.concatenate([_flat_pixels(batch) for batch in batches_in_order(fitted.images, batch_size)])
    pca = PCA(n_components=min(components, *sample.shape), svd_solver="randomized", random_state=seed).fit(sample)
    del sample
    return tuple(  # type: ignore[return-value]
        np.concatenate([pca.transform(_flat_pixels(batch)).astype(np.float32) for batch in batches_in_order(split.images, batch_size)])
        for split in (dataset.train, dataset.test)
    )


def _proxy_size(params: FeaturesParams, train_size: int) -> int:
    return max(1, round(params.proxy_fraction * train_size))


def proxy_recipe(params: FeaturesParams, train_size: int) -> TrainRecipe:
    """The proxy's recipe for a train split of `train_size` samples: `proxy.epochs`, or as many more whole epochs as
    `proxy_min_steps` optimizer steps take, so that a small split still gets an extractor trained as long (in steps)."""
    size = _proxy_size(params, train_size)
    steps_per_epoch = math.ceil(size / min(params.proxy.batch_size, size))
    return params.proxy.model_copy(update={"epochs": max(params.proxy.epochs, math.ceil(params.proxy_min_steps / steps_per_epoch))})


def proxy_epochs_at_most(params: FeaturesParams, train_size: int) -> int:
    """The most epochs the proxy trains: its recipe's, plus `proxy_noisy_epochs` where the labels look noisy and that
    is longer (a proxy already as long is not trained anew)."""
    epochs = proxy_recipe(params, train_size).epochs
    return epochs + (params.proxy_noisy_epochs if params.proxy_noisy_epochs > epochs else 0)


def noisy_label_share(first_epoch_label_probability: np.ndarray, params: FeaturesParams) -> float:
    """The share of the proxy's first epoch, in its second half, whose label the proxy gave under
    `proxy_noisy_probability` just before training on them: held-out predictions (each sample is scored before the
    model learns it) from a model past its first steps. Flipped labels raise it; curated labels keep it low."""
    second_half = first_epoch_label_probability[len(first_epoch_label_probability) // 2 :]
    return float(np.mean(second_half < params.proxy_noisy_probability)) if len(second_half) else 0.0


NOISY_SHARE_META = "proxy_noisy_label_share"
"""features.parquet's metadata key for the proxy's `noisy_label_share`, where the proxy's check ran."""


def recorded_noisy_label_share(path: str | Path) -> float | None:
    """The proxy's first-epoch noisy-label share recorded with the features table at `path`; None where the proxy's
    check did not run (another extractor, or `proxy_noisy_epochs` off); an incremental run keeps its extractor's."""
    value = file_meta(path).get(NOISY_SHARE_META)
    return None if value is None else float(value)


def proxy_features(
    dataset: ImageDataset, params: FeaturesParams, seed: int, device: torch.device, on_epoch: EpochCallback | None, keep_extractor: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate-layer embeddings of a small model trained for a few epochs on the train split, or on a stratified
    `proxy_fraction` of it (less to train, and the rest of the samples are unseen by the extractor). The model is saved
    to `keep_extractor` when given: it embeds the samples added to the collection later (`extend_features`)."""
    fitted = stratified_subset(dataset.train, _proxy_size(params, len(dataset.train)), seed, "features.proxy_fraction", dataset.num_classes)
    recipe, first_epoch, share = proxy_recipe(params, len(dataset.train)), [], []

    def record(epoch: int, label_probability: torch.Tensor) -> None:
        if epoch == 1:
            first_epoch.append(label_probability.cpu())

    def logged(epoch: int, model: nn.Module, stats: dict[str, float]) -> None:
        if first_epoch and epoch == recipe.epochs:
            share.append(noisy_label_share(torch.cat(first_epoch).numpy(), params))
            stats = {**stats, "noisy_label_share": share[0]}
        if on_epoch is not None:
            on_epoch(epoch, model, stats)

    longer_if_noisy = proxy_epochs_at_most(params, len(dataset.train)) > recipe.epochs
    model = train_model(dataset, fitted, recipe, seed=seed, device=device, on_epoch=logged, on_batch=record if longer_if_noisy else None)
    if longer_if_noisy and share and share[0] >= params.proxy_noisy_share:
        longer = recipe.model_copy(update={"epochs": params.proxy_noisy_epochs})
        model = train_model(dataset, fitted, longer, seed=seed, device=device, on_epoch=lambda e, m, stats: logged(recipe.epochs + e, m, stats))
    if keep_extractor is not None:
        save_model(keep_extractor, model, model_name=params.proxy.model, classes=dataset.classes, image_shape=dataset.image_shape,
                   mean=dataset.mean, std=dataset.std)
    return tuple(  # type: ignore[return-value]
        predict_embeddings(model, dataset, split.images, batch_size=params.batch_size).numpy()
        for split in (dataset.train, dataset.test)
    )


def _drop_classifier(model: nn.Module) -> nn.Module:
    """Replace the last Linear layer (the classifier of every torchvision classification model) by Identity."""
    name = [n for n, module in model.named_modules() if isinstance(module, nn.Linear)][-1]
    *parents, leaf = name.split(".")
    parent = model.get_submodule(".".join(parents)) if parents else model
    setattr(parent, leaf, nn.Identity())
    return model


def pretrained_weights(model_name: str):
    """The default weights of a torchvision classification model (nothing downloaded), or a FeatureError listing the names."""
    try:
        return tv_models.get_model_weights(model_name).DEFAULT
    except (ValueError, KeyError):
        names = ", ".join(tv_models.list_models(module=tv_models))
        raise FeatureError(f"features.extractor: unknown torchvision model {model_name!r}; choose one of: {names}") from None


def load_pretrained(model_name: str) -> tuple[nn.Module, object]:
    """A torchvision classification model with its default weights, from torch's cache or a download."""
    weights = pretrained_weights(model_name)
    try:
        model = tv_models.get_model(model_name, weights=weights)
    except Exception as exc:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise FeatureError(
            f"features.extractor=pretrained:{model_name}: cannot get the weights ({type(exc).__name__}: {exc}). "
            f"Download {weights.url} to {cached} on a machine with network access, or use features.extractor=proxy"
        ) from None
    return _drop_classifier(model).eval(), weights.transforms()


@torch.inference_mode()
def pretrained_features(dataset: ImageDataset, model_name: str, batch_size: int, device: torch.device, splits: list[Split] | None = None) -> list[np.ndarray]:
    """Embeddings from an ImageNet-pretrained torchvision model, with the preprocessing its weights expect, of each of
    `splits` (default: the train and test splits)."""
    model, preprocess = load_pretrained(model_name)
    model = model.to(device)
    outputs = []
    for split in splits or [dataset.train, dataset.test]:
        chunks = []
        for images in batches_in_order(split.images, batch_size):
            if images.shape[1] == 1:
                images = images.expand(-1, 3, -1, -1)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                chunks.append(model(preprocess(images.to(device))).float().cpu())
        outputs.append(torch.cat(chunks).flatten(1).numpy())
    return outputs


def extract_features(
    dataset: ImageDataset,
    params: FeaturesParams,
    *,
    seed: int,
    device: torch.device | None = None,
    on_epoch: EpochCallback | None = None,
    keep_extractor: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) float32 embeddings, one row per sample in split order; a trained extractor is kept in
    `keep_extractor` when given."""
    device = device or pick_device()
    if params.extractor == "pixels":
        return pixel_features(dataset, params.pca_components, seed, params.batch_size)
    if params.extractor == "proxy":
        return proxy_features(dataset, params, seed, device, on_epoch, keep_extractor)
    train, test = pretrained_features(dataset, params.extractor.removeprefix("pretrained:"), params.batch_size, device)
    return train, test


def extend_features(dataset: ImageDataset, params: FeaturesParams, base: Path, *, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) embeddings of a grown collection from the features kept in `base` (`features.parquet` and, for the
    proxy, `extractor.pt`): the samples embedded there keep their rows, and the extractor that made them embeds the new
    ones, with the normalisation it was trained with (so the new samples are unseen by the extractor too)."""
    table = read_table(FEATURES, base / "features.parquet")
    ids, embedding = table.column("sample_id").to_numpy(), list_column(table, "embedding")
    known_split = table.column("split").to_numpy(zero_copy_only=False)
    outputs = []
    for name, split in (("train", dataset.train), ("test", dataset.test)):
        rows = known_split == name
        known = np.isin(split.sample_ids, ids[rows])
        result = np.empty((len(split), embedding.shape[1]), dtype=np.float32)
        result[known] = embedding[np.flatnonzero(rows)[positions_of(ids[rows], split.sample_ids[known], str(base / "features.parquet"))]]
        if not known.all():
            result[~known] = _embed_new(dataset, params, base, split.take(np.flatnonzero(~known)), device)
        outputs.append(result)
    return outputs[0], outputs[1]


def _embed_new(dataset: ImageDataset, params: FeaturesParams, base: Path, split: Split, device: torch.device) -> np.ndarray:
    if params.extractor.startswith("pretrained:"):
        return pretrained_features(dataset, params.extractor.removeprefix("pretrained:"), params.batch_size, device, [split])[0]
    kept = load_model(base / "extractor.pt")
    trained_with = dataclasses.replace(dataset, mean=tuple(kept.mean.flatten().tolist()), std=tuple(kept.std.flatten().tolist()))
    return predict_embeddings(kept.classifier.to(device), trained_with, split.images, batch_size=params.batch_size).numpy()


def features_columns(dataset: ImageDataset, train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray | list[np.ndarray]]:
    """The columns of features.parquet (`unseen.tables.FEATURES`): train rows, then test rows; the embeddings as two
    chunks that the table shares, not a concatenated copy."""
    return {
        "sample_id": np.concatenate([dataset.train.sample_ids, dataset.test.sample_ids]),
        "split": np.array(["train"] * len(train) + ["test"] * len(test)),
        "label": np.concatenate([dataset.train.labels.numpy(), dataset.test.labels.numpy()]),
        "embedding": [train, test],
    }


_LAST_READ: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
"""The arrays of the last features.parquet read, by file identity and the params and data it must match."""


def read_features(params: Params, dataset: ImageDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train sample_ids, train embeddings, test embeddings) from features.parquet: every sample once, all finite,
    made from this data and these features params. The last read is kept while the file is unchanged, so a run's
    fold, step and select tasks in one process read it once: callers share the arrays and must not write to them."""
    path = params.output("features.parquet")
    stat = path.stat() if path.is_file() else None
    key = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size, dataset.fingerprint, params.stage_hash("features")) if stat else None
    if key is not None and key in _LAST_READ:
        return _LAST_READ[key]
    table = read_table(FEATURES, path, data_fingerprint=dataset.fingerprint, params_hash=params.stage_hash("features"))
    train = table.column("split").to_numpy(zero_copy_only=False) == "train"
    ids = table.column("sample_id").to_numpy()
    same_ids_or_raise(path, ids[train], dataset.train.sample_ids, "train", FEATURES)
    same_ids_or_raise(path, ids[~train], dataset.test.sample_ids, "test", FEATURES)
    embedding = list_column(table, "embedding")
    finite_or_raise(path, "embedding", embedding, ids, FEATURES)
    read = ids[train], embedding[train], embedding[~train]
    _LAST_READ.clear()
    _LAST_READ[key] = read
    return read
