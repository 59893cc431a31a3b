"""The files a stack config points at (SSH key, known_hosts), read once when the program starts.

Everything read here is wrapped as a Pulumi secret before it reaches a resource; errors name the
config key and never the content.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.config import PROJECT, ConfigError, StackConfig


@dataclass(frozen=True)
class Credentials:
    private_key: str = field(repr=False)
    known_hosts_text: str = field(repr=False)
    known_hosts: dict[str, dict[str, str]] = field(repr=False)
    ca_file: str | None = None  # proxmox.caFile, absolute
    command_timeout: int = 120  # ssh.commandTimeout

    def require_host_key(self, host: str, port: int, key: str) -> None:
        """Refuse, naming the config ``key``, an SSH address whose host key is not in ssh.knownHostsFile.

        Checked when the program starts, so a missing key is a config error before anything is
        declared, not an SSH failure half-way through a run.
        """
        name = host if port == 22 else f"[{host}]:{port}"
        if not lookup(self.known_hosts, name):
            raise ConfigError(
                [
                    f"{PROJECT}:{key} = {host}:{port}: has no host key in ssh.knownHostsFile; check the host, then add it: ssh-keyscan -p {port} {host} >> <knownHostsFile>"
                ]
            )

    def connection(self, host: str, port: int, user: str, ceph_id: str = "admin") -> pulumi.Output[dict[str, Any]]:
        """The secret ``connection`` input of an SSH-backed dynamic resource; CEPH_ID, the cephx id
        of the Ceph commands run there, is left out for admin (a stack's inputs stay as they were)."""
        props = {
            "host": host,
            "port": port,
            "user": user,
            "privateKey": self.private_key,
            "knownHosts": self.known_hosts_text,
            "commandTimeout": self.command_timeout,
        }
        if ceph_id != "admin":
            props["cephId"] = ceph_id
        return pulumi.Output.secret(props)


def parse_known_hosts(text: str) -> dict[str, dict[str, str]]:
    """known_hosts lines as {host pattern (or |1|salt|hash): {key type: base64 key}}."""
    table: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or line.lstrip().startswith(("#", "@")):
            continue
        for name in fields[0].split(","):
            table.setdefault(name, {})[fields[1]] = fields[2]
    return table


def lookup(table: dict[str, dict[str, str]], name: str) -> dict[str, str]:
    """The keys recorded for ``name`` (``host`` or ``[host]:port``), plain or hashed (``|1|salt|hash``)."""
    found = dict(table.get(name, {}))
    for pattern, keys in table.items():
        if pattern.startswith("|1|"):
            salt, digest = pattern[3:].split("|", 1)
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            if hmac.compare_digest(base64.b64encode(mac).decode(), digest):
                found.update(keys)
    return found


def _read(path: str, key: str, what: str) -> str:
    full = os.path.expanduser(path)
    try:
        with open(full, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError([f"{PROJECT}:{key} = {path}: {what} cannot be read ({exc.strerror}); set the right path"]) from None


def ca_file(config: StackConfig) -> str | None:
    """``proxmox.caFile`` as an absolute path (the providers run in another folder), checked to exist."""
    if not config.proxmox.ca_file:
        return None
    path = os.path.abspath(os.path.expanduser(config.proxmox.ca_file))
    if not os.path.isfile(path):
        raise ConfigError(
            [f"{PROJECT}:proxmox.caFile = {config.proxmox.ca_file}: no such file; give the CA certificate (PEM) that signed the API's certificate"]
        )
    return path


def load(config: StackConfig) -> Credentials:
    if config.ssh_private_key is not None:
        private_key = config.ssh_private_key.get_secret_value()
    elif config.ssh.private_key_file:
        private_key = _read(config.ssh.private_key_file, "ssh.privateKeyFile", "the SSH private key")
    else:
        raise ConfigError(
            [f"{PROJECT}:sshPrivateKey = (not set): is required when ssh.privateKeyFile is empty; `pulumi config set --secret sshPrivateKey < key`"]
        )
    text = _read(config.ssh.known_hosts_file, "ssh.knownHostsFile", "the known_hosts file")
    return Credentials(
        private_key=private_key,
        known_hosts_text=text,
        known_hosts=parse_known_hosts(text),
        ca_file=ca_file(config),
        command_timeout=config.ssh.command_timeout,
    )
