"""SSH fault injection (lab/sshd.py inject_fault, lab/dispatch): the Ceph admin node's real sshd
drops the connection before or after a command, is slow, or answers garbage, for the next N
commands that match a glob; seen by paramiko (and OpenSSH's `ssh`), checked against real Ceph.

Needs the running lab (`python -m lab up`); skipped without it. Never starts or stops the lab.
Every rule targets a pattern unique to this run and the rules of ceph-admin are cleared after
each test. `lab up` clears every rule; a test that fails while another `lab up` ran meanwhile
(the lab is shared) is run again, up to 3 times.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import lab  # noqa: E402
from lab import paths, sshd  # noqa: E402

ROLE = sshd.ADMIN_ROLE
RUN = uuid.uuid4().hex[:8]

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]  # lab: needs the running lab (tools/run-tests.sh selects by marks)


@dataclass
class Result:
    status: int  # -1: the channel closed without an exit status
    out: bytes
    err: bytes
    seconds: float


@pytest.fixture(scope="module")
def ssh_info() -> dict:
    try:
        info = lab.load()["ssh"]
    except (lab.LabError, KeyError, ValueError):
        pytest.skip("needs the running lab (python -m lab up)")
    if not lab.port_open(info["hosts"][ROLE], info["port"]):
        pytest.skip(f"the lab's {ROLE} sshd does not answer")
    return info


@pytest.fixture(autouse=True)
def no_faults_left(ssh_info):
    sshd.clear_faults(ROLE)
    try:
        yield
    finally:
        sshd.clear_faults(ROLE)


def run(info: dict, command: str, timeout: float = 30) -> Result:
    """COMMAND on the admin node over a new paramiko connection (host key checked)."""
    client = paramiko.SSHClient()
    client.load_host_keys(info["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    t0 = time.monotonic()
    try:
        client.connect(
            info["hosts"][ROLE],
            port=info["port"],
            username=info["user"],
            key_filename=info["private_key_path"],
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
        out, err = stdout.read(), stderr.read()
        status = stdout.channel.recv_exit_status()
        return Result(status, out, err, time.monotonic() - t0)
    finally:
        client.close()


def ceph_json(info: dict, command: str):
    r = run(info, command)
    assert r.status == 0, r.err.decode(errors="replace")
    return json.loads(r.out)


def pool_exists(info: dict, pool: str) -> bool:
    return pool in ceph_json(info, "ceph osd pool ls -f json")


@contextlib.contextmanager
def pool_name(info: dict, tag: str):
    """A pool name unique to this run; the pool is deleted afterwards if it exists."""
    pool = f"sshfault-{RUN}-{tag}"
    try:
        yield pool
    finally:
        if pool_exists(info, pool):
            r = run(info, f"ceph osd pool delete {pool} {pool} --yes-i-really-really-mean-it")
            assert r.status == 0, r.err.decode(errors="replace")


def listener_pid() -> int | None:
    return lab.running(f"sshd.{ROLE}")


# ---------------------------------------------------------------------- the actions


def test_drop_before_closes_without_status_and_the_pool_is_not_created(ssh_info):
    listener = listener_pid()
    with pool_name(ssh_info, "before") as pool:
        sshd.inject_fault(ROLE, "drop-before", f"ceph osd pool create {pool} *")
        r = run(ssh_info, f"ceph osd pool create {pool} 8 8 replicated")
        assert (r.status, r.out, r.err) == (-1, b"", b"")
        assert not pool_exists(ssh_info, pool)
        assert sshd.faults(ROLE)[0]["remaining"] == 0
    assert listener is not None and listener_pid() == listener, "the node's listening sshd must survive"
    assert lab.port_open(ssh_info["hosts"][ROLE], ssh_info["port"])


def test_drop_after_runs_the_command_then_closes_without_status_or_output(ssh_info):
    with pool_name(ssh_info, "after") as pool:
        sshd.inject_fault(ROLE, "drop-after", f"ceph osd pool create {pool} *")
        r = run(ssh_info, f"ceph osd pool create {pool} 8 8 replicated; echo created")
        assert (r.status, r.out, r.err) == (-1, b"", b"")
        assert pool_exists(ssh_info, pool), "drop-after: the command's effect must happen"


def test_openssh_client_sees_the_drop_as_exit_255(ssh_info, tmp_path):
    marker = tmp_path / "ran"
    sshd.inject_fault(ROLE, "drop-before", f"touch {marker}")
    done = subprocess.run([*sshd.ssh_argv(ROLE), f"touch {marker}"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 255, done
    assert "closed" in done.stderr
    assert not marker.exists()


def test_slow_sleeps_then_runs_normally(ssh_info):
    command = f"SSHFAULT={RUN} ceph health -f json"
    sshd.inject_fault(ROLE, "slow", f"SSHFAULT={RUN} *", seconds=2)
    r = run(ssh_info, command)
    assert r.status == 0, r.err
    assert r.seconds >= 2
    assert "status" in json.loads(r.out)


def test_garbage_exits_zero_with_output_that_is_not_json(ssh_info):
    command = f"SSHFAULT={RUN} ceph osd pool ls -f json"
    sshd.inject_fault(ROLE, "garbage", f"SSHFAULT={RUN} ceph osd pool ls*")
    r = run(ssh_info, command)
    assert r.status == 0
    assert b"Caught signal" in r.out
    with pytest.raises(ValueError):
        json.loads(r.out)
    assert isinstance(json.loads(run(ssh_info, command).out), list), "the next one is real again"


# ---------------------------------------------------------------------- matching and counting


def test_times_two_fires_twice_then_commands_run_normally(ssh_info):
    sshd.inject_fault(ROLE, "garbage", f"echo count-{RUN} *", times=2)
    results = [run(ssh_info, f"echo count-{RUN} {i}") for i in range(3)]
    assert [b"Caught signal" in r.out for r in results] == [True, True, False]
    assert results[2].out == f"count-{RUN} 2\n".encode()
    assert [r["remaining"] for r in sshd.faults(ROLE)] == [0]


def test_a_non_matching_command_is_unaffected(ssh_info):
    sshd.inject_fault(ROLE, "drop-before", f"echo nomatch-{RUN}-a*")
    sshd.inject_fault(ROLE, "drop-before", f"echo exact-{RUN}")  # the glob covers the whole command
    for command in (f"echo nomatch-{RUN}-b", f"echo exact-{RUN} and more", f"echo x; echo nomatch-{RUN}-a"):
        r = run(ssh_info, command)
        assert r.status == 0, command
    assert [r["remaining"] for r in sshd.faults(ROLE)] == [1, 1]


def test_the_first_matching_rule_fires(ssh_info):
    sshd.inject_fault(ROLE, "garbage", f"echo order-{RUN} *")
    sshd.inject_fault(ROLE, "drop-before", f"echo order-{RUN} *")
    assert b"Caught signal" in run(ssh_info, f"echo order-{RUN} 1").out
    assert run(ssh_info, f"echo order-{RUN} 2").status == -1
    assert run(ssh_info, f"echo order-{RUN} 3").status == 0


def test_concurrent_sessions_fire_exactly_times(ssh_info):
    listener = listener_pid()
    sshd.inject_fault(ROLE, "drop-before", f"echo conc-{RUN} *", times=3)
    results: dict[int, Result] = {}

    def one(i: int) -> None:
        results[i] = run(ssh_info, f"echo conc-{RUN} {i}; sleep 0.3; echo done-{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 6
    dropped = [i for i, r in results.items() if r.status == -1]
    assert len(dropped) == 3, {i: r.status for i, r in results.items()}
    for i, r in results.items():  # the others were not disturbed by the drops next to them
        if i not in dropped:
            assert (r.status, r.out) == (0, f"conc-{RUN} {i}\ndone-{i}\n".encode())
    assert [r["remaining"] for r in sshd.faults(ROLE)] == [0]
    assert listener_pid() == listener


# ---------------------------------------------------------------------- API and CLI


def test_api_refuses_bad_rules():
    for kwargs, message in (
        ({"role": "pve-node9", "action": "garbage", "pattern": "*"}, "unknown ssh role"),
        ({"role": ROLE, "action": "explode", "pattern": "*"}, "unknown ssh fault action"),
        ({"role": ROLE, "action": "slow", "pattern": "*"}, "give seconds"),
        ({"role": ROLE, "action": "garbage", "pattern": "*", "seconds": 1}, "only for slow"),
        ({"role": ROLE, "action": "garbage", "pattern": "*", "times": 0}, "times=0"),
        ({"role": ROLE, "action": "garbage", "pattern": "a\tb"}, "no tabs"),
        ({"role": ROLE, "action": "garbage", "pattern": " "}, "pattern"),
    ):
        with pytest.raises(lab.LabError, match=message):
            sshd.inject_fault(**kwargs)
    with pytest.raises(lab.LabError, match="unknown ssh role"):
        sshd.faults("nope")
    with pytest.raises(lab.LabError, match="unknown ssh role"):
        sshd.clear_faults("nope")
    assert sshd.faults(ROLE) == []


def test_cli_adds_lists_and_clears(ssh_info):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lab", "ssh-fault", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)

    added = cli(ROLE, "slow", f"echo cli-{RUN} *", "--seconds", "1.5", "--times", "2")
    assert added.returncode == 0, added.stderr
    assert sshd.faults(ROLE) == [{"role": ROLE, "action": "slow", "remaining": 2, "seconds": 1.5, "pattern": f"echo cli-{RUN} *"}]
    listed = cli("--list")
    assert f"echo cli-{RUN} *" in listed.stdout and "2 left" in listed.stdout
    bad = cli(ROLE, "explode", "*")
    assert bad.returncode == 1 and "unknown ssh fault action" in bad.stderr
    assert cli("--clear", ROLE).returncode == 0
    assert sshd.faults(ROLE) == []
    rules = (paths.STATE / "faults" / ROLE).read_text() if (paths.STATE / "faults" / ROLE).exists() else ""
    assert "cli-" not in rules
