#!/usr/bin/env bash
# Build the function image with no Docker engine and run the course clips through it.
#
# buildah builds lambda_fn/Dockerfile on a Debian base made by debootstrap (no image registry
# is needed), then tests/image/image_check.py runs the image's own entry point (awslambdaric)
# against a test-only Lambda Runtime API and moto, all on loopback.
#
#   DLIB_VARIANT=bin|blas   which dlib to build (default bin: quick; blas compiles ~15+ min)
#   IMAGE_CACHE=var/image   where the base image's root file system tarball is kept
#   IMAGE_LAYERS=1          keep every layer for the next build (the vfs driver stores each
#                           layer as a full copy: ~10 GB a build; worth it to cache dlib's compile)
# Needs root (buildah's chroot isolation, apt-get) and the shared course data.
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANT=${DLIB_VARIANT:-bin}
CACHE=${IMAGE_CACHE:-var/image}
STORAGE=vfs # works everywhere, no overlay or fuse needed
BASE=localhost/hybridsphere-base:bookworm
IMAGE=localhost/hybridsphere-fn:$VARIANT
UV=${UV:-$(command -v uv || echo "$HOME/.local/bin/uv")}
bah() { buildah --storage-driver "$STORAGE" "$@"; }
mkdir -p "$CACHE" # logs live here even when the base image is already in buildah's storage

if [ "$(id -u)" != 0 ]; then
  echo "image-test: needs root (buildah with chroot isolation, apt-get)" >&2
  exit 1
fi
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "image-test: installing buildah and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    buildah debootstrap >/dev/null
fi

# The base: Debian bookworm with its Python, standing in for python:3.12-slim-bookworm (which
# cannot be pulled here). Made once and kept in buildah's storage.
if ! bah inspect --type image "$BASE" >/dev/null 2>&1; then
  if [ ! -s "$CACHE/rootfs.tar" ]; then
    echo "image-test: debootstrap bookworm (~1 min)"
    rm -rf "$CACHE/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$CACHE/rootfs" >"$CACHE/debootstrap.log"
    tar -C "$CACHE/rootfs" -cf "$CACHE/rootfs.tar" .
    rm -rf "$CACHE/rootfs"
  fi
  printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' >"$CACHE/Containerfile.base"
  bah bud --isolation chroot --format docker -f "$CACHE/Containerfile.base" -t "$BASE" "$CACHE"
fi

# This machine's TLS-intercepting proxy needs its CA bundle for pip; it is passed as a build
# secret (mounted for the pip steps only, never stored in the image).
secret=()
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  # shellcheck disable=SC2054 # the commas belong to buildah's --secret value
  secret=(--secret id=pipcert,src=/etc/ssl/certs/ca-certificates.crt)
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)+$(git rev-parse --short HEAD 2>/dev/null || echo local)"

echo "image-test: building $IMAGE (DLIB_VARIANT=$VARIANT, VERSION=$version)"
started=$(date +%s)
layers=()
if [ "${IMAGE_LAYERS:-0}" = 1 ]; then layers=(--layers); fi
bah bud --isolation chroot --format docker --pull=never "${layers[@]}" "${secret[@]}" \
  --build-arg BASE_IMAGE="$BASE" --build-arg DLIB_VARIANT="$VARIANT" \
  --build-arg VERSION="$version" \
  -f lambda_fn/Dockerfile -t "$IMAGE" . >"$CACHE/build-$VARIANT.log" 2>&1 || {
  tail -40 "$CACHE/build-$VARIANT.log"
  echo "image-test: build failed (full log: $CACHE/build-$VARIANT.log)" >&2
  exit 1
}
echo "image-test: built in $(($(date +%s) - started)) s; $(bah images --format '{{.Size}}' "$IMAGE")"

"$UV" run --frozen --all-extras python tests/image/image_check.py \
  --image "$IMAGE" --storage-driver "$STORAGE" --log "$CACHE/function-$VARIANT.log"
