#!/usr/bin/env bash
# Strategy comparison on the embedded tiny task: random vs ActiveDPO vs ADPO+, several seeds, then one report.
# Usage: benchmarks/tiny_strategies.sh [ROUNDS] [SEEDS...]   (default: 4 rounds, seeds 0 1 2)
# Strategies run side by side (one local Ray each); seeds run one after another.
set -euo pipefail
ROUNDS=${1:-4}; shift || true
SEEDS=${*:-0 1 2}
OUT=runs/bench
mkdir -p "$OUT"
run_strategy() {
  local strategy=$1
  for seed in $SEEDS; do
    local dir="$OUT/$strategy-s$seed"
    activealign run --config configs/tiny.yaml --loop.run_dir "$dir" --loop.rounds "$ROUNDS" \
      --selection.strategy "$strategy" --loop.seed "$seed" --selection.seed "$seed" --generation.seed "$seed" \
      --train.seed "$seed" --features.seed "$seed" --oracle.label_store_url "sqlite:///$dir-labels.db" \
      --tracking.uri "sqlite:///$OUT/mlflow-$strategy.db" > "$dir.log" 2>&1
  done
}
for strategy in random activedpo adpo_plus; do run_strategy "$strategy" & sleep 20; done
wait
activealign report "$OUT"/*-s*/ --out "$OUT/report"
