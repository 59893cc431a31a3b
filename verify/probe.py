"""How `python -m verify` asks the cluster, read-only: commands over SSH on the Ceph admin node
and the PVE nodes (the program's own SSH client, with the same host-key checking), and GETs on
the PVE API (proxmoxer, the API token, the stack's CA).

Every answer is asked once per run, however many checks read it (:class:`Once`), so the checks
can run at the same time. The checks see only the :class:`Probe` protocol: the unit tests give
them recorded answers instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from clients.pve import api as pve_api
from clients.ssh import Connection, RemoteError, Result, SshExecutor, render
from components.errors import OperatorError
from verify.target import Target

ADMIN = "ceph-admin"  # the Ceph admin node, as a host name of the probe


class ApiError(Exception):
    """A PVE API GET failed; the message names the call and PVE's reason (never the token)."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        self.fatal = fatal  # the API cannot be used at all (no node answered, or the token was refused)
        super().__init__(message)


class Probe(Protocol):
    def ssh(self, host: str, argv: list[str]) -> Result:
        """Run ``argv`` on ``host`` (:data:`ADMIN` or a node name); raises RemoteError / Unreachable."""
        ...

    def api(self, path: str) -> Any:
        """GET ``path`` (``nodes/pve-node1/storage/ceph-rbd/status``); raises :class:`ApiError`."""
        ...


class Once:
    """A probe that asks each question once, even when several threads ask it at the same time."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, ...], Future[Any]] = {}

    def _ask(self, key: tuple[str, ...], ask: Callable[[], Any]) -> Any:
        with self._lock:
            future = self._answers.get(key)
            mine = future is None
            if future is None:
                future = self._answers[key] = Future()
        if mine:
            try:
                future.set_result(ask())
            except Exception as exc:  # kept, and raised to every asker
                future.set_exception(exc)
        return future.result()

    def ssh(self, host: str, argv: list[str]) -> Result:
        return self._ask(("ssh", host, render(argv)), lambda: self.probe.ssh(host, argv))

    def api(self, path: str) -> Any:
        return self._ask(("api", path), lambda: self.probe.api(path))


class Live:
    """The real cluster of a :class:`Target`."""

    def __init__(self, target: Target, timeout: float = 20) -> None:
        config, secrets = target.config, target.credentials
        self.timeout = timeout
        self.token = target.token

        def connection(host: str, port: int, user: str, ceph_id: str = "admin") -> Connection:
            return Connection(host, port, user, secrets.private_key, secrets.known_hosts_text, command_timeout=timeout, ceph_id=ceph_id)

        admin = config.ceph.admin
        self.hosts = {ADMIN: connection(admin.host, admin.port, admin.user, admin.client_id)}
        for node in config.proxmox.nodes:
            self.hosts[node.name] = connection(node.address, node.ssh_port, config.proxmox.ssh_user)
        # one SSH connection per host for the whole run, each command on a channel of it
        self.executors = {host: SshExecutor(conn, connect_timeout=min(timeout, 10), keep_open=True) for host, conn in self.hosts.items()}
        # the cluster's endpoint first, then each node's own API: any node answers for the cluster
        self.endpoint = config.proxmox.endpoint
        self.addresses = [n.address for n in config.proxmox.nodes]
        self.verify_tls = config.proxmox.verify_tls
        self.ca_file = secrets.ca_file
        self._client: Any = None
        self._lock = threading.Lock()

    def ssh(self, host: str, argv: list[str]) -> Result:
        return self.executors[host].run(argv, timeout=self.timeout)

    def close(self) -> None:
        for executor in self.executors.values():
            executor.close()

    def _connect(self) -> Any:
        import requests

        props = pve_api.api_props(self.endpoint, self.token, self.verify_tls, self.ca_file, self.addresses)
        try:
            client = pve_api.connect(props, timeout=self.timeout)
            client.version.get()
            return client
        except OperatorError as exc:
            raise ApiError(f"{exc}; check proxmox.caFile too", fatal=True) from None
        except pve_api.api_errors() as exc:
            if not isinstance(exc, requests.RequestException | OSError):
                raise ApiError(f"GET /version: {pve_api.reason(exc)}; check the stack's proxmoxApiToken secret and its privileges", fatal=True) from None
            raise ApiError(f"GET /version: {pve_api.reason(exc)}; check proxmox.endpoint, proxmox.nodes and proxmox.caFile", fatal=True) from None

    def api(self, path: str) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
        try:
            return self._client.get(path)
        except pve_api.api_errors() as exc:
            raise ApiError(f"GET /{path}: {pve_api.reason(exc)}") from None


__all__ = ["ADMIN", "ApiError", "Live", "Once", "Probe", "RemoteError", "Result"]
