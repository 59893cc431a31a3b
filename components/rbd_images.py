"""Runbook 3-2: ``rbd ls rbd-pool`` shows each VM's disk (``vm-101-disk-0``), read from Ceph itself.

A dynamic resource that runs after the VMs exist: it lists the pool's images on the Ceph admin
node and names every VM's images (``rbd-pool/vm-101-disk-0``) in the stack outputs, so another
stack or a reviewer sees that the disks are on Ceph, on any cluster, not only in the lab. A VM
with no image in the pool stops the run with that reason. Refresh reads the list again, so a VM
deleted out of band (its image gone) shows as a change until ``pulumi up`` has made it again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, TypedDict, cast

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from clients import ceph_cli
from clients.ssh import Executor, RemoteError, check
from components.dynamic import SshBacked
from components.errors import OperatorError, failed
from components.graph import child_options


def vm_images(images: list[str], pool: str, vm_ids: list[int]) -> dict[str, list[str]]:
    """``{"101": ["rbd-pool/vm-101-disk-0"], ...}``: PVE names a VM's disks ``vm-<id>-disk-<n>``."""
    found: dict[str, list[str]] = {}
    for vm_id in vm_ids:
        pattern = re.compile(rf"^vm-{int(vm_id)}-disk-\d+$")
        found[str(int(vm_id))] = sorted(f"{pool}/{image}" for image in images if pattern.match(image))
    return found


class ImagesInputs(TypedDict):
    """The VmImages resource's inputs: VmImages writes them, ImagesProvider reads them.
    The keys are the state's: renaming one changes every deployed stack. (``images`` is an output.)"""

    connection: Any  # the Ceph admin node's SSH connection (clients/ssh.py Connection.props), a secret
    pool: Any  # the pool's name, known once the pool is
    vmIds: list[int]


def images_inputs(props: Mapping[str, Any]) -> ImagesInputs:
    """The typed view of a call's inputs, the state's keys in a plain dict; Pulumi hands a dynamic
    provider every number as a float: VM ``101.0`` is VM ``101``."""
    vm_ids = props.get("vmIds")
    if isinstance(vm_ids, list):
        return cast(ImagesInputs, {**props, "vmIds": [int(v) if isinstance(v, float) else v for v in vm_ids]})
    return cast(ImagesInputs, props)


class ImagesProvider(SshBacked, ResourceProvider):
    def observe(self, executor: Executor, props: ImagesInputs) -> dict[str, list[str]]:
        pool = props["pool"]
        result = check(executor.read(ceph_cli.rbd_ls(pool), fresh=True), f"rbd ls {pool}")  # PVE makes the disks
        try:
            images = [str(i) for i in json.loads(result.stdout or "[]")]
        except ValueError:
            raise OperatorError(f"rbd ls {pool}: the answer was not JSON: {result.stdout.strip()[:200]!r}") from None
        return vm_images(images, pool, [int(v) for v in props["vmIds"]])

    def verified(self, props: ImagesInputs) -> dict[str, Any]:
        try:
            images = self.observe(self.executor(props), props)
        except RemoteError as exc:
            raise failed(f"runbook 3-2, rbd ls {props['pool']}", exc) from None
        missing = [vm for vm, found in images.items() if not found]
        if missing:
            raise OperatorError(
                f"runbook 3-2: `rbd ls {props['pool']}` shows no disk of VM {', '.join(missing)}: the VM's disk is not on the Ceph "
                f"pool (check its disk's storage, `qm config <vmid>`, and the storage {props['pool']} is the one in the config)"
            )
        return {**props, "images": images}

    def create(self, raw: dict[str, Any]) -> CreateResult:
        props = images_inputs(raw)
        return CreateResult(id_=f"{props['pool']}-images", outs=self.verified(props))

    def read(self, id_: str, raw: dict[str, Any]) -> ReadResult:
        props = images_inputs(raw)
        try:
            images = self.observe(self.executor(props), props)
        except RemoteError as exc:
            raise failed(f"runbook 3-2, rbd ls {props['pool']}", exc) from None
        return ReadResult(id_=id_, outs={**props, "images": images})

    def diff(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> DiffResult:
        olds, news = images_inputs(old), images_inputs(new)
        changes = [key for key in ("pool", "vmIds") if olds.get(key) != news.get(key)]
        if any(not found for found in (old.get("images") or {}).values()):
            changes.append("images")  # a VM's disk went missing: check again once the VM is back
        return DiffResult(changes=bool(changes), replaces=[], stables=[])

    def update(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self.verified(images_inputs(new)))

    def delete(self, id_: str, raw: dict[str, Any]) -> None:
        return None  # a reading, not an object: the images go with their VMs


class VmImagesResource(Resource, module="pveceph", name="VmImages"):
    images: pulumi.Output[dict[str, list[str]]]

    def __init__(self, name: str, props: ImagesInputs, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connection"])
        super().__init__(ImagesProvider(), name, {"images": None, **props}, pulumi.ResourceOptions.merge(opts, secret))


class VmImages(pulumi.ComponentResource):
    """Runbook 3-2: ``rbd ls rbd-pool`` names each VM's disk image."""

    images: pulumi.Output[dict[str, list[str]]]

    def __init__(
        self,
        name: str,
        pool_name: pulumi.Input[str],
        vm_ids: list[int],
        connection: pulumi.Input[dict[str, Any]],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pveceph:ceph:VmImages", name, None, opts)
        props = ImagesInputs(connection=connection, pool=pool_name, vmIds=list(vm_ids))
        self.reading = VmImagesResource(f"{name}-rbd-ls", props, child_options(self, opts))
        self.images = self.reading.images
        self.register_outputs({"images": self.images})
