"""tools/audit_secrets.py finds a secret wherever it is written, and never follows links into .lab/."""

from __future__ import annotations

from pathlib import Path

from tools.audit_secrets import audit

SECRETS = {"cephx key": [b"AQBsecretsecretsecretsecretsecretsecre=="], "PVE API token": [b"128fa40d-b369-4296-b2f5-70d25a126a12"]}


def test_a_secret_in_a_log_or_a_state_file_is_found_and_not_shown(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "clean.log").write_text("nothing to see\n")
    (tmp_path / "logs" / "run.log").write_bytes(b"... key = AQBsecretsecretsecretsecretsecretsecre== ...")
    (tmp_path / "state.json").write_text('{"token": "128fa40d-b369-4296-b2f5-70d25a126a12"}')
    count, size, hits = audit([tmp_path], SECRETS, skip=set())
    assert count == 3 and size > 0
    assert sorted(hits) == [f"{tmp_path}/logs/run.log: cephx key", f"{tmp_path}/state.json: PVE API token"]


def test_links_are_not_followed_and_the_ledger_is_skipped(tmp_path: Path) -> None:
    keys = tmp_path / "lab"
    keys.mkdir()
    (keys / "keyring").write_bytes(SECRETS["cephx key"][0])
    project = tmp_path / "project"
    project.mkdir()
    (project / ".lab").symlink_to(keys)
    (project / "keyring").symlink_to(keys / "keyring")
    ledger = project / "ledger"
    ledger.write_bytes(SECRETS["cephx key"][0])
    assert audit([project], SECRETS, skip={ledger.resolve()}) == (0, 0, [])
