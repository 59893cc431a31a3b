"""Runbook 4: the HA services on every node and ``ha-manager status`` (quorum OK, a master), and
``pveversion`` against ``ha.mode`` (groups on PVE 8, rules on PVE 9)."""

from __future__ import annotations

import shlex
from typing import Any

import pulumi
from pulumi_command import remote

SERVICES = ("pve-ha-lrm", "pve-ha-crm")


def services_script(node: str) -> str:
    """``systemctl is-active`` for both HA services; names every one that is not ``active``."""
    lines = ["fail=0"]
    for service in SERVICES:
        lines.append(
            f"state=$(systemctl is-active {service}); "
            f'if [ "$state" = active ]; then echo {shlex.quote(f"{node}: {service} active (running)")}; '
            f'else echo {shlex.quote(f"{node}: {service} is ")}"$state"{shlex.quote(f", not active (running); start it: systemctl start {service}")}; fail=1; fi'
        )
    lines.append('[ "$fail" = 0 ]')
    return "\n".join(lines)


QUORUM_SCRIPT = "\n".join(
    [
        "status=$(ha-manager status) || { echo 'ha-manager status failed'; exit 1; }",
        'echo "$status"',
        "echo \"$status\" | grep -q '^quorum OK' || { echo 'HA preflight: no quorum OK in ha-manager status; fix the cluster (pvecm status) first'; exit 1; }",
        "echo \"$status\" | grep -q '^master ' || { echo 'HA preflight: ha-manager status shows no master; check pve-ha-crm on every node'; exit 1; }",
    ]
)


def mode_script(mode: str) -> str:
    """``pveversion``: ha.mode must match the cluster (PVE 8: HA groups; PVE 9 migrated groups to HA rules)."""
    wanted = shlex.quote(mode)
    return "\n".join(
        [
            "version=$(pveversion) || { echo 'HA preflight: pveversion failed'; exit 1; }",
            'echo "$version"',
            "major=${version#pve-manager/}; major=${major%%.*}",
            "case $major in ''|*[!0-9]*) echo \"HA preflight: cannot read the PVE version from: $version\"; exit 1;; esac",
            f'if [ "$major" -ge 9 ] && [ {wanted} = groups ]; then echo "HA preflight: ha.mode is groups, but the cluster runs PVE $major, '
            'where HA groups were migrated to HA rules; set ha.mode: rules"; exit 1; fi',
            f'if [ "$major" -lt 9 ] && [ {wanted} = rules ]; then echo "HA preflight: ha.mode is rules, but the cluster runs PVE $major, '
            'which has HA groups and no HA rules; set ha.mode: groups"; exit 1; fi',
        ]
    )


class HaPreflight(pulumi.ComponentResource):
    """pve-ha-lrm and pve-ha-crm active on every node, ``quorum OK`` and a master, before any HA resource."""

    def __init__(
        self,
        name: str,
        nodes: dict[str, Any],
        mode: str,
        triggers: list[Any],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pveceph:proxmox:HaPreflight", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.checks = []
        for index, (node, connection) in enumerate(nodes.items()):
            script = services_script(node) + ("\n" + QUORUM_SCRIPT + "\n" + mode_script(mode) if index == 0 else "")
            self.checks.append(remote.Command(f"{name}-{node}", connection=connection, create=script, triggers=triggers, opts=child))
        self.register_outputs({})
