"""Image files on disk: checked and summarised in one cached pass, then decoded to one mode and size, into memory or
batch by batch by worker processes that read ahead."""

from __future__ import annotations

import ctypes
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from unseen.listing import DataError, FileList
from unseen.tables import write_parquet

INDEX_VERSION = "1"


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


@dataclass(frozen=True)
class Scan:
    """What one decoding pass learns about each listed file: its bytes' digest (the fingerprint), whether it decodes,
    its decoded size, and per-channel pixel sums (exact integers: the normalisation, whatever the storage). Compact
    arrays, no object per file: the pass over a large collection leaves little behind."""

    digests: np.ndarray  # "S64": sha256 of each file's bytes, hex
    errors: np.ndarray  # "" when the file decodes, else why not (object array)
    shapes: np.ndarray  # int64 (N, 3): decoded C, H, W (zeros when unreadable)
    sums: np.ndarray  # int64 (N, C)
    square_sums: np.ndarray  # int64 (N, C)

    @classmethod
    def joined(cls, parts: list["Scan"], channels: int) -> "Scan":
        if not parts:
            return cls(np.empty(0, "S64"), np.empty(0, object), np.empty((0, 3), np.int64), np.empty((0, channels), np.int64), np.empty((0, channels), np.int64))
        return cls(*(np.concatenate([getattr(part, name) for part in parts]) for name in ("digests", "errors", "shapes", "sums", "square_sums")))


class _Scanner(Dataset):
    def __init__(self, files: np.ndarray, decoding: Decoding):
        self.files, self.decoding = files, decoding

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple:
        path, channels = self.files[i], self.decoding.channels
        try:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as exc:
            return "", f"{type(exc).__name__}: {exc}", (0, 0, 0), (0,) * channels, (0,) * channels
        try:
            image = decode_image(path, self.decoding).long()
        except Exception as exc:  # Pillow raises many types for damaged or foreign files
            return digest, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, (0, 0, 0), (0,) * channels, (0,) * channels
        return digest, "", tuple(image.shape), image.sum(dim=(1, 2)).tolist(), (image * image).sum(dim=(1, 2)).tolist()


def _scan_batch(rows: list[tuple]) -> Scan:
    digests, errors, shapes, sums, square_sums = zip(*rows)
    return Scan(np.array(digests, "S64"), np.array(errors, object), np.array(shapes, np.int64), np.array(sums, np.int64), np.array(square_sums, np.int64))


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


def _fixed_lists(matrix: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def _matrix(column: pa.ChunkedArray, width: int) -> np.ndarray:
    return column.combine_chunks().flatten().to_numpy().reshape(-1, width).astype(np.int64)


def scan_files(files: FileList, decoding: Decoding, index_dir: Path, workers: int) -> Scan:
    """Decode every file once (in `workers` processes) and keep what the pass learned in `index_dir`, keyed by the
    files' paths, sizes and modification times: later stages and runs read it instead of decoding again."""
    cache, channels = index_dir / f"{_index_key(files.files, decoding)}.parquet", decoding.channels
    table = pq.read_table(cache) if cache.is_file() else None
    if table is not None and table.num_rows == len(files.files):
        scan = Scan(
            table.column("digest").to_numpy().astype("S64"), table.column("error").to_numpy(zero_copy_only=False).astype(object),
            _matrix(table.column("shape"), 3), _matrix(table.column("sums"), channels), _matrix(table.column("square_sums"), channels),
        )
    else:
        loader = DataLoader(_Scanner(files.files, decoding), batch_size=64, collate_fn=_scan_batch, **_loader_processes(workers))
        scan = Scan.joined(list(loader), channels)
        table = pa.table({
            "digest": pa.array(scan.digests.astype(str), pa.string()), "error": pa.array(scan.errors, pa.string()),
            "shape": _fixed_lists(scan.shapes), "sums": _fixed_lists(scan.sums), "square_sums": _fixed_lists(scan.square_sums),
        })
        write_parquet(table, cache, {"unseen.table": "image_index", "unseen.decoding": f"{decoding.mode} {decoding.size}"})
    del table
    release_freed_memory()  # the index's Arrow buffers and the pass's temporaries: a stage would carry them to its end
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


def release_freed_memory() -> None:
    """Hand the pages that Arrow's pool and glibc hold for freed blocks back to the system. Each streamed batch
    allocates and frees buffers of new sizes; without this the freed pages stay mapped and a stage's peak grows with
    the collection's length."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing held back
        pass


RELEASE_EVERY_SECONDS = 1.0


def image_batches(images: Images, batches: Iterable[torch.Tensor | np.ndarray]) -> Iterator[torch.Tensor]:
    """The uint8 images at each batch of positions, in order: indexed in memory (on the tensor's device), or decoded
    from disk by `images.workers` processes that read ahead while the caller computes (freed memory is released at
    most once a second: benchmarks/image_stream.py measures the peak)."""
    if isinstance(images, torch.Tensor):
        for batch in batches:
            yield images[torch.as_tensor(batch).to(images.device)]
        return
    loader = DataLoader(
        _Decoder(images), batch_sampler=(torch.as_tensor(batch).tolist() for batch in batches), collate_fn=_stack,
        **_loader_processes(images.workers),
    )
    released = time.monotonic()
    for batch in loader:
        if isinstance(batch, list):
            raise DataError(f"cannot read image {batch[0]} ({len(batch)} in this batch); it changed since it was indexed: rerun the stage")
        yield batch
        if time.monotonic() - released > RELEASE_EVERY_SECONDS:
            release_freed_memory()
            released = time.monotonic()


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
