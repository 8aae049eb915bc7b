"""Image files of any size, mode and format, from ImageFolder trees and manifests, in memory or streamed from disk."""

from __future__ import annotations

import json
import multiprocessing

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import unseen.images
from tests.conftest import tiny_params, write_params
from unseen.config import DataParams
from unseen.data import DataError, load_dataset
from unseen.images import ImageFiles, batches_in_order, decode_all, image_batches
from unseen.listing import stable_id

FORMATS = [("JPEG", "jpg", "RGB"), ("PNG", "png", "RGBA"), ("PNG", "png", "P"), ("JPEG", "jpg", "L"), ("WEBP", "webp", "RGB"), ("PNG", "png", "L")]


def picture(label: int, k: int, size: tuple[int, int], mode: str) -> Image.Image:
    """A learnable picture: a class-coloured square on a grey ramp, drawn at `size`, saved in `mode`."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 40 * k % 256)], axis=-1).astype(np.uint8)
    pixels[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = [(90 * label) % 256, 200 - 60 * label, 30 + 70 * label]
    image = Image.fromarray(pixels)
    return image.convert(mode) if mode != "P" else image.convert("P", palette=Image.Palette.ADAPTIVE)


def write_tree(root, counts: dict[str, int], classes=("cat", "dog", "owl"), seed: int = 0) -> list:
    """root/<split>/<class>/<k>.<ext>, cycling through formats, modes and sizes from 20 to 70 pixels."""
    rng = np.random.default_rng(seed)
    written = []
    for split, count in counts.items():
        for label, name in enumerate(classes):
            for k in range(count):
                fmt, ext, mode = FORMATS[(k + label) % len(FORMATS)]
                path = root / split / name / f"{k:03d}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                picture(label, k, tuple(int(v) for v in rng.integers(20, 71, 2)), mode).save(path, format=fmt)
                written.append(path)
    return written


def folder_params(root, **settings) -> DataParams:
    return DataParams(name="imagefolder", root=str(root), download=False, **settings)


def test_images_of_every_size_mode_and_format_become_one_shape(tmp_path):
    write_tree(tmp_path, {"train": 8, "test": 2})
    memory = load_dataset(folder_params(tmp_path, image_size=16, storage="memory"))
    streamed = load_dataset(folder_params(tmp_path, image_size=16, storage="stream"))
    grey = load_dataset(folder_params(tmp_path, image_size=12, image_mode="L", storage="memory"))

    assert memory.image_shape == streamed.image_shape == (3, 16, 16) and grey.image_shape == (1, 12, 12)
    assert isinstance(memory.train.images, torch.Tensor) and isinstance(streamed.train.images, ImageFiles)
    for part in ("train", "test"):
        assert torch.equal(getattr(memory, part).images, decode_all(getattr(streamed, part).images))
        np.testing.assert_array_equal(getattr(memory, part).sample_ids, getattr(streamed, part).sample_ids)
    assert memory.mean == streamed.mean and memory.std == streamed.std and memory.fingerprint == streamed.fingerprint
    assert len(memory.train) == 24 and memory.train.images.float().std() > 20  # decoded pictures, not blanks


def test_images_of_several_sizes_need_an_image_size(tmp_path):
    write_tree(tmp_path, {"train": 4, "test": 1})
    with pytest.raises(DataError, match="differ in size .*set data.image_size"):
        load_dataset(folder_params(tmp_path))


def test_auto_storage_streams_what_does_not_fit(tmp_path):
    write_tree(tmp_path, {"train": 4, "test": 1})
    small = load_dataset(folder_params(tmp_path, image_size=16))
    tight = load_dataset(folder_params(tmp_path, image_size=16, memory_limit_gb=(15 * 3 * 16 * 16 - 1) / 2**30))
    assert isinstance(small.train.images, torch.Tensor) and isinstance(tight.train.images, ImageFiles)


def write_manifest(path, rows: list[tuple], header: str = "path,label,split") -> None:
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))


def test_manifest_ids_survive_reordering_and_growth(tmp_path):
    files = write_tree(tmp_path / "pics", {"train": 5, "test": 2})
    rows = [(f.relative_to(tmp_path).as_posix(), f.parent.name, f.parts[-3]) for f in files]
    write_manifest(tmp_path / "a.csv", rows)
    write_manifest(tmp_path / "b.csv", rows[::-1])
    extra = tmp_path / "pics" / "new.png"
    picture(1, 7, (30, 40), "RGB").save(extra)
    write_manifest(tmp_path / "c.csv", [("pics/new.png", "dog", "train"), *rows])

    a, b, c = (load_dataset(DataParams(name="manifest", root=str(tmp_path / f"{n}.csv"), image_size=16)) for n in "abc")

    assert a.classes == ["cat", "dog", "owl"] and len(a.train) == 15 and len(a.test) == 6
    assert a.fingerprint == b.fingerprint != c.fingerprint
    for part in ("train", "test"):
        np.testing.assert_array_equal(getattr(a, part).sample_ids, getattr(b, part).sample_ids)
        assert torch.equal(getattr(a, part).images, getattr(b, part).images)
    assert set(a.train.sample_ids) | {stable_id("pics/new.png")} == set(c.train.sample_ids)
    old = np.isin(c.train.sample_ids, a.train.sample_ids)
    np.testing.assert_array_equal(c.train.sample_ids[old], a.train.sample_ids)  # old samples keep their ids and order
    assert torch.equal(c.train.images[torch.as_tensor(old)], a.train.images)


def test_manifest_without_split_holds_out_a_stable_fraction_by_id(tmp_path):
    files = write_tree(tmp_path, {"all": 40})
    rows = [(f.relative_to(tmp_path).as_posix(), f.parent.name) for f in files]
    write_manifest(tmp_path / "list.csv", rows, header="path,label")
    write_manifest(tmp_path / "fewer.csv", rows[:100], header="path,label")
    params = DataParams(name="manifest", root=str(tmp_path / "list.csv"), image_size=16, test_fraction=0.25)
    full = load_dataset(params)
    fewer = load_dataset(params.model_copy(update={"root": str(tmp_path / "fewer.csv")}))

    assert 15 <= len(full.test) <= 45 and len(full.train) + len(full.test) == 120
    assert set(fewer.test.sample_ids) <= set(full.test.sample_ids) and set(fewer.train.sample_ids) <= set(full.train.sample_ids)


def test_manifest_ids_and_class_list_from_their_columns(tmp_path):
    files = write_tree(tmp_path, {"train": 3, "test": 1}, classes=("0", "1", "2"))
    rows = [(f.relative_to(tmp_path).as_posix(), f.parent.name, f.parts[-3], 1000 + i) for i, f in enumerate(files)]
    write_manifest(tmp_path / "list.csv", rows, header="path,label,split,id")
    ds = load_dataset(DataParams(name="manifest", root=str(tmp_path / "list.csv"), image_size=16, classes=("2", "1", "0", "3")))
    assert ds.classes == ["2", "1", "0", "3"]
    assert sorted(ds.train.sample_ids.tolist() + ds.test.sample_ids.tolist()) == list(range(1000, 1012))
    by_id = dict(zip(ds.train.sample_ids.tolist(), ds.train.labels.tolist()))
    assert by_id[1000] == ds.classes.index(rows[0][1])
    columns = dict(zip(("path", "label", "split", "id"), zip(*rows)))
    pq.write_table(pa.table({**columns, "label": [int(v) for v in columns["label"]], "id": list(columns["id"])}), tmp_path / "list.parquet")
    same = load_dataset(DataParams(name="manifest", root=str(tmp_path / "list.parquet"), image_size=16, classes=("2", "1", "0", "3")))
    assert same.fingerprint == ds.fingerprint and torch.equal(same.train.images, ds.train.images)


def test_unreadable_files_are_refused_by_name_or_left_out_and_listed(tmp_path):
    write_tree(tmp_path, {"train": 4, "test": 1})
    broken = tmp_path / "train" / "dog" / "zz-broken.jpg"
    broken.write_bytes(Image.new("RGB", (40, 40)).tobytes()[:300])
    truncated = tmp_path / "test" / "owl" / "zz-truncated.png"
    picture(2, 1, (40, 40), "RGB").save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:-60])

    with pytest.raises(DataError, match=f"cannot read image {broken}.*2 unreadable.*on_bad_image=skip"):
        load_dataset(folder_params(tmp_path, image_size=16))
    ds = load_dataset(folder_params(tmp_path, image_size=16, on_bad_image="skip", storage="stream"))

    assert len(ds.train) == 12 and len(ds.test) == 3
    assert [(s.split, s.file) for s in ds.skipped] == [("train", str(broken)), ("test", str(truncated))]
    assert all(s.error for s in ds.skipped) and stable_id("train/dog/zz-broken.jpg") == ds.skipped[0].sample_id
    assert len(decode_all(ds.train.images)) == 12


def test_the_scan_is_cached_and_redone_when_a_file_changes(tmp_path, monkeypatch):
    write_tree(tmp_path, {"train": 2, "test": 1})
    params = folder_params(tmp_path, image_size=16, storage="stream", index_dir=str(tmp_path / "index"))
    first = load_dataset(params)
    monkeypatch.setattr(unseen.images, "_Scanner", None)  # a second scan would fail
    assert load_dataset(params).fingerprint == first.fingerprint
    monkeypatch.undo()
    changed = sorted((tmp_path / "train" / "cat").iterdir())[0]
    picture(2, 9, (33, 33), "RGB").save(changed, format=Image.open(changed).format)
    assert load_dataset(params).fingerprint != first.fingerprint
    assert len(list((tmp_path / "index").glob("*.parquet"))) == 2


def _decode_in_daemon(images: ImageFiles, queue) -> None:
    queue.put([batch.shape[0] for batch in batches_in_order(images, 5)])


def test_streamed_images_decode_in_process_inside_daemonic_workers(tmp_path):
    """Dask workers are daemonic and may not start decoding processes: there the batches are decoded in process."""
    write_tree(tmp_path, {"train": 4, "test": 1})
    images = load_dataset(folder_params(tmp_path, image_size=16, storage="stream", loader_workers=2)).train.images
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(target=_decode_in_daemon, args=(images, queue), daemon=True)
    worker.start()
    assert queue.get(timeout=60) == [5, 5, 2]
    worker.join(timeout=60)
    assert worker.exitcode == 0


def test_a_file_that_changes_mid_stream_is_named(tmp_path):
    write_tree(tmp_path, {"train": 2, "test": 1})
    images = load_dataset(folder_params(tmp_path, image_size=16, storage="stream", loader_workers=0)).train.images
    emptied = images.files[3]
    open(emptied, "wb").close()
    with pytest.raises(DataError, match=f"cannot read image {emptied}.*changed since it was indexed"):
        list(image_batches(images, [np.arange(6)]))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    write_tree(root, {"train": 40, "test": 10})
    broken = root / "train" / "owl" / "zz-broken.png"
    broken.write_bytes(b"not an image")
    return root


def _run_on_tree(tmp_path, fashion_root, tree, storage: str) -> dict:
    from flows.prune import prune

    params = tiny_params(tmp_path, fashion_root)
    params["data"] = {"name": "imagefolder", "root": str(tree), "image_size": 16, "storage": storage, "on_bad_image": "skip"}
    params["scores"].update(scorer="cnn")
    params["retrain"]["recipe"]["epochs"] = 1
    return prune(params_file=str(write_params(tmp_path / "params.yaml", params)))


def test_streamed_and_in_memory_runs_write_the_same_tables(tmp_path_factory, fashion_root, tree, prefect_api):
    """Features, fold scoring, selection and retraining on images decoded per batch by worker processes give the same
    tables as on the same images decoded into memory; the unreadable file is left out and listed in both."""
    runs = {storage: tmp_path_factory.mktemp(storage) for storage in ("memory", "stream")}
    results = {storage: _run_on_tree(folder, fashion_root, tree, storage) for storage, folder in runs.items()}
    for table in ("features", "scores", "coreset", "skipped_images"):
        memory, stream = (pq.read_table(folder / "outputs" / f"{table}.parquet") for folder in runs.values())
        assert memory.equals(stream), table
        assert memory.schema.metadata[b"unseen.data_fingerprint"] == stream.schema.metadata[b"unseen.data_fingerprint"]
    memory_metrics, stream_metrics = (json.loads((folder / "outputs" / "metrics.json").read_text()) for folder in runs.values())
    for key in ("test_accuracy_coreset", "test_accuracy_random", "coreset_size"):
        assert memory_metrics[key] == stream_metrics[key], key
    skipped = pq.read_table(runs["stream"] / "outputs" / "skipped_images.parquet").to_pylist()
    assert [row["file"] for row in skipped] == [str(tree / "train" / "owl" / "zz-broken.png")]
    assert pq.read_table(runs["stream"] / "outputs" / "features.parquet").num_rows == 120 + 30
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{runs['stream'] / 'mlflow.db'}")
    parent = client.get_run(results["stream"]["run_id"])
    (features_run,) = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.stage = 'features'"
    )
    assert features_run.data.metrics["skipped_images"] == 1
    assert "skipped_images.parquet" in [artifact.path for artifact in client.list_artifacts(features_run.info.run_id)]
