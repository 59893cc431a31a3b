# The README's commands. Every target installs what it needs first (make setup is idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
# The lab and the tests keep Pulumi state in a local folder with a passphrase secrets provider.
export PULUMI_BACKEND_URL ?= file://$(CURDIR)/.state
export PULUMI_CONFIG_PASSPHRASE ?= lab-only-passphrase
# STATE=rgw keeps the lab stack's state in the lab's Ceph RADOS Gateway (S3) instead:
# make demo STATE=rgw, make verify STATE=rgw (tools/state-env.sh).
export STATE ?= local
ENV := source tools/env.sh && source tools/state-env.sh &&

.PHONY: setup test unit lint lab-up lab-down lab-status demo preview verify drill docs

setup:
	@bash tools/setup.sh

test:
	@bash tools/setup.sh --toolchain-later
	@bash tools/run-tests.sh

unit: setup
	@$(PY) -m pytest -q tests/unit

lint: setup
	@$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy

docs: setup
	@$(PY) tools/config_reference.py --write

lab-up: setup
	@$(PY) -m lab up

lab-down:
	@$(PY) -m lab down

lab-status:
	@$(PY) -m lab status

demo: setup
	@$(ENV) bash tools/demo.sh

preview: setup
	@$(ENV) bash tools/demo.sh --preview

# The runbook's checks against the lab stack (after make demo), read-only: python -m verify.
verify: setup
	@$(ENV) $(PY) -m verify --stack lab

# Runbook 7 on the lab: vm:101 (seeded through the lab's API unless the lab stack made it), its node
# failed through the lab's control channel, the recovery watched and timed, the node restored.
drill: setup
	@$(PY) -m lab.testing.seed && $(PY) -m drill --lab-file .lab/lab.json --vm 101 --method lab --yes --restore
