#!/usr/bin/env bash
# make test: every suite, in the order that keeps the lab honest. Tests say what they need with
# pytest marks (pyproject.toml): `lab` (the running lab) and `engine` (the Pulumi CLI and plugins).
#   0. the toolchain (tools/build-toolchain.sh: nothing to do when built) and then the Go tests of
#      its two programs start in the background, at nice 19, while the phases that need neither
#      the CLI nor the plugins run (about 6.5 min with cold Go caches: issue #22)
#   1. the unmarked tests (no lab, no engine: run without the toolchain on PATH)
#   2. the lab's bring-up test (from nothing: Ceph, sshd; it owns the lab while it runs)
#   3. the `lab` tests that need no engine, against one lab: the PVE API emulation, the HA manager
#   4. once the toolchain is built and its Go tests passed: every `engine` test against the same
#      lab: the proxmoxve plugin, the real engine against the lab, the failover drill
# The lab is stopped at the end whatever happens.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=env.sh
source tools/env.sh
PY=.venv/bin/python
toolchain=""
trap '[ -z "$toolchain" ] || kill "$toolchain" 2>/dev/null || true; $PY -m lab down >/dev/null 2>&1 || true' EXIT

start=$SECONDS
LOGS=.test-logs  # every suite's output, kept for the secrets audit at the end (and for a look after a failure)
rm -rf "$LOGS" && mkdir -p "$LOGS"
touch "$LOGS/started"  # the Pulumi CLI's own logs ($PULUMI_HOME/logs) written since then are this run's
# phase NAME: a heading with the time since the start, so a run's log is its own phase table
phase() { echo "== [$((SECONDS - start)) s] $*"; }
# The Go tests build with -trimpath as tools/build-toolchain.sh does: the flag is part of every
# package's build cache key, so without it a cold machine compiles bpg, the bridge and the SDK a
# second time (138 s + 51 s -> 24 s + 9 s, issue #22).
GO_TEST_FLAGS="-mod=readonly -trimpath"
# go_tests DIR WHAT: the Go tests of tools/DIR, into $LOGS/go.log
go_tests() {
  echo "$2" >> "$LOGS/go.log"
  (cd "tools/$1" && GOFLAGS=$GO_TEST_FLAGS go test ./) >> "$LOGS/go.log" 2>&1 || { echo "$2: failed, $LOGS/go.log"; return 1; }
}
toolchain_and_go_tests() {
  renice -n 19 -p "$BASHPID" >/dev/null  # this background job: the build and the tests inherit it
  bash tools/build-toolchain.sh > "$LOGS/toolchain.log" 2>&1 || { echo "the toolchain's build failed: $LOGS/toolchain.log"; return 1; }
  go_tests proxmoxve "the proxmoxve bridge's own Go tests (tools/proxmoxve: the token rule, the API through any live node, a VM on a dead node, a VM that is not the stack's)" || return 1
  go_tests langhost "the language host's own Go tests (tools/langhost: GenerateProgram, the code pulumi import prints)" || return 1
  echo "[go tests] passed at $((SECONDS - start)) s" >> "$LOGS/go.log"
}
phase "the toolchain, then its Go tests: in the background (nice 19; their logs: $LOGS/toolchain.log, $LOGS/go.log)"
toolchain_and_go_tests > "$LOGS/background.log" 2>&1 &
toolchain=$!
NO_TOOLS=${PATH//"$ROOT/.tools/bin:"/}  # the phases before the toolchain is waited for run without it
phase "unit tests: neither lab nor engine (the Pulumi CLI and plugins off PATH)"
PATH=$NO_TOOLS $PY -m pytest -q -m "not lab and not engine" --basetemp="$LOGS/tmp-unit" tests lab/tests 2>&1 | tee "$LOGS/unit.log"
phase "lab tests (real Ceph, sshd)"
PATH=$NO_TOOLS $PY -m pytest -q lab/tests/test_ceph_sshd.py 2>&1 | tee "$LOGS/lab.log"
phase "lab up: real Ceph, sshd, the PVE API"
PATH=$NO_TOOLS $PY -m lab up
# the paths in this order (pytest runs them so): the lab's own tests, the integration tests, then the drill's
PATHS=(lab/tests --ignore=lab/tests/test_ceph_sshd.py tests/integration tests/drill tests/policy tests/unit)
phase "lab tests without the engine: the lab's PVE API and node shells, its HA manager"
PATH=$NO_TOOLS $PY -m pytest -q -m "lab and not engine" --durations=15 --basetemp="$LOGS/tmp-lab" "${PATHS[@]}" 2>&1 | tee "$LOGS/lab-api.log"
phase "waiting for the toolchain and its Go tests"
if ! wait "$toolchain"; then
  toolchain=""
  cat "$LOGS/background.log"
  tail -n 40 "$LOGS/toolchain.log" "$LOGS/go.log" 2>/dev/null
  exit 1
fi
toolchain=""
grep -E 'built|skipping|installed|done in' "$LOGS/toolchain.log" || true
cat "$LOGS/go.log"
phase "engine tests: the proxmoxve plugin, the real engine against the lab, the failover drill"
$PY -m pytest -q -m engine --durations=30 --basetemp="$LOGS/tmp" "${PATHS[@]}" 2>&1 | tee "$LOGS/integration.log"
phase "secrets audit: the test logs, the state of every test stack, the debug-level engine and plugin logs, the Pulumi CLI's logs, the lab's logs"
# the CLI's logs of a test stack are encrypted with its passphrase (lab/testing/engine.py) and salt (its state, under $LOGS)
PULUMI_CONFIG_PASSPHRASE=$($PY -c 'from lab.testing.engine import PASSPHRASE; print(PASSPHRASE)') \
  $PY -m tools.audit_secrets --ledger "$LOGS/cephx-keys" --engine-logs "${PULUMI_HOME:-$HOME/.pulumi}/logs" --since "$LOGS/started" \
  "$LOGS" .lab/pve/server.log .lab/pve/calls.log .lab/logs .lab/faults .lab/ceph/log 2>&1 | tee "$LOGS/audit.log"
phase "all suites passed"
