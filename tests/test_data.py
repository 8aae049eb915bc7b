"""unseen.data on small data sets that the tests write in the official on-disk formats.

Formats follow torchvision 0.29: Fashion-MNIST idx files (magic 2051 images / 2049 labels, big-endian
dims, uint8 payload) under <root>/FashionMNIST/raw; CIFAR python pickles under cifar-10-batches-py and
cifar-100-python; ImageFolder trees <root>/{train,test}/<class>/*.png.
"""

from __future__ import annotations

import functools
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unseen.data
from unseen.config import DataParams
from unseen.data import FASHION_MNIST_FILES, DataError, load_dataset, place_system_fashion_mnist
from unseen.listing import stable_id

RNG_SEED = 1234


# --------------------------------------------------------------------------- writers (official formats)


def idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + np.asarray(labels, dtype=np.uint8).tobytes()


def fashion_arrays(n_train: int = 30, n_test: int = 20, seed: int = RNG_SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }


def fashion_payloads(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """Decompressed idx bytes keyed by the official .gz name."""
    return {
        "train-images-idx3-ubyte.gz": idx_images(arrays["train_images"]),
        "train-labels-idx1-ubyte.gz": idx_labels(arrays["train_labels"]),
        "t10k-images-idx3-ubyte.gz": idx_images(arrays["test_images"]),
        "t10k-labels-idx1-ubyte.gz": idx_labels(arrays["test_labels"]),
    }


def write_fashion_system_dir(system_dir: Path, arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The Debian package's layout: the four official .gz names in one folder."""
    system_dir.mkdir(parents=True, exist_ok=True)
    payloads = fashion_payloads(arrays)
    for name, payload in payloads.items():
        (system_dir / name).write_bytes(gzip.compress(payload, compresslevel=1))
    return payloads


def write_fashion_raw(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    """torchvision's own layout: decompressed idx files in <root>/FashionMNIST/raw."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, payload in fashion_payloads(arrays).items():
        (raw / name.removesuffix(".gz")).write_bytes(payload)
    return raw


def cifar_arrays(name: str, n_train_per_file: int, n_test: int, seed: int = RNG_SEED) -> dict:
    rng = np.random.default_rng(seed)
    n_classes = 10 if name == "cifar10" else 100
    n_files = 5 if name == "cifar10" else 1
    train = [
        (rng.integers(0, 256, (n_train_per_file, 3072), dtype=np.uint8), rng.integers(0, n_classes, n_train_per_file).tolist())
        for _ in range(n_files)
    ]
    test = (rng.integers(0, 256, (n_test, 3072), dtype=np.uint8), rng.integers(0, n_classes, n_test).tolist())
    return {"train": train, "test": test, "classes": [f"{name}-class-{i:03d}" for i in range(n_classes)]}


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(root: Path, name: str, arrays: dict) -> Path:
    """The python-pickle batches as extracted from cifar-{10,100}-python.tar.gz."""
    if name == "cifar10":
        base = root / "cifar-10-batches-py"
        base.mkdir(parents=True)
        files = [f"data_batch_{i}" for i in range(1, 6)]
        for file, (data, labels) in zip(files, arrays["train"], strict=True):
            _pickle(base / file, {"batch_label": file, "labels": labels, "data": data, "filenames": [f"{k}.png" for k in range(len(labels))]})
        data, labels = arrays["test"]
        _pickle(base / "test_batch", {"batch_label": "test", "labels": labels, "data": data, "filenames": [f"{k}.png" for k in range(len(labels))]})
        _pickle(base / "batches.meta", {"label_names": arrays["classes"], "num_cases_per_batch": 10000, "num_vis": 3072})
    else:
        base = root / "cifar-100-python"
        base.mkdir(parents=True)
        for file, (data, labels) in (("train", arrays["train"][0]), ("test", arrays["test"])):
            _pickle(
                base / file,
                {
                    "filenames": [f"{k}.png" for k in range(len(labels))],
                    "batch_label": file,
                    "fine_labels": labels,
                    "coarse_labels": [label // 5 for label in labels],
                    "data": data,
                },
            )
        _pickle(base / "meta", {"fine_label_names": arrays["classes"], "coarse_label_names": [f"super-{i}" for i in range(20)]})
    return base


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="RGB").save(path)


def write_image_folder(root: Path, layout: dict[str, dict[str, int]], seed: int = RNG_SEED) -> dict[str, list[tuple[Path, np.ndarray]]]:
    """root/<split>/<class>/<k>.png, 8x8 RGB; returns each split's (path, HWC pixels), in creation order."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[tuple[Path, np.ndarray]]] = {}
    for split, classes in layout.items():
        written[split] = []
        for cls, count in classes.items():
            for k in reversed(range(count)):  # created out of name order: the loader must sort, not trust the file system
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                path = root / split / cls / f"img{k:02d}.png"
                write_png(path, pixels)
                written[split].append((path, pixels))
    return written


def params(name: str, root: Path, **kwargs) -> DataParams:
    return DataParams(name=name, root=str(root), download=False, **kwargs)


@pytest.fixture(autouse=True)
def system_dir(tmp_path, monkeypatch) -> Path:
    """Point load_dataset's Fashion-MNIST unpacking at a per-test folder (empty unless a test fills it).

    load_dataset calls place_system_fashion_mnist(root) with the real /usr/share/datasets path; without this
    the "missing files" tests would silently load the real 60,000 images instead.
    """
    fake = tmp_path / "system-fashion-mnist"
    monkeypatch.setattr(unseen.data, "place_system_fashion_mnist", functools.partial(place_system_fashion_mnist, system_dir=fake))
    return fake


# --------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_from_system_dir_round_trips(tmp_path, system_dir):
    """Files unpacked from the Debian package's .gz load with the exact pixels, labels and official ids."""
    arrays = fashion_arrays(n_train=30, n_test=20)
    payloads = write_fashion_system_dir(system_dir, arrays)
    root = tmp_path / "root"

    assert place_system_fashion_mnist(root, system_dir=system_dir) is True
    raw = root / "FashionMNIST" / "raw"
    for gz_name, payload in payloads.items():
        assert (raw / gz_name.removesuffix(".gz")).read_bytes() == payload

    ds = load_dataset(params("fashion-mnist", root))

    assert ds.name == "fashion-mnist"
    assert len(ds.classes) == ds.num_classes == 10
    assert ds.image_shape == (1, 28, 28)
    for split, prefix in ((ds.train, "train"), (ds.test, "test")):
        n = len(arrays[f"{prefix}_labels"])
        assert split.images.shape == (n, 1, 28, 28)
        assert split.images.dtype == torch.uint8
        assert torch.equal(split.images[:, 0], torch.from_numpy(arrays[f"{prefix}_images"]))
        assert split.labels.dtype == torch.int64
        assert split.labels.tolist() == arrays[f"{prefix}_labels"].tolist()
        assert split.sample_ids.dtype == np.int64
        np.testing.assert_array_equal(split.sample_ids, np.arange(n))
    assert ds.mean == pytest.approx((arrays["train_images"].mean() / 255.0,), rel=1e-5)


def test_place_system_fashion_mnist_needs_all_four_files(tmp_path, system_dir):
    """With one .gz missing nothing is unpacked (and the caller learns it from the return value)."""
    write_fashion_system_dir(system_dir, fashion_arrays())
    (system_dir / FASHION_MNIST_FILES[-1]).unlink()
    root = tmp_path / "root"

    assert place_system_fashion_mnist(root, system_dir=system_dir) is False
    assert not (root / "FashionMNIST").exists()


def test_truncated_gz_leaves_no_partial_raw_file(tmp_path, system_dir):
    """Unpacking is atomic: a truncated .gz never leaves a half-written idx file that would later look valid."""
    write_fashion_system_dir(system_dir, fashion_arrays())
    damaged = system_dir / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:200])
    root = tmp_path / "root"

    with pytest.raises(DataError):
        place_system_fashion_mnist(root, system_dir=system_dir)
    raw = root / "FashionMNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert [p.name for p in raw.iterdir() if p.name.endswith(".tmp")] == []


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_round_trips_pixels_and_labels(tmp_path, name):
    """Unchecked CIFAR batches load as NCHW uint8 with the official channel-major pixel layout."""
    arrays = cifar_arrays(name, n_train_per_file=3 if name == "cifar10" else 7, n_test=4)
    # one known pixel: image 1 of the first training file, green channel, row 5, column 7
    arrays["train"][0][0][1, 1 * 1024 + 5 * 32 + 7] = 201
    arrays["train"][0][0][1, 0 * 1024 + 5 * 32 + 7] = 17
    write_cifar(tmp_path, name, arrays)

    ds = load_dataset(params(name, tmp_path, verify_checksums=False))

    train_data = np.concatenate([data for data, _ in arrays["train"]])
    train_labels = [label for _, labels in arrays["train"] for label in labels]
    test_data, test_labels = arrays["test"]
    assert ds.classes == arrays["classes"]
    assert ds.image_shape == (3, 32, 32)
    assert ds.train.images.shape == (len(train_data), 3, 32, 32)
    assert ds.test.images.shape == (len(test_data), 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8
    assert ds.train.images.is_contiguous()
    assert ds.train.images[1, 1, 5, 7].item() == 201
    assert ds.train.images[1, 0, 5, 7].item() == 17
    assert torch.equal(ds.train.images, torch.from_numpy(train_data.reshape(-1, 3, 32, 32)))
    assert torch.equal(ds.test.images, torch.from_numpy(test_data.reshape(-1, 3, 32, 32)))
    assert ds.train.labels.tolist() == train_labels
    assert ds.test.labels.tolist() == test_labels
    np.testing.assert_array_equal(ds.train.sample_ids, np.arange(len(train_data)))
    np.testing.assert_array_equal(ds.test.sample_ids, np.arange(len(test_data)))
    expected_mean = train_data.reshape(-1, 3, 1024).astype(np.float64).mean(axis=(0, 2)) / 255.0
    assert ds.mean == pytest.approx(tuple(expected_mean), rel=1e-5)


# --------------------------------------------------------------------------- ImageFolder


def test_image_folder_loads_sorted_classes_and_stable_ids(tmp_path):
    """Classes are the sorted folder names; samples come in sorted (class, file name) order; ids derive from the paths."""
    written = write_image_folder(tmp_path, {"train": {"zebra": 3, "ant": 2}, "test": {"zebra": 1, "ant": 2}})

    ds = load_dataset(params("imagefolder", tmp_path))
    again = load_dataset(params("imagefolder", tmp_path))

    assert ds.classes == ["ant", "zebra"]
    assert ds.image_shape == (3, 8, 8)
    for part in ("train", "test"):
        split = getattr(ds, part)
        ordered = sorted(written[part], key=lambda item: (item[0].parent.name, item[0].name))
        assert split.images.shape == (len(ordered), 3, 8, 8)
        assert split.images.dtype == torch.uint8
        expected = torch.from_numpy(np.stack([pixels for _, pixels in ordered])).permute(0, 3, 1, 2)
        assert torch.equal(split.images, expected)
        assert split.labels.tolist() == [ds.classes.index(path.parent.name) for path, _ in ordered]
        np.testing.assert_array_equal(split.sample_ids, [stable_id(path.relative_to(tmp_path).as_posix()) for path, _ in ordered])
        np.testing.assert_array_equal(getattr(again, part).sample_ids, split.sample_ids)
    assert again.fingerprint == ds.fingerprint


def test_image_folder_skips_hidden_folders_and_scales_16_bit_images(tmp_path):
    write_image_folder(tmp_path, {"train": {"ant": 2, "bee": 2}, "test": {"ant": 1, "bee": 1}})
    write_png(tmp_path / "train" / ".ipynb_checkpoints" / "img00.png", np.zeros((8, 8, 3), dtype=np.uint8))
    deep = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)  # a 16-bit grey ramp
    Image.fromarray(deep).save(tmp_path / "train" / "bee" / "img99.png")

    ds = load_dataset(params("imagefolder", tmp_path))
    assert ds.classes == ["ant", "bee"] and len(ds.train) == 5
    ramp = ds.train.images[-1, 0].numpy()  # sorted last: bee/img99.png
    assert ramp.min() == 0 and ramp.max() == 255 and len(np.unique(ramp)) > 32  # scaled, not clipped to 0/255


# --------------------------------------------------------------------------- stratified subsets


@pytest.fixture
def hundred(tmp_path) -> Path:
    """Fashion-MNIST files with 100 train samples (10 per class) and 40 test samples (4 per class)."""
    root = tmp_path / "hundred"
    arrays = fashion_arrays(n_train=100, n_test=40)
    arrays["test_labels"] = (np.arange(40) % 10).astype(np.uint8)
    write_fashion_raw(root, arrays)
    return root


def test_subset_is_stratified_and_keeps_official_ids(hundred):
    """A 50-of-100 subset keeps 5 per class, and each kept sample keeps its official id, image and label."""
    full = load_dataset(params("fashion-mnist", hundred))
    sub = load_dataset(params("fashion-mnist", hundred, train_subset=50, test_subset=20), seed=3)

    assert len(sub.train) == 50
    assert np.bincount(sub.train.labels.numpy(), minlength=10).tolist() == [5] * 10
    assert np.bincount(sub.test.labels.numpy(), minlength=10).tolist() == [2] * 10
    for part in ("train", "test"):
        ids = getattr(sub, part).sample_ids
        assert ids.dtype == np.int64
        assert np.all(np.diff(ids) > 0), "sample_ids are sorted and unique"
        assert set(ids) <= set(range(len(getattr(full, part))))
        assert torch.equal(getattr(sub, part).images, getattr(full, part).images[torch.as_tensor(ids)])
        assert torch.equal(getattr(sub, part).labels, getattr(full, part).labels[torch.as_tensor(ids)])


def test_subset_depends_on_seed_only(hundred):
    """Same seed, same ids (reproducible runs); another seed, other ids (the seed is really used)."""
    p = params("fashion-mnist", hundred, train_subset=50)
    first, second, other = load_dataset(p, seed=7), load_dataset(p, seed=7), load_dataset(p, seed=8)

    np.testing.assert_array_equal(first.train.sample_ids, second.train.sample_ids)
    assert first.fingerprint == second.fingerprint
    assert not np.array_equal(first.train.sample_ids, other.train.sample_ids)
    assert first.fingerprint != other.fingerprint


def test_subset_as_large_as_the_split_is_the_whole_split(hundred):
    """Asking for at least the split size returns the split unchanged."""
    ds = load_dataset(params("fashion-mnist", hundred, train_subset=100, test_subset=1000))
    np.testing.assert_array_equal(ds.train.sample_ids, np.arange(100))
    np.testing.assert_array_equal(ds.test.sample_ids, np.arange(40))


def test_subset_just_below_the_split_size(hundred):
    """95 of 100 samples is a legal request (train_subset >= 10): it should give 95 samples, not a crash."""
    ds = load_dataset(params("fashion-mnist", hundred, train_subset=95))
    assert len(ds.train) == 95


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_follows_content_not_location(tmp_path):
    """Identical files in two folders share a fingerprint; one changed pixel changes it."""
    arrays = fashion_arrays()
    write_fashion_raw(tmp_path / "a", arrays)
    write_fashion_raw(tmp_path / "b", arrays)
    changed = {key: value.copy() for key, value in arrays.items()}
    changed["test_images"][5, 13, 21] ^= 1
    write_fashion_raw(tmp_path / "c", changed)

    fingerprint_a = load_dataset(params("fashion-mnist", tmp_path / "a")).fingerprint
    assert load_dataset(params("fashion-mnist", tmp_path / "a")).fingerprint == fingerprint_a
    assert load_dataset(params("fashion-mnist", tmp_path / "b")).fingerprint == fingerprint_a
    assert load_dataset(params("fashion-mnist", tmp_path / "c")).fingerprint != fingerprint_a


def test_fingerprint_changes_with_a_label(tmp_path):
    """A relabelled sample is different data, even when every pixel is the same."""
    arrays = fashion_arrays()
    write_fashion_raw(tmp_path / "a", arrays)
    relabelled = {key: value.copy() for key, value in arrays.items()}
    relabelled["train_labels"][0] = (relabelled["train_labels"][0] + 1) % 10
    write_fashion_raw(tmp_path / "b", relabelled)

    assert load_dataset(params("fashion-mnist", tmp_path / "a")).fingerprint != load_dataset(params("fashion-mnist", tmp_path / "b")).fingerprint




def test_label_noise_flips_a_stratified_fraction_to_other_classes(fashion_root):
    clean = load_dataset(DataParams(root=str(fashion_root), download=False, train_subset=1000, test_subset=100))
    noisy = load_dataset(DataParams(root=str(fashion_root), download=False, train_subset=1000, test_subset=100, label_noise=0.2))
    changed = clean.train.labels.numpy() != noisy.train.labels.numpy()
    assert np.array_equal(changed, noisy.noisy_train) and changed.sum() == 200
    assert list(np.bincount(clean.train.labels.numpy()[changed], minlength=10)) == [20] * 10  # stratified
    assert np.array_equal(clean.test.labels.numpy(), noisy.test.labels.numpy()) and clean.fingerprint != noisy.fingerprint
