"""The lab's SSH servers: one OpenSSH sshd per node address, so a powered-off node stops
answering. The Ceph admin node on 127.10.10.101, the PVE nodes pve-node1..3 on
127.10.20.11-13, all on port 2222; key-only root login with the lab's client key.

Every sshd forces `lab/dispatch ROLE`, which runs the client's command with bash in the
role's environment (see lab/dispatch).

Root's home on a node is .lab/ssh/root-home (sshd_config `SetEnv HOME=`), holding the dotfiles
Debian's base-files gives root (/usr/share/base-files/dot.bashrc, dot.profile), as on a Debian or
PVE node. sshd runs the forced command with the user's shell, `bash -c`, and Debian's bash reads
~/.bashrc when sshd starts it (bash's SSH_SOURCE_BASHRC): with the build machine's own root home,
every command of every session ran its ~/.bashrc first (here `pyenv init`: about 0.1 s and a
hundred processes a command), a cost no PVE node has.

SSH faults: `inject_fault(role, action, pattern, times, seconds)` makes the next TIMES commands
on ROLE that match the bash glob PATTERN misbehave (FAULT_KINDS: drop-before, drop-after,
slow, garbage), `faults(role)` lists the rules, `clear_faults(role=None)` removes them. The
rules live in .lab/faults/ROLE (one a line, tab-separated: action, remaining, seconds or `-`,
pattern), read and decremented by lab/dispatch under flock on .lab/faults/ROLE.lock; each
firing is logged in .lab/faults/ROLE.log. `up()` and `down()` clear them.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lab import LabError, paths, port_open, running, say, spawn, step, stop, wait_for

ADMIN_ROLE = "ceph-admin"
HOSTS = {
    ADMIN_ROLE: "127.10.10.101",
    "pve-node1": "127.10.20.11",
    "pve-node2": "127.10.20.12",
    "pve-node3": "127.10.20.13",
}
PORT = 2222
USER = "root"
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
START_DEADLINE = 15.0

FAULT_KINDS = ("drop-before", "drop-after", "slow", "garbage")
FAULT_MAX_SECONDS = 3600.0
FAULTS_HEADER = "# action\tremaining\tseconds\tpattern  (lab/dispatch; python -m lab ssh-fault)\n"

CONFIG = """\
# sshd for the lab's {role} ({addr}:{port}), written by `python -m lab up`
ListenAddress {addr}:{port}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
# Pulumi opens many sessions at once
MaxStartups 100:30:200
MaxSessions 100
LoginGraceTime 30
Subsystem sftp {sftp}
# root's home as Debian makes it (see lab/sshd.py), not the build machine's
SetEnv HOME={home}
ForceCommand {dispatch} {role} {state}
"""

NODE_CEPH_CONF = """\
# {node}: a PVE node's Ceph client config, empty on purpose: the node knows no monitors and
# has no keys until the program gives it some (pass -m/--id/--keyring or write a keyring).
[global]
"""


def _sshd_name(role: str) -> str:
    return f"sshd.{role}"


def daemon_names() -> list[str]:
    """Pid-file names of the sshds."""
    return [_sshd_name(r) for r in HOSTS]


def _config_path(role: str) -> Path:
    return paths.SSH / f"sshd_config.{role}"


def _host_key(role: str) -> Path:
    return paths.SSH / f"ssh_host_ed25519_key.{role}"


def _pub(key: Path) -> Path:
    return key.parent / f"{key.name}.pub"


def _keygen(path: Path, comment: str) -> None:
    if path.exists() and _pub(path).exists():
        return
    path.unlink(missing_ok=True)
    _pub(path).unlink(missing_ok=True)
    p = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        raise LabError(f"ssh-keygen {path}: {p.stderr.strip()}")
    path.chmod(0o600)


def _listening(addr: str, port: int) -> list[str]:
    """`ss -ltnpH` lines of listeners on ADDR:PORT (or on the wildcard address)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    hits = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[3] in (f"{addr}:{port}", f"0.0.0.0:{port}", f"*:{port}", f"[::]:{port}"):
            hits.append(line)
    return hits


DEBIAN_DOTFILES = Path("/usr/share/base-files")
# Debian 12's base-files dot.bashrc, in case the machine lacks the file: nothing but comments
DEBIAN_BASHRC = "# ~/.bashrc: executed by bash(1) for non-login shells.\n"


def _root_home() -> None:
    """Root's home on the lab's nodes, with Debian's default dotfiles (base-files)."""
    paths.SSH_ROOT_HOME.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("bashrc", "profile"):
        source = DEBIAN_DOTFILES / f"dot.{name}"
        text = source.read_text() if source.is_file() else (DEBIAN_BASHRC if name == "bashrc" else "")
        (paths.SSH_ROOT_HOME / f".{name}").write_text(text)


def _prepare() -> None:
    paths.SSH.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.SSH, 0o700)
    # sshd insists on its privilege-separation directory
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    _keygen(paths.SSH_CLIENT_KEY, "lab-client")
    pub = _pub(paths.SSH_CLIENT_KEY).read_text()
    paths.SSH_AUTHORIZED_KEYS.write_text(pub)
    paths.SSH_AUTHORIZED_KEYS.chmod(0o600)
    _root_home()
    known = []
    for role, addr in HOSTS.items():
        _keygen(_host_key(role), f"lab-{role}")
        _config_path(role).write_text(
            CONFIG.format(
                role=role,
                addr=addr,
                port=PORT,
                host_key=_host_key(role),
                authorized_keys=paths.SSH_AUTHORIZED_KEYS,
                sftp=SFTP_SERVER,
                dispatch=paths.DISPATCH,
                state=paths.STATE,
                home=paths.SSH_ROOT_HOME,
            )
        )
        kind, key = _pub(_host_key(role)).read_text().split()[:2]
        known.append(f"[{addr}]:{PORT} {kind} {key}\n")
        if role != ADMIN_ROLE:
            conf = paths.node_ceph_conf(role)
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(NODE_CEPH_CONF.format(node=role))
    paths.SSH_KNOWN_HOSTS.write_text("".join(known))


def start_role(role: str) -> int:
    """Start ROLE's sshd unless it runs; wait until it accepts connections. Returns its pid."""
    if role not in HOSTS:
        raise LabError(f"unknown ssh role {role!r}")
    addr = HOSTS[role]
    pid = running(_sshd_name(role))
    if pid is None:
        if not _config_path(role).exists():
            _prepare()
        busy = _listening(addr, PORT)
        if busy:
            raise LabError(f"{addr}:{PORT} is already in use: {busy}")
        check = subprocess.run([SSHD, "-t", "-f", str(_config_path(role))], capture_output=True, text=True)
        if check.returncode != 0:
            raise LabError(f"sshd -t {_config_path(role)}: {check.stderr.strip()}")
        pid = spawn(_sshd_name(role), [SSHD, "-D", "-e", "-f", str(_config_path(role))])
    wait_for(f"sshd {role} on {addr}:{PORT}", lambda: port_open(addr, PORT), START_DEADLINE, 0.05)
    return pid


def stop_role(role: str, deadline: float = 5.0) -> bool:
    """Stop ROLE's sshd and its sessions (never the caller's own session processes)."""
    return stop(_sshd_name(role), deadline)


def up(log: Callable[[str], None] = say) -> dict[str, Any]:
    with step("ssh keys, sshd configs, known_hosts", log):
        _prepare()
        clear_faults()  # none left over from an earlier run
    with step(f"sshd x{len(HOSTS)} on port {PORT}", log):
        for role in HOSTS:
            start_role(role)
    return info()


def info() -> dict[str, Any]:
    return {
        "port": PORT,
        "user": USER,
        "private_key_path": str(paths.SSH_CLIENT_KEY),
        "public_key": _pub(paths.SSH_CLIENT_KEY).read_text().strip(),
        "known_hosts": str(paths.SSH_KNOWN_HOSTS),
        "hosts": dict(HOSTS),
        "node_ceph_conf": {r: str(paths.node_ceph_conf(r)) for r in HOSTS if r != ADMIN_ROLE},
    }


def down(deadline: float = 5.0) -> None:
    for role in HOSTS:
        stop_role(role, deadline)
    clear_faults()


def ssh_argv(role: str, *, batch: bool = True) -> list[str]:
    """An `ssh` command line that reaches ROLE as the lab's client (append the command)."""
    argv = [
        "ssh",
        "-p",
        str(PORT),
        "-i",
        str(paths.SSH_CLIENT_KEY),
        "-o",
        f"UserKnownHostsFile={paths.SSH_KNOWN_HOSTS}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
    ]
    if batch:
        argv += ["-o", "BatchMode=yes"]
    return [*argv, f"{USER}@{HOSTS[role]}"]


def _shared_connection(role: str) -> list[str]:
    """OpenSSH options that run the commands for ROLE over one kept connection (ControlMaster), as an
    operator's ~/.ssh/config often does: a command then costs no key exchange (an SSH `true` to the
    admin node 0.24 s -> 0.02 s; the engine tests make hundreds of these reads, issue #22). Only for
    the Ceph admin node: a PVE node's `poweroff` spares the session that ran it (lab.stop), so a
    kept connection to a node would outlive the node. The master exits with the admin node's sshd
    (`lab down` stops its sessions) or after 2 idle minutes; a stale socket is replaced. None when
    the socket's path would pass the 104-byte limit of a Unix socket's name."""
    path = paths.STATE / "ssh" / "cm-%C"  # %C: a 40-character hash of the host, port and user
    if role != ADMIN_ROLE or len(str(path)) + 38 + 17 > 104:  # ssh binds it with a 17-character suffix first
        return []
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={path}", "-o", "ControlPersist=120"]


def shell(role: str, command: str, timeout: float = 60) -> str:
    """Run COMMAND on ROLE as the lab's client (what an operator types over SSH); its stdout, or a
    LabError with the exit status and the end of stderr."""
    argv = ssh_argv(role)
    done = subprocess.run([argv[0], *_shared_connection(role), *argv[1:], command], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise LabError(f"`{command}` on {role} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return done.stdout


# --------------------------------------------------------------------------- SSH faults


def faults_dir() -> Path:
    return paths.STATE / "faults"


def _check_role(role: str) -> str:
    if role not in HOSTS:
        raise LabError(f"unknown ssh role {role!r}: use one of {', '.join(HOSTS)}")
    return role


@contextlib.contextmanager
def _rules_locked(role: str) -> Iterator[Path]:
    """ROLE's rules file, under the exclusive flock lab/dispatch takes too."""
    d = faults_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(d / f"{role}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield d / role


def _parse_rules(role: str, text: str) -> list[dict[str, Any]]:
    rules = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t", 3)
        if len(parts) != 4 or not parts[1].isdigit():
            continue  # dispatch skips it too
        action, remaining, seconds, pattern = parts
        try:
            secs = float(seconds)
        except ValueError:
            secs = None  # `-`, or not a number: dispatch does not sleep either
        rules.append(
            {
                "role": role,
                "action": action,
                "remaining": int(remaining),
                "seconds": secs,
                "pattern": pattern,
            }
        )
    return rules


def inject_fault(role: str, action: str, pattern: str, times: int = 1, seconds: float | None = None) -> dict[str, Any]:
    """Make the next TIMES commands on ROLE's sshd whose whole command line matches the bash glob
    PATTERN misbehave (the rule is appended: earlier rules are checked first):

      drop-before  the connection drops before the command runs
      drop-after   the command runs to completion, then the connection drops (no output, no status)
      slow         sleep SECONDS, then run the command
      garbage      the command does not run; non-JSON junk on stdout, exit status 0

    Returns the rule as `faults()` lists it."""
    _check_role(role)
    if action not in FAULT_KINDS:
        raise LabError(f"unknown ssh fault action {action!r}: use one of {', '.join(FAULT_KINDS)}")
    if not isinstance(pattern, str) or not pattern.strip():
        raise LabError("ssh fault pattern: give a bash glob matched against the whole command, e.g. 'ceph osd pool create *'")
    if any(c in pattern for c in "\t\n\r\0"):
        raise LabError(f"ssh fault pattern {pattern!r}: no tabs, newlines or NUL bytes")
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise LabError(f"ssh fault times={times!r}: must be an integer >= 1")
    if action == "slow":
        if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise LabError("ssh fault slow: give seconds (how long to sleep before the command runs)")
        if not math.isfinite(seconds) or not 0.001 <= seconds <= FAULT_MAX_SECONDS:
            raise LabError(f"ssh fault slow: seconds={seconds!r} must be between 0.001 and {FAULT_MAX_SECONDS:g}")
        secs = f"{float(seconds):.3f}".rstrip("0").rstrip(".")
    elif seconds is not None:
        raise LabError(f"ssh fault {action}: seconds is only for slow")
    else:
        secs = "-"
    with _rules_locked(role) as rules:
        text = rules.read_text() if rules.exists() else FAULTS_HEADER
        if text and not text.endswith("\n"):
            text += "\n"
        text += f"{action}\t{times}\t{secs}\t{pattern}\n"
        tmp = rules.with_name(f"{role}.tmp.{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(rules)
    return _parse_rules(role, f"{action}\t{times}\t{secs}\t{pattern}")[0]


def faults(role: str) -> list[dict[str, Any]]:
    """ROLE's rules in the order they are checked: role, action, remaining (0: spent), seconds, pattern."""
    _check_role(role)
    rules = faults_dir() / role
    try:
        return _parse_rules(role, rules.read_text())
    except FileNotFoundError:
        return []


def clear_faults(role: str | None = None) -> None:
    """Remove ROLE's fault rules (None: every role's). Commands already past the check are unaffected."""
    roles = list(HOSTS) if role is None else [_check_role(role)]
    if not faults_dir().is_dir():
        return
    for r in roles:
        with _rules_locked(r) as rules:
            rules.unlink(missing_ok=True)
