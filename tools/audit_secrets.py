"""The secrets audit of a test run: no secret of the lab in plaintext in any log or state file.

Run by tools/run-tests.sh after the suites, while the lab is still up:

    python -m tools.audit_secrets --ledger .test-logs/cephx-keys DIR_OR_FILE...

The secrets: the PVE API token secret and root password, every line of the SSH private key's
body that is its own (not the header every key of its type shares), every cephx key Ceph holds now (client.admin, the daemons, the clients the tests left) and
every client key the tests deleted (their ledger, written by tests/integration/lab_stack.forget).
The places: every regular file under the given paths (symlinks are not followed: the test
projects link .lab/, which holds the key files themselves), read as bytes.

Prints what was searched and, for a hit, the file and the kind of secret, never the secret;
exits 1 on any hit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tools import runbook_checks

LARGEST = 64 * 1024 * 1024  # bytes; larger files (none expected) are reported, not read


def lab_secrets(ledger: Path | None) -> dict[str, list[bytes]]:
    lab = runbook_checks.Lab.load()
    state = lab.state
    key_lines = Path(state["ssh"]["private_key_path"]).read_text().splitlines()[1:-1]
    common = shared_key_lines(str(state["ssh"]["public_key"]).split()[0])
    cephx = [str(entry["key"]) for entry in json.loads(lab.ssh("ceph-admin", "ceph auth ls -f json"))["auth_dump"] if entry.get("key")]
    if ledger is not None and ledger.exists():
        cephx += ledger.read_text().split()
    found = {
        "PVE API token": [state["pve"]["token_secret"]],
        "PVE root password": [state["pve"]["password"]] if state["pve"].get("password") else [],
        # the key's base64 body line by line (any one would leak it; short tails could match by chance)
        "SSH private key": [line for line in key_lines if len(line) >= 40 and line not in common],
        "cephx key": sorted(set(cephx)),
    }
    return {kind: [value.encode() for value in values] for kind, values in found.items()}


def shared_key_lines(kind: str) -> set[str]:
    """Lines every private key of this type has (the OpenSSH header): in any key file, not a leak of this one."""
    types = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ecdsa-sha2-nistp256": "ecdsa"}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", types.get(kind, "ed25519"), "-N", "", "-f", str(path)], check=True, capture_output=True)
        return set(path.read_text().splitlines())


def files(paths: list[Path], skip: set[Path]) -> Iterator[Path]:
    for root in paths:
        if root.is_file() and not root.is_symlink():
            yield root
            continue
        for folder, dirs, names in os.walk(root):  # followlinks=False: linked .lab/ folders are not entered
            dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]
            for name in names:
                path = Path(folder) / name
                if not path.is_symlink() and path.is_file() and path.resolve() not in skip:
                    yield path


def audit(paths: list[Path], secrets: dict[str, list[bytes]], skip: set[Path]) -> tuple[int, int, list[str]]:
    """(files read, bytes read, hits as "file: kind")."""
    count = size = 0
    hits: list[str] = []
    for path in files(paths, skip):
        length = path.stat().st_size
        if length > LARGEST:
            hits.append(f"{path}: too large to audit ({length} bytes)")
            continue
        data = path.read_bytes()
        count, size = count + 1, size + length
        hits += [f"{path}: {kind}" for kind, values in secrets.items() if any(value in data for value in values)]
    return count, size, hits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.audit_secrets", description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", type=Path, help="cephx keys the tests deleted, one a line (removed after the audit)")
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    secrets = lab_secrets(args.ledger)
    skip = {args.ledger.resolve()} if args.ledger else set()
    count, size, hits = audit([p for p in args.paths if p.exists()], secrets, skip)
    if args.ledger is not None:
        args.ledger.unlink(missing_ok=True)
    kinds = ", ".join(f"{kind} ({len(values)})" for kind, values in secrets.items())
    print(f"secrets audit: {kinds} searched in {count} files ({size / 1e6:.1f} MB): {len(hits)} found")
    for hit in hits:
        print(f"  {hit}")
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())
