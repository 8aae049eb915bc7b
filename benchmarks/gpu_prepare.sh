#!/usr/bin/env bash
# Run here, before benchmarks/gpu_check.sh runs on a GPU machine that has python3 with torch and can reach no package
# registry or data set: puts into .gpu/ (git-ignored, about 34 MB) the wheels of
# the library's dependencies such a machine lacks (pydantic, cleanlab and theirs, at the versions .venv holds) and the
# four Fashion-MNIST idx files of the Debian package. Carry .gpu to that machine with the working tree.
#
#   benchmarks/gpu_prepare.sh            # PY_VERSION=3.12 by default: the GPU machine's Python
set -euo pipefail
cd "$(dirname "$0")/.."
version="${PY_VERSION:-3.12}"
fashion=/usr/share/datasets/fashion-mnist
if ! ls "$fashion"/*-idx?-ubyte.gz >/dev/null 2>&1; then
  echo "error: no Fashion-MNIST idx files in $fashion; apt-get install -y dataset-fashion-mnist" >&2
  exit 2
fi
rm -rf .gpu.tmp && mkdir -p .gpu.tmp/wheels .gpu.tmp/fashion-mnist
pins=$(.venv/bin/python - <<'PY'
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in
      ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "cleanlab", "termcolor")))
PY
)
# shellcheck disable=SC2086
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu.tmp/wheels $pins
cp "$fashion"/*-idx?-ubyte.gz .gpu.tmp/fashion-mnist/
rm -rf .gpu && mv .gpu.tmp .gpu
du -sh .gpu
