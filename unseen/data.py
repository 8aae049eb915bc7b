"""Image data sets as in-memory uint8 tensors, keyed by each sample's index in the official split."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import datasets
from torchvision.transforms.v2.functional import pil_to_tensor

from unseen.config import DataParams, InputError
from unseen.io import atomic_path
from unseen.budgets import class_budgets, random_subset

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


class DataError(InputError):
    """Data that cannot be loaded; the message names the file or folder and what to do."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)
    sample_ids: np.ndarray  # int64, index of each sample in the official split

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, positions: np.ndarray) -> "Split":
        index = torch.as_tensor(positions, dtype=torch.long)
        return Split(self.images[index], self.labels[index], self.sample_ids[positions])


@dataclass(frozen=True)
class ImageDataset:
    name: str
    classes: list[str]
    train: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str
    noisy_train: np.ndarray | None = None  # bool per train sample: its label was flipped by `data.label_noise`

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


def place_system_fashion_mnist(root: Path, system_dir: Path = SYSTEM_FASHION_MNIST) -> bool:
    """Unpack the Debian package's idx files into torchvision's raw folder, so no download is needed.

    The package recompresses the .gz files (their checksums differ from the official ones), so we
    place the decompressed idx files, which torchvision accepts as they are.
    """
    raw = root / "FashionMNIST" / "raw"
    if not all((system_dir / name).is_file() for name in FASHION_MNIST_FILES):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        target = raw / name.removesuffix(".gz")
        if target.exists():
            continue
        try:
            with gzip.open(system_dir / name) as source, atomic_path(target) as tmp, open(tmp, "wb") as sink:
                shutil.copyfileobj(source, sink)
        except (OSError, EOFError) as exc:
            raise DataError(
                f"fashion-mnist: {system_dir / name} is damaged ({exc}); reinstall it "
                "(apt-get install --reinstall dataset-fashion-mnist) or remove it and set data.download=true"
            ) from None
    return True


def _unchecked(cls: type) -> type:
    """A torchvision CIFAR class that accepts files whose checksums differ (re-packed or generated batches)."""
    return type(
        f"Unchecked{cls.__name__}",
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def _split_from_arrays(images: np.ndarray | torch.Tensor, labels) -> Split:
    images = torch.as_tensor(np.asarray(images), dtype=torch.uint8)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return Split(images.contiguous(), labels, np.arange(len(labels), dtype=np.int64))


def _load_torchvision(params: DataParams, root: Path) -> tuple[list[str], Split, Split]:
    if params.name == "fashion-mnist":
        place_system_fashion_mnist(root)
        cls = datasets.FashionMNIST
    else:
        cls = datasets.CIFAR10 if params.name == "cifar10" else datasets.CIFAR100
        if not params.verify_checksums:
            cls = _unchecked(cls)
    splits = []
    for train in (True, False):
        try:
            dataset = cls(str(root), train=train, download=params.download)
        except RuntimeError as exc:
            if "not found" not in str(exc):  # torchvision's word for missing files (or, for CIFAR, a checksum mismatch)
                raise DataError(
                    f"{params.name}: cannot read the files under {root}: {exc}. Delete the damaged files and fetch them again"
                ) from None
            raise DataError(
                f"{params.name}: no usable files under {root} ({exc}). Set data.download=true to fetch them, "
                f"or place the official files in {root} (for fashion-mnist: apt-get install dataset-fashion-mnist)"
            ) from None
        except Exception as exc:  # truncated gz, bad pickle, failed download
            raise DataError(
                f"{params.name}: cannot read the files under {root}: {type(exc).__name__}: {exc}. "
                "Delete the damaged files and fetch them again"
            ) from None
        images = dataset.data.numpy() if isinstance(dataset.data, torch.Tensor) else dataset.data
        splits.append(_split_from_arrays(images, dataset.targets))
    return list(dataset.classes), splits[0], splits[1]


class _VisibleImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder, with hidden folders (.ipynb_checkpoints, .cache, ...) never taken for classes."""

    def find_classes(self, directory):
        classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir() and not entry.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: index for index, name in enumerate(classes)}


def _open_image(path: str) -> Image.Image:
    """An image as 8-bit RGB; 16- and 32-bit grey levels are scaled to 8 bits, not clipped to black and white."""
    with Image.open(path) as image:
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
            levels = np.asarray(image, dtype=np.int64)
            top = 65535 if image.mode.startswith("I;16") or levels.max() > 255 else 255
            image = Image.fromarray((levels * 255 // top).clip(0, 255).astype(np.uint8))
        return image.convert("RGB")


def _load_image_folder(params: DataParams, root: Path) -> tuple[list[str], Split, Split]:
    splits, classes = [], None
    for part in ("train", "test"):
        folder = root / part
        if not folder.is_dir():
            raise DataError(f"imagefolder: {folder} does not exist; the tree needs train/<class>/* and test/<class>/*")
        try:
            dataset = _VisibleImageFolder(str(folder), loader=_open_image)
        except (FileNotFoundError, RuntimeError) as exc:  # no class folders, or a class folder without images
            raise DataError(f"imagefolder: {folder}: {exc}; every class folder needs images (remove empty ones from train/ and test/)") from None
        if classes is not None and dataset.classes != classes:
            raise DataError(
                f"imagefolder: class folders differ between {root / 'train'} ({classes}) and {folder} ({dataset.classes}); "
                "both splits need the same class folders"
            )
        classes = dataset.classes
        tensors = []
        for path, _ in dataset.samples:
            try:
                tensors.append(pil_to_tensor(dataset.loader(path)))
            except Exception as exc:
                raise DataError(f"imagefolder: cannot read image {path}: {exc}; remove or replace it") from None
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise DataError(f"imagefolder: images under {folder} differ in size {sorted(shapes)[:3]}; resize them to one size")
        splits.append(_split_from_arrays(torch.stack(tensors), dataset.targets))
    return classes, splits[0], splits[1]


def _subset(split: Split, size: int | None, seed: int, setting: str, num_classes: int) -> Split:
    """A stratified (class-proportional), seeded subset that keeps the official sample_ids."""
    if size is None or size >= len(split):
        return split
    labels = split.labels.numpy()
    try:
        per_class = class_budgets(labels, size, num_classes)
    except ValueError:
        present = len(np.unique(labels))
        raise DataError(f"data.{setting}={size}: a stratified subset keeps at least one sample of each of the {present} classes; "
                        f"set it to {present} or more (or null for the whole split)") from None
    return split.take(np.flatnonzero(random_subset(labels, per_class, seed)))


def flip_labels(split: Split, fraction: float, num_classes: int, seed: int) -> tuple[Split, np.ndarray]:
    """Symmetric label noise: a stratified random `fraction` of the samples gets a label drawn uniformly from the other
    classes. Returns the noisy split and which samples were flipped (to measure how well a score finds them)."""
    labels = split.labels.numpy()
    rng = np.random.default_rng([seed, 0x4E015E])
    flipped = random_subset(labels, class_budgets(labels, max(1, round(fraction * len(labels))), num_classes), rng.integers(2**32))
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, num_classes, size=int(flipped.sum()))) % num_classes
    return Split(split.images, torch.as_tensor(noisy, dtype=torch.long), split.sample_ids), flipped


def _fingerprint(name: str, classes: list[str], train: Split, test: Split) -> str:
    digest = hashlib.sha256(name.encode())
    digest.update("\n".join(classes).encode())
    for split in (train, test):
        for array in (split.images.numpy(), split.labels.numpy(), split.sample_ids):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def load_dataset(params: DataParams, seed: int = 0) -> ImageDataset:
    """Load the data set named in params, with optional stratified subsets for quick runs and optional symmetric
    label noise on the train split (benchmarks of noise robustness; the test split stays clean)."""
    root = Path(params.root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(f"data.root={params.root}: {root} is a file, not a folder; point data.root at the data set's folder")
    loader = _load_image_folder if params.name == "imagefolder" else _load_torchvision
    classes, train, test = loader(params, root)
    for part, split in (("train", train), ("test", test)):
        bad = np.flatnonzero((split.labels < 0).numpy() | (split.labels >= len(classes)).numpy())
        if len(bad):
            raise DataError(
                f"{params.name}: {len(bad)} {part} labels outside 0..{len(classes) - 1}, first at sample_id {split.sample_ids[bad[0]]}"
            )
    train = _subset(train, params.train_subset, seed, "train_subset", len(classes))
    test = _subset(test, params.test_subset, seed, "test_subset", len(classes))
    noisy = None
    if params.label_noise > 0:
        train, noisy = flip_labels(train, params.label_noise, len(classes), seed)
    pixels = train.images.float() / 255.0
    mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist())
    std = tuple(pixels.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return ImageDataset(params.name, classes, train, test, mean, std, _fingerprint(params.name, classes, train, test), noisy)
