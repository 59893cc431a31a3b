"""Runbook 2-3: Datacenter → Storage → Add → RBD, through the PVE API ``/storage``.

pulumi-proxmoxve has no RBD storage resource, so this is a dynamic resource with create, read,
diff, update and delete: refresh reads ``/storage/{id}`` back, so a deleted storage or an edited
monhost shows as drift. Create and update wait until the storage is active on every node
(runbook: "After saving, check Status = Active") and fail with PVE's reason otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, cast

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from clients.pve.api import ApiProps, PveApi, api_errors, connect, reason
from components.errors import OperatorError, PartiallyCreated, failed
from components.graph import child_options

if TYPE_CHECKING:  # the config model (pydantic) is the program's; the provider process never loads it
    from components.config import StorageSpec

COMPARED = ("pool", "monhost", "username", "content")
ACTIVE_DEADLINE_S = 90.0


def keyring(username: str, key: str) -> str:
    """What PVE's ``keyring`` parameter takes: the client's keyring file, as `ceph auth get` prints it.

    PVE writes it to /etc/pve/priv/ceph/<storage>.keyring; a bare key there is not a keyring,
    and every node's ``rbd`` then fails with "Operation not permitted".
    """
    return f"[client.{username}]\n\tkey = {key}\n"


def _active(status: Any) -> bool:
    """``/nodes/{node}/storage/{id}/status`` says the storage is active there."""
    return isinstance(status, dict) and int(status.get("active", 0)) == 1


def _answered(exc: Exception) -> bool:
    """PVE itself answered (and refused): as opposed to a timeout or a dropped connection, whose outcome is unknown."""
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and status < 595


def _missing(exc: Exception) -> bool:
    """PVE's answer for a storage id that does not exist."""
    text = f"{getattr(exc, 'content', '')} {getattr(exc, 'status_message', '')}".lower()
    return getattr(exc, "status_code", None) in (404, 500) and ("does not exist" in text or "no such" in text or "not found" in text)


class StorageInputs(TypedDict):
    """The RbdStorage resource's inputs: RbdStorage writes them, StorageProvider reads them, the tests build them.
    The keys are the state's: renaming one changes every deployed stack."""

    api: ApiProps  # the endpoint, its fallback nodes, the token (a secret)
    storageId: str
    pool: Any  # the pool's name, known once the pool is
    monhost: str
    username: Any
    key: Any  # the cephx key, a secret
    content: str
    nodes: list[str]
    adopt: bool


def storage_inputs(props: Mapping[str, Any]) -> StorageInputs:
    """The typed view of a call's inputs: the SDK hands the provider the state's keys as a plain dict."""
    return cast(StorageInputs, props)


class StorageProvider(ResourceProvider):
    def __init__(self, api_factory: Callable[[ApiProps], PveApi] | None = None, poll_interval: float = 1.0) -> None:
        self._api_factory = api_factory
        self._poll_interval = poll_interval

    def api(self, props: StorageInputs) -> PveApi:
        return (self._api_factory or connect)(props["api"])

    # -- reading -------------------------------------------------------------------------
    def observe(self, api: PveApi, storage_id: str) -> dict[str, Any] | None:
        try:
            entry = api.storage(storage_id).get()
        except api_errors() as exc:
            if _missing(exc):
                return None
            raise failed(f"GET /storage/{storage_id}", reason(exc)) from None
        # proxmoxer turns a 200 that is not JSON (a proxy's HTML page) into {"errors": b"..."}:
        # that is not a storage, and must never read as one that exists.
        if not isinstance(entry, dict) or "errors" in entry or not entry.get("type"):
            raise OperatorError(f"GET /storage/{storage_id}: unexpected answer from the PVE API: {str(entry)[:200]!r}")
        return {
            "type": str(entry.get("type", "")),
            "pool": str(entry.get("pool", "")),
            "monhost": " ".join(str(entry.get("monhost", "")).replace(",", " ").replace(";", " ").split()),
            "username": str(entry.get("username", "")),
            "content": ",".join(sorted(str(entry.get("content", "")).split(","))),
        }

    @staticmethod
    def inactive_reason(api: PveApi, node: str, storage_id: str) -> str:
        """PVE says why a storage is inactive when its content is listed (``pvesm list``)."""
        try:
            api.nodes(node).storage(storage_id).content.get()
        except api_errors() as exc:
            return reason(exc)
        return "Status is not active"

    @staticmethod
    def offline_nodes(api: PveApi) -> set[str]:
        """Nodes the cluster reports offline (``/cluster/status``); empty when that cannot be read."""
        try:
            return {str(e.get("name")) for e in api.cluster.status.get() if e.get("type") == "node" and not int(e.get("online", 1))}
        except api_errors():
            return set()

    def inactive_nodes(self, api: PveApi, storage_id: str, nodes: list[str]) -> list[str]:
        """The nodes that are online and yet do not have the storage active: drift from runbook 2-3.

        Offline nodes are left out: a node that is down (a failover, maintenance) is not the
        storage's fault, and `pulumi up` must not fail or change anything because of it.
        """
        offline = self.offline_nodes(api)
        inactive = []
        for node in nodes:
            if node in offline:
                continue
            try:
                active = _active(api.nodes(node).storage(storage_id).status.get())
            except api_errors():
                active = False
            if not active:
                inactive.append(node)
        return inactive

    def wait_active(self, api: PveApi, storage_id: str, nodes: list[str]) -> list[str]:
        """Poll ``/nodes/{node}/storage/{id}/status`` until ``active`` on every node (runbook 2-3).

        A node the cluster reports offline ends the wait at once: it cannot activate anything
        until it is back, and the operator should know now, not after the deadline.
        """
        deadline = time.monotonic() + ACTIVE_DEADLINE_S
        pending = list(nodes)
        last: dict[str, str] = {}
        while pending:
            for node in list(pending):
                try:
                    if _active(api.nodes(node).storage(storage_id).status.get()):
                        pending.remove(node)
                    else:
                        last[node] = self.inactive_reason(api, node, storage_id)
                except api_errors() as exc:
                    last[node] = reason(exc)
            failing = [n for n in pending if n in last]
            down = self.offline_nodes(api) if failing else set()
            offline = [n for n in failing if n in down]
            if offline:
                detail = "; ".join(f"{n}: {last[n]}" for n in offline)
                raise OperatorError(
                    f"storage {storage_id} cannot become active on {', '.join(offline)}: the cluster reports "
                    f"{'it' if len(offline) == 1 else 'them'} offline ({detail}). Bring the node back and run `pulumi up` again, "
                    "or remove it from proxmox.nodes if it is gone for good."
                )
            if pending and time.monotonic() > deadline:
                detail = "; ".join(f"{n}: {last.get(n, 'no answer')}" for n in pending)
                raise OperatorError(
                    f"storage {storage_id} is not active on {', '.join(pending)} after {ACTIVE_DEADLINE_S:.0f} s ({detail}). "
                    "Check the monitors, the client name and key, and that ceph-common is installed on the node."
                )
            if pending:
                time.sleep(self._poll_interval)
        return list(nodes)

    # -- writing -------------------------------------------------------------------------
    def params(self, props: StorageInputs) -> dict[str, Any]:
        return {
            "pool": props["pool"],
            "monhost": props["monhost"],
            "username": props["username"],
            "content": props["content"],
            "keyring": keyring(props["username"], props["key"]),
            "krbd": 0,
        }

    def outs(self, props: StorageInputs, seen: dict[str, Any], active: list[str]) -> dict[str, Any]:
        return {**props, **{k: seen[k] for k in COMPARED}, "activeNodes": active, "inactiveNodes": []}

    def create(self, raw: dict[str, Any]) -> CreateResult:
        props = storage_inputs(raw)
        api = self.api(props)
        storage_id = props["storageId"]
        seen = self.observe(api, storage_id)
        if seen is not None and not props["adopt"]:
            raise OperatorError(
                f"PVE storage {storage_id} already exists and this stack did not create it. To manage it here, run "
                "`pulumi config set --path adopt.storage true`; otherwise choose another storage.id."
            )
        if seen is not None and seen["type"] != "rbd":
            raise OperatorError(f"PVE storage {storage_id} exists with type {seen['type']}, not rbd: it cannot be adopted; choose another storage.id")
        try:
            if seen is None:
                api.storage.post(storage=storage_id, type="rbd", **self.params(props))
            else:
                api.storage(storage_id).put(**self.params(props))
        except api_errors() as exc:
            verb = "POST /storage" if seen is None else f"PUT /storage/{storage_id}"
            message = f"{verb} (rbd {storage_id}): {reason(exc)}"
            if seen is None and _answered(exc):
                raise OperatorError(message) from None  # PVE refused: nothing was created
            raise PartiallyCreated(message, "storage", storage_id, props) from None
        try:
            active = self.wait_active(api, storage_id, props["nodes"])
            seen = self.observe(api, storage_id)
        except OperatorError as exc:
            raise PartiallyCreated(str(exc), "storage", storage_id, props) from None
        if seen is None:
            raise OperatorError(f"PVE storage {storage_id} was created but cannot be read back")
        return CreateResult(id_=storage_id, outs=self.outs(props, seen, active))

    def read(self, id_: str, raw: dict[str, Any]) -> ReadResult:
        props = storage_inputs(raw)
        api = self.api(props)
        seen = self.observe(api, id_)
        if seen is None:
            return ReadResult(id_="", outs={})
        inactive = self.inactive_nodes(api, id_, list(props.get("nodes") or []))
        return ReadResult(id_=id_, outs={**props, **{k: seen[k] for k in COMPARED}, "inactiveNodes": inactive})

    def diff(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> DiffResult:
        olds, news = storage_inputs(old), storage_inputs(new)
        if olds.get("storageId") != news.get("storageId"):
            return DiffResult(changes=True, replaces=["storageId"], delete_before_replace=True)
        changes = [key for key in (*COMPARED, "key", "nodes", "adopt") if olds.get(key) != news.get(key)]
        if olds.get("inactiveNodes"):  # online nodes where refresh found it inactive: update waits for them again
            changes.append("inactiveNodes")
        old_api: Mapping[str, Any] = olds.get("api") or {}
        new_api: Mapping[str, Any] = news.get("api") or {}
        if any(old_api.get(k) != new_api.get(k) for k in ("endpoint", "nodes")):  # the nodes: the API's fallbacks, kept for refresh
            changes.append("api")
        return DiffResult(changes=bool(changes), replaces=[], stables=["storageId"])

    def update(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> UpdateResult:
        news = storage_inputs(new)
        api = self.api(news)
        if self.observe(api, id_) is None:
            raise OperatorError(f"PVE storage {id_} no longer exists; run `pulumi refresh` and `pulumi up` to create it again")
        try:
            api.storage(id_).put(**self.params(news))
        except api_errors() as exc:
            raise failed(f"PUT /storage/{id_}", reason(exc)) from None
        active = self.wait_active(api, id_, news["nodes"])
        seen = self.observe(api, id_) or {}
        return UpdateResult(outs=self.outs(news, seen, active))

    def delete(self, id_: str, raw: dict[str, Any]) -> None:
        props = storage_inputs(raw)
        api = self.api(props)
        try:
            api.storage(id_).delete()
        except api_errors() as exc:
            if not _missing(exc):
                raise failed(f"DELETE /storage/{id_}", reason(exc)) from None


class RbdStorageResource(Resource, module="pveceph", name="RbdStorage"):
    storageId: pulumi.Output[str]
    activeNodes: pulumi.Output[list[str]]

    def __init__(self, name: str, props: StorageInputs, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["api", "key"])
        super().__init__(StorageProvider(), name, {"activeNodes": None, **props}, pulumi.ResourceOptions.merge(opts, secret))


class RbdStorage(pulumi.ComponentResource):
    """Runbook 2-3: the external Ceph RBD storage ``ceph-rbd``, active on every node."""

    storage_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        spec: StorageSpec,
        *,
        api: ApiProps,
        pool_name: pulumi.Input[str],
        monitors: list[str],
        username: pulumi.Input[str],
        key: pulumi.Input[str],
        nodes: list[str],
        adopt: bool,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pveceph:proxmox:RbdStorage", name, None, opts)
        props = StorageInputs(
            api=api,
            storageId=spec.id,
            pool=pool_name,
            monhost=" ".join(monitors),
            username=username,
            key=pulumi.Output.secret(key),
            content=",".join(spec.content),
            nodes=nodes,
            adopt=adopt,
        )
        self.storage = RbdStorageResource(f"{name}-storage", props, child_options(self, opts))
        self.storage_id = self.storage.storageId
        self.register_outputs({"storage_id": self.storage_id})
