#!/usr/bin/env bash
# Install everything the program, the lab and the tests need; safe to run again (skips what is there).
#   1. Debian packages (lab/apt-packages.txt, lab/pve/apt-packages.txt, tools/apt-packages.txt)
#   2. the project virtualenv .venv (requirements-dev.txt, re-installed when it changes)
#   3. the pinned Pulumi toolchain (tools/build-toolchain.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { printf '[setup] %s\n' "$*"; }

packages=$(cat tools/apt-packages.txt lab/apt-packages.txt lab/pve/apt-packages.txt 2>/dev/null | sed 's/#.*//' | tr -s ' \n' '\n' | sort -u | grep -v '^$' || true)
missing=()
for pkg in $packages; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  start=$SECONDS
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "Debian packages installed in $((SECONDS - start)) s"
else
  log "Debian packages: all present"
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt lab/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating .venv and installing requirements-dev.txt"
  start=$SECONDS
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  echo "$want" > "$stamp"
  log ".venv ready in $((SECONDS - start)) s"
else
  log ".venv: up to date"
fi

# --toolchain-later: make test builds the toolchain itself, in the background while the suites
# that need neither the engine nor the plugins run (tools/run-tests.sh)
[ "${1:-}" = --toolchain-later ] || bash tools/build-toolchain.sh
bash tools/install-actionlint.sh
