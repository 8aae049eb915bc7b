"""The pipeline's Parquet tables: one schema each, keyed by sample_id, stamped with params hash and data fingerprint."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from unseen.config import InputError
from unseen.io import atomic_path

SCHEMA_VERSION = "2"


class TableError(InputError):
    """A table that cannot be used as input; the message names the file and the mismatch."""


@dataclass(frozen=True)
class TableSpec:
    name: str
    stage: str  # the stage that writes it: what an error tells the user to rerun
    schema: pa.Schema
    extra_columns: str | None = None  # regex for further float32 columns (more scores fit without a new version)

    @property
    def rerun(self) -> str:
        return f"rerun `unseen stage {self.stage}`"


FEATURES = TableSpec(
    "features",
    "features",
    pa.schema([("sample_id", pa.int64()), ("split", pa.string()), ("label", pa.int16()), ("embedding", pa.list_(pa.float32()))]),
)
SKIPPED_IMAGES = TableSpec(
    "skipped_images",
    "features",
    pa.schema([("sample_id", pa.int64()), ("split", pa.string()), ("file", pa.string()), ("error", pa.string())]),
)
"""Image files left out as unreadable under `data.on_bad_image: skip` (empty otherwise)."""
SCORES = TableSpec(
    "scores",
    "scores",
    pa.schema([
        ("sample_id", pa.int64()),
        ("label", pa.int16()),
        ("folds", pa.list_(pa.int16())),  # folds[r]: the fold that held the sample out in repeat r (-1: every fold model)
        ("scored_by", pa.string()),  # the scoring models behind its scores, e.g. "unseen_r0_f0,unseen_r0_f1" for a sample added later
    ]),
    extra_columns=r"[a-z0-9_]+_(unseen|seen)(_std)?",
)
MODEL_OUTPUTS = TableSpec(
    "model_outputs",
    "scores",
    pa.schema(
        [
            ("sample_id", pa.int64()),
            ("label", pa.int16()),
            ("logits", pa.list_(pa.float32())),  # epochs x classes, epoch-major
            ("embedding_norms", pa.list_(pa.float32())),  # one per epoch
        ]
    ),
)
CORESET = TableSpec(
    "coreset",
    "select",
    pa.schema(
        [
            ("sample_id", pa.int64()),
            ("label", pa.int16()),
            ("selected", pa.bool_()),
            ("random_selected", pa.bool_()),  # the same-size, same-per-class-count random baseline
            ("method", pa.string()),
            ("step", pa.int16()),  # multi-step UNSEEN: the step at which the sample joined (-1 = not kept)
            ("score", pa.float32()),  # the select.score column, as stored in scores.parquet
            ("cut_as_hardest", pa.bool_()),
            ("region", pa.int16()),
            ("region_budget", pa.int32()),
            ("class_budget", pa.int32()),
            ("selection_rank", pa.int32()),
            ("importance_term", pa.float32()),  # the gain terms at pick time; null when not picked
            ("alignment_term", pa.float32()),
            ("diversity_term", pa.float32()),
            ("class_mmd_after", pa.float32()),
        ]
    ),
)

CORESET_DIFF = TableSpec(
    "coreset_diff",
    "select",
    pa.schema([("sample_id", pa.int64()), ("before", pa.bool_()), ("after", pa.bool_()), ("reason", pa.string())]),
)
"""The coreset against the one selected before it in the same outputs folder (all False before: the first selection)."""


def _list_rows(values: np.ndarray, list_type: pa.DataType) -> pa.ListArray:
    """The rows of a matrix as a list column, sharing the matrix's memory (no copy)."""
    matrix = np.ascontiguousarray(values, dtype=list_type.value_type.to_pandas_dtype())
    flat = pa.Array.from_buffers(list_type.value_type, matrix.size, [None, pa.py_buffer(matrix)])
    offsets = pa.array(np.arange(0, matrix.size + 1, max(matrix.shape[1], 1), dtype=np.int32)[: len(matrix) + 1])
    return pa.ListArray.from_arrays(offsets, flat, type=list_type)


def _columns_for(spec: TableSpec, columns: dict[str, np.ndarray | list[np.ndarray]]) -> pa.Table:
    fields = list(spec.schema)
    extra = [name for name in columns if name not in spec.schema.names]
    for name in extra:
        if spec.extra_columns is None or not re.fullmatch(spec.extra_columns, name):
            raise TableError(f"{spec.name}: column {name!r} is not part of the schema")
        fields.append(pa.field(name, pa.float32()))
    arrays = []
    for field in fields:
        values = columns[field.name]
        if pa.types.is_list(field.type):  # a matrix, or a list of matrices (chunks, e.g. train then test rows)
            chunks = values if isinstance(values, (list, tuple)) else [values]
            arrays.append(pa.chunked_array([_list_rows(chunk, field.type) for chunk in chunks], type=field.type))
        elif isinstance(values, np.ma.MaskedArray):  # masked entries are "not applicable": stored as nulls
            arrays.append(pa.array(values.filled(0), type=field.type, mask=np.ma.getmaskarray(values)))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _duplicate_ids(table: pa.Table) -> np.ndarray:
    """The sample_ids that occur more than once (within a split, for tables that hold both splits), in table order."""
    ids = table.column("sample_id").to_numpy()
    split = table.column("split").to_numpy(zero_copy_only=False).astype(str) if "split" in table.column_names else np.zeros(len(ids), str)
    keys = np.rec.fromarrays([split, ids])
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    return ids[np.sort(first[counts > 1])]


def write_table(
    spec: TableSpec, columns: dict[str, np.ndarray | list[np.ndarray]], path: str | Path, *, params_hash: str, data_fingerprint: str, **extra_meta: str
) -> Path:
    """Write `columns` under `spec`'s schema to `path` atomically, with provenance in the metadata."""
    table = _columns_for(spec, columns)
    duplicated = _duplicate_ids(table)
    if len(duplicated):
        raise TableError(f"{spec.name}: {len(duplicated)} duplicate sample_ids, first {duplicated[0]}; refusing to write {path}")
    metadata = {
        "unseen.table": spec.name,
        "unseen.schema_version": SCHEMA_VERSION,
        "unseen.params_hash": params_hash,
        "unseen.data_fingerprint": data_fingerprint,
        **{f"unseen.{key}": str(value) for key, value in extra_meta.items()},
    }
    return write_parquet(table, path, metadata)


ROW_GROUP_ROWS = 16384
"""Rows per Parquet row group: the writer encodes one group at a time, so writing a large table costs a few MB, not
a second copy of it."""


def write_parquet(table: pa.Table, path: str | Path, metadata: dict[str, str]) -> Path:
    """Any table with `unseen.`-prefixed metadata, written atomically: the one way Parquet files are written.
    Dictionary encoding only for text columns: numbers and embeddings rarely repeat."""
    table = table.replace_schema_metadata({key: str(value) for key, value in metadata.items()})
    text = [field.name for field in table.schema if pa.types.is_string(field.type)]
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, use_dictionary=text)
    return Path(path)


def read_table(spec: TableSpec, path: str | Path, *, data_fingerprint: str | None = None, params_hash: str | None = None) -> pa.Table:
    """Read a table and check that it is the named kind, of this schema version, from this data (and params)."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: table not found; run `unseen stage {spec.stage}` (or `unseen run`) first")
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise TableError(f"{path}: not a readable Parquet file ({exc}); delete it and {spec.rerun}") from None
    meta = {f"unseen.{key}": value for key, value in table_meta(table).items()}
    if meta.get("unseen.table") != spec.name:
        raise TableError(f"{path}: this is a {meta.get('unseen.table', 'foreign')!r} table, expected {spec.name!r}")
    if meta.get("unseen.schema_version") != SCHEMA_VERSION:
        raise TableError(
            f"{path}: schema version {meta.get('unseen.schema_version')!r}, this code reads version {SCHEMA_VERSION}; {spec.rerun}"
        )
    for field in spec.schema:
        if field.name not in table.column_names or not table.schema.field(field.name).type.equals(field.type):
            raise TableError(f"{path}: column {field.name!r} missing or of the wrong type; {spec.rerun}")
    if data_fingerprint is not None and meta.get("unseen.data_fingerprint") != data_fingerprint:
        raise TableError(
            f"{path}: made from other data (fingerprint {meta.get('unseen.data_fingerprint')}, current data {data_fingerprint}); {spec.rerun}"
        )
    if params_hash is not None and meta.get("unseen.params_hash") != params_hash:
        raise TableError(f"{path}: made with other params (hash {meta.get('unseen.params_hash')}, expected {params_hash}); {spec.rerun}")
    duplicated = _duplicate_ids(table)
    if len(duplicated):
        raise TableError(f"{path}: {len(duplicated)} sample_ids occur more than once, first {duplicated[0]}; {spec.rerun}")
    return table


def stamped_with(path: str | Path, *, params_hash: str, data_fingerprint: str) -> bool:
    """Whether the table at `path` exists and was made from these params and this data (its schema read, not its rows)."""
    if not Path(path).is_file():
        return False
    meta = file_meta(path)
    return meta.get("params_hash") == params_hash and meta.get("data_fingerprint") == data_fingerprint


def table_meta(table: pa.Table) -> dict[str, str]:
    """The table's `unseen.` metadata, without the prefix."""
    return _unprefixed(table.schema.metadata)


def file_meta(path: str | Path) -> dict[str, str]:
    """The `unseen.` metadata of the table file at `path`, without the prefix (its schema read, not its rows)."""
    return _unprefixed(pq.read_schema(path).metadata)


def _unprefixed(metadata: dict[bytes, bytes] | None) -> dict[str, str]:
    return {k.decode().removeprefix("unseen."): v.decode() for k, v in (metadata or {}).items()}


def list_column(table: pa.Table, name: str) -> np.ndarray:
    """A fixed-length list column as a 2-D array of its value type."""
    column = table.column(name).combine_chunks()
    width = len(column[0]) if len(column) else 0
    return column.flatten().to_numpy().reshape(len(column), width)


def finite_or_raise(path: str | Path, name: str, values: np.ndarray, sample_ids: np.ndarray, spec: TableSpec) -> None:
    """Refuse NaN or inf values, naming how many and the first sample."""
    bad = ~np.isfinite(values)
    if bad.ndim > 1:
        bad = bad.any(axis=tuple(range(1, bad.ndim)))
    if bad.any():
        first = int(sample_ids[np.flatnonzero(bad)[0]])
        raise TableError(f"{path}: {int(bad.sum())} rows of {name!r} hold NaN or inf, first at sample_id {first}; {spec.rerun}")


def same_ids_or_raise(path: str | Path, ids: np.ndarray, expected: np.ndarray, split: str, spec: TableSpec) -> None:
    """Refuse a table whose sample_ids are not exactly the split's (rows lost or foreign), naming how many and the first."""
    missing, foreign = np.setdiff1d(expected, ids), np.setdiff1d(ids, expected)
    for found, what in ((missing, f"of the {split} split are missing"), (foreign, f"are not in the {split} split")):
        if len(found):
            raise TableError(f"{path}: {len(found)} sample_ids {what}, first {int(found[0])}; {spec.rerun}")


def positions_of(available: np.ndarray, wanted: np.ndarray, where: str) -> np.ndarray:
    """Positions in `available` of each sample_id in `wanted`; names the first missing one."""
    order = np.argsort(available, kind="stable")
    found = np.searchsorted(available[order], wanted)
    found = np.minimum(found, len(available) - 1)
    missing = available[order][found] != wanted if len(available) else np.ones(len(wanted), dtype=bool)
    if missing.any():
        raise TableError(f"{where}: {int(missing.sum())} sample_ids are missing, first {int(wanted[np.flatnonzero(missing)[0]])}")
    return order[found]
