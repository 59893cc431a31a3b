"""The pack over the resources the real program declares (under mocks): its types, names and properties."""

from __future__ import annotations

from typing import Any

from pveceph_policy.pack import CEPHX_CAPS

from tests.policy.stacks import Spec, violated, violations
from tests.unit.helpers import deploy, valid_raw


def declared(raw: dict[str, Any]) -> list[Spec]:
    """Every custom resource the program registers, with its inputs as the engine would pass them."""
    monitor, _ = deploy(raw, stack="dev")
    return [Spec(r.type, r.name, r.raw) for r in monitor.registrations if not r.type.startswith(("pveceph:", "pulumi:providers:"))]


def test_the_programs_deployment_passes_every_policy() -> None:
    specs = declared(valid_raw())
    assert {"proxmoxve:index/vmLegacy:VmLegacy", "proxmoxve:index/haresource:Haresource"} <= {s.type for s in specs}
    assert violations(specs) == []


def test_the_runbooks_client_caps_are_refused() -> None:
    raw = valid_raw()
    raw["ceph"]["client"]["caps"] = "runbook"
    assert violated(declared(raw)) == {CEPHX_CAPS}


def test_a_vm_with_ha_false_is_marked_no_ha_and_passes() -> None:
    raw = valid_raw()
    raw["vms"].append({"id": 150, "name": "vm150", "node": "pve-node2", "ha": False})
    assert violations(declared(raw)) == []
