"""Running commands on the Ceph admin node over SSH, for the dynamic providers.

Every command is an argv list: it is rendered with :func:`shlex.join`, so no value is ever
interpreted by the remote shell. Host keys are checked against a known_hosts file; an unknown
or changed key is refused.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # paramiko is imported where it is used: the program itself never opens SSH
    import paramiko


class RemoteError(Exception):
    """A remote command or connection failed; the message is safe to show (no secrets, no output of secret commands)."""


class Unreachable(RemoteError):
    """The host did not accept a TCP connection (refused, no route, timed out): it is down or cut off.

    A changed host key, a refused login or a dropped session are not this: the host answered.
    """


@dataclass(frozen=True)
class Result:
    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Connection:
    """Where and how to log in; ``private_key`` is a secret and never printed."""

    host: str
    port: int
    user: str
    private_key: str = field(repr=False)
    known_hosts: str = field(repr=False, default="")
    command_timeout: float = 120  # seconds one command may take (ssh.commandTimeout)
    ceph_id: str = "admin"  # the cephx id of the Ceph commands run there (ceph.admin.clientId)

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> Connection:
        return cls(
            host=str(props["host"]),
            port=int(props["port"]),
            user=str(props["user"]),
            private_key=str(props["privateKey"]),
            known_hosts=str(props.get("knownHosts", "")),
            command_timeout=float(props.get("commandTimeout") or 120),
            ceph_id=str(props.get("cephId") or "admin"),
        )

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


CEPH_COMMANDS = ("ceph", "rbd")


def as_ceph_id(argv: list[str], ceph_id: str) -> list[str]:
    """ARGV run as cephx client CEPH_ID: ``--id`` after the words of a ``ceph`` or ``rbd`` command and
    of the program's librados scripts (``python3 -``, which read it the same way); as it was for admin."""
    if ceph_id == "admin" or not argv or not (argv[0] in CEPH_COMMANDS or argv[:2] == ["python3", "-"]):
        return argv
    return [*argv, "--id", ceph_id]


class Executor(Protocol):
    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None) -> Result:
        """Any command; a command that may change something must come here."""
        ...

    def read(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None, fresh: bool = False) -> Result:
        """A command that changes nothing: within one run its answer may be the one already given (see
        :class:`RunMemo`); ``fresh`` asks again (what someone else may have changed since, e.g. PVE
        making a VM's disk), without forgetting the host's other answers as :meth:`run` does."""
        ...


class RunMemo:
    """The answers of read-only commands, kept for one run of the program and shared by its resources.

    Pulumi runs a dynamic provider in a process of its own for one engine run (one preview, one
    update), and that run asks some questions twice: a preview's refresh reads every resource, and
    then the program's Check and Diff ask again (the health gate, the HA preflight, the cephx
    client). Kept here, the second asking costs nothing: no SSH handshake, no `ceph` CLI start.

    What makes it safe:
    - it lives in the provider process, so nothing outlives the run: a change made by hand between
      two runs is always seen (issue #22: caching within a run, never across runs);
    - any other command to a host (anything that may change it: `run`) forgets every answer of that
      host, and a read still under way when that happens is not kept;
    - a question that fails is not kept: the next asker asks again;
    - off unless the dynamic provider server turned it on (:func:`components.dynamic`): a test or an
      operator command asks afresh every time.
    """

    def __init__(self) -> None:
        self.enabled = False
        self._lock = threading.Lock()
        self._generation: dict[Any, int] = {}
        self._answers: dict[tuple[Any, int, str, str | None], Future[Result]] = {}

    def ask(self, host: Any, command: str, stdin: str | None, run: Callable[[], Result], fresh: bool = False) -> Result:
        if not self.enabled:
            return run()
        with self._lock:
            key = (host, self._generation.get(host, 0), command, stdin)
            answer = None if fresh else self._answers.get(key)
            mine = answer is None
            if answer is None:
                answer = self._answers[key] = Future()
        if not mine:
            try:
                return answer.result()
            except Exception:  # the first asker failed: ask again, as it would have
                return run()
        try:
            result = run()
        except BaseException as exc:
            with self._lock:
                if self._answers.get(key) is answer:
                    del self._answers[key]
            answer.set_exception(exc)
            raise
        answer.set_result(result)
        return result

    def forget(self, host: Any) -> None:
        with self._lock:
            self._generation[host] = self._generation.get(host, 0) + 1
            for key in [k for k in self._answers if k[0] == host]:
                del self._answers[key]


MEMO = RunMemo()


class KeptConnections:
    """One SSH connection per host for the read-only commands of a run, in the provider process.

    A handshake costs both ends CPU (the key exchange, sshd's re-exec), and a run reads a host
    several times: with the memo on (the provider process, one run), reads share one connection
    per host, each on its own channel. Writes keep a connection of their own, as before: a write
    whose connection drops (or is cut on purpose, as the lab's SSH faults do) takes no read with it.
    A kept connection found closed (the host's sshd restarted, the node rebooted) is made again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[Connection, paramiko.SSHClient] = {}
        self._connecting: dict[Connection, threading.Lock] = {}

    def get(self, executor: SshExecutor) -> paramiko.SSHClient:
        conn = executor.connection
        with self._lock:
            connecting = self._connecting.setdefault(conn, threading.Lock())
        with connecting:  # one handshake per host, however many readers start at once
            with self._lock:
                client = self._clients.get(conn)
            transport = client.get_transport() if client is not None else None
            if client is not None and transport is not None and transport.is_active():
                return client
            client = executor._client()
            with self._lock:
                self._clients[conn] = client
            return client

    def drop(self, conn: Connection, client: paramiko.SSHClient) -> None:
        with self._lock:
            if self._clients.get(conn) is client:
                del self._clients[conn]
        client.close()


KEPT = KeptConnections()


def render(argv: list[str]) -> str:
    """The exact string the remote shell receives."""
    return shlex.join(argv)


def parse_known_hosts(text: str, into: paramiko.HostKeys | None = None) -> paramiko.HostKeys:
    """known_hosts lines (hashed or plain) as paramiko's host key table."""
    import paramiko

    keys = paramiko.HostKeys() if into is None else into
    for line in text.splitlines():
        entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        if entry is not None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return keys


def _load_key(text: str) -> paramiko.PKey:
    import paramiko

    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise RemoteError("the SSH private key could not be read (expected an unencrypted OpenSSH or PEM private key)")


class SshExecutor:
    """One SSH connection per command: the providers run few commands, and this keeps no state.

    With ``keep_open`` the first command's connection stays open and every later command (from
    any thread) runs on a channel of it, until :meth:`close`: for a reader that asks many
    questions at once (``python -m verify``), one handshake per host instead of one per command.
    """

    def __init__(self, connection: Connection, connect_timeout: float = 15, keep_open: bool = False):
        self.connection = connection
        self.connect_timeout = connect_timeout
        self.keep_open = keep_open
        self._kept: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._kept is not None:
                self._kept.close()
                self._kept = None

    def _open(self) -> paramiko.SSHClient:
        if not self.keep_open:
            return self._client()
        with self._lock:
            if self._kept is None:
                self._kept = self._client()
            return self._kept

    def _client(self) -> paramiko.SSHClient:
        import paramiko

        conn = self.connection
        client = paramiko.SSHClient()
        if conn.known_hosts:
            parse_known_hosts(conn.known_hosts, into=client.get_host_keys())  # never the user's own file
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                conn.host,
                port=conn.port,
                username=conn.user,
                pkey=_load_key(conn.private_key),
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException:
            raise RemoteError(
                f"SSH to {conn.where}: the host key changed since it was recorded in known_hosts; verify the host and update ssh.knownHostsFile"
            ) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise RemoteError(
                    f"SSH to {conn.where}: the host key is not in ssh.knownHostsFile; add it (ssh-keyscan -p {conn.port} {conn.host}) after checking it"
                ) from None
            raise RemoteError(f"SSH to {conn.where} failed: {exc}") from None
        except (TimeoutError, OSError) as exc:
            raise Unreachable(f"SSH to {conn.where} failed: {exc.strerror or exc}") from None
        _no_delay(client)
        return client

    @property
    def _host(self) -> tuple[str, int, str]:
        return (self.connection.host, self.connection.port, self.connection.user)

    def read(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None, fresh: bool = False) -> Result:
        """A command that changes nothing: asked once per run (:data:`MEMO`), or again when ``fresh``."""
        argv = as_ceph_id(argv, self.connection.ceph_id)
        return MEMO.ask(self._host, render(argv), stdin, lambda: self._run(argv, stdin, timeout, shared=MEMO.enabled), fresh)

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None) -> Result:
        """Run ``argv``, which may change the host: the run's kept answers of that host are forgotten."""
        MEMO.forget(self._host)
        return self._run(as_ceph_id(argv, self.connection.ceph_id), stdin, timeout)

    def _channel(self, command: str, limit: float, shared: bool) -> tuple[paramiko.SSHClient, bool, Any]:
        """A connection and the command's channels on it; ``shared``: on the host's kept connection
        (:data:`KEPT`), or a connection of its own when that one is gone or refuses another channel."""
        import paramiko

        if shared and not self.keep_open:
            client = KEPT.get(self)
            try:
                return client, True, self._exec_kept(client, command, limit)
            except paramiko.ChannelException:
                pass  # the host refused another channel (its MaxSessions): the command was not run; on a connection of its own
            except paramiko.SSHException:  # closed since, or no channel within the connect timeout: the command was not run
                KEPT.drop(self.connection, client)
        client = self._open()
        try:
            return client, False, client.exec_command(command, timeout=limit)
        except BaseException:
            if not self.keep_open:
                client.close()
            raise

    def _exec_kept(self, client: paramiko.SSHClient, command: str, limit: float) -> Any:
        """``client.exec_command`` on a kept connection, whose channel must open within the connect
        timeout, not the command's: a host cut off since it was opened (no RST, no FIN) is found out
        as soon as a new connection would find it, and the command goes to one (:meth:`_channel`)."""
        import paramiko

        transport = client.get_transport()
        if transport is None:
            raise paramiko.SSHException("the kept connection is closed")
        chan = transport.open_session(timeout=self.connect_timeout)
        chan.settimeout(limit)
        chan.exec_command(command)
        return chan.makefile_stdin("wb", -1), chan.makefile("r", -1), chan.makefile_stderr("r", -1)

    def _run(self, argv: list[str], stdin: str | None, timeout: float | None, shared: bool = False) -> Result:
        """Run ``argv``; a connection that drops before the command's exit status arrives is a :class:`RemoteError`."""
        import paramiko

        from clients.ceph_cli import command_name  # here, not at the top: ceph_cli builds commands for an Executor

        command = render(argv)
        what = command_name(argv)
        limit = timeout or self.connection.command_timeout
        client, kept = None, shared
        try:
            client, kept, (chan_in, chan_out, chan_err) = self._channel(command, limit, shared)
            if stdin is not None:
                chan_in.write(stdin)
                chan_in.channel.shutdown_write()
            chan_in.close()
            out = chan_out.read().decode(errors="replace")
            err = chan_err.read().decode(errors="replace")
            status = chan_out.channel.recv_exit_status()
        except TimeoutError:
            raise RemoteError(
                f"SSH to {self.connection.where}: `{what}` did not finish within {limit:.0f} s (is the Ceph cluster reachable and healthy? ssh.commandTimeout sets the limit)"
            ) from None
        except (paramiko.SSHException, OSError) as exc:
            raise RemoteError(f"SSH to {self.connection.where}: the connection dropped while running `{what}`: {exc}") from None
        finally:
            if client is not None and not self.keep_open and not kept:
                client.close()
        if status == -1:  # the channel closed without an exit status: the connection (or the remote sshd) went away
            raise RemoteError(f"SSH to {self.connection.where}: the connection dropped while running `{what}`; whether it took effect is unknown")
        return Result(status, out, err)


def _no_delay(client: paramiko.SSHClient) -> None:
    """TCP_NODELAY on the connection, as OpenSSH's own client sets it once a session opens
    (`ssh -v`: "setting TCP_NODELAY"): a command is a few small packets each way, and with Nagle's
    algorithm each new channel on a kept connection waited for the peer's delayed ACK (40 ms on
    Linux) before its request went out."""
    transport = client.get_transport()
    with contextlib.suppress(AttributeError, OSError):
        transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]


def check(result: Result, what: str, *, secret_output: bool = False) -> Result:
    """Raise a :class:`RemoteError` naming ``what`` when the command failed."""
    if result.exit_status != 0:
        detail = "" if secret_output else (result.stderr.strip() or result.stdout.strip())[-600:]
        hint = ""
        if result.exit_status == 13 and what.split(" ", 1)[0] in CEPH_COMMANDS and "EACCES" in result.stderr:
            from components.ceph_rights import denied_hint

            hint = denied_hint(what)
        raise RemoteError(f"{what} failed (exit {result.exit_status})" + (f": {detail}" if detail else "") + hint)
    return result
