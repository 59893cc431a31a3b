"""tools/audit_secrets.py finds a secret wherever it is written, and never follows links into .lab/:
test logs, stack state, the debug-level logs, and the Pulumi CLI's own logs, gzip-compressed or
encrypted with a stack's passphrase provider (read as ``pulumi logs decrypt`` does)."""

from __future__ import annotations

import base64
import gzip
import os
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tools.audit_secrets import DEBUG_LOGS, ENGINE_LOGS, LAB_LOGS, STATE, TEST_FILES, audit, decrypt_value, engine_logs_since, passphrase_key, stack_of_log

SECRETS = {"cephx key": [b"AQBsecretsecretsecretsecretsecretsecre=="], "PVE API token": [b"128fa40d-b369-4296-b2f5-70d25a126a12"]}
KEY, TOKEN = SECRETS["cephx key"][0], SECRETS["PVE API token"][0]

# A real stack's passphrase provider state, made by the pinned Pulumi CLI with the tests' passphrase:
# the salt, then the word 'pulumi' encrypted with the key they give.
PASSPHRASE = "lab-only-passphrase"
SALT = "v1:4hpgHaroPM4=:v1:8CEfa9NXc3k7B1Od:jNAtcUyIQpX1PjVsec5QKzW79fxVjg=="


def test_a_secret_in_a_log_or_a_state_file_is_found_and_not_shown(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "clean.log").write_text("nothing to see\n")
    (tmp_path / "logs" / "run.log").write_bytes(b"... key = " + KEY + b" ...")
    (tmp_path / "state.json").write_text(f'{{"token": "{TOKEN.decode()}"}}')
    report = audit([tmp_path], SECRETS, skip=set())
    assert report.count == 3 and report.size > 0
    assert sorted(report.hits) == [f"{tmp_path}/logs/run.log: cephx key", f"{tmp_path}/state.json: PVE API token"]


def test_links_are_not_followed_and_the_ledger_is_skipped(tmp_path: Path) -> None:
    keys = tmp_path / "lab"
    keys.mkdir()
    (keys / "keyring").write_bytes(KEY)
    project = tmp_path / "project"
    project.mkdir()
    (project / ".lab").symlink_to(keys)
    (project / "keyring").symlink_to(keys / "keyring")
    ledger = project / "ledger"
    ledger.write_bytes(KEY)
    report = audit([project], SECRETS, skip={ledger.resolve()})
    assert (report.count, report.size, report.hits) == (0, 0, [])


def test_each_kind_of_file_is_counted_and_the_stacks_of_the_state_named(tmp_path: Path) -> None:
    """A test's basetemp as LabStack leaves it, the debug logs, a lab log."""
    state = tmp_path / "basetemp" / "hvconv0" / "state" / ".pulumi"
    for path in ("stacks/pve-ceph-ha/hvconv.json.bak", "backups/pve-ceph-ha/hvconv/hvconv.17961.json", "history/pve-ceph-ha/hv-up/hv-up-17961.checkpoint.json"):
        (state / path).parent.mkdir(parents=True, exist_ok=True)
        (state / path).write_text(f'{{"secrets_providers": {{"type": "passphrase", "state": {{"salt": "{SALT}"}}}}}}')
    (tmp_path / "basetemp" / "hvconv0" / "project").mkdir()
    (tmp_path / "basetemp" / "hvconv0" / "project" / "Pulumi.yaml").write_text("name: pve-ceph-ha\n")
    (tmp_path / "basetemp" / "hvconv0" / "project" / "Pulumi.other.yaml").write_text(f"encryptionsalt: {SALT}\n")
    (tmp_path / "debug-logs").mkdir()
    (tmp_path / "debug-logs" / "up.stderr").write_text("I1201 rpc.go:301] apiToken={[secret]}\n")
    (tmp_path / ".lab" / "pve").mkdir(parents=True)
    (tmp_path / ".lab" / "pve" / "calls.log").write_text("GET /api2/json/version\n")
    report = audit([tmp_path], SECRETS, skip=set())
    assert dict(report.files) == {STATE: 4, TEST_FILES: 1, DEBUG_LOGS: 1, LAB_LOGS: 1}
    assert report.salts == {"hvconv": {SALT}, "hv-up": {SALT}, "other": {SALT}}
    assert "stack state: 4 files of 3 stacks" in report.kinds()


def test_the_key_of_a_stack_is_the_one_pulumi_made() -> None:
    key = passphrase_key(PASSPHRASE, SALT)
    assert decrypt_value(key, SALT.split(":", 2)[2]) == b"pulumi"


def plog(key: bytes, text: bytes, chunk: int = 64 * 1024) -> bytes:
    """An encrypted engine log as the CLI writes it (pulumi's engine/encryptedlog)."""
    session, nonce = os.urandom(32), os.urandom(12)
    header = f"v1:{base64.b64encode(nonce).decode()}:{base64.b64encode(AESGCM(key).encrypt(nonce, session, None)).decode()}".encode()
    out = b"PLOG\x01" + len(header).to_bytes(2, "big") + header
    for counter, at in enumerate(range(0, len(text), chunk), start=1):
        nonce = bytes(4) + counter.to_bytes(8, "big")
        sealed = AESGCM(session).encrypt(nonce, gzip.compress(text[at : at + chunk]), None)
        out += (12 + len(sealed)).to_bytes(4, "big") + nonce + sealed
    return out


def engine_logs(tmp_path: Path) -> tuple[Path, Path]:
    """A stack's state (its salt) and the CLI's log folder."""
    state = tmp_path / "state" / ".pulumi" / "stacks" / "pve-ceph-ha"
    state.mkdir(parents=True)
    (state / "dbglog.json").write_text(f'{{"secrets_providers": {{"type": "passphrase", "state": {{"salt": "{SALT}"}}}}}}')
    logs = tmp_path / "pulumi-home" / "logs"
    logs.mkdir(parents=True)
    return tmp_path / "state", logs


def test_a_secret_in_the_clis_logs_is_found_decrypted_or_decompressed(tmp_path: Path) -> None:
    state, logs = engine_logs(tmp_path)
    key = passphrase_key(PASSPHRASE, SALT)
    lines = b"".join(b'{"level":"DEBUG","msg":"Unmarshaling property for RPC[inputs]: apiToken={[secret]}"}\n' for _ in range(3000))
    (logs / "organization+pve-ceph-ha+dbglog-20261201T055837.log").write_bytes(plog(key, lines + b'{"msg":"keyring=' + KEY + b'"}\n' + lines))
    (logs / "organization+pve-ceph-ha+dbglog-20261201T055840-upd.log").write_bytes(plog(key, lines))
    (logs / "pulumi-20261201T055635-31056-stack_rm.log").write_bytes(gzip.compress(b'{"msg":"token ' + TOKEN + b'"}\n'))
    report = audit([state], SECRETS, set(), engine_logs_since(logs, 0), PASSPHRASE)
    assert (report.files[f"{ENGINE_LOGS} decrypted"], report.files[ENGINE_LOGS]) == (2, 1)
    assert sorted(report.hits) == [
        f"{logs}/organization+pve-ceph-ha+dbglog-20261201T055837.log: cephx key",
        f"{logs}/pulumi-20261201T055635-31056-stack_rm.log: PVE API token",
    ]


def test_a_log_cut_short_is_read_up_to_its_last_whole_chunk(tmp_path: Path) -> None:
    state, logs = engine_logs(tmp_path)
    whole = plog(passphrase_key(PASSPHRASE, SALT), KEY + b"\n" + bytes(100 * 1024), chunk=1024)
    (logs / "organization+pve-ceph-ha+dbglog-20261201T055837.log").write_bytes(whole[: len(whole) - 500])
    (logs / "pulumi-20261201T055635-31056-up.log").write_bytes(gzip.compress(b"token " + TOKEN + bytes(100 * 1024))[:-40])
    report = audit([state], SECRETS, set(), engine_logs_since(logs, 0), PASSPHRASE)
    assert len(report.hits) == 2 and all(hit.endswith((": cephx key", ": PVE API token")) for hit in report.hits), report.hits


def test_a_cli_log_the_audit_cannot_read_fails_it(tmp_path: Path) -> None:
    """No state of its stack among the paths (a test stack elsewhere), no salt that opens it, a
    damaged chunk, no passphrase: each is a hit, never a log passed over."""
    state, logs = engine_logs(tmp_path)
    (logs / "organization+pve-ceph-ha+hvconv-20261201T055837.log").write_bytes(plog(passphrase_key(PASSPHRASE, SALT), b"clean\n"))
    (logs / "organization+pve-ceph-ha+dbglog-20261201T055838.log").write_bytes(plog(os.urandom(32), b"clean\n"))

    damaged = bytearray(plog(passphrase_key(PASSPHRASE, SALT), b"clean\n"))
    damaged[-1] ^= 1
    (logs / "organization+pve-ceph-ha+dbglog-20261201T055839.log").write_bytes(bytes(damaged))

    def reasons(passphrase: str | None) -> list[str]:
        return sorted(hit.split(": ", 1)[1] for hit in audit([state], SECRETS, set(), engine_logs_since(logs, 0), passphrase).hits)

    elsewhere = "not readable: no state of stack hvconv among the paths searched (a test stack outside them, or another run at the same time)"
    assert reasons(PASSPHRASE) == ["not readable: damaged (InvalidTag)", "not readable: no salt of stack dbglog opens it with the passphrase", elsewhere]
    assert reasons(None) == 2 * ["not readable: encrypted, and no passphrase (PULUMI_CONFIG_PASSPHRASE)"] + [elsewhere]


def test_only_the_clis_logs_of_the_run_are_read(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    old, new = logs / "organization+p+old-20261130T010101.log", logs / "organization+p+new-20261201T010101-upd.log"
    old.write_bytes(b"")
    new.write_bytes(b"")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    (logs / "notes.txt").write_bytes(b"")
    assert engine_logs_since(logs, time.time() - 60) == [new]
    assert [stack_of_log(new), stack_of_log(logs / "pulumi-20261201T055635-31056-stack_rm.log")] == ["new", None]
