"""Runbook 2-2: ``apt install ceph-common -y`` on every Proxmox node, in parallel."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_command import remote

INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y ceph-common"


class CephCommonPackage(pulumi.ComponentResource):
    """The Ceph client package on one node. Installing twice is harmless; it is never removed."""

    def __init__(self, name: str, node: str, connection: Any, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pveceph:proxmox:CephCommonPackage", name, {"node": node}, opts)
        self.install = remote.Command(
            f"{name}-install",
            connection=connection,
            create=INSTALL,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
