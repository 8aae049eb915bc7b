"""Tables: one schema each, atomic writes, provenance checks on read."""

import numpy as np
import pytest

from unseen.tables import FEATURES, SCORES, TableError, list_column, positions_of, read_table, write_table


def _scores(n=5):
    return {
        "sample_id": np.arange(n),
        "label": np.zeros(n, dtype=np.int16),
        "folds": np.zeros((n, 2), dtype=np.int16),
        "scored_by": np.full(n, "unseen_r0_f0"),
        "el2n_unseen": np.linspace(0, 1, n).astype(np.float32),
    }


def test_round_trip_keeps_schema_and_provenance(tmp_path):
    path = write_table(SCORES, _scores(), tmp_path / "scores.parquet", params_hash="abc", data_fingerprint="fp")
    table = read_table(SCORES, path, data_fingerprint="fp", params_hash="abc")
    assert table.column_names == ["sample_id", "label", "folds", "scored_by", "el2n_unseen"]
    assert table.column("folds").to_pylist()[0] == [0, 0]
    assert table.schema.metadata[b"unseen.params_hash"] == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]  # no temporary file left behind


def test_a_list_column_given_in_chunks_reads_back_as_one_matrix(tmp_path):
    train, test = np.arange(12, dtype=np.float32).reshape(4, 3), -np.arange(6, dtype=np.float32).reshape(2, 3)
    columns = {"sample_id": np.array([4, 2, 9, 1, 4, 7]), "split": np.array(["train"] * 4 + ["test"] * 2), "label": np.zeros(6), "embedding": [train, test]}
    table = read_table(FEATURES, write_table(FEATURES, columns, tmp_path / "f.parquet", params_hash="h", data_fingerprint="f"))
    np.testing.assert_array_equal(list_column(table, "embedding"), np.concatenate([train, test]))


def test_more_score_columns_fit_without_a_new_schema(tmp_path):
    columns = {**_scores(), "forgetting_seen": np.zeros(5, dtype=np.float32), "aum_unseen_std": np.ones(5, dtype=np.float32)}
    table = read_table(SCORES, write_table(SCORES, columns, tmp_path / "s.parquet", params_hash="h", data_fingerprint="f"))
    assert "forgetting_seen" in table.column_names and "aum_unseen_std" in table.column_names


def test_duplicate_ids_and_foreign_columns_are_not_written(tmp_path):
    columns = _scores()
    columns["sample_id"] = np.array([0, 1, 1, 2, 3])
    with pytest.raises(TableError, match="duplicate"):
        write_table(SCORES, columns, tmp_path / "s.parquet", params_hash="h", data_fingerprint="f")
    with pytest.raises(TableError, match="not part of the schema"):
        write_table(SCORES, {**_scores(), "Bad Column": np.zeros(5)}, tmp_path / "s.parquet", params_hash="h", data_fingerprint="f")
    assert list(tmp_path.iterdir()) == []


def test_positions_of_finds_ids_and_names_a_missing_one():
    assert list(positions_of(np.array([5, 3, 9]), np.array([9, 5]), "x")) == [2, 0]
    with pytest.raises(TableError, match="first 4"):
        positions_of(np.array([5, 3, 9]), np.array([3, 4]), "features")


def test_written_tables_follow_the_umask_not_the_temporary_files_mode(tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        path = write_table(SCORES, _scores(3), tmp_path / "s.parquet",
                           params_hash="p", data_fingerprint="d")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp's 0600 would hide the table from the team's other users
