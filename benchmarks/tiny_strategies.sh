#!/usr/bin/env bash
# Strategy comparison on the embedded tiny task: random vs ActiveDPO vs ADPO+, several seeds, then one report.
# Usage: benchmarks/tiny_strategies.sh [ROUNDS] [SEEDS...]   (default: 3 rounds, seeds 0 1 2)
# Runs one after another (seed-major, so a partial sweep still compares strategies on equal seeds).
set -uo pipefail
ROUNDS=${1:-3}; shift || true
SEEDS=${*:-0 1 2}
OUT=runs/bench
mkdir -p "$OUT"
finished=()
for seed in $SEEDS; do
  for strategy in random activedpo adpo_plus; do
    dir="$OUT/$strategy-s$seed"
    activealign run --config configs/tiny.yaml --loop.run_dir "$dir" --loop.rounds "$ROUNDS" \
      --selection.strategy "$strategy" --loop.seed "$seed" --selection.seed "$seed" --generation.seed "$seed" \
      --train.seed "$seed" --features.seed "$seed" --oracle.label_store_url "sqlite:///$dir-labels.db" \
      --tracking.uri "sqlite:///$OUT/mlflow.db" > "$dir.log" 2>&1 || { echo "FAILED: $dir (see $dir.log)"; continue; }
    finished+=("$dir")
    activealign report "${finished[@]}" --out "$OUT/report"
  done
done
