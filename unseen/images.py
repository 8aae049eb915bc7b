"""Image files on disk (ImageFolder trees, path/label manifests): listed with ids that survive reordering and growth,
checked and summarised in one cached pass, then decoded to one mode and size, into memory or batch by batch."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms.v2 import functional as TF

from unseen.config import DataParams, InputError
from unseen.tables import write_parquet

INDEX_VERSION = "1"


class DataError(InputError):
    """Data that cannot be loaded; the message names the file or folder and what to do."""


@dataclass(frozen=True)
class Decoding:
    """How every file becomes a tensor: converted to `mode`, and with a `size`, its shorter side resized to it and the
    centre cropped square (torchvision's Resize + CenterCrop); without one, all images must share a size."""

    mode: str
    size: int | None

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


def _eight_bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit grey levels scaled to 8 bits (not clipped to black and white); palettes with their transparency."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        levels = np.asarray(image, dtype=np.int64)
        top = 65535 if image.mode.startswith("I;16") or levels.max() > 255 else 255
        return Image.fromarray((levels * 255 // top).clip(0, 255).astype(np.uint8))
    if image.mode in ("P", "PA", "LA"):
        return image.convert("RGBA")
    return image


def decode_image(path: str | Path, decoding: Decoding) -> torch.Tensor:
    """One image file (any format Pillow reads: JPEG, PNG, WebP, ...) as a uint8 (C, H, W) tensor."""
    with Image.open(path) as image:
        if decoding.size is not None:
            image.draft(decoding.mode, (decoding.size, decoding.size))  # JPEG: decode at the smallest scale covering it
        image = _eight_bit(image).convert(decoding.mode)
        if decoding.size is not None:
            image = TF.center_crop(TF.resize(image, decoding.size, antialias=True), decoding.size)
        return TF.pil_to_tensor(image)


def stable_id(text: str) -> int:
    """A non-negative int64 sample_id from a path or id string: the same file keeps its id when others come or go."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") & (2**63 - 1)


@dataclass(frozen=True)
class FileList:
    """Every listed file, train rows then test rows, each sorted by path (a reordered manifest gives the same list)."""

    source: str  # what error messages name: the tree or the manifest
    files: np.ndarray  # absolute paths (object array of str)
    labels: np.ndarray  # int64
    sample_ids: np.ndarray  # int64
    is_test: np.ndarray  # bool
    classes: list[str]

    def take(self, keep: np.ndarray) -> "FileList":
        return replace(self, files=self.files[keep], labels=self.labels[keep], sample_ids=self.sample_ids[keep], is_test=self.is_test[keep])


def _sorted(source: str, files: list[str], labels: list[int], ids: list[int], is_test: list[bool], classes: list[str]) -> FileList:
    order = sorted(range(len(files)), key=lambda i: (is_test[i], files[i]))
    return FileList(
        source, np.array([files[i] for i in order], dtype=object), np.array([labels[i] for i in order], dtype=np.int64),
        np.array([ids[i] for i in order], dtype=np.int64), np.array([is_test[i] for i in order], dtype=bool), classes,
    )


class _VisibleImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder, with hidden folders (.ipynb_checkpoints, .cache, ...) never taken for classes."""

    def find_classes(self, directory):
        classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir() and not entry.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: index for index, name in enumerate(classes)}


def list_image_folder(root: Path) -> FileList:
    """root/train/<class>/* and root/test/<class>/*; each sample_id derives from the file's path under root."""
    files, labels, ids, is_test, classes = [], [], [], [], None
    for part in ("train", "test"):
        folder = root / part
        if not folder.is_dir():
            raise DataError(f"imagefolder: {folder} does not exist; the tree needs train/<class>/* and test/<class>/*")
        try:
            listing = _VisibleImageFolder(str(folder), loader=str)
        except (FileNotFoundError, RuntimeError) as exc:  # no class folders, or a class folder without images
            raise DataError(f"imagefolder: {folder}: {exc}; every class folder needs images (remove empty ones from train/ and test/)") from None
        if classes is not None and listing.classes != classes:
            raise DataError(
                f"imagefolder: class folders differ between {root / 'train'} ({classes}) and {folder} ({listing.classes}); "
                "both splits need the same class folders"
            )
        classes = listing.classes
        for path, label in listing.samples:
            files.append(path)
            labels.append(label)
            ids.append(stable_id(Path(path).relative_to(root).as_posix()))
            is_test.append(part == "test")
    return _sorted(f"imagefolder {root}", files, labels, ids, is_test, classes)


def _read_manifest(path: Path) -> pa.Table:
    if not path.is_file():
        raise DataError(f"manifest: {path} does not exist; point data.root at a CSV or Parquet file of path,label rows")
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        return pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(column_types={"path": pa.string(), "label": pa.string(), "id": pa.string(), "split": pa.string()}))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"manifest {path}: cannot read it ({exc}); write it as CSV with a header row, or as Parquet") from None


def _column(table: pa.Table, path: Path, name: str) -> list[str] | None:
    if name not in table.column_names:
        return None
    values = [None if v is None else str(v) for v in table.column(name).to_pylist()]
    empty = [row for row, value in enumerate(values, 1) if value is None or not value.strip()]
    if empty:
        raise DataError(f"manifest {path}: row {empty[0]} has no {name} ({len(empty)} such rows); fill it in or remove the row")
    return [value.strip() for value in values]


def _first_repeat(values: list[str]) -> tuple[int, int] | None:
    seen: dict[str, int] = {}
    for row, value in enumerate(values, 1):
        if value in seen:
            return seen[value], row
        seen[value] = row
    return None


def _class_order(names: set[str]) -> list[str]:
    return sorted(names, key=int) if all(name.isdigit() for name in names) else sorted(names)


def list_manifest(path: Path, params: DataParams) -> FileList:
    """A CSV or Parquet file of path,label rows (optional split: train/test, optional id), paths relative to its folder.
    Ids come from the id column, else from the path as written; without a split column a stable `test_fraction` of
    the ids is the test split, so adding rows never moves an old row between splits."""
    table = _read_manifest(path)
    paths, labels = _column(table, path, "path"), _column(table, path, "label")
    if paths is None or labels is None:
        raise DataError(f"manifest {path}: needs a 'path' and a 'label' column (it has {table.column_names})")
    repeat = _first_repeat(paths)
    if repeat:
        raise DataError(f"manifest {path}: rows {repeat[0]} and {repeat[1]} list the same file {paths[repeat[1] - 1]!r}; keep one of them")
    id_texts = _column(table, path, "id")
    if id_texts is not None:
        repeat = _first_repeat(id_texts)
        if repeat:
            raise DataError(f"manifest {path}: rows {repeat[0]} and {repeat[1]} share the id {id_texts[repeat[1] - 1]!r}; ids must be unique")
        ids = [int(text) if text.isdigit() and int(text) < 2**63 else stable_id(text) for text in id_texts]
    else:
        ids = [stable_id(Path(p).as_posix()) for p in paths]
    splits = _column(table, path, "split")
    if splits is not None:
        wrong = [row for row, split in enumerate(splits, 1) if split not in ("train", "test")]
        if wrong:
            raise DataError(f"manifest {path}: row {wrong[0]} has split {splits[wrong[0] - 1]!r}; use train or test")
        is_test = [split == "test" for split in splits]
    else:
        is_test = [sample_id % 10_000 < params.test_fraction * 10_000 for sample_id in ids]
    classes = list(params.classes) if params.classes else _class_order({label for label, test in zip(labels, is_test) if not test})
    index = {name: i for i, name in enumerate(classes)}
    unknown = [row for row, label in enumerate(labels, 1) if label not in index]
    if unknown:
        raise DataError(
            f"manifest {path}: row {unknown[0]} has label {labels[unknown[0] - 1]!r}, not in the class list {classes} "
            f"({len(unknown)} such rows); fix the label, or list it in data.classes"
        )
    files = [str(path.parent / p) for p in paths]
    missing = [row for row, file in enumerate(files, 1) if not os.path.isfile(file)]
    if missing:
        raise DataError(
            f"manifest {path}: row {missing[0]}: {files[missing[0] - 1]} does not exist ({len(missing)} missing files); "
            "fix the path or remove the row"
        )
    return _sorted(f"manifest {path}", files, [index[label] for label in labels], ids, is_test, classes)


@dataclass(frozen=True)
class Scan:
    """What one decoding pass learns about each listed file: its bytes' digest (the fingerprint), whether it decodes,
    its decoded size, and per-channel pixel sums (exact integers: the normalisation, whatever the storage)."""

    digests: np.ndarray  # sha256 of each file's bytes, hex (object array)
    errors: np.ndarray  # "" when the file decodes, else why not (object array)
    shapes: np.ndarray  # int64 (N, 3): decoded C, H, W (zeros when unreadable)
    sums: np.ndarray  # int64 (N, C)
    square_sums: np.ndarray  # int64 (N, C)


class _Scanner(Dataset):
    def __init__(self, files: np.ndarray, decoding: Decoding):
        self.files, self.decoding = files, decoding

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple:
        path = self.files[i]
        channels = self.decoding.channels
        try:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as exc:
            return "", f"{type(exc).__name__}: {exc}", (0, 0, 0), [0] * channels, [0] * channels
        try:
            image = decode_image(path, self.decoding).long()
        except Exception as exc:  # Pillow raises many types for damaged or foreign files
            return digest, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, (0, 0, 0), [0] * channels, [0] * channels
        return digest, "", tuple(image.shape), image.sum(dim=(1, 2)).tolist(), (image * image).sum(dim=(1, 2)).tolist()


def _loader_processes(requested: int) -> dict:
    """DataLoader settings for `requested` decoding processes: none inside a daemonic process (a Dask worker), which may
    not start children; else forked from a clean forkserver, never from this process, whose other threads (parallel
    tasks, tracking) may hold locks at the moment of a fork."""
    if requested == 0 or multiprocessing.current_process().daemon:
        return {"num_workers": 0}
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return {"num_workers": requested, "multiprocessing_context": context}


def _index_key(files: np.ndarray, decoding: Decoding) -> str:
    digest = hashlib.sha256(json.dumps([INDEX_VERSION, decoding.mode, decoding.size]).encode())
    for file in files:
        try:
            stat = os.stat(file)
            digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{file}\0missing\n".encode())
    return digest.hexdigest()[:24]


def index_folder(index_dir: str | None) -> Path:
    """Where scans are cached: `data.index_dir`, else the user's cache folder (never inside the image collection)."""
    if index_dir is not None:
        return Path(index_dir).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unseen" / "images"


def scan_files(files: FileList, decoding: Decoding, index_dir: Path, workers: int) -> Scan:
    """Decode every file once (in `workers` processes) and keep what the pass learned in `index_dir`, keyed by the
    files' paths, sizes and modification times: later stages and runs read it instead of decoding again."""
    cache = index_dir / f"{_index_key(files.files, decoding)}.parquet"
    if cache.is_file():
        table = pq.read_table(cache)
        if table.num_rows == len(files.files):
            return Scan(
                np.array(table.column("digest").to_pylist(), dtype=object), np.array(table.column("error").to_pylist(), dtype=object),
                np.array(table.column("shape").to_pylist(), dtype=np.int64).reshape(-1, 3),
                np.array(table.column("sums").to_pylist(), dtype=np.int64).reshape(-1, decoding.channels),
                np.array(table.column("square_sums").to_pylist(), dtype=np.int64).reshape(-1, decoding.channels),
            )
    loader = DataLoader(_Scanner(files.files, decoding), batch_size=64, collate_fn=list, **_loader_processes(workers))
    rows = [row for batch in loader for row in batch]
    scan = Scan(
        np.array([r[0] for r in rows], dtype=object), np.array([r[1] for r in rows], dtype=object),
        np.array([r[2] for r in rows], dtype=np.int64).reshape(-1, 3),
        np.array([r[3] for r in rows], dtype=np.int64).reshape(-1, decoding.channels),
        np.array([r[4] for r in rows], dtype=np.int64).reshape(-1, decoding.channels),
    )
    table = pa.table({
        "file": pa.array(files.files.tolist(), pa.string()), "digest": pa.array(scan.digests.tolist(), pa.string()),
        "error": pa.array(scan.errors.tolist(), pa.string()), "shape": pa.array(scan.shapes.tolist(), pa.list_(pa.int64())),
        "sums": pa.array(scan.sums.tolist(), pa.list_(pa.int64())), "square_sums": pa.array(scan.square_sums.tolist(), pa.list_(pa.int64())),
    })
    write_parquet(table, cache, {"unseen.table": "image_index", "unseen.decoding": f"{decoding.mode} {decoding.size}"})
    return scan


@dataclass(frozen=True, eq=False)
class ImageFiles:
    """Images decoded from their files batch by batch: the streamed storage, for collections larger than memory."""

    files: np.ndarray  # absolute paths (object array of str)
    decoding: Decoding
    image_shape: tuple[int, int, int]
    workers: int

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), *self.image_shape)

    def subset(self, positions: np.ndarray) -> "ImageFiles":
        return replace(self, files=self.files[np.asarray(positions)])


Images = torch.Tensor | ImageFiles


class _Decoder(Dataset):
    def __init__(self, images: ImageFiles):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, str]:
        try:
            return decode_image(self.images.files[i], self.images.decoding), ""
        except Exception as exc:  # reported by the reading process, with the file's name
            return None, f"{self.images.files[i]}: {type(exc).__name__}: {exc}"


def _stack(items: list[tuple[torch.Tensor | None, str]]) -> torch.Tensor | list[str]:
    errors = [error for _, error in items if error]
    return errors if errors else torch.stack([image for image, _ in items])


def image_batches(images: Images, batches: Iterable[torch.Tensor | np.ndarray]) -> Iterator[torch.Tensor]:
    """The uint8 images at each batch of positions, in order: indexed in memory (on the tensor's device), or decoded
    from disk by `images.workers` processes that read ahead while the caller computes."""
    if isinstance(images, torch.Tensor):
        for batch in batches:
            yield images[torch.as_tensor(batch).to(images.device)]
        return
    loader = DataLoader(
        _Decoder(images), batch_sampler=(torch.as_tensor(batch).tolist() for batch in batches), collate_fn=_stack,
        **_loader_processes(images.workers),
    )
    for batch in loader:
        if isinstance(batch, list):
            raise DataError(f"cannot read image {batch[0]} ({len(batch)} in this batch); it changed since it was indexed: rerun the stage")
        yield batch


def batches_in_order(images: Images, batch_size: int) -> Iterator[torch.Tensor]:
    """All images, `batch_size` at a time, in split order (inference, decoding into memory)."""
    starts = range(0, len(images), batch_size)
    return image_batches(images, (torch.arange(start, min(start + batch_size, len(images))) for start in starts))


def decode_all(images: ImageFiles, batch_size: int = 256) -> torch.Tensor:
    """Every image of `images` in one uint8 tensor: the in-memory storage of a collection that fits."""
    out = torch.empty(images.shape, dtype=torch.uint8)
    start = 0
    for batch in batches_in_order(images, batch_size):
        out[start : start + len(batch)] = batch
        start += len(batch)
    return out
