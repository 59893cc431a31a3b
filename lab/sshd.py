"""The lab's SSH servers: one OpenSSH sshd per node address, so a powered-off node stops
answering. The Ceph admin node on 127.10.10.101, the PVE nodes pve-node1..3 on
127.10.20.11-13, all on port 2222; key-only root login with the lab's client key.

Every sshd forces `lab/dispatch ROLE`, which runs the client's command with bash in the
role's environment (see lab/dispatch).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
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


def _prepare() -> None:
    paths.SSH.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.SSH, 0o700)
    # sshd insists on its privilege-separation directory
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    _keygen(paths.SSH_CLIENT_KEY, "lab-client")
    pub = _pub(paths.SSH_CLIENT_KEY).read_text()
    paths.SSH_AUTHORIZED_KEYS.write_text(pub)
    paths.SSH_AUTHORIZED_KEYS.chmod(0o600)
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
