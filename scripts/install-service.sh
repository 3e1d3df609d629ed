#!/usr/bin/env bash
# Install hybrid-watcher as a systemd service on this machine (run as root):
# a system user and group, a virtualenv in /opt/hybrid-watcher, the staging folders,
# /etc/hybrid-watcher/{config.toml,credentials.env} (kept if present) and the unit.
# Operators who drop videos: `usermod -aG hybrid-watcher NAME`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${PREFIX:-/opt/hybrid-watcher}"
STATE="${STATE:-/var/lib/hybrid-watcher}"
ETC="${ETC:-/etc/hybrid-watcher}"
UNIT_DIR="${UNIT_DIR:-/etc/systemd/system}"
USER_NAME="${USER_NAME:-hybrid-watcher}"
PYTHON="${PYTHON:-python3}"

if [[ $EUID -ne 0 ]]; then
  echo "run as root (sudo make install-service)" >&2
  exit 1
fi

getent group "$USER_NAME" >/dev/null || groupadd --system "$USER_NAME"
id -u "$USER_NAME" >/dev/null 2>&1 || useradd --system --gid "$USER_NAME" \
  --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin "$USER_NAME"

# The daemon only, as in watcher/Dockerfile: the `watcher` extra's locked dependencies and the
# two packages the daemon runs. The function (dlib, PyAV) and the local stack (moto, the demo)
# are not installed on the VM (tests/test_deployables.py holds this list to the Dockerfile's).
PACKAGES=(hybrid_common watcher)
UV="$("$REPO/scripts/ensure-uv.sh")"
"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --upgrade pip
requirements="$(mktemp)"
trap 'rm -f "$requirements"' EXIT
(cd "$REPO" && "$UV" export --frozen --extra watcher --no-dev --no-emit-project --no-header \
  --quiet -o "$requirements")
"$PREFIX/bin/pip" install --quiet --no-deps --require-hashes -r "$requirements"
site="$("$PREFIX/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
for package in "${PACKAGES[@]}"; do
  rm -rf "${site:?}/$package"
  cp -r "$REPO/$package" "$site/$package"
done
rm -f "$site/watcher/Dockerfile" "$site/watcher/Dockerfile.dockerignore"
# The console script pip would have written, for the unit's ExecStart.
printf '#!%s/bin/python\nimport sys\nfrom watcher.cli import main\nsys.exit(main())\n' "$PREFIX" \
  >"$PREFIX/bin/hybrid-watcher"
chmod 0755 "$PREFIX/bin/hybrid-watcher"
install -m 0644 "$REPO/README.md" "$PREFIX/README.md"

# setgid folders: files operators drop keep the service's group.
install -d -m 2770 -o "$USER_NAME" -g "$USER_NAME" "$STATE"
for folder in inbox processing "done" failed rejected; do
  install -d -m 2770 -o "$USER_NAME" -g "$USER_NAME" "$STATE/$folder"
done

install -d -m 0750 -o root -g "$USER_NAME" "$ETC"
if [[ ! -e "$ETC/config.toml" ]]; then
  if [[ -f "$REPO/config/hybrid-watcher.example.toml" ]]; then
    install -m 0640 -o root -g "$USER_NAME" "$REPO/config/hybrid-watcher.example.toml" "$ETC/config.toml"
  else
    printf '# See README: every setting, as HYBRID_<NAME> or here.\nstaging_root = "%s"\n' \
      "$STATE" | install -m 0640 -o root -g "$USER_NAME" /dev/stdin "$ETC/config.toml"
  fi
fi
if [[ ! -e "$ETC/credentials.env" ]]; then
  # Read by systemd (as root) before it drops privileges: the service user cannot read it.
  printf '# AWS_ACCESS_KEY_ID=...\n# AWS_SECRET_ACCESS_KEY=...\n' \
    | install -m 0600 -o root -g root /dev/stdin "$ETC/credentials.env"
fi

sed "s#^ExecStart=/opt/hybrid-watcher/#ExecStart=$PREFIX/#" \
  "$REPO/systemd/hybrid-watcher.service" >"$UNIT_DIR/hybrid-watcher.service"
chmod 0644 "$UNIT_DIR/hybrid-watcher.service"
if [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable hybrid-watcher.service
  echo "installed: edit $ETC/config.toml and $ETC/credentials.env, then: systemctl start hybrid-watcher"
else
  echo "installed (systemd is not running here: enable the unit yourself)"
fi
