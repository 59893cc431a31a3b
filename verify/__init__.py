"""python -m verify: the runbook's checks (steps 1-5, and the best practices of 8) against a deployed
stack, read-only. See verify/cli.py and the docs/operations.md, "Verify a deployment"."""
