"""Image collections as lists of files: ImageFolder trees and path/label manifests, each sample with an id that
survives reordering and growth, every refusal naming the folder, file or row."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from torchvision import datasets

from unseen.config import DataParams, InputError


class DataError(InputError):
    """Data that cannot be loaded; the message names the file or folder and what to do."""


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
