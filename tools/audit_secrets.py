"""The secrets audit of a test run: no secret of the lab in plaintext in any log or state file.

Run by tools/run-tests.sh after the suites, while the lab is still up:

    python -m tools.audit_secrets --ledger .test-logs/cephx-keys \\
        --engine-logs "$PULUMI_HOME/logs" --since .test-logs/started DIR_OR_FILE...

The secrets: the PVE API token secret and root password, every line of the SSH private key's
body that is its own (not the header every key of its type shares), every cephx key Ceph holds now (client.admin, the daemons, the clients the tests left) and
every client key the tests deleted (their ledger, written by lab/testing/stack.py forget).

The places, each a kind of its own in what the audit prints:

- every regular file under the given paths (symlinks are not followed: the test projects link
  .lab/, which holds the key files themselves), read as bytes: the test logs (and pytest's
  basetemp with every test's files), the stack state of every test stack (the local backend's
  ``.pulumi/`` folders, history and backups included, and the ``Pulumi.<stack>.yaml`` files), the
  debug-level engine and plugin logs (``debug-logs/``, tests/integration/test_debug_logs.py) and
  the lab's logs;
- the Pulumi CLI's own logs of the run (``--engine-logs``: ``$PULUMI_HOME/logs``, the files written
  since ``--since``). Every command writes one, at debug level whatever ``-v`` says, with what the
  plugins wrote to stderr and what the ``proxmoxve`` plugin logs through the engine (bpg's tflog);
  gzip-compressed, or encrypted (PLOG) with the stack's secrets provider when the command ran on a
  stack. The audit reads them as ``pulumi logs decrypt`` does: with the passphrase
  (``$PULUMI_CONFIG_PASSPHRASE``) and the stack's salt from the stack state it searched. A log it
  cannot read (no state of its stack among the paths, or no key that opens it) fails the audit.

Prints what was searched, per kind, and, for a hit, the file and the kind of secret, never the
secret; exits 1 on any hit.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

LARGEST = 64 * 1024 * 1024  # bytes; larger files (none expected) are reported, not read

TEST_FILES = "test logs and files"
STATE = "stack state"
DEBUG_LOGS = "engine debug logs"
ENGINE_LOGS = "pulumi logs"
LAB_LOGS = "lab logs"

# $PULUMI_HOME/logs: <org>+<project>+<stack>-<time>[-<update>].log (encrypted), pulumi-<time>-<pid>-<command>.log (gzip)
STACK_LOG = re.compile(r"[^+]+\+[^+]+\+(?P<stack>.+)-\d{8}T\d{6}(-[^.]*)?\.log")
# the passphrase secrets provider's state: v1:<salt>:<the word 'pulumi', encrypted>
SALT = re.compile(rb'(?:"salt":\s*"|encryptionsalt:\s*)(v1:[A-Za-z0-9+/=]+:v1:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+)')


def lab_secrets(ledger: Path | None) -> dict[str, list[bytes]]:
    import lab
    from lab import sshd

    state = lab.load()
    key_lines = Path(state["ssh"]["private_key_path"]).read_text().splitlines()[1:-1]
    common = shared_key_lines(str(state["ssh"]["public_key"]).split()[0])
    cephx = [str(entry["key"]) for entry in json.loads(sshd.shell("ceph-admin", "ceph auth ls -f json"))["auth_dump"] if entry.get("key")]
    tokens = [state["pve"]["token_secret"], *([state["pve"]["stack_token_secret"]] if state["pve"].get("stack_token_secret") else [])]
    if ledger is not None and ledger.exists():
        for line in ledger.read_text().splitlines():
            kind, _, value = line.rpartition("\t")  # "<key>" (a cephx key) or "pve-token\t<secret>"
            (tokens if kind == "pve-token" else cephx).append(value.strip())
    found = {
        "PVE API token": [t for t in tokens if t],
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


def kind_of(path: Path) -> str:
    if ".pulumi" in path.parts or re.fullmatch(r"Pulumi\..+\.ya?ml", path.name):
        return STATE
    if "debug-logs" in path.parts:
        return DEBUG_LOGS
    if ".lab" in path.parts:
        return LAB_LOGS
    return TEST_FILES


def stack_of_state(path: Path) -> str | None:
    """The stack a state file belongs to: ``Pulumi.<stack>.yaml``, ``.pulumi/stacks/<project>/<stack>.json``,
    ``.pulumi/{history,backups}/<project>/<stack>/...``."""
    if match := re.fullmatch(r"Pulumi\.(.+)\.ya?ml", path.name):
        return match[1]
    parts = path.parts
    if ".pulumi" in parts:
        below = parts[parts.index(".pulumi") + 1 :]
        if len(below) >= 3 and below[0] == "stacks":
            return below[2].split(".json")[0]
        if len(below) >= 4 and below[0] in ("history", "backups"):
            return below[2]
    return None


def stack_of_log(path: Path) -> str | None:
    """The stack an engine log is of (None: a command that ran on no stack, gzip-compressed)."""
    match = STACK_LOG.fullmatch(path.name)
    return match["stack"] if match else None


def engine_logs_since(folder: Path, since: float) -> list[Path]:
    """The Pulumi CLI's logs written since ``since`` (a time.time() value)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".log" and p.is_file() and p.stat().st_mtime >= since)


def gunzip(data: bytes) -> bytes:
    """What a gzip stream holds, also when it was cut short (a command still writing its log)."""
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


@cache
def passphrase_key(phrase: str, salt: str) -> bytes:
    """The key of Pulumi's passphrase secrets provider for a stack: PBKDF2-SHA256 of the passphrase
    and the salt of its state (``v1:<salt>:...``), 1,000,000 rounds, for AES-256-GCM (pulumi's
    config.NewSymmetricCrypterFromPassphrase). About 0.3 s each."""
    return hashlib.pbkdf2_hmac("sha256", phrase.encode(), base64.b64decode(salt.split(":")[1]), 1_000_000, 32)


def derive_keys(phrase: str, salts: Iterable[str]) -> None:
    """Derive the keys of these salts ahead, in parallel."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(lambda salt: passphrase_key(phrase, salt), set(salts)))


def decrypt_value(key: bytes, value: str) -> bytes:
    """A value the passphrase provider encrypted: ``v1:<nonce>:<ciphertext and tag>``, base64."""
    version, nonce, ciphertext = value.split(":")
    if version != "v1":
        raise ValueError(f"unknown ciphertext version {version}")
    return AESGCM(key).decrypt(base64.b64decode(nonce), base64.b64decode(ciphertext), None)


def read_plog(data: bytes, keys: Iterable[bytes]) -> bytes | None:
    """An encrypted engine log in plaintext (pulumi's engine/encryptedlog: 'PLOG', version 1, the
    session key encrypted with the stack's secrets provider, then chunks of length, nonce and
    AES-256-GCM ciphertext of gzip); None when no key opens it. A chunk cut short (a command still
    writing) ends it."""
    if data[:4] != b"PLOG" or data[4:5] != b"\x01":
        raise ValueError("not a PLOG version 1 file")
    length = int.from_bytes(data[5:7], "big")
    header = data[7 : 7 + length].decode()
    session = None
    for key in keys:
        try:
            session = decrypt_value(key, header)
            break
        except InvalidTag:
            continue
    if session is None:
        return None
    cipher, plain, at = AESGCM(session), [], 7 + length
    while at + 4 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        payload = data[at + 4 : at + 4 + size]
        if len(payload) < size:
            break
        plain.append(gunzip(cipher.decrypt(payload[:12], payload[12:], None)))
        at += 4 + size
    return b"".join(plain)


@dataclass
class Report:
    """What the audit read, per kind, and what it found."""

    files: Counter[str] = field(default_factory=Counter)
    size: int = 0
    hits: list[str] = field(default_factory=list)
    salts: dict[str, set[str]] = field(default_factory=dict)  # stack → the passphrase salts in its state

    @property
    def count(self) -> int:
        return sum(self.files.values())

    def search(self, kind: str, path: Path, data: bytes, secrets: dict[str, list[bytes]]) -> None:
        self.files[kind] += 1
        self.size += len(data)
        self.hits += [f"{path}: {name}" for name, values in secrets.items() if any(value in data for value in values)]

    def kinds(self) -> str:
        shown = []
        for kind in (TEST_FILES, STATE, DEBUG_LOGS, ENGINE_LOGS, LAB_LOGS):
            extra = f" of {len(self.salts)} stacks" if kind == STATE else ""
            if kind == ENGINE_LOGS:
                decrypted = self.files[f"{ENGINE_LOGS} decrypted"]
                shown.append(f"{kind}: {self.files[kind] + decrypted} files ({decrypted} decrypted)")
            else:
                shown.append(f"{kind}: {self.files[kind]} files{extra}")
        return ", ".join(shown)


def audit(
    paths: list[Path],
    secrets: dict[str, list[bytes]],
    skip: set[Path],
    engine_logs: list[Path] | None = None,
    passphrase: str | None = None,
) -> Report:
    """Search every file under ``paths`` (but ``skip``), then the engine logs, decrypted with the
    salts of the stack state found under ``paths``."""
    report = Report()
    for path in files(paths, skip):
        length = path.stat().st_size
        if length > LARGEST:
            report.hits.append(f"{path}: too large to audit ({length} bytes)")
            continue
        data = path.read_bytes()
        kind = kind_of(path)
        report.search(kind, path, data, secrets)
        stack = stack_of_state(path) if kind == STATE else None
        if stack is not None:
            report.salts.setdefault(stack, set()).update(m.decode() for m in SALT.findall(data))
    logs = engine_logs or []
    if passphrase:
        derive_keys(passphrase, (salt for log in logs for salt in report.salts.get(stack_of_log(log) or "", ())))
    for log in logs:
        search_engine_log(report, log, secrets, passphrase)
    return report


def search_engine_log(report: Report, log: Path, secrets: dict[str, list[bytes]], passphrase: str | None) -> None:
    try:
        data = log.read_bytes()
    except FileNotFoundError:
        return  # rotated away by a command meanwhile (pulumi keeps 7 days, 500 MB)
    if data[:2] == b"\x1f\x8b":
        report.search(ENGINE_LOGS, log, gunzip(data), secrets)
        return
    if data[:4] != b"PLOG":
        report.search(ENGINE_LOGS, log, data, secrets)
        return
    stack = stack_of_log(log)
    salts = report.salts.get(stack or "")
    if not salts:
        report.hits.append(
            f"{log}: not readable: no state of stack {stack} among the paths searched (a test stack outside them, or another run at the same time)"
        )
        return
    if not passphrase:
        report.hits.append(f"{log}: not readable: encrypted, and no passphrase (PULUMI_CONFIG_PASSPHRASE)")
        return
    try:
        plain = read_plog(data, [passphrase_key(passphrase, salt) for salt in sorted(salts)])
    except (ValueError, InvalidTag, zlib.error) as error:
        report.hits.append(f"{log}: not readable: damaged ({type(error).__name__})")
        return
    if plain is None:
        report.hits.append(f"{log}: not readable: no salt of stack {stack} opens it with the passphrase")
        return
    report.search(f"{ENGINE_LOGS} decrypted", log, plain, secrets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.audit_secrets", description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", type=Path, help="cephx keys the tests deleted, one a line (removed after the audit)")
    parser.add_argument("--engine-logs", type=Path, help="the Pulumi CLI's log folder ($PULUMI_HOME/logs)")
    parser.add_argument("--since", type=Path, help="with --engine-logs: only the logs written since this file was")
    parser.add_argument("--passphrase-env", default="PULUMI_CONFIG_PASSPHRASE", help="the variable holding the test stacks' passphrase")
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    secrets = lab_secrets(args.ledger)
    skip = {args.ledger.resolve()} if args.ledger else set()
    since = args.since.stat().st_mtime if args.since is not None else 0.0
    logs = engine_logs_since(args.engine_logs, since) if args.engine_logs is not None else []
    report = audit([p for p in args.paths if p.exists()], secrets, skip, logs, os.environ.get(args.passphrase_env))
    if args.ledger is not None:
        args.ledger.unlink(missing_ok=True)
    kinds = ", ".join(f"{kind} ({len(values)})" for kind, values in secrets.items())
    print(f"secrets audit: {kinds} searched in {report.count} files ({report.size / 1e6:.1f} MB): {len(report.hits)} found")
    print(f"  {report.kinds()}")
    for hit in report.hits:
        print(f"  {hit}")
    return 1 if report.hits else 0


if __name__ == "__main__":
    sys.exit(main())
