#!/usr/bin/env bash
# Same params and seed, same tables? Runs a small pipeline (3,000 Fashion-MNIST samples, short recipes) and eight
# select-stage variants (multi-step, every baseline, cutoff, target pool) with the code of two git revisions, and
# compares every table's columns (metadata aside) and metrics.json. Uses this checkout's .venv for both.
#
#   benchmarks/same_tables.sh REV_A REV_B       e.g. benchmarks/same_tables.sh 80ed9c7 HEAD
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd); py=$repo/.venv/bin/python; work=$(mktemp -d)
[ $# -eq 2 ] || { echo "usage: $0 REV_A REV_B" >&2; exit 2; }

snapshot() {  # snapshot REV OUT
  local src=$work/src-$1 out=$2 run=$work/run-$1
  git worktree add -q --detach "$src" "$1"
  local section=scores module=flows.cli
  grep -q '^scoring:' "$src/params.yaml" && section=scoring
  [ -f "$src/unseen/cli.py" ] && module=unseen.cli
  mkdir -p "$out" "$run"
  cat > "$run/p.yaml" <<YAML
seed: 0
outputs: $run/outputs
data: {name: fashion-mnist, root: $run/data, download: false, train_subset: 3000, test_subset: 500}
features: {extractor: proxy, proxy: {epochs: 1}}
$section: {folds: 2, recipe: {epochs: 3}, score_epochs: [2, 3]}
select: {prune_ratio: 0.6}
retrain: {recipe: {epochs: 2}}
orchestration: {retries: 0, retry_delay_seconds: 0, max_workers: 1, torch_threads: 2}
tracking: {uri: "sqlite:///$run/mlflow.db", experiment: same-tables, registered_model: same-tables}
YAML
  (cd "$run" && PYTHONPATH=$src PREFECT_HOME=$run/prefect "$py" -m $module run --params p.yaml > "$out/run.log" 2>&1)
  cp "$run"/outputs/{features,scores,coreset}.parquet "$run/outputs/metrics.json" "$out/"
  local i=0 sets
  for sets in "select.steps=2 select.hard_cutoff=0.1" "select.method=ccs select.hard_cutoff=0.1" \
              "select.method=d2_pruning select.hard_cutoff=0.1" "select.method=moderate_ds" "select.method=kcenter_greedy" \
              "select.method=herding" "select.method=random" "select.importance_weight=1 select.hard_cutoff=0.2 select.target_pool=test"; do
    i=$((i + 1)); local args=(); for s in $sets; do args+=(--set "$s"); done
    (cd "$run" && PYTHONPATH=$src PREFECT_HOME=$run/prefect "$py" -m $module stage select --params p.yaml "${args[@]}" > "$out/select$i.log" 2>&1)
    cp "$run/outputs/coreset.parquet" "$out/coreset$i.parquet"
  done
  git worktree remove --force "$src"
}

snapshot "$1" "$work/a"
snapshot "$2" "$work/b"
"$py" - "$work/a" "$work/b" <<'PY'
import json, sys
from pathlib import Path
import pyarrow.parquet as pq
a, b = map(Path, sys.argv[1:])
different = 0
for name in sorted(p.name for p in a.glob("*.parquet")):
    ta, tb = (pq.read_table(d / name).replace_schema_metadata(None) for d in (a, b))
    columns = [c for c in ta.column_names if c not in tb.column_names or not ta.column(c).equals(tb.column(c))]
    different += bool(columns)
    print(f"{name}: {'identical' if not columns else 'DIFFERENT in ' + ', '.join(columns)} ({ta.num_rows} rows, {ta.num_columns} columns)")
ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
different += ma != mb
print("metrics.json:", "identical" if ma == mb else "DIFFERENT", ma)
sys.exit(1 if different else 0)
PY
