#!/usr/bin/env bash
# A shortened benchmarks/gpu.yaml sweep, end to end on CUDA, in minutes: CIFAR-10 (5,000-sample pool, 2,000 test
# images), ResNet-18, a few epochs, one seed, prune ratios 50% and 90%, five methods; then a summary table.
# Installs nothing and downloads nothing: it uses .venv (the full install, Prefect and MLflow included) and CIFAR-10
# files already on disk. A bare GPU machine (python3 and torch alone) runs benchmarks/gpu_check.sh instead.
#
#   benchmarks/gpu_sweep.sh [CIFAR_ROOT]     # CIFAR_ROOT holds cifar-10-batches-py/ (default: data)
#
# Everything it writes goes to $OUT (if set) or a fresh temporary folder; the repository is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(realpath "${1:-data}")"
work="${OUT:-$(mktemp -d)}/gpu_sweep"
mkdir -p "$work"
py=.venv/bin/python

if [ ! -d "$root/cifar-10-batches-py" ]; then
  echo "error: $root/cifar-10-batches-py not found; pass the folder that holds it (nothing is downloaded)" >&2
  exit 2
fi
"$py" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("error: CUDA is not available to torch; this check is for a GPU machine")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

# the shortened sweep: gpu.yaml with a small pool, short recipes, one seed, two ratios, five methods
"$py" - "$root" "$work" <<'PY'
import sys, yaml
root, work = sys.argv[1:]
sweep = yaml.safe_load(open("benchmarks/gpu.yaml"))
short = {"data.root": root, "data.train_subset": 5000, "data.test_subset": 2000, "features.proxy.epochs": 1,
         "scores.recipe.epochs": 3, "scores.score_epochs": "[2, 3]", "retrain.recipe.epochs": 2,
         "tracking.uri": f"sqlite:///{work}/mlflow.db"}
kept = [o for o in sweep["overrides"] if o.strip('"').partition("=")[0] not in short]
sweep.update(
    name="gpu_sweep", overrides=kept + [f"{k}={v}" for k, v in short.items()],
    work_dir=f"{work}/bench", results_dir=f"{work}/results", report=f"{work}/docs/benchmarks.md",
    seeds=[0], prune_ratios=[0.5, 0.9],
    methods={k: v for k, v in sweep["methods"].items() if k in ("random", "ccs_aum_seen", "ccs_el2n_unseen", "unseen", "unseen_multistep")},
)
yaml.safe_dump(sweep, open(f"{work}/gpu_sweep.yaml", "w"), sort_keys=False)
PY

export PREFECT_HOME="$work/prefect" DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
started=$(date +%s)
.venv/bin/unseen bench --config "$work/gpu_sweep.yaml" 2>&1 | tee "$work/bench.log" | grep -E "\[bench\]|cells:|error" || true
.venv/bin/unseen bench-report --config "$work/gpu_sweep.yaml"
"$py" - "$work" "$(( $(date +%s) - started ))" <<'PY'
import sys
from benchmarks.sweep import read_results
from benchmarks.report import summarize
work, seconds = sys.argv[1], int(sys.argv[2])
table, meta = read_results(f"{work}/results/gpu_sweep.parquet")
rows = table.to_pylist()
summary = summarize(rows)
print(f"\nmachine: {meta['machine']}\nend to end: {seconds} s; {len(rows)} cells (expected 11)")
print(f"{'method':<20}{'prune':>7}{'accuracy %':>12}{'epochs':>8}{'train s':>9}{'select s':>10}")
for r in sorted(rows, key=lambda r: (r["method"], r["prune_ratio"])):
    print(f"{r['method']:<20}{round(100 * r['prune_ratio']):>6}%{100 * r['test_accuracy']:>12.2f}{r['epochs']:>8}{r['train_seconds']:>9.1f}{r['selection_seconds']:>10.1f}")
sys.exit(0 if len(rows) == 11 else 1)
PY
echo "full outputs: $work (report: $work/docs/benchmarks.md)"
