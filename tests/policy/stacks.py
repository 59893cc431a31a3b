"""Resources shaped like the program declares them, and the pack's policies run over them.

Properties reach a policy the way the engine sends them: through a protobuf ``Struct`` (so
numbers are floats), unmarshalled by pulumi_policy, behind its unknown-checking proxy. A value
that is unknown during a preview is the engine's sentinel (:data:`UNKNOWN_STRING`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, struct_pb2
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy
from pveceph_policy.pack import POLICIES

UNKNOWN_STRING = UNKNOWN_STRING_VALUE
PROJECT, STACK = "pve-ceph-ha", "dev"
VM = "proxmoxve:index/vmLegacy:VmLegacy"
HA_RESOURCE = "proxmoxve:index/haresource:Haresource"
RBD_STORAGE = "pulumi-python:dynamic/pveceph:RbdStorage"
CEPH_CLIENT = "pulumi-python:dynamic/pveceph:CephClient"
DYNAMIC = "pulumi-python:dynamic:Resource"
PICKLED = "gASV...pickled provider, not read by the policies"


@dataclass
class Spec:
    """One resource as the program registers it: type, name, properties (inputs = outputs here)."""

    type: str
    name: str
    props: dict[str, Any] = field(default_factory=dict)

    @property
    def urn(self) -> str:
        return f"urn:pulumi:{STACK}::{PROJECT}::{self.type}::{self.name}"


def vm(vm_id: int = 101, name: str = "vm101", **changes: Any) -> Spec:
    """A VmLegacy as HaVm declares it (runbook 3-1); ``changes`` replace top-level properties."""
    props: dict[str, Any] = {
        "nodeName": "pve-node1",
        "vmId": vm_id,
        "name": name,
        "cpu": {"cores": 2, "type": "x86-64-v2-AES"},
        "memory": {"dedicated": 2048},
        "scsiHardware": "virtio-scsi-pci",
        "disks": [disk()],
        "networkDevices": [{"bridge": "vmbr0", "model": "virtio"}],
        "operatingSystem": {"type": "l26"},
        "onBoot": True,
        "started": True,
        "stopOnDestroy": True,
    }
    props.update(changes)
    return Spec(VM, f"dev-{name}-vm", props)


def disk(**changes: Any) -> dict[str, Any]:
    return {"interface": "scsi0", "datastoreId": "ceph-rbd", "size": 32, "fileFormat": "raw", "cache": "writeback", "discard": "on", **changes}


def cpu(type_: str) -> dict[str, Any]:
    return {"cores": 2, "type": type_}


def ha(vm_id: int = 101, **changes: Any) -> Spec:
    props = {"resourceId": f"vm:{vm_id}", "type": "vm", "state": "started", "maxRestart": 1, "maxRelocate": 1, "comment": "managed by pve-ceph-ha"}
    props.update(changes)
    return Spec(HA_RESOURCE, f"dev-vm{vm_id}-ha", props)


def storage(type_: str = RBD_STORAGE, **changes: Any) -> Spec:
    props = {
        "__provider": PICKLED,
        "api": {"endpoint": "https://10.10.10.11:8006", "token": "root@pam!pulumi=00000000-0000-0000-0000-000000000000"},
        "storageId": "ceph-rbd",
        "pool": "rbd-pool",
        "monhost": "10.10.10.101 10.10.10.102 10.10.10.103",
        "username": "proxmox",
        "key": "AQDxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx==",
        "content": "images",
        "nodes": ["pve-node1", "pve-node2", "pve-node3"],
        "adopt": False,
        "activeNodes": ["pve-node1", "pve-node2", "pve-node3"],
    }
    props.update(changes)
    return Spec(type_, "dev-storage-storage", props)


def client(type_: str = CEPH_CLIENT, mon: str = "profile rbd", osd: str = "profile rbd pool=rbd-pool") -> Spec:
    props = {
        "__provider": PICKLED,
        "connection": {"host": "10.10.10.101", "port": 22, "user": "root"},
        "name": "proxmox",
        "caps": {"mon": mon, "osd": osd},
        "adopt": False,
        "key": "AQDxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx==",
    }
    return Spec(type_, "dev-cephx-client", props)


def good_stack() -> list[Spec]:
    """The runbook's deployment: the storage, the client, two HA VMs on ceph-rbd."""
    return [storage(), client(), vm(101, "vm101"), ha(101), vm(102, "vm102", nodeName="pve-node2"), ha(102)]


# -- as the engine hands them to the pack ---------------------------------------------------


def engine_props(props: dict[str, Any]) -> Any:
    struct = struct_pb2.Struct()
    json_format.ParseDict(copy.deepcopy(props), struct)
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(struct)))


def _options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def policy_resource(spec: Spec) -> PolicyResource:
    return PolicyResource(spec.type, engine_props(spec.props), spec.urn, spec.name, _options(), None, None, [], {})


@dataclass(frozen=True)
class Reported:
    policy: str
    message: str
    urn: str | None


def violations(specs: list[Spec]) -> list[Reported]:
    """Every policy of the pack over the stack: resource policies per resource, then stack policies."""
    reported: list[Reported] = []

    def recorder(policy: str, default_urn: str | None) -> Callable[..., None]:
        def report(message: str, urn: str | None = None) -> None:
            reported.append(Reported(policy, message, urn or default_urn))

        return report

    for policy in POLICIES:
        if isinstance(policy, ResourceValidationPolicy):
            for spec in specs:
                args = ResourceValidationArgs(spec.type, engine_props(spec.props), spec.urn, spec.name, _options(), None)
                policy.validate(args, recorder(policy.name, spec.urn))
        elif isinstance(policy, StackValidationPolicy):
            policy.validate(StackValidationArgs([policy_resource(spec) for spec in specs]), recorder(policy.name, None))
    return reported


def violated(specs: list[Spec]) -> set[str]:
    return {r.policy for r in violations(specs)}
