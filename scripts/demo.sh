#!/usr/bin/env bash
# The prodcat demo: provision, build, fine-tune all-MiniLM-L6-v2 with LoRA on the built-in sample
# catalogue (examples/products.csv), export and check it, evaluate it on held-out products, train
# the lexical model and a cascade of the two, and relabel a Parquet catalogue with the cascade.
# Runs on a fresh machine with no external services; a few minutes on 2 CPU cores after the build.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/provision.sh all
cargo build --bin prodcat
PRODCAT=${CARGO_TARGET_DIR:-target}/debug/prodcat
REGISTRY=${PRODCAT_DEMO_REGISTRY:-.prodcat/registry}
"$PRODCAT" train \
  --data examples/products.csv --text-column title --label-column category --group-column product_id \
  --base .deps/models/all-MiniLM-L6-v2 --out "$REGISTRY" --name demo --epochs 4
"$PRODCAT" eval \
  --model "$REGISTRY/demo/current" --data examples/products-eval.csv \
  --text-column title --label-column category --report reports/demo
# The fast path: a lexical model on the same data and split (its test rows held out: the cascade is
# reported on them), and a cascade of the two.
"$PRODCAT" train --model-type lexical \
  --data examples/products.csv --text-column title --label-column category --group-column product_id \
  --out "$REGISTRY" --name demo-lexical --no-progress --hold-out-test
"$PRODCAT" cascade --lexical "$REGISTRY/demo-lexical" --transformer "$REGISTRY/demo" \
  --out "$REGISTRY" --name demo-cascade --report reports/demo-cascade
# The main job: relabel a Parquet catalogue with the cascade.
rm -rf out/demo
"$PRODCAT" relabel --model "$REGISTRY/demo-cascade" --input examples/catalogue.parquet --output out/demo
echo
echo "model registry: $REGISTRY/demo (current -> $(readlink "$REGISTRY/demo/current")), demo-lexical, demo-cascade"
echo "eval report:    reports/demo (metrics.json, confusion_matrix.png, roc_curves.png)"
echo "cascade curve:  reports/demo-cascade/threshold_curve.png"
echo "labeled output: out/demo (Parquet: input columns + label, confidence, top_k, stage, model_version, ...)"
