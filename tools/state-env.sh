# Sourced by the Makefile's lab commands. STATE=rgw: the lab stack's state in the lab's Ceph RADOS
# Gateway, the S3 backend URL and its keys from .lab/lab.json (written by `python -m lab up`).
# STATE=local (the default): the folder PULUMI_BACKEND_URL already names (.state).
if [ "${STATE:-local}" = rgw ]; then
  if [ ! -f .lab/lab.json ]; then
    .venv/bin/python -m lab up
  fi
  eval "$(.venv/bin/python - <<'PY'
import json, shlex
rgw = json.load(open(".lab/lab.json")).get("rgw")
if not rgw:
    raise SystemExit("echo 'STATE=rgw: the lab has no RADOS Gateway (python -m lab up)' >&2; false")
for key, value in (("PULUMI_BACKEND_URL", rgw["url"]), ("AWS_ACCESS_KEY_ID", rgw["access_key"]), ("AWS_SECRET_ACCESS_KEY", rgw["secret_key"])):
    print(f"export {key}={shlex.quote(value)}")
PY
)"
elif [ "${STATE:-local}" != local ]; then
  echo "STATE=${STATE}: use STATE=local (a folder, the default) or STATE=rgw (the lab's Ceph RADOS Gateway)" >&2
  return 1 2>/dev/null || exit 1
fi
