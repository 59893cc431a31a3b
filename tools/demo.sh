#!/usr/bin/env bash
# make demo: the lab up, `pulumi up` on the lab stack, the runbook's checks (python -m verify), the stack outputs.
# make preview: the same up to `pulumi preview` (refresh included), changing nothing.
# Expects tools/env.sh sourced and PULUMI_BACKEND_URL / PULUMI_CONFIG_PASSPHRASE set (the Makefile does).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=.venv/bin/python
say() { printf '\n== %s\n' "$*"; }

# The program needs the proxmoxve plugin. The official CLI fetches it by itself; the offline
# toolchain builds it (make setup: tools/proxmoxve).
if [ "$(cat .tools/mode 2>/dev/null)" = local ]; then
  # the listing first: `grep -q` stops reading at its match, and under pipefail the CLI's SIGPIPE failed the test
  plugins=$(pulumi plugin ls 2>/dev/null || true)
  if ! grep -qE "^proxmoxve[[:space:]]+resource" <<<"$plugins"; then
    echo "demo: the proxmoxve resource plugin is not installed in $PULUMI_HOME: run make setup (tools/build-toolchain.sh proxmoxve)." >&2
    exit 1
  fi
fi

say "lab up"
$PY -m lab up

lab_value() { $PY -c "import json,sys; d=json.load(open('.lab/lab.json')); print(d$1)"; }
# The proxmoxve plugin (Go) verifies the lab API's certificate against the lab's CA.
SSL_CERT_FILE=$(lab_value "['pve']['ca_bundle']")
export SSL_CERT_FILE

say "stack lab (state in ${PULUMI_BACKEND_URL})"
mkdir -p .state
# Pulumi.lab.yaml (ignored by git) from lab/stack.yaml, with the salt and secrets Pulumi keeps there
$PY -m lab stack-config
# The stack remembers which lab it was deployed to (its Ceph fsid, a stack tag). A lab taken down
# and brought up again is a new cluster: new host keys, API token and Ceph, nothing of the old
# stack left in it. Its state would only fail (host key changed, 401): start the stack afresh.
fsid=$(lab_value "['ceph']['fsid']")
if pulumi stack select lab 2>/dev/null; then
  deployed=$(pulumi stack tag get lab:fsid -s lab 2>/dev/null || true)
  if [ -n "$deployed" ] && [ "$deployed" != "$fsid" ]; then
    echo "demo: the lab was rebuilt since the lab stack was deployed (Ceph fsid $deployed, now $fsid): the stack's state points at a lab that no longer exists; removing it (Pulumi.lab.yaml kept) and deploying afresh"
    pulumi stack rm lab --force --yes --preserve-config >/dev/null
    pulumi stack init lab
  fi
else
  pulumi stack init lab
fi
pulumi stack tag set lab:fsid "$fsid" -s lab
# The lab's token for stacks (PulumiCephHA on the documented paths, docs/permissions.md), as a
# secret, through stdin: never on a command line.
lab_value "['pve']['stack_token_id'] + '=' + d['pve']['stack_token_secret']" | pulumi config set --secret proxmoxApiToken -s lab

if [ "${1:-}" = "--preview" ]; then
  say "pulumi preview -s lab (refresh first)"
  exec pulumi preview -s lab --diff --policy-pack policy
fi

say "pulumi up -s lab"
pulumi up --yes -s lab
# What that up changed, from the stack's history: a second make demo says it changed nothing.
pulumi stack history -s lab --json --show-secrets=false | $PY -c '
import json, sys
changes = json.load(sys.stdin)[0].get("resourceChanges", {})
changed = {op: n for op, n in changes.items() if op != "same" and n}
if changed:
    print("demo: pulumi up changed " + ", ".join(f"{n} ({op})" for op, n in sorted(changed.items())))
else:
    same = changes.get("same", 0)
    print(f"demo: the lab stack was already converged: pulumi up changed nothing ({same} resources unchanged)")'

say "python -m verify --stack lab (the runbook's checks, read-only)"
$PY -m verify --stack lab

say "stack outputs"
pulumi stack output -s lab
