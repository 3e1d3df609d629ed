#!/usr/bin/env bash
# Install the watcher into a virtualenv with exactly the versions and files uv.lock names:
# the lock's `watcher` set is exported with hashes and synced (anything else in the venv is
# removed; a file whose hash differs from the lock's is refused), then the watcher's own code
# goes on top without dependencies. scripts/install-service.sh (by hand or from cloud-init)
# calls this; the VM never resolves versions itself.
#
# Usage: scripts/install-venv.sh PREFIX
#   PYTHON           interpreter for the venv (>= 3.11)           default python3
#   UV               the uv to use                                 default: scripts/ensure-uv.sh
#   WATCHER_PACKAGE  install this (a wheel path or URL) instead of the repository's code
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${1:?usage: install-venv.sh PREFIX}"
PYTHON="${PYTHON:-python3}"
UV="${UV:-$("$REPO/scripts/ensure-uv.sh")}"

# No pip or setuptools in it: the venv holds the lock's set and the watcher, nothing else.
[[ -x "$PREFIX/bin/python" ]] || "$PYTHON" -m venv --without-pip "$PREFIX"
# The daemon only: the function's dependencies (dlib, PyAV) are not installed on the VM.
"$UV" export --project "$REPO" --frozen --no-dev --extra watcher --no-emit-project \
  --no-header --format requirements-txt --output-file "$PREFIX/requirements.lock.txt" >/dev/null
"$UV" pip sync --quiet --python "$PREFIX/bin/python" --require-hashes \
  "$PREFIX/requirements.lock.txt"
"$UV" pip install --quiet --python "$PREFIX/bin/python" --no-deps "${WATCHER_PACKAGE:-$REPO}"
