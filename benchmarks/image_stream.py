"""Peak memory and images per second of the features stage on image collections streamed from disk.

Generates ImageFolder trees of mixed-size pictures (each side 64-512 px, half JPEG, half PNG, a tenth greyscale; ten
classes told apart by a coloured shape; 90% train, 10% test), then runs `unseen stage features` on each with
`data.storage=stream` and `data.image_size=32`, twice, each in its own process: first with an empty scan cache (the
stage scans every file once before it starts: checks, digests, pixel statistics), then with the cache that run left
(the difference of the two wall times is the scan). The stage trains the 1-epoch proxy on the train images and embeds
train and test images, decoding every batch from disk in `data.loader_workers` processes. Peak RSS is each process's
high-water mark (VmHWM): the stage's own process, and the largest of its decoding processes.
Usage: .venv/bin/python benchmarks/image_stream.py [--sizes 20000,80000] [--root /tmp/unseen-image-collections]
Writes benchmarks/results/image_stream.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

from benchmarks.machine import machine
from unseen.io import write_json

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10
COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 0, 128]], dtype=np.uint8)


def picture(index: int, label: int) -> tuple[np.ndarray, str, str]:
    """(pixels, format, mode) of sample `index`: a coloured square of its class on a random gradient, at a random size."""
    rng = np.random.default_rng([index, 7])
    width, height = (int(v) for v in rng.integers(64, 513, 2))
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 256, 3)
    pixels = ((base + np.stack([x * 120 // width, y * 120 // height, (x + y) * 60 // (width + height)], -1)) % 256).astype(np.uint8)
    side = int(min(width, height) * rng.uniform(0.3, 0.6))
    top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
    pixels[top : top + side, left : left + side] = COLOURS[label]
    return pixels, "JPEG" if index % 2 else "PNG", "L" if index % 10 == 3 else "RGB"


def _write(job: tuple[Path, int, int, str]) -> None:
    from PIL import Image

    root, index, label, split = job
    pixels, fmt, mode = picture(index, label)
    path = root / split / f"class_{label}" / f"{index:06d}.{'jpg' if fmt == 'JPEG' else 'png'}"
    Image.fromarray(pixels).convert(mode).save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 6}))


def collection(root: Path, size: int) -> Path:
    """The generated tree of `size` images (reused when complete)."""
    tree = root / f"mixed-{size}"
    done = tree / ".complete"
    if done.is_file():
        return tree
    jobs = [(tree, i, i % CLASSES, "test" if (i // CLASSES) % 10 == 9 else "train") for i in range(size)]
    for split in ("train", "test"):
        for label in range(CLASSES):
            (tree / split / f"class_{label}").mkdir(parents=True, exist_ok=True)
    with multiprocessing.Pool() as pool:
        pool.map(_write, jobs, chunksize=256)
    done.touch()
    return tree


def _high_water_mark(process: psutil.Process) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def features_stage(tree: Path, workers: int, index_dir: Path) -> dict:
    """Run the features stage on `tree` in a fresh process; poll the high-water marks of it and its descendants."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["outputs"] = str(folder / "outputs")
        params["data"].update(name="imagefolder", root=str(tree), image_size=32, storage="stream", loader_workers=workers, index_dir=str(index_dir))
        params["tracking"]["uri"] = f"sqlite:///{folder / 'mlflow.db'}"
        (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        started = time.perf_counter()
        stage = subprocess.Popen([str(Path(sys.executable).with_name("unseen")), "stage", "features", "--params", str(folder / "params.yaml")], cwd=REPO)
        main, peaks = psutil.Process(stage.pid), {}
        while stage.poll() is None:
            try:
                for process in [main, *main.children(recursive=True)]:
                    peaks[process.pid] = max(peaks.get(process.pid, 0), _high_water_mark(process))
            except (psutil.Error, OSError):
                pass
            time.sleep(0.2)
        wall = time.perf_counter() - started
        if stage.returncode:
            raise SystemExit(f"the features stage failed on {tree} (exit {stage.returncode})")
        report = json.loads((folder / "outputs" / "run_report.json").read_text())
        compute = next(s for s in report["stages"] if s["name"] == "features")["compute_seconds"]
        helpers = [peak for pid, peak in peaks.items() if pid != stage.pid]
        return {"wall_seconds": round(wall, 1), "compute_seconds": round(compute, 1), "stage_peak_rss_mib": round(peaks.get(stage.pid, 0) / 2**20, 1),
                "largest_decoder_peak_rss_mib": round(max(helpers, default=0) / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="20000,80000")
    parser.add_argument("--root", default="/tmp/unseen-image-collections")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    runs = []
    for size in (int(s) for s in args.sizes.split(",")):
        started = time.perf_counter()
        tree = collection(Path(args.root), size)
        generated = time.perf_counter() - started
        files = [p for p in tree.rglob("*") if p.suffix in (".jpg", ".png")]
        train = sum(p.parts[-3] == "train" for p in files)
        with tempfile.TemporaryDirectory() as index_dir:
            cold = features_stage(tree, args.workers, Path(index_dir))  # the first run: scans every file
            warm = features_stage(tree, args.workers, Path(index_dir))  # the scan read from its cache
        scan_seconds = cold["wall_seconds"] - warm["wall_seconds"]
        run = {"images": size, "train_images": train, "bytes_on_disk": sum(p.stat().st_size for p in files),
               "generate_seconds": round(generated, 1), "first_run": cold, "cached_scan_run": warm,
               "scan_seconds": round(scan_seconds, 1), "scan_images_per_second": round(size / scan_seconds, 1),
               # the proxy's epoch decodes every train image, the embeddings every train and test image
               "stream_images_per_second": round((2 * train + (size - train)) / warm["compute_seconds"], 1)}
        runs.append(run)
        print(json.dumps(run), flush=True)
    result = {
        "command": f"python benchmarks/image_stream.py --sizes {args.sizes} --workers {args.workers}",
        "machine": machine(),
        "settings": {"image_size": 32, "storage": "stream", "loader_workers": args.workers, "extractor": "proxy, 1 epoch (params.yaml)"},
        "runs": runs,
        "peak_rss_growth": round(runs[-1]["first_run"]["stage_peak_rss_mib"] / runs[0]["first_run"]["stage_peak_rss_mib"] - 1, 4) if len(runs) > 1 else None,
        "target_peak_rss_growth": 0.10,
    }
    print(json.dumps({k: result[k] for k in ("peak_rss_growth",)}))
    write_json(REPO / "benchmarks" / "results" / "image_stream.json", result)


if __name__ == "__main__":
    main()
