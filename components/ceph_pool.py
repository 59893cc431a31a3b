"""Runbook 1-2/1-3: the RBD pool on the external Ceph cluster, created and initialised for RBD.

A dynamic resource, so that refresh reads the pool back (``ceph osd pool get ... -f json``) and
drift (pg_num, size, autoscale mode, the rbd application) shows in ``pulumi preview``.
The pool is retained on delete unless ``allowPoolDeletion`` is set, and even then deletion is
refused while the pool holds images.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict, cast

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from clients import ceph_cli
from clients.ssh import Executor, RemoteError, Result, check
from components.dynamic import SshBacked, connection_changed, whole_numbers
from components.errors import OperatorError, PartiallyCreated, failed
from components.graph import child_options

if TYPE_CHECKING:  # the config model (pydantic) is the program's; the provider process never loads it
    from components.config import PoolSpec

COMPARED = ("size", "autoscaleMode", "application")
NUMBERS = ("pgNum", "size")


def _json(answer: Result, what: str) -> Any:
    """A read's JSON answer, or an error naming WHAT."""
    result = check(answer, what)
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise OperatorError(f"{what}: Ceph did not answer with JSON: {result.stdout.strip()[:200]!r}") from None


class PoolInputs(TypedDict):
    """The RbdPool resource's inputs: CephRbdPool writes them, PoolProvider reads them, the tests build them.
    The keys are the state's: renaming one changes every deployed stack."""

    connection: Any  # the Ceph admin node's SSH connection (clients/ssh.py Connection.props), a secret
    name: str
    pgNum: int
    size: int
    autoscaleMode: str
    application: str
    adopt: bool
    allowDeletion: bool


def pool_inputs(props: Mapping[str, Any]) -> PoolInputs:
    """The typed view of a call's inputs, the state's keys in a plain dict; Pulumi hands a dynamic
    provider every number as a float: ``32.0`` must reach Ceph as ``32``."""
    return cast(PoolInputs, whole_numbers(props, NUMBERS))


class PoolProvider(SshBacked, ResourceProvider):
    # -- reading -------------------------------------------------------------------------
    def observe(self, executor: Executor, name: str) -> dict[str, Any] | None:
        """The pool as Ceph has it, or None when it does not exist.

        pg_num is read as ``pg_num_target``: since Nautilus a pg_num change is applied gradually,
        and the target is what someone set.
        """
        (answer,) = ceph_cli.mon_reads(executor, [ceph_cli.pool_list_detail()])  # asked once a run (RunMemo)
        pools = _json(answer, "ceph osd pool ls detail")
        found = next((p for p in pools if isinstance(p, dict) and p.get("pool_name") == name), None)
        if found is None:
            return None
        try:
            applications = found.get("application_metadata") or {}
            return {
                "pgNum": int(found["pg_num_target"] if "pg_num_target" in found else found["pg_num"]),
                "size": int(found["size"]),
                "autoscaleMode": str(found.get("pg_autoscale_mode", "off")),
                "application": "rbd" if "rbd" in applications else ",".join(sorted(applications)),
            }
        except (KeyError, TypeError, ValueError):
            raise OperatorError(f"ceph osd pool ls detail: unexpected entry for pool {name}: {str(found)[:200]!r}") from None

    # -- writing -------------------------------------------------------------------------
    def converge(self, executor: Executor, props: PoolInputs, seen: dict[str, Any]) -> None:
        name = props["name"]
        if seen["autoscaleMode"] != props["autoscaleMode"]:
            check(executor.run(ceph_cli.pool_set(name, "pg_autoscale_mode", props["autoscaleMode"])), f"ceph osd pool set {name} pg_autoscale_mode")
        if props["autoscaleMode"] != "on" and seen["pgNum"] != props["pgNum"]:
            check(executor.run(ceph_cli.pool_set(name, "pg_num", props["pgNum"])), f"ceph osd pool set {name} pg_num {props['pgNum']}")
        if seen["size"] != props["size"]:
            check(executor.run(ceph_cli.pool_set(name, "size", props["size"])), f"ceph osd pool set {name} size {props['size']}")
        if seen["application"] != "rbd":
            check(executor.run(ceph_cli.rbd_pool_init(name)), f"rbd pool init {name}")

    def state(self, executor: Executor, props: PoolInputs) -> dict[str, Any]:
        seen = self.observe(executor, props["name"])
        if seen is None:
            raise OperatorError(f"Ceph pool {props['name']} disappeared while it was being configured")
        return {**props, **seen}

    def create(self, raw: dict[str, Any]) -> CreateResult:
        props = pool_inputs(raw)
        executor = self.executor(props)
        name = props["name"]
        asked = False  # once `ceph osd pool create` has been sent, the pool may exist
        try:
            seen = self.observe(executor, name)
            if seen is not None and not props["adopt"]:
                raise OperatorError(
                    f"Ceph pool {name} already exists and this stack did not create it. To manage it here, run "
                    "`pulumi config set --path adopt.pool true`; to leave it alone, choose another ceph.pool.name."
                )
            asked = True
            if seen is None:
                result = executor.run(ceph_cli.pool_create(name, props["pgNum"]))
                if result.exit_status != 0:
                    asked = False  # Ceph answered: nothing was created
                    reason = (result.stderr.strip() or result.stdout.strip())[-400:]
                    hint = " Lower ceph.pool.pgNum, or add OSDs." if "ERANGE" in reason else ""
                    raise OperatorError(f"ceph osd pool create {name} {props['pgNum']} failed: {reason}.{hint}")
                seen = self.observe(executor, name)
                if seen is None:
                    raise OperatorError(f"ceph osd pool create {name} reported success but the pool does not exist")
            self.converge(executor, props, seen)
            return CreateResult(id_=name, outs=self.state(executor, props))
        except (RemoteError, OperatorError) as exc:
            message = f"Ceph pool {name}: {exc}" if isinstance(exc, RemoteError) else str(exc)
            if asked:
                raise PartiallyCreated(message, "pool", name, props) from None
            raise OperatorError(message) from None

    def read(self, id_: str, raw: dict[str, Any]) -> ReadResult:
        props = pool_inputs(raw)
        try:
            seen = self.observe(self.executor(props), id_)
        except RemoteError as exc:
            raise failed(f"Ceph pool {id_}", exc) from None
        if seen is None:
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs={**props, **seen})

    def diff(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> DiffResult:
        olds, news = pool_inputs(old), pool_inputs(new)
        if olds.get("name") != news.get("name"):
            return DiffResult(changes=True, replaces=["name"], delete_before_replace=False)
        changes = [key for key in COMPARED if key != "application" and olds.get(key) != news.get(key)]
        if olds.get("application") != "rbd":
            changes.append("application")
        if news.get("autoscaleMode") != "on" and olds.get("pgNum") != news.get("pgNum"):
            changes.append("pgNum")
        for key in ("adopt", "allowDeletion"):
            if olds.get(key) != news.get(key):
                changes.append(key)
        if connection_changed(olds, news):
            changes.append("connection")
        return DiffResult(changes=bool(changes), replaces=[], stables=["name"])

    def update(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> UpdateResult:
        news = pool_inputs(new)
        executor = self.executor(news)
        try:
            seen = self.observe(executor, id_)
            if seen is None:
                raise OperatorError(f"Ceph pool {id_} no longer exists; run `pulumi refresh` and `pulumi up` to create it again")
            self.converge(executor, news, seen)
            return UpdateResult(outs=self.state(executor, news))
        except RemoteError as exc:
            raise failed(f"Ceph pool {id_}", exc) from None

    def delete(self, id_: str, raw: dict[str, Any]) -> None:
        props = pool_inputs(raw)
        if not props.get("allowDeletion"):
            return  # retained: data is never destroyed by default
        executor = self.executor(props)
        try:
            if self.observe(executor, id_) is None:
                return
            images = _json(executor.read(ceph_cli.rbd_ls(id_), fresh=True), f"rbd ls {id_}")  # PVE makes the disks: asked afresh
            if images:
                shown = ", ".join(images[:10]) + (f" and {len(images) - 10} more" if len(images) > 10 else "")
                raise OperatorError(
                    f"refusing to delete Ceph pool {id_}: it still holds {len(images)} image(s): {shown}. Remove them first, or keep the pool (allowPoolDeletion: false)."
                )
            result = executor.run(ceph_cli.pool_delete(id_))
            if result.exit_status != 0:
                reason = (result.stderr.strip() or result.stdout.strip())[-300:]
                raise OperatorError(f"ceph osd pool delete {id_} failed: {reason} (the monitors need mon_allow_pool_delete = true)")
        except RemoteError as exc:
            raise failed(f"Ceph pool {id_}", exc) from None


class RbdPoolResource(Resource, module="pveceph", name="RbdPool"):
    name: pulumi.Output[str]

    def __init__(self, name: str, props: PoolInputs, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connection"])
        super().__init__(PoolProvider(), name, dict(props), pulumi.ResourceOptions.merge(opts, secret))


class CephRbdPool(pulumi.ComponentResource):
    """Runbook 1-2/1-3: ``ceph osd pool create rbd-pool 256`` and ``rbd pool init rbd-pool``."""

    pool_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        spec: PoolSpec,
        connection: pulumi.Input[dict[str, Any]],
        *,
        adopt: bool,
        allow_deletion: bool,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pveceph:ceph:RbdPool", name, None, opts)
        props = PoolInputs(
            connection=connection,
            name=spec.name,
            pgNum=spec.pg_num,
            size=spec.size,
            autoscaleMode=spec.autoscale_mode,
            application="rbd",
            adopt=adopt,
            allowDeletion=allow_deletion,
        )
        # Retained on delete by the provider itself unless allowDeletion; `retain_on_delete` would
        # also keep it when the operator explicitly asked for deletion.
        self.pool = RbdPoolResource(f"{name}-pool", props, child_options(self, opts))
        self.pool_name = self.pool.name
        self.register_outputs({"pool_name": self.pool_name})
