#!/usr/bin/env bash
# Install the watcher into a virtualenv with exactly the versions and files uv.lock names:
# the lock's `watcher` set is exported with hashes and synced (anything else in the venv is
# removed; a file whose hash differs from the lock's is refused), then the daemon's own two
# packages are copied in (PACKAGES: not lambda_fn, not local_stack — tests/test_deployables.py
# holds this list to watcher/Dockerfile's). scripts/install-service.sh (by hand or from cloud-init)
# calls this; the VM never resolves versions itself.
#
# Usage: scripts/install-venv.sh PREFIX
#   PYTHON           interpreter for the venv (>= 3.11)           default python3
#   UV               the uv to use                                 default: scripts/ensure-uv.sh
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

# The daemon only. The project's wheel would carry all four packages (the function and the local
# stack too), so the two the VM runs are copied, and the console script is written by hand.
PACKAGES=(hybrid_common watcher)
site="$("$PREFIX/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
for package in "${PACKAGES[@]}"; do
  rm -rf "${site:?}/$package"
  cp -r "$REPO/$package" "$site/$package"
  find "$site/$package" -name __pycache__ -prune -exec rm -rf {} +
done
rm -f "$site/watcher/Dockerfile" "$site/watcher/Dockerfile.dockerignore"
printf '#!%s/bin/python\nimport sys\nfrom watcher.cli import main\nsys.exit(main())\n' "$PREFIX" \
  >"$PREFIX/bin/hybrid-watcher"
chmod 0755 "$PREFIX/bin/hybrid-watcher"
