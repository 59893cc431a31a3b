"""The run memo (issue #22): a read-only answer is asked once a run, a write forgets its host's answers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from clients.ssh import Connection, KeptConnections, Result, RunMemo, SshExecutor
from components import dynamic


class Counting(SshExecutor):
    """An SshExecutor whose commands never leave the process: each one is counted and answered."""

    def __init__(self, host: str, memo: RunMemo) -> None:
        super().__init__(Connection(host, 2222, "root", "not-a-key"))
        self.asked: list[str] = []
        self.shared: list[bool] = []
        self.answer = "one"
        self.fail = False
        self.memo = memo

    def _run(self, argv: list[str], stdin: str | None, timeout: float | None, shared: bool = False) -> Result:
        self.asked.append(" ".join(argv))
        self.shared.append(shared)
        if self.fail:
            raise OSError("dropped")
        return Result(0, self.answer, "")


@pytest.fixture
def memo(monkeypatch: pytest.MonkeyPatch) -> RunMemo:
    memo = RunMemo()
    memo.enabled = True
    monkeypatch.setattr("clients.ssh.MEMO", memo)
    return memo


def test_a_read_is_asked_once_a_run(memo: RunMemo) -> None:
    node = Counting("127.10.10.101", memo)
    assert node.read(["ceph", "auth", "get", "client.x"]).stdout == "one"
    node.answer = "two"
    assert node.read(["ceph", "auth", "get", "client.x"]).stdout == "one"
    assert node.asked == ["ceph auth get client.x"]


def test_stdin_and_the_host_are_part_of_the_question(memo: RunMemo) -> None:
    admin, other = Counting("127.10.10.101", memo), Counting("127.10.20.11", memo)
    admin.read(["python3", "-"], stdin="a")
    admin.read(["python3", "-"], stdin="b")
    other.read(["python3", "-"], stdin="a")
    assert admin.asked == ["python3 -", "python3 -"] and other.asked == ["python3 -"]


def test_any_other_command_forgets_the_hosts_answers_and_only_its_own(memo: RunMemo) -> None:
    admin, node = Counting("127.10.10.101", memo), Counting("127.10.20.11", memo)
    admin.read(["ceph", "osd", "pool", "ls"])
    node.read(["dpkg-query", "-W", "ceph-common"])
    admin.run(["ceph", "osd", "pool", "create", "p"])
    admin.answer = "two"
    assert admin.read(["ceph", "osd", "pool", "ls"]).stdout == "two"
    node.read(["dpkg-query", "-W", "ceph-common"])
    assert node.asked == ["dpkg-query -W ceph-common"]


def test_a_failed_question_is_not_kept(memo: RunMemo) -> None:
    node = Counting("127.10.10.101", memo)
    node.fail = True
    with pytest.raises(OSError):
        node.read(["ceph", "status"])
    node.fail = False
    assert node.read(["ceph", "status"]).stdout == "one"
    assert node.asked == ["ceph status", "ceph status"]


def test_a_read_under_way_when_a_write_is_sent_is_not_kept(memo: RunMemo) -> None:
    node = Counting("127.10.10.101", memo)
    started, release = threading.Event(), threading.Event()

    def slow() -> Result:
        started.set()
        release.wait(5)
        return Result(0, "before the write", "")

    reader = threading.Thread(target=lambda: memo.ask(node._host, "ceph status", None, slow))
    reader.start()
    started.wait(5)
    node.run(["ceph", "osd", "pool", "set", "p", "size", "3"])
    release.set()
    reader.join(5)
    node.answer = "after the write"
    assert node.read(["ceph", "status"]).stdout == "after the write"


def test_two_askers_at_once_share_one_asking(memo: RunMemo) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def ask() -> Result:
        calls.append(1)
        gate.wait(5)
        return Result(0, "ok", "")

    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(memo.ask("h", "c", None, ask).stdout)) for _ in range(3)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert answers == ["ok"] * 3 and calls == [1]


def test_off_by_default_outside_the_provider_server() -> None:
    """Tests and the operator commands (verify, the drill) ask afresh every time."""
    memo = RunMemo()
    asked: list[int] = []
    for _ in range(2):
        memo.ask("h", "c", None, lambda: asked.append(1) or Result(0, "", ""))
    assert asked == [1, 1]


def test_prefetch_does_nothing_without_the_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dynamic.MEMO, "enabled", False)
    asked: list[int] = []
    dynamic.prefetch(lambda: asked.append(1))
    assert asked == []


def test_a_prefetch_that_fails_is_not_a_verdict(memo: RunMemo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dynamic, "MEMO", memo)
    done = threading.Event()

    def ask() -> None:
        done.set()
        raise RuntimeError("Ceph is not healthy")

    dynamic.prefetch(ask)  # no exception reaches the refresh's Read
    assert done.wait(5)


def test_a_fresh_read_asks_again_and_keeps_the_hosts_other_answers(memo: RunMemo) -> None:
    """`rbd ls` after PVE made a VM's disk, `ceph status` while PGs peer: asked again, forgetting nothing else."""
    node = Counting("127.10.10.101", memo)
    node.read(["python3", "-"], stdin="gate")
    node.read(["rbd", "ls"], fresh=True)
    node.answer = "two"
    assert node.read(["rbd", "ls"], fresh=True).stdout == "two"
    assert node.read(["rbd", "ls"]).stdout == "two"  # the fresh answer is the one kept
    node.read(["python3", "-"], stdin="gate")
    assert node.asked == ["python3 -", "rbd ls", "rbd ls"]


def test_reads_share_the_hosts_kept_connection_and_writes_do_not(memo: RunMemo) -> None:
    node = Counting("127.10.10.101", memo)
    node.read(["ceph", "status"])
    node.run(["ceph", "osd", "pool", "create", "p"])
    assert node.shared == [True, False]


class _Stream:
    def __init__(self, text: str = "") -> None:
        self.text = text
        self.channel = self

    def read(self) -> bytes:
        return self.text.encode()

    def write(self, _data: str) -> None: ...

    def shutdown_write(self) -> None: ...

    def close(self) -> None: ...

    def recv_exit_status(self) -> int:
        return 0


class _Channel:
    def settimeout(self, _limit: float) -> None: ...

    def exec_command(self, _command: str) -> None: ...

    def makefile_stdin(self, *_: Any) -> _Stream:
        return _Stream()

    def makefile(self, *_: Any) -> _Stream:
        return _Stream("kept\n")

    def makefile_stderr(self, *_: Any) -> _Stream:
        return _Stream()


class _Client:
    """A paramiko.SSHClient stand-in: its transport opens channels, or fails as told."""

    def __init__(self, opens: Exception | None = None) -> None:
        self.opens = opens
        self.closed = False

    def get_transport(self) -> Any:
        return self

    def is_active(self) -> bool:
        return not self.closed

    def open_session(self, timeout: float) -> _Channel:
        if self.opens is not None:
            raise self.opens
        return _Channel()

    def exec_command(self, _command: str, timeout: float) -> tuple[_Stream, _Stream, _Stream]:
        return _Stream(), _Stream("own\n"), _Stream()

    def close(self) -> None:
        self.closed = True


class Dialing(SshExecutor):
    """An SshExecutor whose connections are stand-ins, the first one failing its channels as told."""

    def __init__(self, first: Exception | None) -> None:
        super().__init__(Connection("127.10.20.12", 2222, "root", "not-a-key"))
        self.dialed: list[_Client] = []
        self.first = first

    def _client(self) -> Any:
        self.dialed.append(_Client(self.first if not self.dialed else None))
        return self.dialed[-1]


@pytest.fixture
def kept(memo: RunMemo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("clients.ssh.KEPT", KeptConnections())


def test_reads_go_over_one_kept_connection(memo: RunMemo, kept: None) -> None:
    node = Dialing(None)
    assert [node.read(["echo", str(i)]).stdout for i in range(3)] == ["kept\n"] * 3
    assert len(node.dialed) == 1 and not node.dialed[0].closed


def test_a_host_refusing_another_channel_keeps_its_connection_and_the_read_gets_its_own(memo: RunMemo, kept: None) -> None:
    import paramiko

    node = Dialing(paramiko.ChannelException(1, "Administratively prohibited"))
    assert node.read(["echo", "x"]).stdout == "own\n"
    assert [c.closed for c in node.dialed] == [False, True]  # the kept one stays; the read's own is closed after it


def test_a_kept_connection_that_opens_no_channel_is_dropped_and_made_again(memo: RunMemo, kept: None) -> None:
    import paramiko

    node = Dialing(paramiko.SSHException("Timeout opening channel."))
    assert node.read(["echo", "x"]).stdout == "own\n"
    assert node.dialed[0].closed
    assert node.read(["echo", "y"]).stdout == "kept\n"  # a new kept connection
    assert len(node.dialed) == 3 and not node.dialed[2].closed
