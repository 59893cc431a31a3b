"""Read-only monitor commands in one SSH command (clients.ceph_cli.mon_reads and the admin
node's script components/scripts/ceph_mon_reads.py; issue #22): each answered as the `ceph` CLI
answers it, garbage never read as "not there"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clients import ceph_cli
from clients.ssh import Result
from tests.unit.fake_ceph import FakeCeph, fake_monitors

READS = [ceph_cli.pool_list_detail(), ceph_cli.auth_get("proxmox"), ceph_cli.config_get("osd", "osd_scrub_begin_hour"), ceph_cli.config_key_get("k")]


class OneCommand:
    """An executor that answers every read with RESULT, recording what it was asked."""

    def __init__(self, result: Result) -> None:
        self.result, self.asked = result, []

    def read(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None, fresh: bool = False) -> Result:
        self.asked.append((argv, stdin, fresh))
        return self.result


def test_the_monitor_commands_are_the_ones_the_cli_sends() -> None:
    assert [json.loads(ceph_cli.mon_command(argv)) for argv in READS] == [
        {"prefix": "osd pool ls", "detail": "detail", "format": "json"},
        {"prefix": "auth get", "entity": "client.proxmox", "format": "json"},
        {"prefix": "config get", "who": "osd", "key": "osd_scrub_begin_hour"},
        {"prefix": "config-key get", "key": "k"},
    ]
    with pytest.raises(ValueError, match="not a read-only ceph command"):
        ceph_cli.mon_command(ceph_cli.pool_delete("rbd-pool"))


def test_every_read_goes_in_one_ssh_command_with_the_script_on_stdin() -> None:
    answers = [
        {"ret": 0, "out": "[]", "err": ""},
        {"ret": -2, "out": "", "err": "failed to find client.proxmox in keyring"},
        {"ret": 0, "out": "22\n", "err": ""},
        {"ret": -2, "out": "", "err": ""},
    ]
    executor = OneCommand(Result(0, json.dumps(answers), ""))
    got = ceph_cli.mon_reads(executor, READS)  # type: ignore[arg-type]
    ((argv, stdin, fresh),) = executor.asked
    assert argv[:3] == ["python3", "-", ceph_cli.MON_READS] and len(argv) == 3 + len(READS)
    assert stdin == ceph_cli.mon_reads_script() and fresh is False
    assert got == [
        Result(0, "[]", ""),
        Result(2, "", "Error ENOENT: failed to find client.proxmox in keyring"),  # as the CLI: exit errno, "Error NAME: status"
        Result(0, "22\n", ""),
        Result(2, "", "Error ENOENT: "),
    ]


@pytest.mark.parametrize(
    "result",
    [Result(255, "", "ssh: connection refused"), Result(0, "*** Caught signal (Segmentation fault) **", ""), Result(0, '{"ret": 0}', ""), Result(0, "[]", "")],
    ids=["failed", "garbage", "not-a-list", "too-few"],
)
def test_a_failed_or_garbled_answer_reaches_each_reader_as_it_came(result: Result) -> None:
    got = ceph_cli.mon_reads(OneCommand(result), READS)  # type: ignore[arg-type]
    assert got == [Result(result.exit_status, result.stdout, result.stderr)] * len(READS)


def test_the_script_asks_the_monitors_each_command_over_one_session(tmp_path: Path) -> None:
    commands = [ceph_cli.mon_command(argv) for argv in READS[2:]]
    env = fake_monitors(tmp_path, {commands[0]: (0, "22\n")})  # the key is not set: EINVAL from the fake's unknown
    argv = [sys.executable, "-", ceph_cli.MON_READS, *commands]
    done = subprocess.run(argv, input=ceph_cli.mon_reads_script(), capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"ret": 0, "out": "22\n", "err": ""}, {"ret": -22, "out": "", "err": "command not known"}]


def test_the_fake_ceph_answers_the_batch_in_the_clis_words() -> None:
    ceph = FakeCeph(config={("osd", "osd_scrub_begin_hour"): "22"})
    got = ceph_cli.mon_reads(ceph, [ceph_cli.config_get("osd", "osd_scrub_begin_hour"), ceph_cli.auth_get("nobody")])  # type: ignore[arg-type]
    assert got == [Result(0, "22\n", ""), Result(2, "", "Error ENOENT: failed to find client.nobody in keyring")]
    assert ceph.commands == [["ceph", "config", "get", "osd", "osd_scrub_begin_hour"], ["ceph", "auth", "get", "client.nobody", "-f", "json"]]


def test_messages_name_the_read_script_by_the_ceph_commands_it_asks() -> None:
    batch = ["python3", "-", ceph_cli.MON_READS, *(ceph_cli.mon_command(argv) for argv in READS[2:])]
    assert ceph_cli.command_name(batch) == "ceph config get, ceph config-key get"
    assert ceph_cli.command_name(["python3", "-", ceph_cli.MON_READS, "{not json"]) == "{not json"
    assert ceph_cli.command_name(ceph_cli.pool_create("rbd-pool", 32)) == "ceph osd pool create"
