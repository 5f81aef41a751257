#!/usr/bin/env bash
# The prodcat demo: provision, build, fine-tune all-MiniLM-L6-v2 with LoRA on the built-in sample
# catalogue (examples/products.csv), export and check it, then evaluate it on held-out products.
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
echo
echo "model registry: $REGISTRY/demo (current -> $(readlink "$REGISTRY/demo/current"))"
echo "eval report:    reports/demo (metrics.json, confusion_matrix.png, roc_curves.png)"
