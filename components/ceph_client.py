"""Runbook 2-1: the cephx client Proxmox uses, ``ceph auth get-or-create client.proxmox ...``.

A dynamic resource: refresh reads the client back (``ceph auth get ... -f json``) so deleted
clients and widened caps show as drift. Its key is a secret output, never printed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict, cast

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from clients import ceph_cli
from clients.ceph_cli import Caps, normalise_caps
from clients.ssh import Executor, RemoteError, check
from components.dynamic import SshBacked, connection_changed
from components.errors import OperatorError, PartiallyCreated, failed
from components.graph import child_options

if TYPE_CHECKING:  # the config model (pydantic) is the program's; the provider process never loads it
    from components.config import ClientSpec


class ClientInputs(TypedDict):
    """The Client resource's inputs: CephClient writes them, ClientProvider reads them, the tests build them.
    The keys are the state's: renaming one changes every deployed stack."""

    connection: Any  # the Ceph admin node's SSH connection (clients/ssh.py Connection.props), a secret
    name: str
    caps: Any  # {"mon": ..., "osd": ...}: the pool's caps, known once the pool is
    adopt: bool


def client_inputs(props: Mapping[str, Any]) -> ClientInputs:
    """The typed view of a call's inputs: the SDK hands the provider the state's keys as a plain dict."""
    return cast(ClientInputs, props)


class ClientProvider(SshBacked, ResourceProvider):
    def observe(self, executor: Executor, name: str) -> dict[str, Any] | None:
        """The client's caps and key as Ceph has them, or None. Its output is secret: never shown."""
        (result,) = ceph_cli.mon_reads(executor, [ceph_cli.auth_get(name)])
        if result.exit_status == ceph_cli.ENOENT:
            return None
        check(result, f"ceph auth get client.{name}", secret_output=True)
        try:
            (entry,) = json.loads(result.stdout)
            return {"caps": normalise_caps(entry.get("caps", {})), "key": str(entry["key"])}
        except (ValueError, KeyError, TypeError):
            raise OperatorError(f"ceph auth get client.{name}: the answer was not the expected JSON (not shown: it holds a key)") from None

    def set_caps(self, executor: Executor, props: ClientInputs) -> None:
        caps = Caps(**props["caps"])
        check(executor.run(ceph_cli.auth_caps(props["name"], caps)), f"ceph auth caps client.{props['name']}")

    def create(self, raw: dict[str, Any]) -> CreateResult:
        props = client_inputs(raw)
        executor = self.executor(props)
        name = props["name"]
        asked = False  # once `ceph auth get-or-create` has been sent, the client may exist
        try:
            seen = self.observe(executor, name)
            if seen is not None and not props["adopt"]:
                raise OperatorError(
                    f"cephx client client.{name} already exists and this stack did not create it. To manage it here "
                    "(its caps will be set to the configured ones), run `pulumi config set --path adopt.client true`; "
                    "otherwise choose another ceph.client.name."
                )
            asked = True
            if seen is None:
                result = executor.run(ceph_cli.auth_get_or_create(name, Caps(**props["caps"])))
                if result.exit_status != 0:
                    asked = False  # Ceph answered: nothing was created
                check(result, f"ceph auth get-or-create client.{name}", secret_output=True)
            else:
                self.set_caps(executor, props)
            seen = self.observe(executor, name)
            if seen is None:
                raise OperatorError(f"ceph auth get-or-create client.{name} reported success but the client does not exist")
            return CreateResult(id_=f"client.{name}", outs={**props, **seen})
        except (RemoteError, OperatorError) as exc:
            message = f"cephx client client.{name}: {exc}" if isinstance(exc, RemoteError) else str(exc)
            if asked:
                raise PartiallyCreated(message, "client", f"client.{name}", props) from None
            raise OperatorError(message) from None

    def read(self, id_: str, raw: dict[str, Any]) -> ReadResult:
        props = client_inputs(raw)
        name = id_.removeprefix("client.")
        try:
            seen = self.observe(self.executor(props), name)
        except RemoteError as exc:
            raise failed(f"cephx client {id_}", exc) from None
        if seen is None:
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs={**props, **seen})

    def diff(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> DiffResult:
        olds, news = client_inputs(old), client_inputs(new)
        if olds.get("name") != news.get("name"):
            return DiffResult(changes=True, replaces=["name"], delete_before_replace=False)
        changes = []
        if normalise_caps(olds.get("caps") or {}) != normalise_caps(news.get("caps") or {}):
            changes.append("caps")
        if olds.get("adopt") != news.get("adopt"):
            changes.append("adopt")
        if connection_changed(olds, news):
            changes.append("connection")
        if not changes and self.gone(id_, news):
            # Deleted by hand, and the state does not know yet: with the client gone, PVE cannot
            # read the VMs' disks, so a refresh of the VMs fails (PVE's `rbd info` of the disk) and
            # only `pulumi up --refresh=false` gets here. The update makes it again: a new key.
            return DiffResult(changes=True, replaces=[], stables=["name"])
        return DiffResult(changes=bool(changes), replaces=[], stables=["name", "key"])

    def gone(self, id_: str, props: ClientInputs) -> bool:
        if not isinstance(props.get("connection"), dict) or not props.get("name"):
            return False  # not known yet (preview of a new stack)
        try:
            return self.observe(self.executor(props), str(props["name"])) is None
        except RemoteError as exc:
            raise failed(f"cephx client {id_}", exc) from None

    def update(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> UpdateResult:
        news = client_inputs(new)
        executor = self.executor(news)
        name = news["name"]
        try:
            if self.observe(executor, name) is None:
                # made again (as create does); its key is new, and the storage takes it
                check(executor.run(ceph_cli.auth_get_or_create(name, Caps(**news["caps"]))), f"ceph auth get-or-create client.{name}", secret_output=True)
            else:
                self.set_caps(executor, news)
            seen = self.observe(executor, name)
            return UpdateResult(outs={**news, **(seen or {})})
        except RemoteError as exc:
            raise failed(f"cephx client {id_}", exc) from None

    def delete(self, id_: str, raw: dict[str, Any]) -> None:
        props = client_inputs(raw)
        executor = self.executor(props)
        try:
            result = executor.run(ceph_cli.auth_del(props["name"]))
            if result.exit_status not in (0, ceph_cli.ENOENT):
                check(result, f"ceph auth del {id_}")
        except RemoteError as exc:
            raise failed(f"cephx client {id_}", exc) from None


class CephClientResource(Resource, module="pveceph", name="CephClient"):
    key: pulumi.Output[str]

    def __init__(self, name: str, props: ClientInputs, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connection", "key"])
        super().__init__(ClientProvider(), name, {"key": None, **props}, pulumi.ResourceOptions.merge(opts, secret))


class CephClient(pulumi.ComponentResource):
    """Runbook 2-1: ``ceph auth get-or-create client.proxmox mon '...' osd '...'``; the key is a secret."""

    client_name: pulumi.Output[str]
    key: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        spec: ClientSpec,
        pool_name: pulumi.Input[str],
        connection: pulumi.Input[dict[str, Any]],
        *,
        adopt: bool,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pveceph:ceph:Client", name, None, opts)
        caps = pulumi.Output.from_input(pool_name).apply(lambda pool: Caps.for_profile(spec.caps, pool).as_dict())
        props = ClientInputs(connection=connection, name=spec.name, caps=caps, adopt=adopt)
        self.client = CephClientResource(f"{name}-client", props, child_options(self, opts))
        self.client_name = pulumi.Output.from_input(spec.name)
        self.key = pulumi.Output.secret(self.client.key)
        self.register_outputs({"client_name": self.client_name, "key": self.key})
