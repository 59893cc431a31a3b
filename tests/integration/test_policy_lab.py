"""The policy pack (policy/) on the lab stack through the real engine: ``pulumi preview --policy-pack
policy`` of the real program, with the real plugins, against the lab. Previews only: nothing is
created in the lab.

- the lab config (lab/stack.yaml, with this test's names) passes: no violation at all;
- an HA VM with CPU type ``host`` is refused by the config model, and, where the model is
  bypassed (programs/policy_lab), by the pack's mandatory policy;
- a VM left out of HA with ``ha: false`` is tagged ``no-ha`` by the program and passes; one without
  the tag (programs/policy_lab declares it) is reported by the advisory policy, and the preview
  still succeeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from lab.testing.seed import LabAccess
from lab.testing.shared import settled
from lab.testing.stack import PROGRAMS, LabStack, admin, names, program_identity, storages
from tests.policy.engine import preview_with_policy

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

PREFIX = "pol"
VM, EXTRA_VM = 420, 421
POLICY_PROGRAM = PROGRAMS / "policy_lab" / "__main__.py"

# The pack's policies, as the engine prints them (policy/pveceph_policy/pack.py).
HA_CPU_TYPE = "ha-vms-one-cpu-type-not-host"
VMS_HA_MANAGED = "vms-ha-managed-unless-no-ha"
PACK_RAN = "pve-ceph-ha|local|"  # the engine's "Policy Packs run:" line for the local pack


CEPH_ID = f"{PREFIX}-prog"


def lab_config(config: dict[str, Any]) -> None:
    names(PREFIX)(config)
    config["vms"] = [{**config["vms"][0], "id": VM, "name": f"vm{VM}"}]
    config["ceph"]["admin"]["clientId"] = CEPH_ID  # as the lab stack: its own client, not client.admin


def nothing_created(lab: LabAccess) -> None:
    assert f"{PREFIX}-pool" not in admin("ceph osd pool ls").split()
    assert f"{PREFIX}-rbd" not in storages()
    assert lab.vm_node(VM) is None and lab.vm_node(EXTRA_VM) is None


@pytest.fixture(scope="module")
def lab(lab_state: dict[str, Any]) -> Iterator[LabAccess]:
    access = LabAccess(lab_state)
    nothing_created(access)
    settled()  # the preview runs the health gate and the HA preflight
    with program_identity(lab_state, CEPH_ID, f"{PREFIX}-pool", PREFIX):
        yield access
    nothing_created(access)


class PolicyStack:
    """A fresh stack of the real program (or of programs/policy_lab), previewed with the pack."""

    def __init__(self, name: str, lab_state: dict[str, Any], tmp: Path, program: Path | None = None, **test_config: str):
        extra = {"program": program} if program else {}
        self.lab = LabStack(name, lab_state, tmp, lab_config, **extra)
        for key, value in test_config.items():
            self.lab.stack.set_config(f"policy-lab:{key}", auto.ConfigValue(value))

    def preview(self, edit: Any = None) -> tuple[bool, str]:
        if edit is not None:
            self.lab.reconfigure(edit)
        return preview_with_policy(self.lab.work, self.lab.name, self.lab.env)

    def remove(self) -> None:
        self.lab.remove()


@pytest.fixture
def stacks(lab: LabAccess) -> Iterator[list[PolicyStack]]:
    made: list[PolicyStack] = []
    yield made
    for stack in made:
        stack.remove()


def test_the_lab_stack_passes_the_pack(lab_state: dict[str, Any], tmp_path: Path, stacks: list[PolicyStack]) -> None:
    stacks.append(stack := PolicyStack("pol-lab", lab_state, tmp_path))
    ok, output = stack.preview()
    assert ok, output
    assert "[mandatory]" not in output and "[advisory]" not in output, output
    assert PACK_RAN in output, output


def test_an_ha_vm_with_cpu_type_host_is_refused_by_the_config_and_by_the_pack(lab_state: dict[str, Any], tmp_path: Path, stacks: list[PolicyStack]) -> None:
    stacks.append(program := PolicyStack("pol-host-config", lab_state, tmp_path / "config"))
    ok, output = program.preview(lambda c: c["vms"][0].update(cpuType="host"))
    assert not ok
    assert "config error: pve-ceph-ha:vms[0].cpuType = host: an HA VM must not use 'host'" in output, output
    stacks.append(bypassed := PolicyStack("pol-host-pack", lab_state, tmp_path / "pack", POLICY_PROGRAM, cpuType="host"))
    ok, output = bypassed.preview()
    assert not ok, output
    assert f"[mandatory]  {HA_CPU_TYPE}" in output, output
    assert f"vm:{VM} (vm{VM}) is HA-managed with CPU type host: it may not start on another node's CPU after a failover." in output, output
    assert "Traceback" not in output


def test_a_vm_left_out_of_ha_passes_with_the_no_ha_tag_and_is_reported_without_it(lab_state: dict[str, Any], tmp_path: Path, stacks: list[PolicyStack]) -> None:
    stacks.append(tagged := PolicyStack("pol-noha", lab_state, tmp_path / "tagged"))
    ok, output = tagged.preview(lambda c: c["vms"][0].update(ha=False))
    assert ok, output
    assert f"vms: vm{VM} not HA-managed (ha: false)" in output  # the program's own warning
    assert PACK_RAN in output and VMS_HA_MANAGED not in output, output
    stacks.append(untagged := PolicyStack("pol-untagged", lab_state, tmp_path / "untagged", POLICY_PROGRAM, extraVm=str(EXTRA_VM)))
    ok, output = untagged.preview()
    assert ok, output  # advisory: reported, not refused
    assert f"[advisory]  {VMS_HA_MANAGED}" in output, output
    assert (
        f"vm:{EXTRA_VM} (vm{EXTRA_VM}) is not HA-managed: there is no HA resource vm:{EXTRA_VM} in this stack, so it does not fail over. "
        "Register it (runbook 5), or tag the VM no-ha if it must not fail over (vms[].ha: false)."
    ) in output, output
    assert "[mandatory]" not in output, output
