#!/usr/bin/env bash
# Install actionlint (the GitHub Actions workflow linter that `make test` runs over
# .github/workflows/) into .tools/bin, built from its Go module at a pinned version.
# Safe to run again: nothing is done when the pinned version is already there.
#   ACTIONLINT_VERSION  overrides the pin (also read from tools/versions.env when set there)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[actionlint] %s\n' "$*"; }

pin=$(sed -n 's/^ACTIONLINT_VERSION=//p' "$ROOT/tools/versions.env" 2>/dev/null | tr -d '"' || true)
VERSION=${ACTIONLINT_VERSION:-${pin:-v1.7.12}}
BIN_DIR="$ROOT/.tools/bin"
BIN="$BIN_DIR/actionlint"

if [ -x "$BIN" ] && [ "$("$BIN" -version 2>/dev/null | head -n1)" = "$VERSION" ]; then
  log "actionlint $VERSION: present"
  exit 0
fi

command -v go >/dev/null || { log "no Go toolchain on PATH: install Go (tools/build-toolchain.sh needs it too)"; exit 1; }
log "building actionlint $VERSION from github.com/rhysd/actionlint"
start=$SECONDS
mkdir -p "$BIN_DIR"
GOBIN="$BIN_DIR" GOFLAGS="${GOFLAGS:-} -trimpath" go install "github.com/rhysd/actionlint/cmd/actionlint@$VERSION"
got=$("$BIN" -version | head -n1)
[ "$got" = "$VERSION" ] || { log "built actionlint reports $got, expected $VERSION"; exit 1; }
log "actionlint $VERSION installed in $((SECONDS - start)) s"
