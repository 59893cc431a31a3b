"""The resources the policies look at, as plain values.

The engine hands a policy the resource's properties behind a proxy that raises when a value is
not known yet (during a preview, a value that comes from a resource still to be created). The
checks want plain dicts and lists: :func:`plain` copies the properties and puts :data:`UNKNOWN`
where the engine had no value yet; a check skips what it cannot know, and the same policy runs
again with every value known during ``pulumi up``.

Our dynamic resources are recognised by their type and their inputs: this project registers them
as ``pulumi-python:dynamic/pveceph:<Name>``; older dynamic resources all have the type
``pulumi-python:dynamic:Resource`` and are told apart by their inputs only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pulumi_policy.proxy import UnknownValueError

VM_TYPES = frozenset({"proxmoxve:index/vmLegacy:VmLegacy"})
HA_RESOURCE_TYPES = frozenset({"proxmoxve:index/haresource:Haresource", "proxmoxve:index/haresourceLegacy:HaresourceLegacy"})
DYNAMIC = "pulumi-python:dynamic:Resource"
RBD_STORAGE_TYPES = frozenset({"pulumi-python:dynamic/pveceph:RbdStorage", DYNAMIC})
CEPH_CLIENT_TYPES = frozenset({"pulumi-python:dynamic/pveceph:CephClient", DYNAMIC})
RBD_STORAGE_INPUTS = frozenset({"storageId", "monhost"})
CEPH_CLIENT_INPUTS = frozenset({"caps", "name"})
OWNERS_TYPES = frozenset({"pulumi-python:dynamic/pveceph:Owners"})


class _Unknown:
    def __repr__(self) -> str:
        return "<unknown until the update>"


UNKNOWN: Any = _Unknown()
"""Stands for a value the engine does not know yet (a preview of a resource still to be created)."""


class EngineResource(Protocol):
    """What ``PolicyResource`` and ``ResourceValidationArgs`` have in common."""

    resource_type: str
    props: Mapping[str, Any]
    urn: str
    name: str


@dataclass(frozen=True)
class Res:
    """One resource of the stack: its type, its Pulumi name, its URN and plain properties."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]

    @classmethod
    def of(cls, resource: EngineResource) -> Res:
        return cls(resource.resource_type, resource.name, resource.urn, plain(resource.props))

    def get(self, key: str, default: Any = None) -> Any:
        return self.props.get(key, default)


def plain(value: Any) -> Any:
    """A copy of ``value`` with dicts and lists, and :data:`UNKNOWN` for every unknown value."""
    if isinstance(value, Mapping):
        return {key: _item(value, key) for key in value}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_item(value, index) for index in range(len(value))]
    return value


def _item(container: Any, key: Any) -> Any:
    try:
        return plain(container[key])
    except UnknownValueError:
        return UNKNOWN


def known(*values: Any) -> bool:
    return all(value is not UNKNOWN for value in values)


def is_vm(res: Res) -> bool:
    return res.type in VM_TYPES


def is_ha_resource(res: Res) -> bool:
    return res.type in HA_RESOURCE_TYPES


def is_rbd_storage(res: Res) -> bool:
    return res.type in RBD_STORAGE_TYPES and res.props.keys() >= RBD_STORAGE_INPUTS


def is_ceph_client(res: Res) -> bool:
    return res.type in CEPH_CLIENT_TYPES and res.props.keys() >= CEPH_CLIENT_INPUTS


def identities(res: Res) -> Mapping[str, Any] | None:
    """The identities the program acts as (the owner check's ``rights``: tokenId, cephId), or None."""
    rights = res.get("rights") if res.type in OWNERS_TYPES else None
    return rights if isinstance(rights, Mapping) else None


def whole_number(value: Any) -> int | None:
    """The engine passes numbers as floats (101.0); a VM id may also come as a string."""
    if isinstance(value, bool) or not known(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def vm_id(res: Res) -> int | None:
    """A VmLegacy's ``vmId``, or None when it is not set or not known yet."""
    return whole_number(res.get("vmId"))


def ha_vm_id(res: Res) -> int | None:
    """The VM id of an HA resource ``vm:<id>``; None for a container (``ct:<id>``) or an unknown id."""
    sid = res.get("resourceId")
    if not isinstance(sid, str) or not sid.startswith("vm:"):
        return None
    return whole_number(sid.removeprefix("vm:"))


def vm_label(res: Res) -> str:
    """How the runbook and ``ha-manager status`` name a VM: ``vm:101 (vm101)``."""
    number = vm_id(res)
    sid = f"vm:{number}" if number is not None else f"VM {res.name}"
    name = res.get("name")
    return f"{sid} ({name})" if isinstance(name, str) and name else sid
