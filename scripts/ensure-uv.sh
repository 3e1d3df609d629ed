#!/usr/bin/env bash
# Print the path of a usable `uv`, installing it from PyPI into ~/.local if it is missing.
# Needs only python3 (with pip or ensurepip); works on Debian's externally-managed Python too.
set -euo pipefail
if command -v uv >/dev/null 2>&1; then command -v uv; exit 0; fi
if [ -x "$HOME/.local/bin/uv" ]; then echo "$HOME/.local/bin/uv"; exit 0; fi
tools="$HOME/.local/share/hybridsphere-tools"
if ! python3 -m pip --version >/dev/null 2>&1 && ! python3 -m venv --help >/dev/null 2>&1; then
  echo "python3 has neither pip nor venv: apt-get install python3-venv (or python3-pip)" >&2
  exit 1
fi
# A private venv keeps uv off the system interpreter (PEP 668 forbids plain `pip install`).
if python3 -m venv "$tools" >/dev/null 2>&1; then
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check uv >&2
  mkdir -p "$HOME/.local/bin"; ln -sf "$tools/bin/uv" "$HOME/.local/bin/uv"
else
  python3 -m pip install --quiet --user --break-system-packages uv >&2
fi
echo "$HOME/.local/bin/uv"
