#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): the library's chain on CUDA in a few minutes, on a GPU machine with nothing
# but python3 and torch and no package registry or data set. benchmarks/gpu_prepare.sh, run first where pip reaches its
# registry, fills .gpu/ with the wheels such a machine lacks and the Fashion-MNIST files; carry .gpu along. Installs
# those wheels into a temporary folder, downloads nothing, and writes gpu_check.json and its log to $OUT (or a fresh
# temporary folder); the repository is not touched. Arguments go to gpu_check.py (e.g. --set retrain.recipe.epochs=20).
# With a full install and CIFAR-10 on disk, benchmarks/gpu_sweep.sh runs the shortened benchmarks/gpu.yaml sweep.
#
#   benchmarks/gpu_check.sh [--set KEY=VALUE ...]        # PYTHON=python3 by default
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$(mktemp -d)}"
py="${PYTHON:-python3}"
if [ -d .gpu/wheels ] && ! "$py" -c "import pydantic, cleanlab" 2>/dev/null; then
  site="$(mktemp -d)"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .gpu/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
data=()
if [ -d .gpu/fashion-mnist ]; then data=(--fashion-mnist .gpu/fashion-mnist); fi
"$py" -c "import torch; print('torch', torch.__version__, '| GPU:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
"$py" benchmarks/gpu_check.py "${data[@]}" --out "$out/gpu_check.json" "$@" 2>&1 | tee "$out/gpu_check.log"
echo "results: $out/gpu_check.json"
