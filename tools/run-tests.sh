#!/usr/bin/env bash
# make test: every suite, in the order that keeps the lab honest.
#   1. unit + policy (no engine, no lab): seconds
#   2. the lab's own tests (bring-up from nothing, Ceph, sshd; they own the lab while they run)
#   3. the PVE API emulation, the toolchain smoke test, the integration tests and the drill, against one lab
# The lab is stopped at the end whatever happens.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=env.sh
source tools/env.sh
PY=.venv/bin/python
trap '$PY -m lab down >/dev/null 2>&1 || true' EXIT

start=$SECONDS
echo "== unit and policy tests"
$PY -m pytest -q tests/unit tests/policy
echo "== lab tests (real Ceph, sshd)"
$PY -m pytest -q tests/lab/test_ceph_sshd.py
echo "== lab up: real Ceph, sshd, the PVE API"
$PY -m lab up
echo "== PVE API, toolchain smoke test, integration (real engine against the lab), failover drill"
$PY -m pytest -q tests/lab/test_pve.py tests/lab/test_ssh_faults.py tests/integration tests/drill
echo "== all suites passed in $((SECONDS - start)) s"
