"""Runbook 2-2: ``apt install ceph-common -y`` on every Proxmox node, in parallel.

One dynamic resource per node (so the nodes are done at once). Create installs the package with
``apt-get`` unless ``dpkg-query`` already shows it installed, and reads it back; refresh reads it
back with ``dpkg-query``, so a package removed from a node by hand is dropped from the state and
the next ``pulumi preview`` shows it to be created: ``pulumi up`` puts it back.

Delete never removes the package: it is harmless, and other things on the node may need it. A
node that does not answer SSH at all (powered off, fenced during a failover) keeps its recorded
state on refresh: nothing can have changed on it, and a failover must not show as a change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, cast

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from clients.ssh import Executor, RemoteError, Unreachable
from components.dynamic import SshBacked, connection_changed
from components.errors import OperatorError, failed
from components.graph import child_options

PACKAGE = "ceph-common"
INSTALLED = "install ok installed"  # dpkg's ${Status} of a package that is installed and configured
INSTALL_TIMEOUT = 900  # seconds: apt-get may download and wait for the dpkg lock; longer than a Ceph command
LOCK_TIMEOUT = 300  # seconds apt-get waits for another apt (unattended-upgrades) to release the dpkg lock


def install_argv(package: str) -> list[str]:
    # runbook 2-2: apt install ceph-common -y, without questions and waiting for the dpkg lock
    return ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-o", f"DPkg::Lock::Timeout={LOCK_TIMEOUT}", "install", "-y", package]


def query_argv(package: str) -> list[str]:
    """``dpkg-query -W -f='${Status}\\t${Version}' ceph-common``; dpkg-query expands the ``\\t``."""
    return ["dpkg-query", "-W", "-f=${Status}\\t${Version}", package]


def parse_query(node: str, package: str, exit_status: int, stdout: str, stderr: str) -> str | None:
    """The installed version, or None when dpkg knows the package as not installed (removed, purged, never there).

    dpkg-query exits 1 for a package it has never heard of (or that was purged); a removed package
    keeps its configuration files and shows ``deinstall ok config-files``.
    """
    if exit_status == 1 and "no packages found" in (stderr + stdout):
        return None
    if exit_status != 0:
        detail = (stderr.strip() or stdout.strip())[-300:]
        raise OperatorError(f"{node}: dpkg-query -W {package} failed (exit {exit_status}): {detail}")
    status, _, version = stdout.partition("\t")
    return version.strip() if status.strip() == INSTALLED else None


class PackageInputs(TypedDict):
    """The CephCommonPackage resource's inputs: CephCommonPackage writes them, PackageProvider reads them, the tests build them.
    The keys are the state's: renaming one changes every deployed stack. (``version`` is an output.)"""

    connection: Any  # the node's SSH connection (clients/ssh.py Connection.props), a secret
    node: str
    package: str


def package_inputs(props: Mapping[str, Any]) -> PackageInputs:
    """The typed view of a call's inputs: the SDK hands the provider the state's keys as a plain dict."""
    return cast(PackageInputs, props)


class PackageProvider(SshBacked, ResourceProvider):
    def observe(self, executor: Executor, node: str, package: str) -> str | None:
        result = executor.read(query_argv(package))
        return parse_query(node, package, result.exit_status, result.stdout, result.stderr)

    def ensure(self, props: PackageInputs) -> dict[str, Any]:
        """Install the package unless it is installed; the outputs with the version dpkg reports."""
        node, package = props["node"], props["package"]
        executor = self.executor(props)
        try:
            version = self.observe(executor, node, package)
            if version is None:
                result = executor.run(install_argv(package), timeout=max(INSTALL_TIMEOUT, float(props["connection"].get("commandTimeout") or 0)))
                if result.exit_status != 0:
                    reason = (result.stderr.strip() or result.stdout.strip())[-400:]
                    raise OperatorError(
                        f"{node}: apt-get install -y {package} failed (exit {result.exit_status}): {reason}. "
                        "Check the node's APT sources (apt-get update on it), then run `pulumi up` again"
                    )
                version = self.observe(executor, node, package)
                if version is None:
                    raise OperatorError(f"{node}: apt-get install -y {package} reported success but dpkg-query does not show it installed")
        except RemoteError as exc:
            raise failed(f"{package} on {node}", exc) from None
        return {**props, "version": version}

    def create(self, raw: dict[str, Any]) -> CreateResult:
        props = package_inputs(raw)
        # Nothing to record on failure: the next `pulumi up` simply installs again (apt-get is idempotent).
        return CreateResult(id_=f"{props['node']}/{props['package']}", outs=self.ensure(props))

    def read(self, id_: str, raw: dict[str, Any]) -> ReadResult:
        props = package_inputs(raw)
        node, package = props["node"], props["package"]
        try:
            version = self.observe(self.executor(props), node, package)
        except Unreachable:
            return ReadResult(id_=id_, outs=raw)  # the node is down: its packages are as last seen
        except RemoteError as exc:
            raise failed(f"{package} on {node}", exc) from None
        if version is None:
            return ReadResult(id_="", outs={})  # removed by hand: gone from the state, created again by `pulumi up`
        return ReadResult(id_=id_, outs={**props, "version": version})

    def diff(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> DiffResult:
        olds, news = package_inputs(old), package_inputs(new)
        # The version is not a desired state: an `apt upgrade` on the node is not drift.
        replaces = [key for key in ("node", "package") if olds.get(key) != news.get(key)]
        if replaces:
            return DiffResult(changes=True, replaces=replaces, delete_before_replace=False)
        return DiffResult(changes=connection_changed(olds, news), replaces=[], stables=["node", "package"])

    def update(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self.ensure(package_inputs(new)))

    def delete(self, id_: str, raw: dict[str, Any]) -> None:
        return  # never removed: harmless, and other things on the node may need it


class CephCommonResource(Resource, module="pveceph", name="CephCommonPackage"):
    version: pulumi.Output[str]

    def __init__(self, name: str, props: PackageInputs, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connection"])
        super().__init__(PackageProvider(), name, {"version": None, **props}, pulumi.ResourceOptions.merge(opts, secret))


class CephCommonPackage(pulumi.ComponentResource):
    """Runbook 2-2: the Ceph client package on one node, read back with dpkg-query; never removed."""

    version: pulumi.Output[str]

    def __init__(self, name: str, node: str, connection: pulumi.Input[dict[str, Any]], opts: pulumi.ResourceOptions | None = None):
        super().__init__("pveceph:proxmox:CephCommonPackage", name, None, opts)
        props = PackageInputs(connection=connection, node=node, package=PACKAGE)
        self.package = CephCommonResource(f"{name}-package", props, child_options(self, opts))
        self.version = self.package.version
        self.register_outputs({"version": self.version})
