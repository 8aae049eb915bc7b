"""Image data sets: the torchvision sets as in-memory uint8 tensors keyed by each sample's index in the official split,
and image files (ImageFolder trees, manifests) in memory or streamed from disk, keyed by ids from their paths."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from unseen.budgets import class_budgets, random_subset
from unseen.config import DataParams
from unseen.images import Decoding, ImageFiles, Images, decode_all, decode_image, index_folder, scan_files
from unseen.listing import DataError, list_image_folder, list_manifest
from unseen.io import atomic_path
from unseen.tables import positions_of

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass(frozen=True)
class Split:
    images: Images  # uint8 (N, C, H, W) in memory, or the files they are decoded from batch by batch
    labels: torch.Tensor  # int64, (N,)
    sample_ids: np.ndarray  # int64: index in the official split, or derived from the file's path or manifest id

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, positions: np.ndarray) -> "Split":
        index = torch.as_tensor(positions, dtype=torch.long)
        images = self.images[index] if isinstance(self.images, torch.Tensor) else self.images.subset(positions)
        return Split(images, self.labels[index], self.sample_ids[positions])

    def first(self, count: int) -> torch.Tensor:
        """The first `count` images as a uint8 tensor, whatever the storage (examples, signatures): decoded in process."""
        if isinstance(self.images, torch.Tensor):
            return self.images[:count]
        return torch.stack([decode_image(file, self.images.decoding) for file in self.images.files[:count]])


@dataclass(frozen=True)
class SkippedImage:
    """A file left out under `data.on_bad_image: skip`, and why."""

    sample_id: int
    split: str
    file: str
    error: str


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
    skipped: tuple[SkippedImage, ...] = ()  # unreadable files left out (`data.on_bad_image: skip`)

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


def _pixel_stats(sums: np.ndarray, square_sums: np.ndarray, pixels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] from exact integer sums over the train images (any storage, any order)."""
    mean, std = [], []
    for total, square in zip(sums.sum(0).tolist(), square_sums.sum(0).tolist()):
        variance = (square - total * total / pixels) / max(pixels - 1, 1)
        mean.append(total / pixels / 255.0)
        std.append(max(float(np.sqrt(max(variance, 0.0))) / 255.0, 1e-3))
    return tuple(mean), tuple(std)


def _load_image_files(params: DataParams, root: Path, seed: int) -> ImageDataset:
    """An ImageFolder tree or a manifest: listed, scanned once (cached), unreadable files refused or left out, and the
    images decoded into memory when they fit in `data.memory_limit_gb` (or as `data.storage` says), else streamed."""
    listing = list_image_folder(root) if params.name == "imagefolder" else list_manifest(root, params)
    decoding = Decoding(params.image_mode, params.image_size)
    scan = scan_files(listing, decoding, index_folder(params.index_dir), params.loader_workers)
    bad = scan.errors != ""
    if bad.any() and params.on_bad_image == "error":
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{listing.source}: cannot read image {listing.files[first]}: {scan.errors[first]} ({int(bad.sum())} unreadable); "
            "remove or replace it, or set data.on_bad_image=skip to leave unreadable files out"
        )
    skipped = tuple(
        SkippedImage(int(listing.sample_ids[i]), "test" if listing.is_test[i] else "train", str(listing.files[i]), str(scan.errors[i]))
        for i in np.flatnonzero(bad)
    )
    kept, kept_scan = listing.take(~bad), np.flatnonzero(~bad)
    sizes = np.unique(scan.shapes[kept_scan], axis=0)
    if len(sizes) > 1:
        raise DataError(
            f"{listing.source}: images differ in size ({', '.join('x'.join(map(str, s[1:])) for s in sizes[:3])}, ...); "
            "set data.image_size to resize and crop them to one square size"
        )
    if len(np.unique(kept.sample_ids)) < len(kept.sample_ids):
        raise DataError(f"{listing.source}: two files share a sample_id; give the manifest an id column with unique ids")
    image_shape = tuple(int(v) for v in sizes[0])
    splits = []
    for part, rows in (("train", ~kept.is_test), ("test", kept.is_test)):
        if not rows.any():
            raise DataError(f"{listing.source}: no readable {part} images; the {part} split needs images of every class")
        files = ImageFiles(kept.files[rows], decoding, image_shape, params.loader_workers)
        splits.append(Split(files, torch.as_tensor(kept.labels[rows]), kept.sample_ids[rows]))
    train, test, noisy = _subsets_and_noise(params, seed, len(kept.classes), *splits)
    rows = {part: kept_scan[positions_of(kept.sample_ids, split.sample_ids, listing.source)] for part, split in (("train", train), ("test", test))}
    pixels = len(train) * image_shape[1] * image_shape[2]
    mean, std = _pixel_stats(scan.sums[rows["train"]], scan.square_sums[rows["train"]], pixels)
    fingerprint = hashlib.sha256(json.dumps([params.name, decoding.mode, decoding.size, kept.classes]).encode())
    for part, split in (("train", train), ("test", test)):
        for array in (split.sample_ids, split.labels.numpy(), scan.digests[rows[part]]):
            fingerprint.update(np.ascontiguousarray(array).tobytes())
    if params.storage == "memory" or (params.storage == "auto" and (len(train) + len(test)) * int(np.prod(image_shape)) <= params.memory_limit_gb * 2**30):
        train, test = (Split(decode_all(split.images), split.labels, split.sample_ids) for split in (train, test))
    return ImageDataset(params.name, kept.classes, train, test, mean, std, fingerprint.hexdigest()[:16], noisy, skipped)


def stratified_subset(split: Split, size: int | None, seed: int, setting: str, num_classes: int) -> Split:
    """A stratified (class-proportional), seeded subset that keeps the official sample_ids; `setting` names the
    param that asked for it in the error."""
    if size is None or size >= len(split):
        return split
    labels = split.labels.numpy()
    try:
        per_class = class_budgets(labels, size, num_classes)
    except ValueError:
        present = len(np.unique(labels))
        raise DataError(f"{setting}={size}: a stratified subset keeps at least one sample of each of the {present} classes; "
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


def _subsets_and_noise(params: DataParams, seed: int, num_classes: int, train: Split, test: Split) -> tuple[Split, Split, np.ndarray | None]:
    if params.train_first is not None:  # a prefix stands in for a collection that grows: later runs see more of the same split
        train = train.take(np.arange(min(params.train_first, len(train))))
    train = stratified_subset(train, params.train_subset, seed, "data.train_subset", num_classes)
    test = stratified_subset(test, params.test_subset, seed, "data.test_subset", num_classes)
    if params.label_noise > 0:
        train, noisy = flip_labels(train, params.label_noise, num_classes, seed)
        return train, test, noisy
    return train, test, None


def load_dataset(params: DataParams, seed: int = 0) -> ImageDataset:
    """Load the data set named in params, with optional stratified subsets for quick runs and optional symmetric
    label noise on the train split (benchmarks of noise robustness; the test split stays clean)."""
    root = Path(params.root).expanduser()
    if params.name == "manifest":
        return _load_image_files(params, root, seed)
    if root.exists() and not root.is_dir():
        raise DataError(f"data.root={params.root}: {root} is a file, not a folder; point data.root at the data set's folder")
    if params.name == "imagefolder":
        return _load_image_files(params, root, seed)
    classes, train, test = _load_torchvision(params, root)
    for part, split in (("train", train), ("test", test)):
        bad = np.flatnonzero((split.labels < 0).numpy() | (split.labels >= len(classes)).numpy())
        if len(bad):
            raise DataError(
                f"{params.name}: {len(bad)} {part} labels outside 0..{len(classes) - 1}, first at sample_id {split.sample_ids[bad[0]]}"
            )
    train, test, noisy = _subsets_and_noise(params, seed, len(classes), train, test)
    pixels = train.images.float() / 255.0
    mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist())
    std = tuple(pixels.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return ImageDataset(params.name, classes, train, test, mean, std, _fingerprint(params.name, classes, train, test), noisy)
