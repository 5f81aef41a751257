#!/usr/bin/env bash
# Python baselines for bench_relabel: the Hugging Face transformers pipeline (PyTorch, CPU) and
# Python ONNX Runtime on prodcat's exported model. Installs into .deps/bench-venv on first use;
# PRODCAT_BENCH_PYTHON names an interpreter that has them already (a GPU machine's PyTorch).
#   bench/python_baselines.sh TITLES.txt MODEL_DIR BASE_DIR BATCH [cpu|cuda]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${PRODCAT_BENCH_PYTHON:-}" ]; then
  exec "$PRODCAT_BENCH_PYTHON" "$ROOT/bench/python_baselines.py" "$@"
fi
VENV=$ROOT/.deps/bench-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, transformers, onnxruntime" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check torch transformers onnxruntime==1.31.1 tokenizers numpy scikit-learn pandas >&2
fi
exec "$VENV/bin/python" "$ROOT/bench/python_baselines.py" "$@"
