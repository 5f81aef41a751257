#!/usr/bin/env bash
# Builds prodcat's CPU container image from deploy/container/Dockerfile with podman, and proves it:
# a derived image whose RUN steps run `prodcat --version`, train a small demo model and
# `prodcat check` every shipped pipeline inside the image. Running containers is not needed
# (`podman build --isolation chroot` runs RUN steps in a chroot).
#
#   bash scripts/container.sh            # as root (installs podman and debootstrap if missing)
#
# The base image the recipe names (debian:bookworm-slim) is made here with debootstrap and
# `podman import` when it cannot be pulled. The build stage takes a prebuilt binary
# (--build-arg BUILD=prebuilt): PRODCAT_BINARY (default: the newest of target/{release,debug}/prodcat
# and $CARGO_TARGET_DIR's) with ONNX Runtime and the base model from .deps (scripts/provision.sh).
# Env: TAG (default prodcat:<version>), CONTAINER_WORK (default .deps/container), MIRROR.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
TAG=${TAG:-prodcat:$VERSION}
WORK=${CONTAINER_WORK:-$ROOT/.deps/container}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
mkdir -p "$WORK"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need podman || ! need debootstrap; then
  [ "$(id -u)" = 0 ] || { echo "container: podman and debootstrap are needed (apt-get install podman debootstrap)" >&2; exit 1; }
  apt-get install -y podman debootstrap >/dev/null
fi
# chroot isolation and vfs storage work without user namespaces or overlay mounts.
export BUILDAH_ISOLATION=chroot
PODMAN=(podman --storage-driver vfs)

# 1. The base image.
if ! "${PODMAN[@]}" image exists debian:bookworm-slim; then
  if ! "${PODMAN[@]}" pull -q docker.io/library/debian:bookworm-slim 2>/dev/null; then
    echo "container: making debian:bookworm-slim with debootstrap (a few minutes)"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
    tar -C "$WORK/rootfs" -c . | "${PODMAN[@]}" import - debian:bookworm-slim >/dev/null
    rm -rf "$WORK/rootfs"
  fi
fi

# 2. What the build stage would have built.
BINARY=${PRODCAT_BINARY:-$(ls -t target/release/prodcat target/debug/prodcat \
  "${CARGO_TARGET_DIR:-/nonexistent}"/release/prodcat "${CARGO_TARGET_DIR:-/nonexistent}"/debug/prodcat 2>/dev/null | head -n 1 || true)}
[ -n "$BINARY" ] && [ -x "$BINARY" ] || { echo "container: no prodcat binary (cargo build, or set PRODCAT_BINARY)" >&2; exit 1; }
bash scripts/provision.sh all >/dev/null
rm -rf .container/prebuilt
mkdir -p .container/prebuilt/bin
cp "$BINARY" .container/prebuilt/bin/prodcat
cp -r .deps/lib .container/prebuilt/lib
mkdir -p .container/prebuilt/models
cp -r .deps/models/all-MiniLM-L6-v2 .container/prebuilt/models/

# 3. The CPU image.
"${PODMAN[@]}" build --isolation chroot -f deploy/container/Dockerfile --target cpu \
  --build-arg BUILD=prebuilt -t "$TAG" . 2>&1 | tail -n 5

# 4. Proof inside the image: its binary runs, and every shipped pipeline passes `prodcat check`.
CHECK=$WORK/check
rm -rf "$CHECK" && mkdir -p "$CHECK"
cp examples/products.csv "$CHECK/"
cat >"$CHECK/Containerfile" <<CONTAINERFILE
FROM $TAG
COPY products.csv /tmp/products.csv
RUN ["/opt/prodcat/bin/prodcat", "--version"]
RUN /opt/prodcat/bin/prodcat train --model-type lexical --no-progress --data /tmp/products.csv \
      --text-column title --label-column category --out .prodcat/registry --name demo \
 && for f in /etc/prodcat/examples/*.toml; do \
      /opt/prodcat/bin/prodcat check "\$f" --set training.base_model=/opt/prodcat/models/all-MiniLM-L6-v2 || exit 1; \
    done
CONTAINERFILE
"${PODMAN[@]}" build --isolation chroot -t "$TAG-checked" "$CHECK" 2>&1 | grep -E "prodcat [0-9]|: ok|problem|Error|error" || true
"${PODMAN[@]}" image exists "$TAG-checked" || { echo "container: the checks inside the image failed" >&2; exit 1; }
"${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "prodcat|bookworm"
echo "container: $TAG built; --version and prodcat check of every shipped pipeline passed inside it"
