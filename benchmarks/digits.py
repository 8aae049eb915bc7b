"""Export scikit-learn's bundled handwritten digits as an ImageFolder tree: data the method was never tuned on.

The 1,797 8x8 greyscale digits (UCI optical recognition set, shipped inside scikit-learn, so no download) become
`<root>/train/<digit>/<index>.png` and `<root>/test/<digit>/<index>.png`, a stratified 80/20 split fixed by
`--split-seed`, pixel values 0-16 scaled to 0-255. benchmarks/digits.yaml and digits_noise.yaml run on the tree through
`data.name: imagefolder`, the path a user's own image folders take.
Usage: .venv/bin/python benchmarks/digits.py [--root data/digits]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def export_digits(root: Path, split_seed: int = 0, test_fraction: float = 0.2) -> Path:
    """Write the tree into a temporary folder beside `root` and rename it into place; a complete tree is kept."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root
    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    indices = np.arange(len(pixels))
    train, test = train_test_split(indices, test_size=test_fraction, stratify=digits.target, random_state=split_seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for split, members in (("train", train), ("test", test)):
            for index in sorted(members):
                folder = staging / split / str(digits.target[index])
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels[index]).save(folder / f"{index:04d}.png")
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/digits"))
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    tree = export_digits(args.root, args.split_seed)
    counts = {split: sum(1 for _ in (tree / split).rglob("*.png")) for split in ("train", "test")}
    print(f"{tree}: {counts['train']} train and {counts['test']} test images")


if __name__ == "__main__":
    main()
