"""The pack over the resources the real program declares (under mocks): its types, names and properties."""

from __future__ import annotations

from typing import Any

from pveceph_policy.pack import CEPH_IDENTITY, CEPHX_CAPS, PVE_TOKEN

from tests.policy.stacks import Spec, violated, violations
from tests.unit.helpers import deploy, valid_raw


def least(raw: dict[str, Any]) -> dict[str, Any]:
    """RAW with the identities of docs/permissions.md: a privilege-separated token, a Ceph client of its own."""
    raw["proxmoxApiToken"] = "pulumi@pve!ha=" + raw["proxmoxApiToken"].split("=", 1)[1]
    raw["ceph"]["admin"]["clientId"] = "pulumi"
    return raw


def declared(raw: dict[str, Any]) -> list[Spec]:
    """Every custom resource the program registers, with its inputs as the engine would pass them."""
    monitor, _ = deploy(raw, stack="dev")
    return [Spec(r.type, r.name, r.raw) for r in monitor.registrations if not r.type.startswith(("pveceph:", "pulumi:providers:"))]


def test_the_programs_deployment_passes_every_policy() -> None:
    specs = declared(least(valid_raw()))
    assert {"proxmoxve:index/vmLegacy:VmLegacy", "proxmoxve:index/haresource:Haresource"} <= {s.type for s in specs}
    assert violations(specs) == []


def test_the_runbooks_client_caps_are_refused() -> None:
    raw = least(valid_raw())
    raw["ceph"]["client"]["caps"] = "runbook"
    assert violated(declared(raw)) == {CEPHX_CAPS}


def test_a_vm_with_ha_false_is_marked_no_ha_and_passes() -> None:
    raw = least(valid_raw())
    raw["vms"].append({"id": 150, "name": "vm150", "node": "pve-node2", "ha": False})
    assert violations(declared(raw)) == []


def test_a_root_token_and_the_admin_keyring_are_flagged() -> None:
    assert violated(declared(valid_raw())) == {PVE_TOKEN, CEPH_IDENTITY}
    raw = least(valid_raw())
    raw["proxmoxApiToken"] = "root@pam!pulumi=" + raw["proxmoxApiToken"].split("=", 1)[1]
    (reported,) = violations(declared(raw))
    assert reported.policy == PVE_TOKEN and "root@pam!pulumi is a root@pam token" in reported.message
